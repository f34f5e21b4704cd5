#!/usr/bin/env bash
# The two-seed GPU ablation of docs/results.md ("GPU ablation"): on one CUDA device, pretrain the
# mixture and random-token arms while the scratch and U-Net arms finetune, then finetune the two
# pretrained arms; every arm gets the same finetuning steps. Then evaluate on CPU (as users run it).
#   SEED=0 WORK=/tmp/gpu0 bash scripts/ablation_gpu.sh      (TOKENUNIFY_SHARED_DATA: the data folder)
set -euo pipefail
SEED=${SEED:-0}; P=${P:-800}; N=${N:-800}; WORK=${WORK:-/tmp/gpu$SEED}
T="$(dirname "$0")/train_default_model.py"
A="--work $WORK --device cuda --threads 3 --batch-size 8 --val-every 200 --seed $SEED"
mkdir -p "$WORK/logs"
python $T pretrain mix $A --pretrain-steps $P > "$WORK/logs/pre-mix.log" 2>&1 & p1=$!
python $T pretrain random $A --pretrain-steps $P > "$WORK/logs/pre-random.log" 2>&1 & p2=$!
python $T finetune scratch $A --finetune-steps $N > "$WORK/logs/ft-scratch.log" 2>&1 & p3=$!
python $T finetune unet $A --finetune-steps $N > "$WORK/logs/ft-unet.log" 2>&1 & p4=$!
wait $p1 $p2
python $T finetune mix $A --finetune-steps $N > "$WORK/logs/ft-mix.log" 2>&1 & p5=$!
python $T finetune random $A --finetune-steps $N > "$WORK/logs/ft-random.log" 2>&1 & p6=$!
wait $p3 $p4 $p5 $p6
python $T evaluate --work "$WORK" --device cpu --threads 2

#!/usr/bin/env bash
# Equal-budget TokenUnify ablation on the CPU, several seeds (docs/results.md, session 3):
# EMmamba tiny from scratch / random-token (MAE-like) / mixture pretraining, each pretrained
# arm finetuned plainly and with LP-FT (--head-steps 100), 400 + 400 steps of batch 1, then
# per seed `evaluate` (model and threshold chosen on the held-out part, one test score each).
# Two workers (the machine's two cores), one torch thread each.
#   SEEDS="0 1 2" WORK=/tmp/abl bash scripts/ablation_cpu.sh
set -u
SEEDS=${SEEDS:-"0 1 2"}; WORK=${WORK:-/tmp/abl}; P=${P:-400}; N=${N:-400}; HEAD=${HEAD:-100}
T="python scripts/train_default_model.py"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$WORK/logs"
run() { local log=$1; shift; echo "[$(date +%T)] $*"; "$@" --threads 1 > "$WORK/logs/$log.log" 2>&1 || echo "FAILED: $*"; }
worker() {  # $1 = pretraining arm of this worker (mix | random), $2 = its scratch seeds' parity
  local arm=$1
  for s in $SEEDS; do run pre-$arm-$s $T pretrain $arm --work "$WORK/s$s" --pretrain-steps "$P" --seed "$s"; done
  for s in $SEEDS; do
    run ft-$arm-$s $T finetune $arm --work "$WORK/s$s" --finetune-steps "$N" --val-every 100 --seed "$s"
    run ft-$arm-lpft-$s $T finetune $arm --tag=-lpft --head-steps "$HEAD" --work "$WORK/s$s" \
        --finetune-steps "$N" --val-every 100 --seed "$s"
    if [ $((s % 2)) -eq "$2" ]; then  # the scratch arms, shared between the two workers
      run ft-scratch-$s $T finetune scratch --work "$WORK/s$s" --finetune-steps "$N" --val-every 100 --seed "$s"
    fi
  done
}
worker mix 0 & a=$!
worker random 1 & b=$!
wait $a $b
for s in $SEEDS; do
  run eval-$s $T evaluate --work "$WORK/s$s" --arms scratch random random-lpft mix mix-lpft &
  [ $((s % 2)) -eq 1 ] && wait
done
wait
python scripts/train_default_model.py seeds --work "$WORK" | tee "$WORK/seeds.md"
echo "[$(date +%T)] done"

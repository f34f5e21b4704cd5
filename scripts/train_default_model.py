#!/usr/bin/env python
"""Reproduce the bundled default model and the ablation of docs/results.md, end to end.

Stages (each resumable; outputs under --work, default /tmp/runs; nothing is written to the repo
except by ``bundle``):

  pretrain ARM   ARM = mix (random+next+next_all) | random (MAE-like); EMmamba tiny, on
                 ../shared/data/medulla-unlabeled/raw.h5
  finetune ARM   ARM = mix | random (from that pretraining) | scratch (EMmamba, no pretraining)
                 | unet (residual 3D U-Net baseline); on medulla-labeled/train-*, x < 136 for
                 training, x >= 136 held out for validation (keeps the best model)
  evaluate       per arm, the kept (best-validation) or final model and the agglomeration
                 threshold are chosen on the held-out train part; then VOI/ARAND on test-*
                 -> WORK/results.json, WORK/selected-ARM
  pseudo         self-training of the bundled default: the bundled U-Net segments the unlabeled
                 cube (pseudo-labels), the default finetunes on them (-> finetune-pseudo)
  distill        distillation into the bundled default: the bundled U-Net's affinities of the
                 unlabeled cube (with test-time flips) are soft targets for --distill-p of the
                 samples, the train cube's labels for the rest (-> finetune-distillTAG;
                 --init: a model, or scratch / mix / random of this work folder)
  bundle ARM     copy an arm's selected model into the package (mix or pseudo -> default,
                 unet -> unet; card filled in)
  all            everything in order (one process)

Example (what docs/results.md reports; two processes at a time on the 2-core machine):
  python scripts/train_default_model.py pretrain mix & python scripts/train_default_model.py pretrain random
  python scripts/train_default_model.py finetune mix & python scripts/train_default_model.py finetune random
  python scripts/train_default_model.py finetune scratch & python scripts/train_default_model.py finetune unet
  python scripts/train_default_model.py evaluate && python scripts/train_default_model.py bundle
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TOKENUNIFY_SHARED_DATA", REPO.parent / "shared" / "data"))
BUNDLE = REPO / "src" / "napari_tokenunify" / "model" / "bundled" / "default"

PATCH = (16, 80, 80)
TOKENS = (4, 16, 16)
PRETRAIN_STEPS = 800
FINETUNE_STEPS = 1000
VAL_SPLIT_X = 136  # train on x < 136 of the train volume, validate on x >= 136
THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIXTURES = {"mix": "random=1,next=1,next_all=1", "random": "random=1"}


def read_h5(path: Path, dataset: str) -> np.ndarray:
    import h5py

    if not path.exists():
        sys.exit(f"missing {path}: put the shared data at {DATA} or set TOKENUNIFY_SHARED_DATA")
    with h5py.File(path, "r") as f:
        return f[dataset][...]


def labeled(split: str) -> tuple[np.ndarray, np.ndarray]:
    raw = read_h5(DATA / "medulla-labeled" / f"{split}-image.h5", "stack")
    gt = read_h5(DATA / "medulla-labeled" / f"{split}-gt.lzf.h5", "stack").astype(np.uint32)
    return raw, gt


def printer(every: int):
    def report(p) -> None:
        if p.done % every == 0 or p.done == p.total:
            extra = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in p.extra.items())
            print(f"[{time.strftime('%H:%M:%S')}] {p.message} {p.done}/{p.total} {extra}", flush=True)

    return report


def stage_pretrain(arm: str, work: Path, args) -> None:
    from napari_tokenunify.training.pretrain import pretrain

    raw = read_h5(DATA / "medulla-unlabeled" / "raw.h5", "raw")
    pretrain(
        [raw], preset=args.preset, steps=args.pretrain_steps, out_dir=work / f"pretrain-{arm}",
        weights=MIXTURES[arm], patch_shape=args.patch, token_shape=TOKENS,
        batch_size=args.batch_size, lr=args.lr,
        device=args.device, seed=args.seed, time_budget_s=args.time_cap, progress=printer(25), self_distill=False,
    )


def build_init(arm: str, work: Path, args):
    if arm in ("mix", "random"):
        init = work / f"pretrain-{arm}" / "model"
        if not (init / "card.json").exists():
            sys.exit(f"run 'pretrain {arm}' first ({init} is missing)")
        return init
    if arm == "scratch":
        return None
    if arm == "unet":
        from napari_tokenunify.model import ModelCard
        from napari_tokenunify.model.unet import ResidualUNet3D

        net = ResidualUNet3D(out_channels=3)
        net.card = ModelCard(preset="unet", patch_size=list(args.patch), config=net.config, name="residual-unet")
        return net
    sys.exit(f"unknown arm {arm!r}")


def stage_finetune(arm: str, work: Path, args) -> None:
    from napari_tokenunify.training.finetune import finetune

    raw, gt = labeled("train")
    out = work / f"finetune-{arm}{args.tag}"
    finetune(
        raw[:, :, :VAL_SPLIT_X], gt[:, :, :VAL_SPLIT_X], init=build_init(arm, work, args),
        preset=args.preset, steps=args.finetune_steps, out_dir=out, patch_shape=args.patch,
        validation=(raw[:, :, VAL_SPLIT_X:], gt[:, :, VAL_SPLIT_X:]), val_every=args.val_every,
        batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed, time_budget_s=args.time_cap,
        ema=args.ema, head_steps=args.head_steps, progress=printer(25),
        self_distill=False,  # the recipes of sessions 1-5: no pull toward the start
    )


def stage_extend(arm: str, work: Path, args) -> None:
    """Continue an arm's selected model for --extend-steps more steps at a lower learning rate
    (-> finetune-ARM-long); the default model is trained this way, the ablation table is not."""
    from napari_tokenunify.training.finetune import finetune

    raw, gt = labeled("train")
    init = work / f"selected-{arm}"
    if not (init / "card.json").exists():
        sys.exit(f"run 'evaluate' first ({init} is missing)")
    finetune(
        raw[:, :, :VAL_SPLIT_X], gt[:, :, :VAL_SPLIT_X], init=init, preset=args.preset,
        steps=args.extend_steps, out_dir=work / f"finetune-{arm}-long", patch_shape=args.patch,
        validation=(raw[:, :, VAL_SPLIT_X:], gt[:, :, VAL_SPLIT_X:]), val_every=args.val_every,
        batch_size=args.batch_size, lr=args.extend_lr, device=args.device, seed=args.seed + 1,
        time_budget_s=args.time_cap, progress=printer(25),
    )


def stage_pseudo(work: Path, args) -> None:
    """Self-training: the bundled U-Net (teacher) segments medulla-unlabeled at its card's
    threshold; the bundled default (EMmamba, mixture-pretrained and finetuned) is finetuned on
    those pseudo-labels, validated on the held-out part of the train cube as every arm is."""
    from napari_tokenunify.engine.agglomerate import Agglomerator
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model
    from napari_tokenunify.model.bundled import bundled_path
    from napari_tokenunify.training.finetune import finetune

    raw = read_h5(DATA / "medulla-unlabeled" / "raw.h5", "raw")
    labels_path = work / "pseudo-labels.npy"
    if labels_path.exists():
        pseudo = np.load(labels_path)
    else:
        teacher = load_model(args.teacher, device=args.device)
        threshold = teacher.card.recommended_threshold
        affs = predict_affinities(raw, teacher, device=args.device, dtype="float32")
        pseudo = Agglomerator(affs, max_threshold=threshold).segment(threshold).astype(np.uint32)
        np.save(labels_path, pseudo)
        print(f"pseudo-labels: {len(np.unique(pseudo))} ids from {args.teacher} at {threshold}", flush=True)
    train_raw, train_gt = labeled("train")
    init = args.init or str(bundled_path("default"))
    init = None if init == "scratch" else init  # --init scratch: a fresh network
    finetune(
        raw, pseudo, init=init, preset=args.preset, steps=args.finetune_steps,
        out_dir=work / "finetune-pseudo", patch_shape=args.patch,
        validation=(train_raw[:, :, VAL_SPLIT_X:], train_gt[:, :, VAL_SPLIT_X:]),
        val_every=args.val_every, batch_size=args.batch_size, lr=args.lr, device=args.device,
        seed=args.seed, time_budget_s=args.time_cap, ema=args.ema, head_steps=args.head_steps,
        progress=printer(50), self_distill=False,
    )


def stage_distill(work: Path, args) -> None:
    """Distillation: the bundled U-Net (teacher, with test-time flips) predicts affinities of
    medulla-unlabeled once; the bundled default finetunes with those soft affinities as targets
    for a share of its samples (--distill-p) and the train cube's labels for the rest, validated
    on the held-out part of the train cube as every arm is (-> finetune-distill)."""
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model
    from napari_tokenunify.model.bundled import bundled_path
    from napari_tokenunify.training.finetune import finetune

    raw = read_h5(DATA / "medulla-unlabeled" / "raw.h5", "raw")
    affs_path = work / f"teacher-affinities-{args.teacher}-{args.teacher_tta}.npy"
    if affs_path.exists():
        affs = np.load(affs_path)
    else:
        t0 = time.perf_counter()
        teacher = load_model(args.teacher, device=args.device)
        affs = predict_affinities(raw, teacher, device=args.device, tta=args.teacher_tta, dtype="float16")
        np.save(affs_path, affs)
        print(f"teacher affinities: {args.teacher}, tta {args.teacher_tta}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    train_raw, train_gt = labeled("train")
    init = args.init or str(bundled_path("default"))
    # 'scratch', 'mix' or 'random' (this work folder's pretraining), or a model path
    init = build_init(init, work, args) if init in ("scratch", "mix", "random") else init
    finetune(
        train_raw[:, :, :VAL_SPLIT_X], train_gt[:, :, :VAL_SPLIT_X], init=init, preset=args.preset,
        steps=args.finetune_steps, out_dir=work / f"finetune-distill{args.tag}", patch_shape=args.patch,
        validation=(train_raw[:, :, VAL_SPLIT_X:], train_gt[:, :, VAL_SPLIT_X:]),
        val_every=args.val_every, batch_size=args.batch_size, lr=args.lr, device=args.device,
        seed=args.seed, time_budget_s=args.time_cap, ema=args.ema, head_steps=args.head_steps,
        teacher=args.teacher, distill_volumes=[raw], distill_p=args.distill_p,
        teacher_tta=args.teacher_tta, teacher_affinities=[affs], progress=printer(50),
    )


def load_arm(arm: str, work: Path, patch=PATCH):
    out = work / f"finetune-{arm}"
    if arm == "unet" and (out / "unet.pt").exists():  # runs made before U-Nets had model cards
        from napari_tokenunify.model import ModelCard
        from napari_tokenunify.training.unet import load_unet

        net = load_unet(out / "unet.pt")
        net.card = ModelCard(preset="unet", patch_size=list(patch), config=net.config)
        return net
    from napari_tokenunify.model import load_model

    return load_model(out / "model", device="cpu")


def candidates(arm: str, work: Path, patch=PATCH):
    """The model finetune kept (best by its validation) and the final state of the run."""
    import copy

    from napari_tokenunify.training.checkpoints import load_checkpoint

    kept = load_arm(arm, work, patch)
    yield "kept", kept
    last = copy.deepcopy(kept)
    last.load_state_dict(load_checkpoint(work / f"finetune-{arm}" / "checkpoints" / "last.pt")["model"])
    yield "last", last.eval()


def stage_evaluate(work: Path, args) -> None:
    """Pick each arm's model and threshold on the held-out train part, then score test once."""
    from napari_tokenunify.engine.agglomerate import Agglomerator
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.training.checkpoints import export_model
    from napari_tokenunify.training.finetune import validate

    train_raw, train_gt = labeled("train")
    test_raw, test_gt = labeled("test")
    val_raw, val_gt = train_raw[:, :, VAL_SPLIT_X:], train_gt[:, :, VAL_SPLIT_X:]
    results = {}
    for arm in args.arms:
        if not (work / f"finetune-{arm}").exists():
            print(f"skip {arm}: not finetuned")
            continue
        t0 = time.perf_counter()
        val = {}
        models = {}
        for name, model in candidates(arm, work, args.patch):
            val[name] = validate(model, val_raw, val_gt, device=args.device, threshold=THRESHOLDS)
            models[name] = model
        choice = min(val, key=lambda k: val[k]["voi"])
        model, th = models[choice], val[choice]["threshold"]
        affs = predict_affinities(test_raw, model, device=args.device, dtype="float32")
        agg = Agglomerator(affs, max_threshold=max(THRESHOLDS))
        seg = agg.segment(th)
        scores = {k: float(v) for k, v in evaluate(seg, test_gt).items()}
        fixed = {k: float(v) for k, v in evaluate(agg.segment(0.5), test_gt).items()}
        results[arm] = {
            "chosen": choice,
            "threshold": th,
            "validation": val,
            "test": scores,
            "test_at_0.5": fixed,
            "n_segments": int(len(np.unique(seg)) - (0 in seg)),
            "eval_seconds": round(time.perf_counter() - t0, 1),
            "training": _training_info(work, arm),
        }
        card = model.card
        card.metrics = {**card.metrics, "validation": val[choice]}
        export_model(model, work / f"selected-{arm}", card)
        print(arm, choice, "threshold", th, json.dumps(scores), flush=True)
    path = work / "results.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(results)
    path.write_text(json.dumps(old, indent=2))
    print(f"wrote {path}")


def _training_info(work: Path, arm: str) -> dict:
    info = {}
    card = work / f"finetune-{arm}" / "model" / "card.json"
    if card.exists():
        info["finetune"] = json.loads(card.read_text()).get("training", {})
    elif (work / f"finetune-{arm}" / "validation.csv").exists():
        rows = (work / f"finetune-{arm}" / "loss.csv").read_text().splitlines()
        info["finetune"] = {"steps": len(rows) - 1, "seconds": float(rows[-1].split(",")[-1])}
    base = arm.removesuffix("-long")
    if base != arm:  # an extended run: also record the equal-budget run it continued
        info["continued_from"] = _training_info(work, base)
    # mix-lpft: pretrain-mix; distill-mix: pretrain-mix
    pre = work / f"pretrain-{base.removeprefix('distill-').split('-')[0]}" / "model" / "card.json"
    if pre.exists():
        info["pretrain"] = json.loads(pre.read_text()).get("training", {})
    return info


DESCRIPTIONS = {
    "mix": "EMmamba tiny, TokenUnify mixture pretraining on medulla-unlabeled (FIB-SEM, 10 nm), "
           "finetuned on medulla-labeled train; see docs/results.md",
    "unet": "residual 3D U-Net (superhuman-style), trained from scratch on medulla-labeled train "
            "(FIB-SEM, 10 nm); the ablation's baseline, see docs/results.md",
    "pseudo": "EMmamba tiny, TokenUnify mixture pretraining on medulla-unlabeled (FIB-SEM, 10 nm), "
              "finetuned on medulla-labeled train (LP-FT), then self-trained on medulla-unlabeled "
              "with pseudo-labels from the bundled U-Net; see docs/results.md",
}
DESCRIPTIONS["distill"] = (
    "EMmamba tiny, TokenUnify mixture pretraining on medulla-unlabeled (FIB-SEM, 10 nm), finetuned "
    "on medulla-labeled train, self-trained on U-Net pseudo-labels, then distilled from the bundled "
    "U-Net's affinities of medulla-unlabeled; see docs/results.md")
DESCRIPTIONS["distill-mix"] = (
    "EMmamba tiny, TokenUnify mixture pretraining on medulla-unlabeled (FIB-SEM, 10 nm), then "
    "distilled from the bundled U-Net's affinities of medulla-unlabeled with medulla-labeled train "
    "labels; see docs/results.md")
DESCRIPTIONS["distill-scratch"] = (
    "EMmamba tiny from scratch, distilled from the bundled U-Net's affinities of medulla-unlabeled "
    "(FIB-SEM, 10 nm) with medulla-labeled train labels; see docs/results.md")
BUNDLE_NAMES = {"mix": "default", "pseudo": "default", "unet": "unet", "distill": "default",
                "distill-mix": "default", "distill-scratch": "default"}


def choose_flips(model, args) -> dict:
    """The test-time flips with the lowest held-out balanced affinity error (the judge of rule 4
    in docs/results.md), the threshold chosen on the held-out part with them, and the test score
    with both (the test plays no part in the choice)."""
    from napari_tokenunify.engine.agglomerate import Agglomerator
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.training.finetune import validate

    train_raw, train_gt = labeled("train")
    held = {mode: validate(model, train_raw[:, :, VAL_SPLIT_X:], train_gt[:, :, VAL_SPLIT_X:],
                           device=args.device, threshold=THRESHOLDS, tta=mode)
            for mode in ("none", "yx", "zyx")}
    mode = min(held, key=lambda m: held[m]["affinity_error"])
    test_raw, test_gt = labeled("test")
    affs = predict_affinities(test_raw, model, device=args.device, dtype="float32", tta=mode)
    seg = Agglomerator(affs, max_threshold=max(THRESHOLDS)).segment(held[mode]["threshold"])
    test = {k: float(v) for k, v in evaluate(seg, test_gt).items()}
    print("flips", mode, "held-out", {m: round(h["affinity_error"], 4) for m, h in held.items()},
          "test", json.dumps(test), flush=True)
    return {"mode": mode, "held_out": held, "threshold": held[mode]["threshold"], "test": test}


def stage_bundle(work: Path, args) -> None:
    """Copy an arm's selected model into the package: mix -> ``default``, unet -> ``unet``."""
    from napari_tokenunify.model import ModelCard

    arm = args.arm or "mix"
    if arm not in BUNDLE_NAMES:
        sys.exit(f"only {', '.join(BUNDLE_NAMES)} are bundled, not {arm!r}")
    src = work / f"selected-{arm}"
    results = json.loads((work / "results.json").read_text())[arm]
    card = ModelCard.from_json((src / "card.json").read_text())
    card.name = BUNDLE_NAMES[arm]
    card.description = DESCRIPTIONS[arm]
    card.voxel_size_nm = [10.0, 10.0, 10.0]
    card.training = {
        **card.training,
        **({"pretrain": results["training"]["pretrain"]} if "pretrain" in results["training"] else {}),
        **({"continued_from": results["training"]["continued_from"]}
           if "continued_from" in results["training"] else {}),
        **({"pretrain_data": "medulla-unlabeled/raw.h5 (250^3, uint8)"} if arm == "mix" else {}),
        "finetune_data": f"medulla-labeled/train-image.h5 + train-gt.lzf.h5, x < {VAL_SPLIT_X}",
        "validation_data": f"medulla-labeled/train, x >= {VAL_SPLIT_X}",
        "script": "scripts/train_default_model.py",
        "segmentation_threshold": results["threshold"],
    }
    if arm == "pseudo":  # the default it continued: its pretraining and finetuning records
        from napari_tokenunify.model.bundled import bundled_path

        init_dir = Path(args.init or bundled_path("default"))
        earlier = json.loads((init_dir / "card.json").read_text()).get("training", {})
        pretrain, continued = earlier.get("pretrain", {}), dict(earlier)
        if args.init:  # an ablation arm's selected model (WORK/selected-ARM): find its pretraining
            pre_card = init_dir.parent / f"pretrain-{init_dir.name.removeprefix('selected-').split('-')[0]}" / "model" / "card.json"
            if not pretrain and pre_card.exists():
                pretrain = json.loads(pre_card.read_text()).get("training", {})
            arm_results = init_dir.parent / "results.json"
            if arm_results.exists():
                chosen = json.loads(arm_results.read_text()).get(init_dir.name.removeprefix("selected-"), {})
                run = init_dir.parent / init_dir.name.replace("selected-", "finetune-", 1)
                continued["selected"] = f"the {chosen.get('chosen')} model of {run} (by held-out VOI)"
            continued.setdefault("finetune_data", f"medulla-labeled/train-image.h5 + train-gt.lzf.h5, x < {VAL_SPLIT_X}")
        card.training = {
            **card.training,
            "pretrain": pretrain,
            "pretrain_data": earlier.get("pretrain_data") or ("medulla-unlabeled/raw.h5 (250^3, uint8)" if pretrain else None),
            "continued_from": {k: v for k, v in continued.items() if k not in ("pretrain", "pretrain_data")},
            "init": (f"{args.init} (its training is continued_from)" if args.init else
                     "the bundled default it continued (git history of "
                     "src/napari_tokenunify/model/bundled/default; its training is continued_from)"),
            "finetune_data": f"medulla-labeled/train-image.h5 + train-gt.lzf.h5, x < {VAL_SPLIT_X} "
                             "(the finetuning it continued, see continued_from)",
            "self_training_data": "medulla-unlabeled/raw.h5 with pseudo-labels from the bundled unet "
                                  "(this stage: steps, seconds, lr, best_step)",
        }
    if arm.startswith("distill"):  # a stage after the default's: record what it continued
        init_dir = Path(args.init) if args.init and arm == "distill" else None
        if arm == "distill":
            from napari_tokenunify.model.bundled import bundled_path

            init_dir = init_dir or bundled_path("default")
            earlier = json.loads((init_dir / "card.json").read_text()).get("training", {})
            card.training["continued_from"] = {k: v for k, v in earlier.items()
                                               if k not in ("pretrain", "pretrain_data")}
            card.training["pretrain"] = earlier.get("pretrain", {})
            card.training["pretrain_data"] = earlier.get("pretrain_data")
            card.training["init"] = ("the bundled default it continued (git history of "
                                     "src/napari_tokenunify/model/bundled/default; its training is continued_from)")
        card.training["distillation_data"] = (
            "medulla-unlabeled/raw.h5 (250^3) with the bundled unet's affinities "
            f"(test-time flips {card.training.get('distillation', {}).get('teacher_tta')})")
        if arm == "distill-mix":
            card.training["pretrain_data"] = "medulla-unlabeled/raw.h5 (250^3, uint8)"
    card.metrics = {"medulla-labeled/test": results["test"], "threshold": results["threshold"],
                    "validation": results["validation"][results["chosen"]]}
    if args.choose_flips:
        from napari_tokenunify.model import load_model

        flips = choose_flips(load_model(src, device="cpu"), args)
        card.training["test_time_flips"] = flips["mode"]
        card.training["segmentation_threshold"] = flips["threshold"]
        card.training["test_time_flips_choice"] = (
            "lowest held-out balanced affinity error of none / yx / zyx (docs/results.md)")
        card.metrics = {
            "medulla-labeled/test": flips["test"], "threshold": flips["threshold"],
            "validation": flips["held_out"][flips["mode"]],
            "medulla-labeled/test without flips": results["test"],
            "threshold without flips": results["threshold"],
            "validation by flips": flips["held_out"],
        }
    dest = BUNDLE.parent / BUNDLE_NAMES[arm]
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "model.safetensors", dest / "model.safetensors")
    (dest / "card.json").write_text(card.to_json() + "\n")
    size = (dest / "model.safetensors").stat().st_size / 1e6
    print(f"bundled {dest} ({size:.1f} MB)")


LABELS = {
    "scratch": "EMmamba tiny, from scratch",
    "random": "EMmamba tiny, random-token pretraining (MAE-like)",
    "mix": "EMmamba tiny, TokenUnify mixture pretraining",
    "unet": "residual 3D U-Net (superhuman-style), from scratch",
    "scratch-long": "EMmamba tiny, from scratch, + extended finetuning",
    "mix-long": "EMmamba tiny, mixture pretraining, + extended finetuning",
    "pseudo": "EMmamba tiny, mixture (bundled default) + self-training on U-Net pseudo-labels",
    "random-lpft": "EMmamba tiny, random-token pretraining, LP-FT finetuning",
    "mix-lpft": "EMmamba tiny, TokenUnify mixture pretraining, LP-FT finetuning",
    "distill": "EMmamba tiny, the bundled default + distillation from the U-Net",
    "distill-mix": "EMmamba tiny, mixture pretraining (LP-FT) + distillation from the U-Net",
    "distill-scratch": "EMmamba tiny, from scratch + distillation from the U-Net",
}


def stage_table(work: Path, args) -> None:
    """Print the results table (markdown) from WORK/results.json."""
    results = json.loads((work / "results.json").read_text())
    print("| model | pretrain steps | finetune steps (time) | threshold | VOI split | VOI merge | VOI | ARAND |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for arm in LABELS:
        if arm not in results:
            continue
        r = results[arm]
        t = r["test"]
        pre = r["training"].get("pretrain", {})
        ft = r["training"].get("finetune", {})
        before = r["training"].get("continued_from", {}).get("finetune")
        if before:  # the kept/selected model of the first run, then the extension
            ft = {"steps": f"{before.get('best_step', before.get('steps'))}+{ft.get('steps')}",
                  "seconds": before.get("seconds", 0) + ft.get("seconds", 0)}
        pre_txt = f"{pre.get('steps', '-')} ({pre.get('seconds', 0) / 60:.0f} min)" if pre else "0"
        ft_txt = f"{ft.get('steps', '-')} ({ft.get('seconds', 0) / 60:.0f} min)"
        voi = t["voi_split"] + t["voi_merge"]
        print(f"| {LABELS[arm]} | {pre_txt} | {ft_txt} | {r['threshold']} | {t['voi_split']:.3f} | "
              f"{t['voi_merge']:.3f} | {voi:.3f} | {t['arand']:.3f} |")


def stage_seeds(work: Path, args) -> None:
    """Print per-arm scores over the seeds of a multi-seed run (WORK/s<seed>/results.json, as
    written by scripts/ablation_cpu.sh): held-out and test VOI per seed, then the means."""
    by_arm: dict[str, dict[str, dict]] = {}
    for path in sorted(work.glob("s*/results.json")):
        for arm, r in json.loads(path.read_text()).items():
            by_arm.setdefault(arm, {})[path.parent.name[1:]] = r
    print("| model | seeds | held-out VOI | test VOI | test ARAND | mean test VOI | mean test ARAND |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arm in [a for a in LABELS if a in by_arm]:
        runs = by_arm[arm]
        seeds = sorted(runs)
        held = [runs[s]["validation"][runs[s]["chosen"]]["voi"] for s in seeds]
        voi = [runs[s]["test"]["voi_split"] + runs[s]["test"]["voi_merge"] for s in seeds]
        arand = [runs[s]["test"]["arand"] for s in seeds]
        fmt = " / ".join
        print(f"| {LABELS[arm]} | {', '.join(seeds)} | {fmt(f'{v:.2f}' for v in held)} | "
              f"{fmt(f'{v:.2f}' for v in voi)} | {fmt(f'{v:.2f}' for v in arand)} | "
              f"**{np.mean(voi):.2f}** | {np.mean(arand):.2f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["pretrain", "finetune", "extend", "pseudo", "distill", "evaluate", "bundle", "table",
                                      "seeds", "all"])
    p.add_argument("arm", nargs="?", default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/runs"))
    p.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS)
    p.add_argument("--finetune-steps", type=int, default=FINETUNE_STEPS)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--extend-steps", type=int, default=600)
    p.add_argument("--extend-lr", type=float, default=3e-4)
    p.add_argument("--time-cap", type=float, default=None, help="seconds per stage (safety stop)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="tiny", help="EMmamba preset of every EMmamba arm")
    p.add_argument("--patch", type=int, nargs=3, default=list(PATCH), metavar=("Z", "Y", "X"))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--teacher", default="unet", help="pseudo: the model that labels the unlabeled cube")
    p.add_argument("--teacher-tta", default="zyx", help="distill: the teacher's test-time flips")
    p.add_argument("--distill-p", type=float, default=0.75,
                   help="distill: share of samples with the teacher's affinities as targets")
    p.add_argument("--init", default=None,
                   help="pseudo: the model to self-train (default: the bundled default; 'scratch': none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="finetune, distill: suffix of the output folder (finetune-ARMTAG)")
    p.add_argument("--ema", type=float, default=None, help="keep an EMA of the weights (decay)")
    p.add_argument("--head-steps", type=int, default=0,
                   help="train only the re-initialised output layer first for this many steps (LP-FT)")
    p.add_argument("--choose-flips", action="store_true",
                   help="bundle: record the test-time flips with the lowest held-out affinity error")
    p.add_argument("--arms", nargs="+", default=["scratch", "random", "mix", "unet"])
    args = p.parse_args(argv)

    from napari_tokenunify.threads import set_threads

    set_threads(args.threads)  # also what validation's predictions use
    args.work.mkdir(parents=True, exist_ok=True)
    per_arm = {"pretrain": stage_pretrain, "finetune": stage_finetune, "extend": stage_extend}
    whole = {"pseudo": stage_pseudo, "distill": stage_distill, "evaluate": stage_evaluate,
             "bundle": stage_bundle, "table": stage_table, "seeds": stage_seeds}
    if args.stage in per_arm:
        per_arm[args.stage](args.arm or "mix", args.work, args)
    elif args.stage in whole:
        whole[args.stage](args.work, args)
    else:
        for arm in ("mix", "random"):
            stage_pretrain(arm, args.work, args)
        for arm in args.arms:
            stage_finetune(arm, args.work, args)
        stage_evaluate(args.work, args)
        stage_bundle(args.work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

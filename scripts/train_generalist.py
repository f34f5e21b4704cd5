#!/usr/bin/env python
"""Train the bundled default on every labelled volume outside the validation set (issue 13).

Splits: ``benchmarks/quality_sets.py`` (TRAIN, VALIDATION, TEST, UNLABELED). Every run
validates on VALIDATION by its SELECTION_RULE and keeps the best checkpoint; the test volume is
scored once, after a choice, and never chooses. Stages (each resumable: rerun the same command):

  pretrain          TokenUnify mixture (random + next + next-all token) on all UNLABELED data
                    -> WORK/pretrain/model
  finetune INIT     INIT = pretrain (the stage above) | scratch | default | unet-scratch | a model
                    path; affinities on TRAIN, validated on VALIDATION -> WORK/finetune-INIT[TAG]
  bundle RUN        copy WORK/RUN/model into the package as the default (``--name unet``: as the
                    bundled U-Net; card: data, rule, scores)

Example (two processes, one thread each, on the 2-core machine):
  python scripts/train_generalist.py pretrain --work /tmp/gen --steps 1500 --time-cap 1800 &
  python scripts/train_generalist.py finetune default --work /tmp/gen --steps 4000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import quality_sets as qs  # noqa: E402
from train_default_model import printer  # noqa: E402  (progress lines of every stage)

BUNDLE = REPO / "src" / "napari_tokenunify" / "model" / "bundled" / "default"
PATCH = (16, 80, 80)
TOKENS = (4, 16, 16)


def stage_pretrain(args) -> None:
    from napari_tokenunify.training.pretrain import pretrain

    vols = [raw for raw, _ in qs.load_all(qs.UNLABELED)]
    pretrain(vols, preset=args.preset, steps=args.steps, out_dir=args.work / "pretrain",
             weights="random=1,next=1,next_all=1", patch_shape=args.patch, token_shape=TOKENS,
             batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
             time_budget_s=args.time_cap, progress=printer(25))


def init_for(name: str, args):
    if name == "pretrain":
        path = args.work / "pretrain" / "model"
        if not (path / "card.json").exists():
            sys.exit(f"run the pretrain stage first ({path} is missing)")
        return str(path)
    if name == "unet-scratch":
        from dataclasses import replace

        from napari_tokenunify.engine.normalize import ROBUST_NORMALIZATION
        from napari_tokenunify.model import ModelCard
        from napari_tokenunify.model.unet import ResidualUNet3D

        net = ResidualUNet3D(out_channels=3)
        net.card = replace(ModelCard(preset="unet", patch_size=list(args.patch), config=net.config,
                                     name="untrained residual-unet"), normalization=dict(ROBUST_NORMALIZATION))
        return net
    if args.widen:
        return widened(name, args)
    return name  # scratch, default, unet, or a model path


def widened(name: str, args):
    """The model ``name`` widened to ``--widen`` (same function up to ``--widen-noise``), with its
    card, the new config and a note of the widening."""
    from dataclasses import replace

    from napari_tokenunify.model import load_model
    from napari_tokenunify.model.widen import widen

    start = load_model(name, device="cpu")
    *fs, hidden = args.widen
    wide = widen(start, fs, hidden, noise=args.widen_noise, seed=args.seed)
    note = {"from": start.card.name, "feature_sizes": [list(start.config.feature_sizes), fs],
            "hidden_size": [start.config.hidden_size, hidden], "noise": args.widen_noise,
            "method": "Net2WiderNet (channels copied, their readers halved)"}
    wide.card = replace(wide.card, training={**(wide.card.training or {}), "widened": note})
    wide.source_path = start.source_path
    return wide


def training_offsets(aux: list[int]) -> list[tuple[int, int, int]]:
    """The nearest-neighbour offsets, then (d,0,0), (0,d,0), (0,0,d) for each auxiliary distance d
    (long-range affinities as extra training targets; ``bundle`` cuts the model back to three)."""
    from napari_tokenunify.affinities import NEAREST_OFFSETS

    out = [tuple(int(v) for v in o) for o in NEAREST_OFFSETS]
    for d in aux:
        if d < 2:
            sys.exit(f"--aux-offsets distances must be 2 or more, got {d}")
        out += [(d, 0, 0), (0, d, 0), (0, 0, d)]
    return out


def _crops(crops, only: list[str] | None) -> tuple:
    """The crops whose names start with one of ``only`` (all of them without it)."""
    if not only:
        return tuple(crops)
    kept = tuple(c for c in crops if any(c.name.startswith(o) for o in only))
    if not kept:
        sys.exit(f"no crop of {[c.name for c in crops]} starts with {only}")
    return kept


def stage_finetune(args) -> None:
    from napari_tokenunify.engine.normalize import ROBUST_NORMALIZATION
    from napari_tokenunify.training.finetune import finetune

    train_crops = _crops(qs.TRAIN, args.train_only)
    val_crops = _crops(qs.VALIDATION, args.validate_only)
    train = qs.load_all(train_crops)
    val = qs.load_all(val_crops)
    out = args.work / f"finetune-{Path(args.init).name}{args.tag}"
    distill = {}
    if args.teacher:  # noisy student: the teacher's flip-averaged affinities of unlabeled crops
        distill = {"teacher": args.teacher, "distill_p": args.distill_p, "teacher_tta": args.teacher_tta,
                   "distill_margin": args.distill_margin,
                   "distill_volumes": [_central(raw, args.distill_crop) for raw, _ in qs.load_all(qs.UNLABELED)]}
    finetune(
        [r for r, _ in train], [lab for _, lab in train], init=init_for(args.init, args),
        preset=args.preset, steps=args.steps, out_dir=out, patch_shape=args.patch,
        validation=[(r, lab) for r, lab in val], val_every=args.val_every, threshold=qs.THRESHOLDS,
        batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
        time_budget_s=args.time_cap, ema=args.ema, head_steps=args.head_steps,
        normalization=dict(ROBUST_NORMALIZATION), progress=printer(25),
        offsets=training_offsets(args.aux_offsets),
        self_distill=False,  # generalist training learns from labels, not from its start
        grow_boundaries=args.grow_boundaries, lsd_sigma=args.lsd_sigma, lsd_weight=args.lsd_weight,
        permute_axes=args.permute_axes, **distill,
    )
    (out / "data.json").write_text(json.dumps({
        "train": [c.name for c in train_crops], "validation": [c.name for c in val_crops],
        "selection_rule": qs.SELECTION_RULE, "init": args.init,
        **({"distillation": {"teacher": args.teacher, "share": args.distill_p, "teacher_tta": args.teacher_tta,
                             "margin": args.distill_margin,
                             "volumes": [f"{c.name} central {args.distill_crop}" for c in qs.UNLABELED]}}
           if args.teacher else {})}, indent=2))


def _central(raw, size):
    """The central ``size`` (z, y, x) crop of a volume (all of an axis shorter than that)."""
    sl = tuple(slice(max(0, (n - k) // 2), max(0, (n - k) // 2) + min(n, k)) for n, k in zip(raw.shape, size, strict=True))
    return raw[sl]


def _start_card(init: str, args) -> dict | None:
    """The card of the model a finetuning run started from (None for scratch)."""
    if init == "scratch" or init == "unet-scratch":
        return None
    if init == "pretrain":
        return json.loads((args.work / "pretrain" / "model" / "card.json").read_text())
    from napari_tokenunify.model import load_model

    return load_model(init, device="cpu").card.to_dict()


def stage_bundle(args) -> None:
    """Copy WORK/RUN/model into the package as the default; the card gets the data, the rule, the
    start's record (``pretrain`` or ``continued_from``), the flips and threshold chosen on
    validation, and the benchmark's scores (``--bench`` JSON of ``bench_quality.py``)."""
    src = args.work / args.init / "model"
    card = json.loads((src / "card.json").read_text())
    data = json.loads((args.work / args.init / "data.json").read_text())
    training = dict(card.get("training") or {})
    start = _start_card(data["init"], args)
    if start is not None:
        key = "pretrain" if data["init"] == "pretrain" else "continued_from"
        training[key] = {"name": start.get("name"), "description": start.get("description"),
                         **(start.get("training") or {})}
        if key == "pretrain":
            training["pretrain_data"] = [c.name for c in qs.UNLABELED]
    validation = (card.get("metrics") or {}).get("validation") or {}
    training.update({
        "finetune_data": data["train"], "validation_data": data["validation"],
        "selection_rule": data["selection_rule"],
        "script": f"scripts/train_generalist.py finetune {data['init']}",
        "segmentation_threshold": float(validation.get("threshold", 0.5)),
        "test_time_flips": args.flips,
    })
    card["training"] = training
    card["name"] = args.name
    card["voxel_size_nm"] = [10.0, 10.0, 10.0]
    if args.bench is not None:
        bench = json.loads(args.bench.read_text())
        res = next(iter(bench.values()))
        card["metrics"] = {"validation": validation,
                           "bench_quality": {k: v for k, v in res["volumes"].items()},
                           "validation_mean": res["validation_mean"]}
    if args.description:
        card["description"] = args.description
    dest = args.to or BUNDLE.parent / args.name  # --to: a candidate folder, to be benchmarked as it would ship
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if int(card.get("out_channels", 3)) > 3:  # auxiliary training outputs: ship the three nearest
        from napari_tokenunify.model import load_model, save_model
        from napari_tokenunify.training.finetune import keep_output_channels

        cut = keep_output_channels(load_model(src, device="cpu"), 3)
        save_model(cut, tmp)
        training["auxiliary_offsets"] = card["offsets"][3:]
        if "lsd" in training:  # the descriptor outputs went with the cut
            training["lsd"] = {**training["lsd"], "note": "trained as extra outputs; cut off for shipping"}
        card["out_channels"], card["offsets"] = 3, card["offsets"][:3]
        card["config"] = dict(cut.card.config)
    if args.half or (tmp / "model.safetensors").stat().st_size > 20e6:  # the bundle's size limit
        from napari_tokenunify.model import load_model, save_model

        save_model(load_model(tmp, device="cpu"), tmp, half=True)
        training["weights_stored_as"] = "float16 (loaded as float32)"
    (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"bundled {src} as {dest}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["pretrain", "finetune", "bundle"])
    p.add_argument("init", nargs="?", default="pretrain")
    p.add_argument("--work", type=Path, default=Path("/tmp/gen"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--time-cap", type=float, default=None, help="seconds per stage (safety stop)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--patch", type=int, nargs=3, default=list(PATCH), metavar=("Z", "Y", "X"))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--head-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aux-offsets", type=int, nargs="*", default=[], metavar="D",
                   help="finetune: also train long-range affinities at these distances (bundle drops them)")
    p.add_argument("--teacher", default=None, metavar="MODEL",
                   help="finetune: distil from this model on central crops of the unlabeled volumes")
    p.add_argument("--distill-crop", type=int, nargs=3, default=[100, 200, 200], metavar=("Z", "Y", "X"))
    p.add_argument("--distill-p", type=float, default=0.5)
    p.add_argument("--distill-margin", type=float, default=0.0,
                   help="finetune: only teacher affinities at least this far from 0.5 are targets")
    p.add_argument("--teacher-tta", default="yx", choices=["none", "yx", "zyx"])
    p.add_argument("--grow-boundaries", type=int, default=0, metavar="N",
                   help="finetune: N one-voxel boundaries in every training patch's labels (rule 19)")
    p.add_argument("--lsd-sigma", type=float, default=0.0, metavar="VOXELS",
                   help="finetune: also learn local shape descriptors in this window (bundle drops them)")
    p.add_argument("--lsd-weight", type=float, default=1.0)
    p.add_argument("--permute-axes", action="store_true",
                   help="finetune: read patches with their axes in a random order (isotropic data; rule 27)")
    p.add_argument("--train-only", nargs="+", default=None, metavar="NAME",
                   help="finetune: only the TRAIN crops whose names start with these (e.g. medulla-dense)")
    p.add_argument("--validate-only", nargs="+", default=None, metavar="NAME",
                   help="finetune: only the VALIDATION crops whose names start with these")
    p.add_argument("--widen", type=int, nargs=5, default=None, metavar=("F0", "F1", "F2", "F3", "H"),
                   help="finetune: start from INIT widened to these feature sizes and hidden size "
                        "(each the old width or twice it; the same function up to --widen-noise)")
    p.add_argument("--widen-noise", type=float, default=0.01)
    p.add_argument("--tag", default="")
    p.add_argument("--description", default=None)
    p.add_argument("--flips", default="none", choices=["none", "yx", "zyx"],
                   help="bundle: the test-time flips the card recommends (rule 8)")
    p.add_argument("--to", type=Path, default=None, help="bundle: write here instead of the package")
    p.add_argument("--name", default="default", choices=["default", "unet"],
                   help="bundle: the bundled model it becomes (its card's name and folder)")
    p.add_argument("--half", action="store_true",
                   help="bundle: store the weights as float16 (automatic when float32 would pass 20 MB)")
    p.add_argument("--bench", type=Path, default=None, help="bundle: bench_quality.py --json output")
    args = p.parse_args(argv)

    from napari_tokenunify.threads import set_threads

    set_threads(args.threads)  # also what validation's predictions use
    {"pretrain": stage_pretrain, "finetune": stage_finetune, "bundle": stage_bundle}[args.stage](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

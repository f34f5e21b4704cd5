"""``tokenunify finetune --raw R --labels L --init MODEL --out DIR``: affinity finetuning.

The options' defaults are :class:`~napari_tokenunify.training.config.FinetuneConfig`'s (the
widget's Finetune section starts from the same object); :func:`finetune_config` turns the parsed
options back into one.
"""

from __future__ import annotations

import argparse

from ..training.config import FinetuneConfig
from .training_common import add_runtime_options, run_resumable

DEFAULTS = FinetuneConfig()


def _read(path: str | None, dataset: str | None):
    if path is None:
        return None
    from .engine_common import open_image

    return open_image(path, dataset).data


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The training hyper-parameters the options set (unset ones keep ``FinetuneConfig()``'s)."""
    return FinetuneConfig(
        steps=args.steps, lr=args.lr, batch_size=args.batch_size,
        patch_shape=tuple(args.patch) if args.patch else None, augment=args.augment, ema=args.ema or None,
        head_steps=args.head_steps, val_every=args.val_every,
        thresholds=tuple(args.threshold) if args.threshold else DEFAULTS.thresholds,
        holdout=args.holdout, time_budget_s=args.time_budget or None, seed=args.seed,
        checkpoint_every=args.checkpoint_every, distill_p=args.distill_p, teacher_tta=args.teacher_tta,
        distill_margin=args.distill_margin,
        self_distill=args.self_distill, grow_boundaries=args.grow_boundaries,
        lsd_sigma=args.lsd_sigma, lsd_weight=args.lsd_weight, permute_axes=args.permute_axes,
        # thresholds given are thresholds to choose among, also on held-back corrections
        keep_start_threshold=args.keep_start_threshold and not args.threshold,
        rechoose_margin=None if args.rechoose_margin is None or args.rechoose_margin < 0 else args.rechoose_margin,
        start_margin=None if args.start_margin is None or args.start_margin < 0 else args.start_margin,
        anneal_to_budget=args.anneal_to_budget,
    )


def _start_affinities(args: argparse.Namespace):
    """--teacher-affinities: the starting model's own affinities of --raw (self-distillation's
    targets), refused when the store says another model predicted them."""
    if args.teacher_affinities is None:
        return None
    if args.teacher is not None:
        raise ValueError("--teacher-affinities are the starting model's own affinities; with "
                         "--teacher the teacher predicts its targets itself: leave one out")
    if not args.self_distill or args.init in (None, "scratch"):
        raise ValueError("--teacher-affinities are used by self-distillation from a trained "
                         "--init; leave them out with --no-self-distill or --init scratch")
    from ..engine.predict import predicted_with
    from .engine_common import load_model_or_default, open_affinities

    affs, _ = open_affinities(args.teacher_affinities, args.teacher_affinities_dataset)
    if predicted_with(args.teacher_affinities, load_model_or_default(args.init)[0]) is False:
        raise ValueError(f"{args.teacher_affinities} holds affinities predicted with another model "
                         f"than --init {args.init}; give the affinities that model predicted for "
                         "--raw, or leave --teacher-affinities out to have it predict them")
    return [affs]


def _distill_kwargs(args: argparse.Namespace) -> dict:
    """finetune's distillation data from --teacher and --distill-data (share and flips: the config)."""
    start_affs = _start_affinities(args)
    if start_affs is not None:
        return {"teacher_affinities": start_affs}
    if args.teacher is None:
        if args.distill_data:
            raise ValueError("--distill-data needs --teacher (the model whose affinities are the targets)")
        return {}
    volumes = [_read(path, args.distill_dataset) for path in args.distill_data] or None
    return {"teacher": args.teacher, "distill_volumes": volumes}


def _raw_and_voxel_size(args: argparse.Namespace):
    """The raw volume (lazy) and its voxel size: --voxel-size, else the file's (None if unknown)."""
    from .engine_common import open_image

    volume = open_image(args.raw, args.raw_dataset, voxel_size=args.voxel_size)
    vs = volume.voxel_size
    return volume.data, (None if vs is None else [float(v) for v in vs])


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..training.finetune import finetune

    config = finetune_config(args)  # bad values are refused before anything is read
    raw, voxel_size = _raw_and_voxel_size(args)
    labels = np.asarray(_read(args.labels, args.labels_dataset))
    mask = _read(args.mask, args.mask_dataset)
    validation = None
    if args.val_raw or args.val_labels:
        if not (args.val_raw and args.val_labels):
            raise ValueError("give both --val-raw and --val-labels (or neither)")
        validation = (_read(args.val_raw, args.raw_dataset), np.asarray(_read(args.val_labels, args.labels_dataset)))
    init = None if args.init in (None, "scratch") else args.init
    offsets = [tuple(int(v) for v in o.split(",")) for o in args.offsets] if args.offsets else None
    data = {"raw": args.raw, "labels": args.labels, **({"mask": args.mask} if args.mask else {})}
    model, status = run_resumable(
        args, finetune,
        raw, labels, mask=None if mask is None else np.asarray(mask), init=init,
        preset=args.preset, config=config, out_dir=args.out,
        **({"offsets": offsets} if offsets else {}),
        validation=validation, name=args.name, data=data, voxel_size_nm=voxel_size,
        device=args.device, resume=not args.restart,
        **_distill_kwargs(args),
    )
    if status:
        return status
    history = getattr(model, "validation_history", [])
    if history:
        best = min(history, key=lambda h: h["voi"])
        before = getattr(model, "validation_before", None)
        was = f" (starting model: VOI {before['voi']:.3f}, ARAND {before['arand']:.3f})" if before else ""
        print(f"best validation at step {best['step']}: VOI split {best['voi_split']:.3f}, "
              f"merge {best['voi_merge']:.3f}, ARAND {best['arand']:.3f}{was}; "
              f"threshold {model.card.recommended_threshold:g}")
    kept = getattr(model, "training_info", {}).get("kept")
    if kept:
        print(f"kept {kept}")
    print(f"finetuned model '{model.card.name}': {args.out}/model (loss log {args.out}/loss.csv; "
          f"card: tokenunify info {args.out}/model)")
    return 0


def register(sub) -> None:
    d = DEFAULTS
    p = sub.add_parser(
        "finetune",
        help="finetune an affinity model on instance labels",
        description="Finetune EMmamba (from a pretrained model, a TokenUnify .pth, the bundled "
        "'default', or 'scratch') on raw + instance labels (0 = boundary/unlabelled). Writes "
        "DIR/checkpoints/last.pt (a rerun resumes), DIR/model (the best model by validation VOI, "
        "its card naming the start, the data, the region and the settings), DIR/loss.csv, "
        "DIR/loss.png and DIR/validation.csv. The initial model and the bundled models are never "
        "overwritten.",
    )
    p.add_argument("--raw", required=True, help="raw EM volume")
    p.add_argument("--labels", required=True, help="instance labels, same shape as --raw")
    p.add_argument("--mask", default=None, help="optional mask (non-zero = train here: the corrected region)")
    p.add_argument("--raw-dataset", default=None)
    p.add_argument("--labels-dataset", default=None)
    p.add_argument("--mask-dataset", default=None)
    p.add_argument("--voxel-size", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="voxel size of --raw in nm (default: the file's); recorded in the card")
    p.add_argument("--init", default="default",
                   help="model to start from: folder, .safetensors, TokenUnify .pth, 'default' or 'scratch'")
    p.add_argument("--out", required=True, help="output folder (must not be the --init model)")
    p.add_argument("--name", default=None,
                   help="the new model's name in its card (default: <start>-ft-<date>)")
    p.add_argument("--preset", default="tiny", help="network preset when --init scratch")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--patch", type=int, nargs=3, default=d.patch_shape, metavar=("Z", "Y", "X"),
                   help="training patch (default: the --init model's card patch, else 16 80 80)")
    p.add_argument("--offsets", nargs="+", default=None, metavar="DZ,DY,DX",
                   help="affinity offsets (default: nearest neighbours 1,0,0 0,1,0 0,0,1)")
    p.add_argument("--val-raw", default=None, help="validation raw volume")
    p.add_argument("--val-labels", default=None, help="validation labels")
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--holdout", type=float, default=d.holdout, metavar="SHARE",
                   help="without --val-raw: hold back this share of the corrected region (--mask, "
                   "else the volume) to validate on: it keeps the best checkpoint (e.g. 0.2)")
    p.add_argument("--threshold", type=float, nargs="+", default=None,
                   help="agglomeration threshold(s) tried at validation (default "
                   f"{' '.join(f'{t:g}' for t in d.thresholds)}, best kept)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--no-augment", dest="augment", action="store_false", default=d.augment)
    p.add_argument("--head-steps", type=int, default=d.head_steps, metavar="N",
                   help="train only the re-initialised output layer for the first N steps (LP-FT)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights with this "
                   f"decay (default {d.ema}; 0 turns it off)")
    p.add_argument("--teacher", default=None, metavar="MODEL",
                   help="distil from this model (e.g. 'unet'): its affinities of --distill-data "
                   "are soft targets for a share of the samples")
    p.add_argument("--distill-data", nargs="+", default=[], metavar="VOLUME",
                   help="volumes (unlabeled is fine) the teacher predicts once (default: --raw)")
    p.add_argument("--distill-dataset", default=None, help="dataset inside the --distill-data files")
    p.add_argument("--distill-p", type=float, default=d.distill_p,
                   help="share of samples with the teacher's targets (1: teacher only)")
    p.add_argument("--teacher-tta", default=d.teacher_tta, choices=["none", "yx", "zyx"],
                   help="the teacher's test-time flips")
    p.add_argument("--distill-margin", type=float, default=d.distill_margin,
                   help="only the teacher's affinities at least this far from 0.5 are targets "
                   "(e.g. 0.25: below 0.25 or above 0.75; where it is unsure the labels alone teach)")
    p.add_argument("--rechoose-threshold", dest="keep_start_threshold", action="store_false",
                   default=d.keep_start_threshold,
                   help="re-choose the threshold on the held-back corrections (by default they choose "
                   "the checkpoint at the starting model's threshold, which the new card keeps; "
                   "--threshold implies this)")
    p.add_argument("--rechoose-margin", type=float, default=d.rechoose_margin, metavar="SHARE",
                   help="with the starting model's threshold kept: take the best threshold of the "
                   "held-back corrections (or of all corrections when none can be held back) "
                   "instead when its VOI there is at least this share lower (-1: always keep the "
                   "starting model's; default %(default)s)")
    p.add_argument("--start-margin", type=float, default=d.start_margin, metavar="SHARE",
                   help="keep a finetuned checkpoint only when its VOI on the held-back corrections is "
                   "at least this share below the starting model's there; otherwise the starting "
                   "model is returned unchanged (-1: always keep the best checkpoint; default "
                   "%(default)s)")
    p.add_argument("--grow-boundaries", type=int, default=d.grow_boundaries, metavar="N",
                   help="give the training labels N one-voxel boundaries (label 0 where two ids "
                   "touch), for dense labels that have no boundary label (default %(default)s)")
    p.add_argument("--lsd-sigma", type=float, default=d.lsd_sigma, metavar="VOXELS",
                   help="also learn the labels' local shape descriptors in a Gaussian window of "
                   "this many voxels, as extra training-only outputs (0: off; default %(default)s)")
    p.add_argument("--lsd-weight", type=float, default=d.lsd_weight,
                   help="weight of the shape descriptors' loss beside the affinities' (default %(default)s)")
    p.add_argument("--permute-axes", nargs="?", const="on", default="auto", choices=["on", "off", "auto"],
                   help="read training patches with their axes in a random order (z seen as y or x): "
                   "more views of the same labels, for isotropic data only (e.g. FIB-SEM); auto "
                   "(the default): on when the voxel size (the file's or --voxel-size) is the same "
                   "along every axis to within 15 %%, off when it differs or is unknown")
    p.add_argument("--anneal-to-budget", action=argparse.BooleanOptionalAction, default=d.anneal_to_budget,
                   help="end the learning rate's cosine decay with --time-budget (at the pace of "
                   "the steps so far) instead of at --steps, which a budget of minutes never reaches")
    p.add_argument("--no-self-distill", dest="self_distill", action="store_false", default=d.self_distill,
                   help="do not distil from the starting model (by default a share --distill-p of "
                   "the samples, anywhere in --raw, has the start's own affinities as targets, so "
                   "a few corrections do not make it forget what it knew)")
    p.add_argument("--teacher-affinities", default=None, metavar="STORE",
                   help="the starting model's affinities of --raw (e.g. OUTPUT_affinities.zarr of "
                   "`tokenunify run` with --init's model), as self-distillation's targets; "
                   "default: --init predicts them (a crop around the corrections of a large volume)")
    p.add_argument("--teacher-affinities-dataset", default=None,
                   help="dataset inside --teacher-affinities when it is not a store of ours")
    add_runtime_options(p, seed=d.seed, time_budget_s=d.time_budget_s, checkpoint_every=d.checkpoint_every)
    p.set_defaults(func=run)

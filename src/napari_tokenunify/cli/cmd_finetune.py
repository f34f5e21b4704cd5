"""``tokenunify finetune --raw R --labels L --init MODEL --out DIR``: affinity finetuning."""

from __future__ import annotations

import argparse

from .training_common import add_runtime_options, run_resumable, runtime_kwargs


def _read(path: str | None, dataset: str | None):
    if path is None:
        return None
    from .engine_common import open_image

    return open_image(path, dataset).data


def _distill_kwargs(args: argparse.Namespace) -> dict:
    """finetune's distillation keywords from --teacher, --distill-data, --distill-p, --teacher-tta."""
    if args.teacher is None:
        if args.distill_data:
            raise ValueError("--distill-data needs --teacher (the model whose affinities are the targets)")
        return {}
    volumes = [_read(path, args.distill_dataset) for path in args.distill_data] or None
    return {"teacher": args.teacher, "distill_volumes": volumes, "distill_p": args.distill_p,
            "teacher_tta": args.teacher_tta}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..training.finetune import finetune

    raw = _read(args.raw, args.raw_dataset)
    labels = np.asarray(_read(args.labels, args.labels_dataset))
    mask = _read(args.mask, args.mask_dataset)
    validation = None
    if args.val_raw or args.val_labels:
        if not (args.val_raw and args.val_labels):
            raise ValueError("give both --val-raw and --val-labels (or neither)")
        validation = (_read(args.val_raw, args.raw_dataset), np.asarray(_read(args.val_labels, args.labels_dataset)))
    init = None if args.init in (None, "scratch") else args.init
    offsets = [tuple(int(v) for v in o.split(",")) for o in args.offsets] if args.offsets else None
    model, status = run_resumable(
        args, finetune,
        raw, labels, mask=None if mask is None else np.asarray(mask), init=init,
        preset=args.preset, steps=args.steps, out_dir=args.out,
        **({"offsets": offsets} if offsets else {}),
        patch_shape=args.patch, validation=validation, val_every=args.val_every,
        **({"threshold": args.threshold} if args.threshold else {}),
        batch_size=args.batch_size, lr=args.lr, augment=not args.no_augment, ema=args.ema,
        head_steps=args.head_steps,
        **_distill_kwargs(args),
        **runtime_kwargs(args),
    )
    if status:
        return status
    history = getattr(model, "validation_history", [])
    if history:
        best = min(history, key=lambda h: h["voi"])
        print(f"best validation at step {best['step']}: VOI split {best['voi_split']:.3f}, "
              f"merge {best['voi_merge']:.3f}, ARAND {best['arand']:.3f}")
    print(f"finetuned model: {args.out}/model (loss log {args.out}/loss.csv)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="finetune an affinity model on instance labels",
        description="Finetune EMmamba (from a pretrained model, a TokenUnify .pth, the bundled "
        "'default', or 'scratch') on raw + instance labels (0 = boundary/unlabelled). Writes "
        "DIR/checkpoints/last.pt (a rerun resumes), DIR/model (the best model by validation VOI), "
        "DIR/loss.csv, DIR/loss.png and DIR/validation.csv. The initial model is never overwritten.",
    )
    p.add_argument("--raw", required=True, help="raw EM volume")
    p.add_argument("--labels", required=True, help="instance labels, same shape as --raw")
    p.add_argument("--mask", default=None, help="optional mask (non-zero = train here)")
    p.add_argument("--raw-dataset", default=None)
    p.add_argument("--labels-dataset", default=None)
    p.add_argument("--mask-dataset", default=None)
    p.add_argument("--init", default="default",
                   help="model to start from: folder, .safetensors, TokenUnify .pth, 'default' or 'scratch'")
    p.add_argument("--out", required=True, help="output folder (must not be the --init model)")
    p.add_argument("--preset", default="tiny", help="network preset when --init scratch")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--patch", type=int, nargs=3, default=[16, 80, 80], metavar=("Z", "Y", "X"))
    p.add_argument("--offsets", nargs="+", default=None, metavar="DZ,DY,DX",
                   help="affinity offsets (default: nearest neighbours 1,0,0 0,1,0 0,0,1)")
    p.add_argument("--val-raw", default=None, help="validation raw volume")
    p.add_argument("--val-labels", default=None, help="validation labels")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--threshold", type=float, nargs="+", default=None,
                   help="agglomeration threshold(s) tried at validation (default 0.02 ... 0.9, best kept)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--head-steps", type=int, default=0, metavar="N",
                   help="train only the re-initialised output layer for the first N steps (LP-FT)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights (e.g. 0.999)")
    p.add_argument("--teacher", default=None, metavar="MODEL",
                   help="distil from this model (e.g. 'unet'): its affinities of --distill-data "
                   "are soft targets for a share of the samples")
    p.add_argument("--distill-data", nargs="+", default=[], metavar="VOLUME",
                   help="volumes (unlabeled is fine) the teacher predicts once (default: --raw)")
    p.add_argument("--distill-dataset", default=None, help="dataset inside the --distill-data files")
    p.add_argument("--distill-p", type=float, default=0.5,
                   help="share of samples with the teacher's targets (1: teacher only)")
    p.add_argument("--teacher-tta", default="yx", choices=["none", "yx", "zyx"],
                   help="the teacher's test-time flips")
    add_runtime_options(p)
    p.set_defaults(func=run)

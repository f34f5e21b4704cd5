"""``tokenunify pretrain DATA... --out DIR``: TokenUnify self-supervised pretraining (resumable)."""

from __future__ import annotations

import argparse

from .training_common import add_runtime_options, run_resumable, runtime_kwargs


def run(args: argparse.Namespace) -> int:
    from ..training.pretrain import pretrain
    from ..training.tokens import TokenGrid
    from .engine_common import open_image

    TokenGrid(tuple(args.patch), tuple(args.token))  # check shapes before reading anything
    volumes = [open_image(p, args.dataset).data for p in args.data]
    _, status = run_resumable(
        args, pretrain,
        volumes, preset=args.preset, steps=args.steps, out_dir=args.out,
        weights=args.mixture, patch_shape=args.patch, token_shape=args.token,
        mask_ratio=args.mask_ratio, fill=args.fill, batch_size=args.batch_size, lr=args.lr,
        **runtime_kwargs(args),
    )
    if status:
        return status
    print(f"pretrained model: {args.out}/model (loss log {args.out}/loss.csv, plot {args.out}/loss.png)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="self-supervised TokenUnify pretraining (random/next/next-all token mixture)",
        description="Pretrain EMmamba on unlabeled EM volumes with the TokenUnify objectives. "
        "Writes DIR/checkpoints/last.pt (a rerun resumes), DIR/model (loadable with --init of "
        "'tokenunify finetune'), DIR/loss.csv and DIR/loss.png.",
    )
    p.add_argument("data", nargs="+", help="unlabeled volumes (TIFF, Zarr, HDF5, N5, slice folders)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dataset", default=None, help="dataset inside HDF5/Zarr/N5 containers")
    p.add_argument("--preset", default="tiny", help="network preset (default: tiny)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--mixture", default="random=1,next=1,next_all=1",
                   help="objective weights, e.g. 'random=1,next=1,next_all=1' or 'random' (MAE-like)")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 80, 80], metavar=("Z", "Y", "X"))
    p.add_argument("--token", type=int, nargs=3, default=[4, 16, 16], metavar=("Z", "Y", "X"))
    p.add_argument("--mask-ratio", type=float, default=0.4)
    p.add_argument("--fill", choices=["noise", "zeros"], default="noise")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    add_runtime_options(p)
    p.set_defaults(func=run)

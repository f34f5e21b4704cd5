"""``tokenunify convert IN.pth OUT_DIR``: a TokenUnify checkpoint into our model folder
(``model.safetensors`` + ``card.json``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..model import load_model, save_model
    from ..model.files import CARD_NAME, WEIGHTS_NAME

    out = Path(args.out_dir)
    if (out / WEIGHTS_NAME).exists() and not args.overwrite:
        raise FileExistsError(f"{out / WEIGHTS_NAME} exists; pass --overwrite to replace it")
    model = load_model(args.checkpoint, device="cpu", preset=args.preset)
    card = model.card
    if args.voxel_size:
        card.voxel_size_nm = [float(v) for v in args.voxel_size]
    if args.name:
        card.name = args.name
    save_model(model, out, card)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"converted {args.checkpoint} -> {out}/{WEIGHTS_NAME} + {CARD_NAME} "
        f"(preset {card.preset}, {n / 1e6:.2f} M parameters, {card.out_channels} output channels)"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a TokenUnify .pth checkpoint into a model folder (safetensors + card.json)",
        description=(
            "Read a TokenUnify EMmamba checkpoint safely (weights only; bare state_dict or "
            "{'model': ...}; 'module.' prefixes removed), check it against the network and write "
            "OUT_DIR/model.safetensors and OUT_DIR/card.json."
        ),
    )
    p.add_argument("checkpoint", help="TokenUnify .pth/.pt checkpoint")
    p.add_argument("out_dir", help="folder to write the model into")
    p.add_argument(
        "--preset",
        default=None,
        help="check against this preset (tiny, base, 100m, 200m, 500m, 1b); default: infer it",
    )
    p.add_argument(
        "--voxel-size",
        nargs=3,
        type=float,
        metavar=("Z", "Y", "X"),
        help="voxel size in nm the model was trained at, recorded in the card",
    )
    p.add_argument("--name", default="", help="a name recorded in the card")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in OUT_DIR")
    p.set_defaults(func=run)

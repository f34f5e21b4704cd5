#!/usr/bin/env python
"""docs/boundaries.png: one test section, its ground-truth boundaries and the boundary maps
(1 - mean in-plane affinity) of the previous default (before self-training; a model folder made
from the git history), the bundled default, a GPU-trained EMmamba and the bundled U-Net.

    python scripts/figure_boundaries.py [--previous DIR] [--emmamba /tmp/gpu0/selected-scratch]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TOKENUNIFY_SHARED_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--previous", default="/tmp/pseudo/old-default", help="the default before self-training")
    p.add_argument("--emmamba", default="/tmp/gpu0/selected-scratch", help="an extra EMmamba model folder")
    p.add_argument("--z", type=int, default=25)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "boundaries.png")
    args = p.parse_args()
    with h5py.File(DATA / "medulla-labeled" / "test-image.h5", "r") as f:
        raw = f["stack"][...]
    with h5py.File(DATA / "medulla-labeled" / "test-gt.lzf.h5", "r") as f:
        gt = f["stack"][args.z]
    models = {}
    if Path(args.previous).exists():
        models["previous default (mixture arm)"] = args.previous
    models["bundled default (+ self-training)"] = "default"
    if Path(args.emmamba).exists():
        models["EMmamba scratch (GPU, seed 0)"] = args.emmamba
    models["bundled unet (residual U-Net, GPU)"] = "unet"
    fig, axes = plt.subplots(1, 2 + len(models), figsize=(4.2 * (2 + len(models)), 2.6))
    axes[0].imshow(raw[args.z], cmap="gray")
    axes[0].set_title(f"test volume, z = {args.z}")
    axes[1].imshow(gt == 0, cmap="gray")
    axes[1].set_title("ground truth: label 0")
    for ax, (title, src) in zip(axes[2:], models.items(), strict=False):
        affs = predict_affinities(raw, load_model(src, device="cpu"), device="cpu", dtype="float32")
        ax.imshow(1 - affs[1:, args.z].mean(0), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out, dpi=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

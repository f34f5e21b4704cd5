"""``tokenunify demo OUT``: the whole pipeline on the bundled sample, with its scores.

The sample (``--sample auto`` or ``medulla``, the default) is the real FIB-SEM crop shipped in the
package (:mod:`napari_tokenunify.samples`: gala's test volume, which the default model never
trained on); ``--sample synthetic`` is the synthetic EM volume from
:mod:`napari_tokenunify.synthetic`. Both have ground truth, so VOI/ARAND are printed.
The agglomeration threshold defaults to the one the model card recommends.
The model is the bundled ``default``; while none is bundled, a freshly built ``tiny`` model
(random weights) stands in with a clear warning, so the command still runs end to end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .engine_common import (
    TqdmProgress,
    cancel_on_ctrl_c,
    job_tta,
    load_model_or_default,
    print_metrics,
)

SAMPLE_SHAPE = (32, 128, 128)


def resolve_sample(which: str) -> str:
    """``auto`` → ``medulla``: the real sample shipped with the package is always there."""
    return "medulla" if which == "auto" else which


def load_sample(which: str):
    """(image, ground truth, voxel size nm) of the demo sample."""
    which = resolve_sample(which)
    if which == "medulla":
        from ..samples import medulla_sample

        sample = medulla_sample()
        return sample.image, sample.labels, sample.voxel_size
    from ..synthetic import make_synthetic_volume

    vol = make_synthetic_volume(SAMPLE_SHAPE, seed=0)
    return vol.image, vol.labels, vol.voxel_size


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate
    from ..engine.pipeline import segment
    from ..engine.predict import predict_affinities
    from ..io import write_volume
    from ..progress import Cancelled

    out = Path(args.output).expanduser()
    if not str(args.output).strip():
        raise ValueError("the output folder is empty; give a folder name such as demo-out")
    labels_path = out / "labels.zarr"
    if labels_path.exists() and not args.overwrite:
        raise FileExistsError(f"{labels_path} already exists; use --overwrite to run again")
    out.mkdir(parents=True, exist_ok=True)
    args.sample = resolve_sample(args.sample)
    image, gt, voxel = load_sample(args.sample)
    for name, data, kind in (("image.zarr", image, "image"), ("ground_truth.zarr", gt, "labels")):
        if not (out / name).exists() or args.overwrite:
            write_volume(out / name, data, kind=kind, voxel_size=voxel, overwrite=True)
    model, source = load_model_or_default(args.model)
    bar = TqdmProgress(not args.quiet)
    t0 = time.perf_counter()
    with cancel_on_ctrl_c() as token:
        try:
            affs = predict_affinities(image, model, out=out / "affinities.zarr", device=args.device,
                                      voxel_size=voxel, overwrite=args.overwrite, progress=bar,
                                      cancel=token, tta=job_tta(args, model))
            t_pred = time.perf_counter() - t0
            card = getattr(model, "card", None)
            threshold = args.threshold
            if threshold is None:
                threshold = card.recommended_threshold if card is not None else 0.5
            scoring = card.recommended_scoring if card is not None else "median"
            result = segment(affs, threshold=threshold, scoring=scoring, voxel_size=voxel,
                             cancel=token)
        except Cancelled:
            bar.close()
            print(f"cancelled: completed blocks are kept in {out / 'affinities.zarr'}; run "
                  "the same command again to resume", file=sys.stderr)
            return 130
    bar.close()
    write_volume(labels_path, result.labels, kind="labels", voxel_size=voxel, overwrite=True)
    metrics = evaluate(result.labels, gt, ignore_label=0)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in {"prediction": t_pred, **result.timings}.items())
    print(f"sample: {args.sample} {tuple(image.shape)} voxels at {voxel} nm")
    print(f"model: {source or 'tiny (random weights: no bundled model installed)'}")
    print(f"time: {timing}")
    print(f"result: {labels_path} ({int(result.labels.max())} segments at threshold {threshold:g})")
    print(f"also written: {out / 'image.zarr'}, {out / 'ground_truth.zarr'}, {out / 'affinities.zarr'}")
    print_metrics(metrics)
    print(f"view: napari {out / 'image.zarr'} {labels_path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the bundled sample and score it")
    p.add_argument("output", help="folder for the image, affinities, labels and ground truth")
    p.add_argument("--sample", choices=["auto", "synthetic", "medulla"], default="auto",
                   help="auto or medulla (default): the real FIB-SEM crop shipped with the "
                        "package; synthetic: the synthetic volume")
    p.add_argument("--model", default=None, help="model to use instead of the bundled default")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--threshold", type=float, default=None,
                   help="agglomeration threshold (default: the model card's recommendation)")
    p.add_argument("--tta", default=None, choices=["none", "yx", "zyx"],
                   help="average each tile over its mirror images (4 or 8 times slower; default: "
                        "the model card's recommendation)")
    p.add_argument("--overwrite", action="store_true", help="run again over an existing result")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

"""Scaling of `run` (tiled prediction into Zarr + blockwise segmentation into Zarr) with volume
size: 1x, 4x and 16x a base size, each in a fresh process; time and peak RSS.

Inputs are Zarr volumes made by mirroring one synthetic volume (so content is comparable), and
written before the timed process starts. Target: time linear in size, peak RSS flat (within 1.5x
from 1x to 16x).

    python benchmarks/bench_engine_scaling.py [--base 32 128 128] [--factors 1 4 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROW = {1: (1, 1, 1), 2: (1, 1, 2), 4: (1, 2, 2), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}


def make_input(path: Path, base, factor: int) -> tuple[int, ...]:
    import numpy as np

    from napari_tokenunify.io import write_volume
    from napari_tokenunify.synthetic import make_synthetic_volume

    image = make_synthetic_volume(tuple(base), seed=0).image
    reps = GROW[factor]
    big = np.pad(image, [(0, (r - 1) * s) for r, s in zip(reps, image.shape, strict=True)],
                 mode="symmetric")
    write_volume(path, big, kind="image", chunks=(32, 128, 128), overwrite=True)
    return big.shape


def run_one(image: str, workdir: str, threads: int, block) -> dict:
    """The timed part (in its own process): predict into Zarr, segment blockwise into Zarr."""
    import resource

    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from napari_tokenunify.engine.blockwise import segment_blockwise
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.io import open_volume
    from napari_tokenunify.model import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("tiny")
    vol = open_volume(image)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    affs = predict_affinities(vol.data, model, out=Path(workdir) / "affs.zarr", device="cpu",
                              dtype="uint8", overwrite=True)
    t_pred = time.perf_counter() - t0
    rss_pred = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    segment_blockwise(affs, Path(workdir) / "labels.zarr", block_shape=block,
                      context=tuple(max(2, b // 8) for b in block), overwrite=True)
    t_seg = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"shape": list(vol.shape), "voxels": int(vol.data.size), "prediction_s": round(t_pred, 1),
            "segmentation_s": round(t_seg, 1), "total_s": round(t_pred + t_seg, 1),
            "peak_rss_mb": round(peak), "rss_after_imports_mb": round(rss0),
            "peak_rss_prediction_mb": round(rss_pred),
            "n_segments": int(_group_attr(Path(workdir) / "labels.zarr", "n_ids"))}


def _group_attr(path: Path, key: str):
    import zarr

    return zarr.open_group(str(path), mode="r").attrs.get(key, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", type=int, nargs=3, default=[32, 128, 128])
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--block", type=int, nargs=3, default=None,
                   help="segmentation block (default: the base size, so 1x is one block)")
    p.add_argument("--one", nargs=2, metavar=("IMAGE", "WORKDIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.threads, tuple(args.block))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            work = Path(tmp) / f"x{factor}"
            work.mkdir()
            make_input(work / "image.zarr", args.base, factor)
            out = subprocess.run(
                [sys.executable, __file__, "--threads", str(args.threads), "--block",
                 *[str(b) for b in (args.block or args.base)], "--one",
                 str(work / "image.zarr"), str(work)],
                check=True, capture_output=True, text=True,
            )
            row = {"factor": factor, **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    first, last = rows[0], rows[-1]
    print(json.dumps({
        "time_per_voxel_ratio_last_vs_first": round(
            (last["total_s"] / last["voxels"]) / (first["total_s"] / first["voxels"]), 2),
        "peak_rss_ratio_last_vs_first": round(last["peak_rss_mb"] / first["peak_rss_mb"], 2),
    }))


if __name__ == "__main__":
    main()

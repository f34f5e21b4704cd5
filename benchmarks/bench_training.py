#!/usr/bin/env python
"""Training throughput: seconds per step of TokenUnify pretraining (mixture) and affinity
finetuning for a preset and patch shape, on a synthetic volume (no data needed).

  python benchmarks/bench_training.py --preset tiny --patch 16 80 80 --steps 20 --threads 1
"""

from __future__ import annotations  # noqa: I001 (napari_tokenunify before torch, on purpose)

import argparse
import tempfile
import time

import napari_tokenunify  # noqa: F401  (before torch: short OpenMP waits, see threads.py)
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 80, 80])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.training.finetune import finetune
    from napari_tokenunify.training.pretrain import pretrain

    vol = make_synthetic_volume((48, 128, 128), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (
            ("pretrain (mixture)", lambda s, d: pretrain([vol.image], preset=args.preset, steps=s, out_dir=d,
                                                         patch_shape=args.patch, device=args.device)),
            ("finetune (augmented)", lambda s, d: finetune(vol.image, vol.labels, preset=args.preset, steps=s,
                                                           patch_shape=args.patch, device=args.device)),
        ):
            run(2, f"{tmp}/warm-{name[:4]}")  # warm-up (allocations, first calls)
            t0 = time.perf_counter()
            run(args.steps, f"{tmp}/run-{name[:4]}")
            dt = time.perf_counter() - t0
            print(f"{name}: preset {args.preset}, patch {tuple(args.patch)}, {args.threads} thread(s): "
                  f"{dt / args.steps:.2f} s/step over {args.steps} steps (incl. model build and export)")


if __name__ == "__main__":
    main()

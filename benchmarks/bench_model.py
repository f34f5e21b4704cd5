"""Whole-model CPU inference throughput of EMMamba presets on one patch, and the share of the
machine's matmul peak it reaches (peak measured in the same run with a large float32 matmul).

FLOPs of the network are counted with ``torch.utils.flop_counter`` (convolutions and matrix
products; the selective scan's element-wise work is not included, so the share is a lower bound
of how busy the cores are).

    python benchmarks/bench_model.py [--presets tiny base] [--patch 16 160 160] [--repeats 3]
"""

from __future__ import annotations  # noqa: I001 (napari_tokenunify before torch, on purpose)

import argparse
import time

import napari_tokenunify  # noqa: F401  (before torch: short OpenMP waits, see threads.py)
import torch
from bench_scan import machine
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def train_step(model: torch.nn.Module, name: str, patch) -> None:
    import resource

    x = torch.rand(1, 1, *patch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t, c = time.perf_counter(), time.process_time()
    y = model(x)
    y.mean().backward()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  {name}: forward + backward on {tuple(patch)}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
        f"peak RSS {peak:.0f} MiB (before: {before:.0f} MiB)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "base"])
    p.add_argument("--patch", nargs=3, type=int, default=[16, 160, 160])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--train",
        action="store_true",
        help="instead: time one forward + backward of the first preset and report the peak RSS",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from napari_tokenunify.model import build_model

    print(f"machine: {machine()}")
    if args.train:
        train_step(build_model(args.presets[0]), args.presets[0], args.patch)
        return
    peak = matmul_peak()
    print(f"matmul peak (2048^3 float32): {peak / 1e9:.1f} GFLOP/s")
    x = torch.rand(1, 1, *args.patch)
    voxels = x.numel()
    for name in args.presets:
        torch.manual_seed(0)
        model = build_model(name).eval()
        n_par = sum(q.numel() for q in model.parameters())
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                model(x)
            flops = counter.get_total_flops()
            best = cpu = float("inf")
            for _ in range(args.repeats):
                t, c = time.perf_counter(), time.process_time()
                model(x)
                best = min(best, time.perf_counter() - t)
                cpu = min(cpu, time.process_time() - c)
        print(
            f"  {name:5s} {n_par / 1e6:6.2f} M params  patch {tuple(args.patch)}  {best:6.2f} s "
            f"({cpu:6.2f} s CPU)  "
            f"{voxels / best / 1e6:6.3f} Mvoxel/s  {flops / 1e9:7.1f} GFLOP  "
            f"{flops / best / 1e9:6.1f} GFLOP/s = {100 * flops / best / peak:4.1f}% of matmul peak",
            flush=True,
        )
    peak2 = matmul_peak()
    print(f"matmul peak again at the end: {peak2 / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()

"""Selective scan on CPU at the shapes of the ``base`` model's first stage.

Compares, in one run and on identical inputs: our chunked scan (``torch`` backend), the
sequential reference (``ref``), and the pure-PyTorch parallel scan of the ``mambapy`` package
(Blelloch scan, its ``selective_scan``). Accuracy is the max error relative to the largest
output, against the sequential scan in float64.

    python benchmarks/bench_scan.py [--tokens 51200] [--d-inner 64] [--d-state 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch
import torch.nn.functional as F


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}; {os.cpu_count()} logical CPUs; torch threads {torch.get_num_threads()}; load avg {load:.1f}"


def make_inputs(L: int, d: int, n: int, seed: int = 0):
    """Inputs with the statistics of a freshly initialised Mamba layer (dt in [1e-3, 0.1])."""
    g = torch.Generator().manual_seed(seed)
    dt0 = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    bias = dt0 + torch.log(-torch.expm1(-dt0))
    delta = F.softplus(0.3 * torch.randn(1, d, L, generator=g) + bias[None, :, None])
    return {
        "u": torch.randn(1, d, L, generator=g),
        "delta": delta,
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(1, n, L, generator=g),
        "C": torch.randn(1, n, L, generator=g),
        "D": torch.ones(d),
    }


def best_time(fn, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall-clock and best process CPU time (the latter is less disturbed by other jobs
    on a shared machine) over ``repeats`` runs after a warm-up."""
    out = fn()  # warm-up
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=51200)
    p.add_argument("--d-inner", type=int, default=64)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mambapy.mamba import MambaBlock

    from napari_tokenunify.model.scan import selective_scan_chunked, selective_scan_ref

    t = make_inputs(args.tokens, args.d_inner, args.d_state)
    print(f"machine: {machine()}")
    print(f"shape: batch 1, d_inner {args.d_inner}, d_state {args.d_state}, tokens {args.tokens}")
    with torch.no_grad():
        exact = selective_scan_ref(**{k: v.double() for k, v in t.items()}).float()
        scale = float(exact.abs().max())

        def ours():
            return selective_scan_chunked(**t)

        def ref():
            return selective_scan_ref(**t)

        def mambapy():
            # mambapy works in (B, L, ED) / (B, L, N) layouts
            y = MambaBlock.selective_scan(
                None,
                t["u"].transpose(1, 2),
                t["delta"].transpose(1, 2),
                t["A"],
                t["B"].transpose(1, 2),
                t["C"].transpose(1, 2),
                t["D"],
            )
            return y.transpose(1, 2)

        rows = []
        for name, fn, reps in (("chunked (ours)", ours, args.repeats), ("mambapy pscan", mambapy, args.repeats), ("sequential ref", ref, 1)):
            sec, cpu, y = best_time(fn, reps)
            err = float((y - exact).abs().max()) / scale
            rows.append((name, sec, cpu, err))
            print(f"  {name:16s} wall {sec * 1e3:9.1f} ms  cpu {cpu * 1e3:9.1f} ms  rel. error {err:.1e}", flush=True)
    ours, mpy, seq = rows
    print(
        f"speed-up of ours (wall / cpu time): {seq[1] / ours[1]:.1f}x / {seq[2] / ours[2]:.1f}x vs sequential, "
        f"{mpy[1] / ours[1]:.1f}x / {mpy[2] / ours[2]:.1f}x vs mambapy"
    )
    print(f"load avg at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

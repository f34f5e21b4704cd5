"""Selective scan on CPU at the shapes of the ``base`` model's first stage.

Compares, in one run and on identical inputs: our fused numba kernel (``numba`` backend), our
chunked scan (``torch`` backend), the sequential reference (``ref``), and the pure-PyTorch
parallel scan of the ``mambapy`` package (Blelloch scan, its ``selective_scan``). Accuracy is
the max error relative to the largest output, against the sequential scan in float64. The
numba kernels' compile (or disk-cache load) time is printed first.

``--backward`` also times forward + backward (all five inputs need gradients) of the two scans
of ours; ``--network`` times a whole ``tiny`` forward + backward and forward on a
1 x 1 x 16 x 80 x 80 patch with each of the two, alternating, and checks they agree.

    python benchmarks/bench_scan.py [--tokens 51200] [--d-inner 64] [--d-state 16] [--repeats 3]
        [--threads 2] [--backward] [--network]
"""

from __future__ import annotations  # noqa: I001 (napari_tokenunify before torch, on purpose)

import argparse
import math
import os
import platform
import time

import napari_tokenunify  # noqa: F401  (before torch: OpenMP waits passively, see threads.py)
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
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default: torch's); the numba kernel uses as many",
    )
    p.add_argument("--backward", action="store_true", help="also time forward + backward")
    p.add_argument("--network", action="store_true", help="also time a whole tiny network")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mambapy.mamba import MambaBlock

    from napari_tokenunify.model import scan_numba
    from napari_tokenunify.model.scan import (
        selective_scan_chunked,
        selective_scan_numba,
        selective_scan_ref,
    )

    print(f"machine: {machine()}")
    st = scan_numba.load()
    print(f"numba kernels: {st['reason']}")
    if not st["ok"]:
        raise SystemExit("the numba kernels are unavailable: nothing to compare")
    t = make_inputs(args.tokens, args.d_inner, args.d_state)
    print(f"shape: batch 1, d_inner {args.d_inner}, d_state {args.d_state}, tokens {args.tokens}")
    with torch.no_grad():
        exact = selective_scan_ref(**{k: v.double() for k, v in t.items()}).float()
        scale = float(exact.abs().max())

        def fused():
            return selective_scan_numba(**t)

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
        cases = (
            ("fused numba", fused, args.repeats),
            ("chunked torch", ours, args.repeats),
            ("mambapy pscan", mambapy, args.repeats),
            ("sequential ref", ref, 1),
        )
        for name, fn, reps in cases:
            sec, cpu, y = best_time(fn, reps)
            err = float((y - exact).abs().max()) / scale
            rows.append((name, sec, cpu, err))
            print(f"  {name:16s} wall {sec * 1e3:9.1f} ms  cpu {cpu * 1e3:9.1f} ms  rel. error {err:.1e}", flush=True)
    fus, ours, mpy, seq = rows
    for label, r in (("fused numba", fus), ("chunked torch", ours)):
        print(
            f"speed-up of {label} (wall / cpu time): {seq[1] / r[1]:.1f}x / {seq[2] / r[2]:.1f}x vs sequential, "
            f"{mpy[1] / r[1]:.1f}x / {mpy[2] / r[2]:.1f}x vs mambapy"
        )
    print(f"fused numba vs chunked torch: {ours[1] / fus[1]:.2f}x (wall) / {ours[2] / fus[2]:.2f}x (cpu)")
    if args.backward:
        backward(t, args.repeats, selective_scan_numba, selective_scan_chunked)
    if args.network:
        network(args.repeats)
    print(f"load avg at the end: {os.getloadavg()[0]:.1f}")


def backward(t, repeats, fused, chunked) -> None:
    """Forward + backward of the two scans of ours, alternating, and their gradients' agreement."""
    grads = {}

    def step(fn, name):
        leaves = {k: v.clone().requires_grad_(True) for k, v in t.items()}
        fn(**leaves).square().sum().backward()
        grads[name] = {k: v.grad for k, v in leaves.items()}

    print("forward + backward (gradients of all inputs):")
    times = {"fused numba": [], "chunked torch": []}
    for rep in range(repeats + 1):  # the first round is a warm-up
        order = (("fused numba", fused), ("chunked torch", chunked))
        for name, fn in order if rep % 2 else order[::-1]:
            w, c = time.perf_counter(), time.process_time()
            step(fn, name)
            if rep:
                times[name].append((time.perf_counter() - w, time.process_time() - c))
    for name, v in times.items():
        print(f"  {name:16s} wall {min(x for x, _ in v) * 1e3:9.1f} ms  cpu {min(x for _, x in v) * 1e3:9.1f} ms")
    f, c = times["fused numba"], times["chunked torch"]
    print(
        f"  fused numba vs chunked torch: {min(x for x, _ in c) / min(x for x, _ in f):.2f}x (wall) / "
        f"{min(x for _, x in c) / min(x for _, x in f):.2f}x (cpu)"
    )
    worst = max(
        float((grads["fused numba"][k] - g).abs().max() / g.abs().max())
        for k, g in grads["chunked torch"].items()
    )
    print(f"  largest gradient difference (relative to each gradient's largest entry): {worst:.1e}")


def network(repeats) -> None:
    """A whole ``tiny`` network, 1 x 1 x 16 x 80 x 80: forward + backward and forward alone with
    TOKENUNIFY_SCAN=torch and =numba, alternating in one run."""
    from napari_tokenunify.model import build_model

    torch.manual_seed(0)
    net = build_model("tiny")
    x = torch.rand(1, 1, 16, 80, 80)
    saved = os.environ.get("TOKENUNIFY_SCAN")

    def run(backend: str, train: bool):
        os.environ["TOKENUNIFY_SCAN"] = backend
        net.zero_grad()
        if not train:
            with torch.no_grad():
                return net(x), None
        y = net(x)
        y.square().mean().backward()
        return y.detach(), torch.cat([p.grad.flatten() for p in net.parameters()])

    try:
        out = {b: run(b, True) for b in ("torch", "numba")}
        err_y = float((out["numba"][0] - out["torch"][0]).abs().max() / out["torch"][0].abs().max())
        err_g = float((out["numba"][1] - out["torch"][1]).abs().max() / out["torch"][1].abs().max())
        print(f"network tiny, 1x1x16x80x80: numba vs torch scan: output {err_y:.1e}, all gradients {err_g:.1e} (relative)")
        for train in (True, False):
            times = {"torch": [], "numba": []}
            for rep in range(2 * repeats):
                for b in ("torch", "numba") if rep % 2 == 0 else ("numba", "torch"):
                    w, c = time.perf_counter(), time.process_time()
                    run(b, train)
                    times[b].append((time.perf_counter() - w, time.process_time() - c))
            what = "forward + backward" if train else "forward (no_grad)"
            best = {b: (min(x for x, _ in v), min(x for _, x in v)) for b, v in times.items()}
            for b, (w, c) in best.items():
                print(f"  {what:18s} scan {b:5s}: wall {w:.3f} s  cpu {c:.3f} s (best of {len(times[b])})")
            print(
                f"  {what:18s} numba vs torch: {best['torch'][0] / best['numba'][0]:.2f}x (wall) / "
                f"{best['torch'][1] / best['numba'][1]:.2f}x (cpu)"
            )
    finally:
        if saved is None:
            os.environ.pop("TOKENUNIFY_SCAN", None)
        else:
            os.environ["TOKENUNIFY_SCAN"] = saved


if __name__ == "__main__":
    main()

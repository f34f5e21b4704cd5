"""CUDA checks and timings of the pure-PyTorch path (run on a machine with a CUDA device).

1. the chunked scan equals the sequential reference in float64 (forward and all gradients);
2. the chunked scan at the ``base`` stage-1 shape (51 200 tokens, d_inner 64, d_state 16);
3. forward + backward and forward-only time of ``tiny`` (batch 8 of 16 × 80 × 80, the training
   setting of docs/results.md) and ``base`` (batch 2 of 16 × 160 × 160).

    python benchmarks/bench_gpu.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from bench_scan import make_inputs

    from napari_tokenunify.model import build_model
    from napari_tokenunify.model.scan import (
        mamba_kernels_status,
        selective_scan_chunked,
        selective_scan_ref,
    )

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs one")
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
    print("mamba-ssm kernels:", mamba_kernels_status())
    g = torch.Generator().manual_seed(0)
    for L in (37, 64, 200, 1000):
        d, n = 16, 16
        t = {"u": torch.randn(2, d, L, generator=g), "delta": torch.rand(2, d, L, generator=g) * 0.2,
             "A": -torch.rand(d, n, generator=g) * 8 - 0.5, "B": torch.randn(2, n, L, generator=g),
             "C": torch.randn(2, n, L, generator=g), "D": torch.randn(d, generator=g),
             "z": torch.randn(2, d, L, generator=g)}
        ours = {k: v.cuda().requires_grad_(True) for k, v in t.items()}
        ref = {k: v.double().cuda().requires_grad_(True) for k, v in t.items()}
        y1, y2 = selective_scan_chunked(**ours), selective_scan_ref(**ref)
        w = torch.randn_like(y2)
        (y1 * w.float()).sum().backward()
        (y2 * w).sum().backward()
        errs = [float((y1.detach().double() - y2.detach()).abs().max() / y2.detach().abs().max())]
        errs += [float((ours[k].grad.double() - ref[k].grad).abs().max() / ref[k].grad.abs().max()) for k in t]
        print(f"L={L}: max relative error, forward and gradients: {max(errs):.2e}")
    inputs = {k: v.cuda() for k, v in make_inputs(51200, 64, 16).items()}
    with torch.no_grad():
        sec = timed(lambda: selective_scan_chunked(**inputs))
    print(f"chunked scan, 51 200 tokens, d_inner 64, d_state 16: {sec * 1e3:.2f} ms")
    for preset, shape in (("tiny", (8, 1, 16, 80, 80)), ("base", (2, 1, 16, 160, 160))):
        model = build_model(preset, out_channels=3).cuda()
        x = torch.rand(*shape, device="cuda")
        train = timed(lambda m=model, x=x: m(x).mean().backward(), repeats=3)
        with torch.no_grad():
            infer = timed(lambda m=model, x=x: m(x), repeats=3)
        print(f"{preset} batch {tuple(shape)}: forward+backward {train:.3f} s, forward {infer:.3f} s "
              f"= {x.numel() / infer / 1e6:.1f} Mvoxel/s")


if __name__ == "__main__":
    main()

"""``tokenunify info``: versions, the compute device and whether mamba-ssm kernels are usable."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def info_lines() -> list[str]:
    import torch

    from .. import __version__
    from ..devices import available_devices, resolve_device

    lines = [
        f"napari-tokenunify {__version__}",
        f"python {platform.python_version()} ({platform.system()} {platform.machine()})",
    ]
    for dist in ("torch", "numpy", "dask", "zarr", "napari", "waterz", "mamba-ssm", "causal-conv1d"):
        lines.append(f"{dist}: {_version(dist)}")
    lines.append(f"devices found: {', '.join(available_devices())}")
    lines.append(f"device used (auto): {resolve_device('auto')}")
    lines.append(f"torch threads: {torch.get_num_threads()}")
    try:
        from ..model.scan import mamba_kernels_status

        ok, why = mamba_kernels_status()
        lines.append(f"mamba-ssm kernels: {'available' if ok else 'not available'} ({why})")
    except ImportError:
        lines.append("mamba-ssm kernels: not available (model package not built yet)")
    return lines


def run(args: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="print versions, compute device and mamba-ssm kernel status")
    p.set_defaults(func=run)

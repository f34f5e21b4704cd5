"""``tokenunify info``: versions, the compute device and whether mamba-ssm kernels are usable;
``tokenunify info MODEL``: that model's card (what it is, how it was trained, how it scored)."""

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


def model_lines(source: str) -> list[str]:
    """A model's card as readable lines, with the SHA-256 of its weights (what a finetuned card's
    ``started from`` names)."""
    from ..model.card import describe_card
    from ..model.files import WEIGHTS_NAME, read_card, weights_sha256

    card, path = read_card(source)
    lines = [f"model: {path}", *describe_card(card)]
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if weights.suffix == ".safetensors" and weights.is_file():
        from safetensors.torch import load_file

        lines.append(f"weights sha256: {weights_sha256(load_file(str(weights)))}")
    return lines


def run(args: argparse.Namespace) -> int:
    if getattr(args, "model", None):
        print("\n".join(model_lines(args.model)))
        return 0
    print("\n".join(info_lines()))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "info", help="print versions, compute device and mamba-ssm kernel status, or a model's card",
        description="Without MODEL: versions, the compute device and whether mamba-ssm kernels are "
        "usable. With MODEL (a model folder, a .safetensors file, a TokenUnify .pth or a bundled "
        "model's name such as 'default'): its card in readable form.",
    )
    p.add_argument("model", nargs="?", default=None, metavar="MODEL", help="a model to describe")
    p.set_defaults(func=run)

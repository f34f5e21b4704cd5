"""Choosing the compute device (no Qt, no napari)."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (``cpu`` is always last)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``/``"cuda"``/``"mps"``/``"cpu"`` (or ``"cuda:1"``) into a torch device.

    Raises ``ValueError`` with the devices that were found when the one asked for is absent.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    found = available_devices()
    if name == "auto":
        return torch.device(found[0])
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if base not in found:
        raise ValueError(
            f"device {device!r} is not available on this machine (found: {', '.join(found)}); "
            "use device='auto' or 'cpu'"
        )
    return torch.device(name)


def configure_cpu_threads(n: int | None = None) -> int:
    """Give torch the process's thread count (``threads.requested_threads``: ``--threads``,
    ``TOKENUNIFY_THREADS``, ``OMP_NUM_THREADS``, else the cores this process may use)."""
    from .threads import apply_threads

    return apply_threads(n)

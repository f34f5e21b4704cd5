"""What a format reader hands to :func:`open_volume`: a lazy array before it is made (z, y, x)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da

from .volume import VolumeError, VoxelSize


@dataclass
class RawArray:
    """A lazily opened stored array with its axes (when the file says) and spatial voxel size."""

    data: da.Array
    axes: str | None = None
    voxel_size: VoxelSize | None = None
    dataset: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def corrupt(path: Path, fmt: str, err: BaseException) -> VolumeError:
    """The error for a file that exists but its library cannot parse."""
    return VolumeError(
        f"{path}: could not be read as {fmt} ({type(err).__name__}: {err}). The file may be "
        "damaged, incomplete (an interrupted copy or write) or not really a "
        f"{fmt} file; copy or export it again."
    )


def pick_dataset(path: Path, candidates: dict[str, tuple[int, ...]], what: str) -> str:
    """The one 3D dataset among ``candidates`` (name -> shape), else an error listing them."""
    three = [n for n, s in candidates.items() if len(s) == 3]
    if len(three) == 1:
        return three[0]
    if not three and len(candidates) == 1:
        return next(iter(candidates))
    listing = ", ".join(f"{n!r} {s}" for n, s in candidates.items()) or "none"
    reason = "holds no 3D dataset" if not three else "holds several 3D datasets"
    raise VolumeError(
        f"{path}: this {what} {reason}; choose one with dataset=NAME (CLI: --dataset NAME). "
        f"Datasets: {listing}."
    )

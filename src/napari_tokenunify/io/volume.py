"""The :class:`Volume` returned by :func:`open_volume` and the :class:`VolumeError` for bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da


class VolumeError(ValueError):
    """Bad input volume: the message names the file, the problem and what to do about it."""


VoxelSize = tuple[float, float, float]


@dataclass
class Volume:
    """A lazily opened (z, y, x) volume.

    ``data`` is a dask array whose chunks follow the file's own storage chunks, so slicing reads
    only the chunks it touches. ``voxel_size`` is (z, y, x) in nanometres, or ``None`` when the
    file does not say and the caller gave none. ``metadata`` holds format details (``format``,
    ``axes`` of the stored array, ``kind`` = ``"image"``/``"labels"`` when known, ``levels`` for
    multiscale files, ...).
    """

    data: da.Array
    voxel_size: VoxelSize | None
    path: Path
    dataset: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def __repr__(self) -> str:
        ds = f", dataset={self.dataset!r}" if self.dataset else ""
        return (
            f"Volume({str(self.path)!r}{ds}, shape={self.shape}, dtype={self.dtype}, "
            f"voxel_size={self.voxel_size}, chunks={self.data.chunksize})"
        )


class VolumeNotFoundError(VolumeError, FileNotFoundError):
    """The path (or the named dataset inside it) does not exist."""

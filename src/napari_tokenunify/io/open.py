"""``open_volume``: any supported file or folder as a lazy (z, y, x) :class:`Volume`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .formats import detect_format
from .raw import RawArray
from .read_hdf5 import read_hdf5
from .read_n5 import read_n5
from .read_slices import read_slices
from .read_tiff import read_tiff
from .read_zarr import read_zarr
from .shaping import to_zyx
from .volume import Volume, VolumeError
from .voxel import check_voxel_size


def read_raw(path: Path, fmt: str, dataset: str | None, level: int) -> RawArray:
    """Dispatch to the reader for ``fmt`` (see :func:`detect_format`)."""
    if fmt != "zarr" and level != 0 and fmt not in ("tiff",):
        raise VolumeError(f"{path}: {fmt} files have one resolution level; use level=0.")
    if fmt in ("tiff", "slices", "image") and dataset is not None:
        raise VolumeError(f"{path}: {fmt} files have no named datasets; leave dataset unset.")
    if fmt == "tiff":
        return read_tiff(path, level)
    if fmt == "zarr":
        return read_zarr(path, dataset, level)
    if fmt == "hdf5":
        return read_hdf5(path, dataset)
    if fmt == "n5":
        return read_n5(path, dataset)
    if fmt == "image":
        raw = read_slices(path.parent, files=[path])
        raw.data = raw.data[0]
        raw.axes = raw.axes[1:] if raw.axes else None
        return raw
    return read_slices(path)


def open_volume(
    path: str | Path,
    *,
    dataset: str | None = None,
    level: int = 0,
    channel: int | None = None,
    voxel_size: float | Sequence[float] | None = None,
    allow_2d: bool = False,
) -> Volume:
    """Open an EM volume lazily as (z, y, x); no voxel is read until the data is sliced.

    ``dataset`` names the array inside an HDF5/Zarr/N5 container (auto-picked when it holds
    exactly one 3D dataset), ``level`` the OME-Zarr / pyramidal-TIFF resolution level,
    ``channel`` one channel of a multichannel/RGB file. ``voxel_size`` (z, y, x nm, or one number)
    overrides what the file says. ``allow_2d`` opens a 2D image as a one-slice volume.
    Raises :class:`VolumeError` (a ``ValueError``) for anything it cannot open as a volume.
    """
    path = Path(path).expanduser()
    override = check_voxel_size(voxel_size, str(path))
    fmt = detect_format(path)
    raw = read_raw(path, fmt, dataset, int(level))
    where = f"{path}" + (f" (dataset {raw.dataset!r})" if raw.dataset else "")
    data, stored_axes = to_zyx(
        raw.data, where=where, axes=raw.axes, channel=channel, allow_2d=allow_2d
    )
    metadata = dict(raw.metadata)
    metadata.setdefault("format", fmt)
    metadata["axes"] = stored_axes
    metadata["stored_shape"] = tuple(int(s) for s in raw.data.shape)
    metadata["voxel_size_from_file"] = raw.voxel_size
    if channel is not None:
        metadata["channel"] = channel
    return Volume(
        data=data,
        voxel_size=override or raw.voxel_size,
        path=path,
        dataset=raw.dataset,
        metadata=metadata,
    )

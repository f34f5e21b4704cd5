"""``write_volume``: stream a (z, y, x) (or (c, z, y, x) affinity) array to disk atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..progress import CancelToken, ProgressCallback, ProgressReporter
from .atomic import atomic_output
from .formats import base_name
from .shaping import check_dtype
from .volume import VolumeError
from .voxel import check_voxel_size
from .write_hdf5 import write_hdf5
from .write_n5 import write_n5
from .write_tiff import write_tiff
from .write_zarr import write_ome_zarr, write_zarr

KINDS = ("labels", "image", "affinities")
DEFAULT_CHUNKS = (64, 128, 128)
DEFAULT_DATASET = {"labels": "labels", "image": "raw", "affinities": "affinities"}
WRITE_FORMATS = ".zarr, .ome.zarr, .tif/.tiff, .h5/.hdf5, .n5"


def output_format(path: Path) -> str:
    """``ome-zarr``, ``zarr``, ``tiff``, ``hdf5`` or ``n5`` from the file name."""
    name = path.name.lower()
    for suffixes, fmt in (
        ((".ome.zarr",), "ome-zarr"),
        ((".zarr",), "zarr"),
        ((".tif", ".tiff"), "tiff"),
        ((".h5", ".hdf5"), "hdf5"),
        ((".n5",), "n5"),
    ):
        if name.endswith(suffixes):
            return fmt
    raise VolumeError(
        f"{path}: cannot tell the output format from the name; use one of {WRITE_FORMATS}."
    )


def _as_dask(array: Any, kind: str, where: str) -> da.Array:
    if hasattr(array, "data") and hasattr(array, "voxel_size") and hasattr(array, "path"):
        array = array.data  # a Volume
    arr = array if isinstance(array, da.Array) else da.asarray(array)
    check_dtype(arr.dtype, where)
    if 0 in arr.shape:
        raise VolumeError(f"{where}: the array to write is empty (shape {arr.shape}).")
    want = 4 if kind == "affinities" else 3
    if arr.ndim != want:
        layout = "(c, z, y, x)" if want == 4 else "(z, y, x)"
        raise VolumeError(
            f"{where}: {kind} must be a {want}D {layout} array; got shape {arr.shape}."
        )
    if kind == "labels":
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if arr.dtype.kind not in "iu":
            raise VolumeError(
                f"{where}: labels must be integers; got {arr.dtype}. Round/cast "
                "them (e.g. .astype('uint32')) or write with kind='image'."
            )
    return arr


def _chunks(shape: tuple[int, ...], chunks: Sequence[int] | None, where: str) -> tuple[int, ...]:
    if chunks is None:
        spatial = DEFAULT_CHUNKS
        chunks = (*shape[:-3], *spatial) if len(shape) == 4 else spatial
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != len(shape) or min(chunks) < 1:
        raise VolumeError(f"{where}: chunks {chunks} must be {len(shape)} positive sizes.")
    return tuple(min(c, s) for c, s in zip(chunks, shape, strict=False))


def write_volume(
    path: str | Path,
    array: Any,
    *,
    kind: str = "labels",
    voxel_size: float | Sequence[float] | None = None,
    overwrite: bool = False,
    chunks: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    dataset: str | None = None,
    levels: int | None = None,
    bigtiff: bool | None = None,
) -> Path:
    """Write ``array`` (numpy, dask or a Volume) chunk by chunk to ``path``; return ``path``.

    The format follows the suffix (.zarr, .ome.zarr, .tif/.tiff, .h5/.hdf5, .n5). Output goes to
    a hidden temporary sibling that is renamed into place only when complete; an existing
    ``path`` is refused unless ``overwrite``. ``progress`` gets one report per written chunk;
    ``cancel`` stops between chunks (raising ``Cancelled``, leaving nothing behind).
    ``dataset`` names the HDF5/N5 dataset (default by kind: labels, raw, affinities);
    ``levels`` fixes the OME-Zarr pyramid depth (default: down to ~64 px);
    ``bigtiff`` forces/forbids BigTIFF (default: when over ~2 GB).
    """
    path = Path(path).expanduser()
    where = str(path)
    if kind not in KINDS:
        raise VolumeError(f"{where}: kind must be one of {KINDS}; got {kind!r}.")
    if isinstance(voxel_size, type(None)) and hasattr(array, "voxel_size"):
        voxel_size = array.voxel_size
    fmt = output_format(path)
    arr = _as_dask(array, kind, where)
    voxel = check_voxel_size(voxel_size, where)
    chunk_shape = _chunks(tuple(arr.shape), chunks, where)
    if not isinstance(getattr(array, "data", array), da.Array):
        arr = arr.rechunk(chunk_shape)  # in-memory input: stream it storage chunk by chunk
    name = dataset or DEFAULT_DATASET[kind]

    def reporter_factory(total: int) -> ProgressReporter:
        return ProgressReporter(
            total, progress, message=f"writing {path.name}", rate_unit="voxels/s"
        )

    common: dict[str, Any] = {"reporter_factory": reporter_factory, "cancel": cancel}
    with atomic_output(path, overwrite=overwrite) as tmp:
        if fmt == "zarr":
            attrs: dict[str, Any] = {"tokenunify": {"kind": kind}}
            if voxel is not None:
                attrs["resolution"] = list(voxel)
            write_zarr(tmp, arr, chunks=chunk_shape, attributes=attrs, **common)
        elif fmt == "ome-zarr":
            write_ome_zarr(
                tmp,
                arr,
                kind=kind,
                voxel_size=voxel,
                chunks=chunk_shape,
                levels=levels,
                name=base_name(path),
                **common,
            )
        elif fmt == "tiff":
            write_tiff(
                tmp, arr, kind=kind, voxel_size=voxel, chunks=chunk_shape, bigtiff=bigtiff, **common
            )
        elif fmt == "hdf5":
            write_hdf5(
                tmp, arr, dataset=name, kind=kind, voxel_size=voxel, chunks=chunk_shape, **common
            )
        else:
            write_n5(
                tmp, arr, dataset=name, kind=kind, voxel_size=voxel, chunks=chunk_shape, **common
            )
    return path


def write_labels(path: str | Path, labels: Any, **kwargs: Any) -> Path:
    """``write_volume(path, labels, kind="labels", ...)``."""
    return write_volume(path, labels, kind="labels", **kwargs)

"""HDF5 datasets as lazy dask arrays (chunks follow the dataset's own chunks)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

from .chunking import dask_chunks
from .raw import RawArray, corrupt, pick_dataset
from .shaping import check_dtype
from .sources import H5Source
from .volume import VolumeError, VolumeNotFoundError
from .voxel import voxel_size_from_attrs


def _open_file(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise corrupt(path, "HDF5", err) from err


def list_hdf5_datasets(path: Path) -> dict[str, tuple[int, ...]]:
    """Every dataset in the file: name -> shape."""
    import h5py

    found: dict[str, tuple[int, ...]] = {}
    with _open_file(path) as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim >= 1:
                found[name] = tuple(obj.shape)

        f.visititems(visit)
    return found


def read_hdf5(path: Path, dataset: str | None) -> RawArray:
    """Open one dataset of an HDF5 file lazily; auto-picks the only 3D dataset."""
    import h5py

    with _open_file(path) as f:
        if dataset is None:
            dataset = pick_dataset(path, list_hdf5_datasets(path), "HDF5 file")
        dataset = dataset.strip("/")
        obj = f.get(dataset)
        if not isinstance(obj, h5py.Dataset):
            names = list(list_hdf5_datasets(path))
            raise VolumeNotFoundError(
                f"{path}: has no dataset {dataset!r}; choose one of {names} with dataset=NAME "
                "(CLI: --dataset NAME)."
            )
        shape, dtype, chunks = obj.shape, obj.dtype, obj.chunks
        attrs = dict(obj.attrs)
        voxel = voxel_size_from_attrs(attrs) or voxel_size_from_attrs(dict(f.attrs))
        meta = {"format": "hdf5", "compression": obj.compression, "storage_chunks": chunks}
        if isinstance(attrs.get("kind"), str | bytes):
            kind = attrs["kind"]
            meta["kind"] = kind.decode() if isinstance(kind, bytes) else kind
    where = f"{path} (dataset {dataset!r})"
    check_dtype(dtype, where)
    if 0 in shape:
        raise VolumeError(
            f"{where}: the dataset is empty (shape {shape}); there is nothing to open."
        )
    source = H5Source(path, dataset, shape, dtype, chunks)
    data = da.from_array(
        source,
        chunks=dask_chunks(shape, chunks, dtype.itemsize),
        name="h5-" + tokenize(str(path.resolve()), dataset, path.stat().st_mtime_ns),
        meta=np.empty((0,) * len(shape), dtype=dtype),
    )
    return RawArray(data=data, voxel_size=voxel, dataset=dataset, metadata=meta)

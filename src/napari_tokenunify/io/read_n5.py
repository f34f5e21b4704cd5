"""N5 datasets through tensorstore (zarr 3 dropped its N5 store); axes presented as (z, y, x)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

from .chunking import dask_chunks
from .raw import RawArray, corrupt, pick_dataset
from .shaping import check_dtype
from .sources import N5Source
from .volume import VolumeError, VolumeNotFoundError
from .voxel import voxel_size_from_attrs

N5_DTYPES = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
             "float32", "float64"}  # fmt: skip


def _attributes(folder: Path) -> dict:
    f = folder / "attributes.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as err:
        raise corrupt(f, "N5 attributes (JSON)", err) from err


def list_n5_datasets(root: Path) -> dict[str, tuple[int, ...]]:
    """Datasets under an N5 root: relative name -> shape (z, y, x order)."""
    found: dict[str, tuple[int, ...]] = {}
    for dirpath, dirnames, _ in os.walk(root):
        folder = Path(dirpath)
        attrs = _attributes(folder)
        if "dimensions" in attrs:
            name = folder.relative_to(root).as_posix()
            found["" if name == "." else name] = tuple(int(d) for d in attrs["dimensions"])[::-1]
            dirnames.clear()  # chunk folders below a dataset
    return found


def read_n5(path: Path, dataset: str | None) -> RawArray:
    """Open an N5 dataset (``path`` itself, or ``dataset`` under the N5 root) lazily."""
    folder = path
    if "dimensions" not in _attributes(path):
        if dataset is None:
            dataset = pick_dataset(path, list_n5_datasets(path), "N5 container")
        folder = path / dataset.strip("/")
        if "dimensions" not in _attributes(folder):
            raise VolumeNotFoundError(
                f"{path}: has no N5 dataset {dataset!r}; choose one of "
                f"{list(list_n5_datasets(path))} with dataset=NAME (CLI: --dataset NAME)."
            )
    attrs = _attributes(folder)
    dtype_name = str(attrs.get("dataType", ""))
    if dtype_name not in N5_DTYPES:
        check_dtype(np.dtype("O"), f"{folder} (N5 dataType {dtype_name!r})")
    shape = tuple(int(d) for d in attrs["dimensions"])[::-1]
    chunks = tuple(int(b) for b in attrs.get("blockSize", attrs["dimensions"]))[::-1]
    dtype = np.dtype(dtype_name)
    if 0 in shape:
        raise VolumeError(f"{folder}: the N5 dataset is empty (shape {shape}).")
    try:
        source = N5Source(folder, shape, dtype, chunks)
        source._handle()  # parse the metadata now, so a broken dataset fails here, not later
    except Exception as err:  # noqa: BLE001 - tensorstore raises ValueError with details
        raise corrupt(folder, "N5", err) from err
    data = da.from_array(
        source,
        chunks=dask_chunks(shape, chunks, dtype.itemsize),
        name="n5-"
        + tokenize(str(folder.resolve()), (folder / "attributes.json").stat().st_mtime_ns),
        meta=np.empty((0,) * len(shape), dtype=dtype),
    )
    meta = {"format": "n5", "storage_chunks": chunks, "compression": attrs.get("compression")}
    if isinstance(attrs.get("tokenunify"), dict) and "kind" in attrs["tokenunify"]:
        meta["kind"] = attrs["tokenunify"]["kind"]
    voxel = voxel_size_from_attrs(attrs, xyz_order=True)
    return RawArray(data=data, voxel_size=voxel, dataset=dataset, metadata=meta)

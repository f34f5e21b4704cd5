"""Picklable, lazily opened array adapters that dask reads from (HDF5, TIFF, N5).

Each adapter stores only the path and the dataset name; the file is opened on first access in
each process (and, for TIFF, each thread), so a dask graph over it can be sent to worker
processes (dask.distributed) and nothing is read until a chunk is asked for.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .raw import corrupt
from .volume import VolumeError


class LazySource:
    """Base: ``shape``, ``dtype``, ``ndim``, ``chunks`` known up front; data read on ``__getitem__``."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...] | None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in chunks) if chunks else None
        self._local = threading.local()
        self._lock = threading.Lock()

    def _open(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _handle(self) -> Any:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = self._open()
        return handle

    where = ""  # the file, for error messages
    fmt = "file"

    def _read(self, key):
        return np.asarray(self._handle()[key])

    def __getitem__(self, key):
        try:
            return self._read(key)
        except VolumeError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged chunk: say which file
            raise corrupt(Path(self.where), self.fmt, err) from err

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_local", None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._lock = threading.Lock()


_H5_FILES: dict[str, Any] = {}
_H5_LOCK = threading.Lock()


class H5Source(LazySource):
    """An HDF5 dataset; one read-only ``h5py.File`` per path and process, shared by threads
    (h5py serialises calls with its own lock, so sharing is safe)."""

    def __init__(self, path: Path, name: str, shape, dtype, chunks):
        super().__init__(shape, dtype, chunks)
        self.path = self.where = str(path)
        self.fmt = "HDF5"
        self.name = name
        st = Path(path).stat()
        # A file replaced since (e.g. saved over with overwrite=True) gets a new handle.
        self.stamp = (st.st_ino, st.st_mtime_ns)

    def _open(self):
        import h5py

        key = f"{self.path}|{self.stamp}"
        with _H5_LOCK:
            f = _H5_FILES.get(key)
            if f is None or not f.id.valid:
                f = _H5_FILES[key] = h5py.File(self.path, "r")
        return f[self.name]


def close_hdf5_files() -> None:
    """Close the HDF5 files that lazy volumes opened (e.g. before overwriting one of them)."""
    with _H5_LOCK:
        for f in _H5_FILES.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001 - already closed or invalid
                pass
        _H5_FILES.clear()


class TiffSource(LazySource):
    """One series/level of a TIFF through tifffile's zarr store (reads only the strips/tiles
    a slice touches); one store per thread, since a store shares one file position."""

    def __init__(self, path: Path, series: int, level: int, shape, dtype, chunks):
        super().__init__(shape, dtype, chunks)
        self.path = self.where = str(path)
        self.fmt = "TIFF"
        self.series = series
        self.level = level

    def _open(self):
        import tifffile
        import zarr

        store = tifffile.imread(self.path, aszarr=True, series=self.series, level=self.level)
        return zarr.open_array(store, mode="r")


class N5Source(LazySource):
    """An N5 dataset through tensorstore, transposed so axes are (z, y, x) like zarr's old
    N5Store and z5py (N5 lists dimensions fastest-first: x, y, z)."""

    def __init__(self, path: Path, shape, dtype, chunks):
        super().__init__(shape, dtype, chunks)
        self.path = self.where = str(path)
        self.fmt = "N5"

    def _open(self):
        with self._lock:
            return open_n5_tensorstore(self.path)

    def _read(self, key):
        return self._handle()[key].read().result()


def open_n5_tensorstore(path: str, **spec: Any):
    """Open an N5 dataset with tensorstore as a (z, y, x) view (``spec`` adds create options)."""
    import tensorstore as ts

    full = {"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}, **spec}
    return ts.open(full).result().T


class ZarrSource(LazySource):
    """A zarr array (picklable itself); wrapped only so a damaged chunk names the file."""

    def __init__(self, array: Any, where: str):
        super().__init__(array.shape, array.dtype, array.chunks)
        self.array = array
        self.where = where
        self.fmt = "Zarr"

    def _handle(self) -> Any:
        return self.array

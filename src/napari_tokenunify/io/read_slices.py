"""Folders of 2D PNG/TIFF/JPEG slices (natural sort order), one lazily read file per z-plane."""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

from .raw import RawArray, corrupt
from .volume import VolumeError

SLICE_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg"}


def natural_key(name: str) -> list:
    """Sort key that orders 'z2' before 'z10' (digits compared as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def slice_files(folder: Path) -> list[Path]:
    """The image files of a slice folder in natural order; all must share one format."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")
    ]
    kinds = {SLICE_SUFFIXES[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        raise VolumeError(
            f"{folder}: mixes slice formats ({', '.join(sorted(kinds))}); keep one format per folder."
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    import imageio.v3 as iio

    return iio.imread(path)


def _probe(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the file header, without decoding pixels."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                s = tif.series[0]
                return tuple(s.shape), np.dtype(s.dtype)
        import imageio.v3 as iio

        props = iio.improps(path)
        return tuple(props.shape), np.dtype(props.dtype)
    except Exception as err:  # noqa: BLE001 - pillow/tifffile raise many kinds
        raise corrupt(path, path.suffix.lstrip(".").upper() or "image", err) from err


class SliceSource:
    """(z, ...) array over a list of 2D image files; reads only the files a slice touches."""

    def __init__(self, files: list[Path], shape: tuple[int, ...], dtype: np.dtype):
        self.files = [str(f) for f in files]
        self.plane = tuple(shape)
        self.shape = (len(files), *shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def _plane(self, i: int) -> np.ndarray:
        path = Path(self.files[i])
        try:
            img = _read_image(path)
        except Exception as err:  # noqa: BLE001
            raise corrupt(path, "image slice", err) from err
        if img.shape != self.plane or img.dtype != self.dtype:
            raise VolumeError(
                f"{path}: slice has shape {img.shape} {img.dtype} but the first slice has "
                f"{self.plane} {self.dtype}; all slices of a folder must match."
            )
        return img

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        zkey, rest = key[0], key[1:]
        if isinstance(zkey, slice):
            planes = [self._plane(i)[rest] for i in range(*zkey.indices(self.shape[0]))]
            out_shape = np.empty(self.plane)[rest].shape if rest else self.plane
            return np.stack(planes) if planes else np.empty((0, *out_shape), self.dtype)
        return self._plane(int(zkey))[rest]


def read_slices(folder: Path, files: list[Path] | None = None) -> RawArray:
    """Stack a folder of 2D slices (or the given files) lazily along z."""
    files = files if files is not None else slice_files(folder)
    if not files:
        raise VolumeError(f"{folder}: holds no PNG, TIFF or JPEG slices to stack.")
    shape, dtype = _probe(files[0])
    source = SliceSource(files, shape, dtype)
    data = da.from_array(
        source,
        chunks=(1, *shape),
        name="slices-" + tokenize([str(f) for f in files], files[0].stat().st_mtime_ns),
        meta=np.empty((0,) * source.ndim, dtype=dtype),
    )
    axes = "z" + ("yxc" if len(shape) == 3 else "yx")
    meta = {
        "format": "slices",
        "n_files": len(files),
        "first": files[0].name,
        "last": files[-1].name,
    }
    return RawArray(data=data, axes=axes if len(shape) in (2, 3) else None, metadata=meta)

"""Multi-page and BigTIFF files through tifffile's zarr store: only touched strips/tiles are read."""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

from .chunking import dask_chunks
from .raw import RawArray, corrupt
from .shaping import check_dtype
from .sources import TiffSource
from .volume import VolumeError, VoxelSize
from .voxel import unit_to_nm


def _voxel_from_tiff(tif) -> VoxelSize | None:
    """Ours (JSON description ``voxel_size_nm``), then ImageJ, then OME-XML physical sizes."""
    shaped = tif.shaped_metadata
    if shaped and isinstance(shaped[0], dict) and "voxel_size_nm" in shaped[0]:
        z, y, x = (float(v) for v in shaped[0]["voxel_size_nm"])
        return (z, y, x)
    ij = tif.imagej_metadata
    if ij:
        factor = unit_to_nm(str(ij.get("unit", "")).replace("\\u00B5", "µ"))
        page = tif.pages.first
        tags = page.tags
        if factor and "XResolution" in tags and "YResolution" in tags:
            xr = tags["XResolution"].value
            yr = tags["YResolution"].value
            x = factor * xr[1] / xr[0]
            y = factor * yr[1] / yr[0]
            z = factor * float(ij.get("spacing", 1.0))
            return (z, y, x)
    if tif.is_ome and tif.ome_metadata:
        found = {}
        for axis in "ZYX":
            m = re.search(rf'PhysicalSize{axis}="([0-9.eE+-]+)"', tif.ome_metadata)
            u = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', tif.ome_metadata)
            if m:
                found[axis] = float(m.group(1)) * (unit_to_nm(u.group(1) if u else "µm") or 1e3)
        if "X" in found and "Y" in found:
            return (found.get("Z", found["Y"]), found["Y"], found["X"])
    return None


def read_tiff(path: Path, level: int) -> RawArray:
    """Open the first image series of a TIFF (``level`` picks a pyramid level) lazily."""
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise VolumeError(f"{path}: the TIFF holds no images.")
            series = tif.series[0]
            if not 0 <= level < len(series.levels):
                raise VolumeError(
                    f"{path}: has {len(series.levels)} resolution level(s) "
                    f"(0..{len(series.levels) - 1}); got level={level}."
                )
            lev = series.levels[level]
            shape, dtype, axes = tuple(lev.shape), np.dtype(lev.dtype), series.axes
            voxel = _voxel_from_tiff(tif)
            shaped = tif.shaped_metadata
            kind = shaped[0].get("kind") if shaped and isinstance(shaped[0], dict) else None
            meta = {"format": "tiff", "bigtiff": tif.is_bigtiff, "levels": len(series.levels)}
        check_dtype(dtype, str(path))
        if 0 in shape:
            raise VolumeError(f"{path}: the TIFF image is empty (shape {shape}).")
        store = tifffile.imread(path, aszarr=True, series=0, level=level)
        try:
            storage_chunks = tuple(zarr.open_array(store, mode="r").chunks)
        finally:
            store.close()
    except VolumeError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError) as err:
        raise corrupt(path, "TIFF", err) from err
    if kind:
        meta["kind"] = kind
    meta["storage_chunks"] = storage_chunks
    source = TiffSource(path, 0, level, shape, dtype, storage_chunks)
    data = da.from_array(
        source,
        chunks=dask_chunks(shape, storage_chunks, dtype.itemsize),
        name="tiff-" + tokenize(str(path.resolve()), level, path.stat().st_mtime_ns),
        meta=np.empty((0,) * len(shape), dtype=dtype),
    )
    return RawArray(data=data, axes=axes, voxel_size=voxel, metadata=meta)

"""Zarr v2/v3 arrays and OME-Zarr multiscale images (and their ``labels/``) as dask arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from .chunking import dask_chunks
from .raw import RawArray, corrupt, pick_dataset
from .shaping import check_dtype
from .sources import ZarrSource
from .volume import VolumeError, VolumeNotFoundError, VoxelSize
from .voxel import unit_to_nm, voxel_size_from_attrs


def _open_node(path: Path):
    import zarr

    try:
        return zarr.open(store=str(path), mode="r")
    except FileNotFoundError as err:
        raise VolumeNotFoundError(f"{path}: no zarr array or group found here ({err}).") from err
    except Exception as err:  # noqa: BLE001 - zarr raises many kinds on broken metadata
        raise corrupt(path, "Zarr", err) from err


def multiscales_of(attrs: dict[str, Any]) -> list[dict] | None:
    """OME-NGFF ``multiscales`` from v0.4 (top level) or v0.5 (under ``ome``) attributes."""
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def _ome_attr(attrs: dict[str, Any], key: str):
    return attrs.get(key, (attrs.get("ome") or {}).get(key))


def _scale(transforms: list[dict] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or []:
        if t.get("type") == "scale" and len(t.get("scale", ())) == ndim:
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=False)]
    return scale


def ome_axes(ms: dict, ndim: int) -> tuple[str, list[str | None]]:
    """Axis letters and units of one ``multiscales`` entry (defaults for pre-0.4 files)."""
    axes = ms.get("axes")
    if not axes:
        return ("tczyx"[-ndim:], [None] * ndim)
    if isinstance(axes[0], str):
        return ("".join(a[0].lower() for a in axes), [None] * ndim)
    letters = "".join(a["name"][0].lower() if a.get("type") != "channel" else "c" for a in axes)
    return letters, [a.get("unit") for a in axes]


def ome_voxel_size(ms: dict, level: int, ndim: int) -> VoxelSize | None:
    """(z, y, x) nm from a level's scale times the multiscale-wide scale, using axis units."""
    letters, units = ome_axes(ms, ndim)
    ds = ms["datasets"][level]
    scale = _scale(ds.get("coordinateTransformations"), ndim)
    glob = _scale(ms.get("coordinateTransformations"), ndim)
    scale = [a * b for a, b in zip(scale, glob, strict=False)]
    out: list[float] = []
    for letter in "zyx":
        if letter not in letters:
            continue
        i = letters.index(letter)
        factor = unit_to_nm(units[i])
        if factor is None and units[i] is not None:
            return None  # unknown unit: do not guess
        out.append(scale[i] * (factor or 1.0))
    if len(out) == 2:
        out.insert(0, out[0])
    if len(out) != 3 or (all(v == 1.0 for v in out) and all(u is None for u in units)):
        return None  # no units and unit scale: the file does not really say
    return (out[0], out[1], out[2])


def _dask_from_zarr(arr, where: str) -> da.Array:
    check_dtype(arr.dtype, where)
    chunks = dask_chunks(arr.shape, arr.chunks, arr.dtype.itemsize)
    return da.from_array(
        ZarrSource(arr, where),
        chunks=chunks,
        name="zarr-" + tokenize(where, str(arr.store_path), arr.metadata.to_dict()),
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
    )


def read_zarr(path: Path, dataset: str | None, level: int) -> RawArray:
    """Open a zarr array, an array inside a group (``dataset``) or an OME-Zarr level."""
    import zarr

    node = _open_node(path)
    name = dataset
    if (
        isinstance(node, zarr.Group)
        and dataset is None
        and multiscales_of(dict(node.attrs)) is None
    ):
        arrays = {
            k: tuple(v.shape) for k, v in node.members(max_depth=None) if isinstance(v, zarr.Array)
        }
        name = pick_dataset(path, arrays, "Zarr group")
    if isinstance(node, zarr.Group) and name is not None:
        try:
            node = node[name.strip("/")]
        except KeyError:
            members = [k for k, _ in node.members(max_depth=None)]
            raise VolumeNotFoundError(
                f"{path}: has no array or group {name!r}; choose one of {members} with "
                "dataset=NAME (CLI: --dataset NAME)."
            ) from None
    elif isinstance(node, zarr.Array) and dataset is not None:
        raise VolumeError(f"{path}: is a single zarr array; leave dataset unset (got {dataset!r}).")

    attrs = dict(node.attrs)
    meta: dict[str, Any] = {"format": "zarr", "zarr_format": node.metadata.zarr_format}
    kind = (attrs.get("tokenunify") or {}).get("kind")
    if isinstance(node, zarr.Array):
        if level != 0:
            raise VolumeError(f"{path}: has one resolution level only; use level=0 (got {level}).")
        if kind:
            meta["kind"] = kind
        meta["storage_chunks"] = tuple(node.chunks)
        return RawArray(
            _dask_from_zarr(node, str(path)), None, voxel_size_from_attrs(attrs), name, meta
        )

    multiscales = multiscales_of(attrs)
    if not multiscales:
        raise VolumeError(
            f"{path}: zarr group {name!r} is not an array or an OME-Zarr image; "
            "name an array inside it with dataset=NAME."
        )
    ms = multiscales[0]
    paths = [d["path"] for d in ms["datasets"]]
    if not 0 <= level < len(paths):
        raise VolumeError(
            f"{path}: has {len(paths)} resolution levels (0..{len(paths) - 1}); got level={level}."
        )
    arr = node[paths[level]]
    letters, _ = ome_axes(ms, arr.ndim)
    meta.update(
        format="ome-zarr",
        levels=[tuple(node[p].shape) for p in paths],
        level_paths=paths,
        level=level,
        storage_chunks=tuple(arr.chunks),
        kind=kind or ("labels" if _ome_attr(attrs, "image-label") is not None else "image"),
        labels=list(_ome_attr(dict(node["labels"].attrs), "labels") or [])
        if "labels" in node
        else [],
        level_voxel_sizes=[ome_voxel_size(ms, i, arr.ndim) for i in range(len(paths))],
    )
    return RawArray(
        _dask_from_zarr(arr, str(path)), letters, ome_voxel_size(ms, level, arr.ndim), name, meta
    )


def zarr_level_arrays(path: Path, dataset: str | None, paths: list[str]) -> list[da.Array]:
    """All levels of an OME-Zarr image as dask arrays (for napari multiscale layers)."""
    import zarr

    node = zarr.open_group(store=str(path), mode="r")
    if dataset:
        node = node[dataset.strip("/")]
    return [_dask_from_zarr(node[p], str(path)) for p in paths]

"""Zarr (one array) and OME-Zarr 0.4 (multiscale pyramid, ``image-label`` for labels) writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..progress import CancelToken, ProgressReporter
from .blocks import block_grid, write_blocks, write_grid
from .pyramid import downsample, pyramid_factors


def _compressor():
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE)


def create_zarr_array(
    store: Any, shape, dtype, chunks, attributes: dict | None = None, name: str | None = None
):
    """A zarr v2 array ('/'-nested chunk keys, zstd), readable by zarr-python 2 and 3,
    Fiji/N5-viewer, neuroglancer and OME-Zarr 0.4 tools."""
    import zarr

    return zarr.create_array(
        store=store,
        name=name,
        shape=tuple(int(s) for s in shape),
        chunks=tuple(int(c) for c in chunks),
        dtype=np.dtype(dtype),
        compressors=_compressor(),
        fill_value=0,
        zarr_format=2,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        attributes=attributes or {},
    )


def _store_into(z):
    def store(block, value):
        z[block] = value

    return store


def write_zarr(
    tmp: Path,
    array: da.Array,
    *,
    chunks: tuple[int, ...],
    attributes: dict,
    reporter_factory,
    cancel: CancelToken | None,
) -> None:
    z = create_zarr_array(str(tmp), array.shape, array.dtype, chunks, attributes)
    blocks = write_grid(array, chunks)
    write_blocks(
        array,
        _store_into(z),
        blocks,
        reporter=reporter_factory(len(blocks)),
        cancel=cancel,
        skip_zero=True,
    )


def write_ome_zarr(
    tmp: Path,
    array: da.Array,
    *,
    kind: str,
    voxel_size: tuple[float, float, float] | None,
    chunks: tuple[int, ...],
    levels: int | None,
    name: str,
    reporter_factory,
    cancel: CancelToken | None,
) -> list[tuple[int, ...]]:
    """Write all pyramid levels ("0", "1", ...); each level is read back from the one before."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscales_metadata

    factors = pyramid_factors(array.shape, voxel_size, levels)
    shapes = [tuple(array.shape)]
    for f in factors:
        lead = shapes[-1][:-3]
        shapes.append((*lead, *(-(-s // k) for s, k in zip(shapes[-1][-3:], f, strict=False))))
    # Level 0 follows the input's dask chunks; coarser levels are read back from storage.
    grids = [write_grid(array, chunks)] + [block_grid(s, chunks) for s in shapes[1:]]
    reporter: ProgressReporter = reporter_factory(sum(len(g) for g in grids))

    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    level_data = array
    scale = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    datasets = []
    for i, (shape, grid) in enumerate(zip(shapes, grids, strict=False)):
        if i > 0:
            previous = da.from_zarr(root[str(i - 1)])
            level_data = downsample(previous, factors[i - 1], kind)
            scale = [s * f for s, f in zip(scale, factors[i - 1], strict=False)]
        level_chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=False))
        z = create_zarr_array(root.store, shape, array.dtype, level_chunks, name=str(i))
        write_blocks(
            level_data, _store_into(z), grid, reporter=reporter, cancel=cancel, skip_zero=True
        )
        lead_scale = [1.0] * (array.ndim - 3)
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [{"type": "scale", "scale": lead_scale + scale}],
            }
        )
    space = [
        {"name": a, "type": "space", **({"unit": "nanometer"} if voxel_size else {})} for a in "zyx"
    ]
    axes = ([{"name": "c", "type": "channel"}] if array.ndim == 4 else []) + space
    fmt = FormatV04()
    write_multiscales_metadata(root, datasets, fmt=fmt, axes=axes, name=name)
    if kind == "labels":
        # The root itself is the label image (no parent image to nest it under labels/).
        root.attrs["image-label"] = {"version": fmt.version, "source": {"image": "../../"}}
    root.attrs["tokenunify"] = {"kind": kind}
    return shapes

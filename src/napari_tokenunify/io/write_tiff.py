"""TIFF writer: one page per z-plane, zlib-compressed strips; BigTIFF when large or asked."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from ..progress import CancelToken, check_cancel
from .blocks import block_grid, write_blocks

BIGTIFF_BYTES = 2**31 - 2**26  # classic TIFF offsets are 32-bit; keep a margin for metadata
SLAB_BYTES = 128 * 2**20


def write_tiff(
    tmp: Path,
    array: da.Array,
    *,
    kind: str,
    voxel_size: tuple[float, float, float] | None,
    chunks: tuple[int, ...],
    bigtiff: bool | None,
    reporter_factory,
    cancel: CancelToken | None,
) -> None:
    """Stream z-slabs of the volume into a multi-page TIFF (pages written in order)."""
    import tifffile

    shape = tuple(int(s) for s in array.shape)
    planes = int(np.prod(shape[:-2]))
    plane_bytes = shape[-1] * shape[-2] * array.dtype.itemsize
    flat = array.reshape((planes, shape[-2], shape[-1])) if array.ndim != 3 else array
    # Slabs of whole planes, as deep as the input's dask chunks (each computed once) unless
    # that is too much memory.
    zchunk = max(flat.chunks[0])
    if zchunk * plane_bytes <= 4 * SLAB_BYTES:
        depth = zchunk
    else:
        depth = max(1, SLAB_BYTES // max(plane_bytes, 1))
    slabs = block_grid(flat.shape, (depth, shape[-2], shape[-1]))
    reporter = reporter_factory(len(slabs))
    if bigtiff is None:
        bigtiff = array.nbytes > BIGTIFF_BYTES

    def pages():
        out: list[np.ndarray] = []
        for slab in slabs:
            out.clear()
            write_blocks(
                flat, lambda _b, v: out.append(v), [slab], reporter=reporter, cancel=cancel
            )
            for page in out[0]:
                check_cancel(cancel)
                yield page

    axes = "CZYX" if array.ndim == 4 else "ZYX"
    metadata = {"axes": axes, "kind": kind}
    extra = {}
    if voxel_size is not None:
        metadata["voxel_size_nm"] = [float(v) for v in voxel_size]
        # Standard resolution tags in pixels per micrometre, for Fiji and other viewers.
        extra = {
            "resolution": (1e3 / voxel_size[2], 1e3 / voxel_size[1]),
            "resolutionunit": "MICROMETER",
        }
    with tifffile.TiffWriter(tmp, bigtiff=bool(bigtiff)) as tw:
        tw.write(
            pages(),
            shape=shape,
            dtype=array.dtype,
            compression="zlib",
            rowsperstrip=64,
            metadata=metadata,
            photometric="minisblack",
            **extra,
        )

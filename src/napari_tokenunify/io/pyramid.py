"""Multiscale pyramids: per-level factors (anisotropy-aware) and lazy downsampling."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np


def pyramid_factors(
    shape: Sequence[int],
    voxel_size: Sequence[float] | None,
    levels: int | None = None,
    min_size: int = 64,
) -> list[tuple[int, int, int]]:
    """Downsampling factors (z, y, x) from each level to the next.

    y and x halve every level; z halves only once the in-plane voxel size has caught up with it
    (40×4×4 nm data becomes 40×8×8, 40×16×16, 40×32×32, then 80×64×64). With ``levels=None``
    levels are added until y or x would fall below ``min_size``.
    """
    z, y, x = (int(s) for s in shape[-3:])
    vz, vy, vx = (float(v) for v in (voxel_size or (1.0, 1.0, 1.0)))
    out: list[tuple[int, int, int]] = []
    while True:
        if levels is not None and len(out) >= levels - 1:
            break
        if levels is None and (min(y, x) // 2 < min_size or len(out) >= 9):
            break
        if min(y, x) < 2:
            break
        fz = 2 if vz < 2 * min(vy, vx) * 0.99 + 1e-9 and z >= 2 else 1
        out.append((fz, 2, 2))
        z, y, x = -(-z // fz), -(-y // 2), -(-x // 2)
        vz, vy, vx = vz * fz, vy * 2, vx * 2
    return out


def downsample(array: da.Array, factors: Sequence[int], kind: str) -> da.Array:
    """Downsample the last three axes: nearest (top-left voxel) for labels, mean for images."""
    fz, fy, fx = factors
    lead = (slice(None),) * (array.ndim - 3)
    if kind == "labels":
        return array[(*lead, slice(None, None, fz), slice(None, None, fy), slice(None, None, fx))]
    axes = {array.ndim - 3: fz, array.ndim - 2: fy, array.ndim - 1: fx}
    # Pad to a multiple of the factor by edge replication so no voxel is lost.
    pad = [(0, 0)] * (array.ndim - 3) + [
        (0, (-s) % f) for s, f in zip(array.shape[-3:], factors, strict=False)
    ]
    if any(p[1] for p in pad):
        array = da.pad(array, pad, mode="edge")
    mean = da.coarsen(np.mean, array, axes, trim_excess=False)
    if np.issubdtype(array.dtype, np.integer):
        mean = da.round(mean)
    return mean.astype(array.dtype)

"""Multiscale pyramids: per-level factors (anisotropy-aware), lazy downsampling for writing, and
lazy display pyramids for napari (large volumes: see ``is_large``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


# ---- lazy display pyramids (napari multiscale layers of large volumes) -----------------------
#: a volume is "large" (shown as a lazy multiscale pyramid) above this many bytes ...
LARGE_BYTES = 2 * 2**30
#: ... or when any of its last three axes is longer than this (a 20 000 px section is 400 MB
#: per plane at full resolution; napari would read and upload all of it for every step)
LARGE_AXIS = 4096
#: the coarsest level of a display pyramid keeps y and x at least this long
DISPLAY_MIN_SIZE = 256


def is_large(shape: Sequence[int], dtype: Any) -> bool:
    """Whether a volume of ``shape``/``dtype`` is shown as a lazy pyramid (see ``LARGE_*``)."""
    n_bytes = int(np.prod([int(s) for s in shape], dtype=np.float64)) * np.dtype(dtype).itemsize
    return n_bytes > LARGE_BYTES or any(int(s) > LARGE_AXIS for s in tuple(shape)[-3:])


def indexed_shape(shape: Sequence[int], key: Any) -> tuple[int, ...]:
    """The shape of ``array[key]`` for an array of ``shape``, without allocating it (indexing a
    zero-stride broadcast view costs nothing; only a fancy index allocates, its result only)."""
    view = np.broadcast_to(np.empty((), dtype=bool), tuple(int(s) for s in shape))
    return tuple(view[key].shape)


def normalize_key(key: Any, shape: Sequence[int]) -> list[int | slice] | None:
    """``key`` as one int or positive-step slice per axis (``Ellipsis`` expanded, negative ints
    wrapped), or ``None`` for keys that are not (fancy indexing, ``None``, negative steps)."""
    shape = tuple(int(s) for s in shape)
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        return None
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    if len(key) > len(shape):
        return None
    key = key + (slice(None),) * (len(shape) - len(key))
    out: list[int | slice] = []
    for k, s in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(s)
            if step < 1:
                return None
            out.append(slice(start, max(start, stop), step))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            k = int(k) + (s if int(k) < 0 else 0)
            if not 0 <= k < s:
                raise IndexError(f"index {k} is out of bounds for an axis of size {s}")
            out.append(k)
        else:
            return None
    return out


def level_steps(
    shape: Sequence[int], voxel_size: Sequence[float] | None = None,
    min_size: int = DISPLAY_MIN_SIZE,
) -> list[tuple[int, int, int]]:
    """Cumulative (z, y, x) steps of each coarser level of a display pyramid of ``shape``
    (anisotropy-aware, as :func:`pyramid_factors`), coarsest y or x at least ``min_size``."""
    steps, cur = [], (1, 1, 1)
    for f in pyramid_factors(shape, voxel_size, min_size=min_size):
        cur = tuple(c * k for c, k in zip(cur, f, strict=True))
        steps.append(cur)
    return steps


class StridedLevel:
    """Every ``step``-th voxel of a lazy array (numpy, dask, zarr, h5py): one nearest-neighbour
    level of a display pyramid. Nothing is read until it is indexed, and then only the voxels
    of that level in the indexed box (napari asks for the visible tile)."""

    def __init__(self, base: Any, step: Sequence[int]) -> None:
        step = tuple(int(s) for s in step)
        self.base = base
        self.step = (1,) * (base.ndim - len(step)) + step
        self.shape = tuple(-(-int(s) // k) for s, k in zip(base.shape, self.step, strict=True))
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.float64))

    def base_key(self, key: Any) -> tuple[int | slice, ...]:
        """``key`` (on this level) as a key on the base array."""
        norm = normalize_key(key, self.shape)
        if norm is None:
            raise IndexError(f"a pyramid level takes ints and slices, got {key!r}")
        out: list[int | slice] = []
        for k, st in zip(norm, self.step, strict=True):
            if isinstance(k, slice):
                out.append(slice(k.start * st, k.stop * st, k.step * st))
            else:
                out.append(k * st)
        return tuple(out)

    def __getitem__(self, key: Any) -> np.ndarray:
        part = self.base[self.base_key(key)]
        return np.asarray(part.compute() if hasattr(part, "compute") else part)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self) -> int:
        return self.shape[0]


#: y, x size of the dask chunks of a display level (one task reads a whole visible tile)
DISPLAY_CHUNK = 2048


def as_dask(source: Any, chunks: Sequence[int] | None = None) -> da.Array:
    """A dask array over ``source`` (``shape``, ``dtype``, ``__getitem__`` giving numpy), for a
    napari multiscale level: napari slices a level lazily (all sections of the visible tile)
    before it reads one section, so a level must not read on indexing. Default chunks: one
    section (z), up to ``DISPLAY_CHUNK`` in y and x, whole leading (channel) axes."""
    import uuid

    shape = tuple(int(s) for s in source.shape)
    if chunks is None:
        chunks = (*shape[:-3], 1, *(min(s, DISPLAY_CHUNK) for s in shape[-2:]))
    return da.from_array(
        source, chunks=tuple(int(c) for c in chunks), name=f"level-{uuid.uuid4().hex}",
        meta=np.empty((0,) * len(shape), dtype=source.dtype), fancy=False,
    )


def lazy_pyramid(
    array: Any, voxel_size: Sequence[float] | None = None, reader: Any = None,
    min_size: int = DISPLAY_MIN_SIZE,
) -> list[Any]:
    """``array`` (level 0, unchanged) and nearest-neighbour levels of it (every step-th voxel of
    the last three axes; :class:`StridedLevel` in dask), for a napari multiscale layer: nothing
    is read until napari asks for a visible tile. ``reader`` (an array of the same shape, e.g.
    the zarr array behind a dask one) serves the coarse levels' reads: a coarse section touches
    every chunk of a section of the volume, and reading them through dask adds ~1 ms each."""
    base = array if reader is None else reader
    return [array] + [as_dask(StridedLevel(base, s))
                      for s in level_steps(array.shape[-3:], voxel_size, min_size)]

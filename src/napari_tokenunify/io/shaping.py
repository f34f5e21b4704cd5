"""Turn a stored array of any layout into the (z, y, x) volume the rest of the package expects.

Checks, in order: empty, dtype, singleton axes, channel/RGB axes (picked with ``channel=``),
2D images (one slice when ``allow_2d``), and anything that is still not 3D. Every error names the
file and says what to do.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from .volume import VolumeError

SPATIAL = "zyx"


def check_dtype(dtype: np.dtype, where: str) -> None:
    """Refuse dtypes that are not numbers (strings, objects, structs, complex)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise VolumeError(
            f"{where}: data type {dtype} is not numeric; EM images and labels must be integer, "
            "float or boolean arrays. Convert the data (e.g. to uint8 or uint32) and save it again."
        )


def _guess_axes(shape: tuple[int, ...]) -> str:
    """Axis letters for an array without axis metadata: 'c' for a likely channel axis."""
    nd = len(shape)
    if nd == 2:
        return "yx"
    if nd == 3:
        # (y, x, 3|4) is an RGB(A) image; an EM stack never has 3 or 4 columns.
        if shape[-1] in (3, 4) and min(shape[:2]) >= 16:
            return "yxc"
        return "zyx"
    if nd == 4:
        if shape[-1] in (1, 2, 3, 4) and shape[-1] < shape[0]:
            return "zyxc"
        return "czyx"
    return "?" * (nd - 3) + "zyx"


def normalize_axes(axes: str | None, shape: tuple[int, ...]) -> str:
    """Lower-case one-letter axes; tifffile's 'S' (samples) and 'I'/'Q' (pages) are mapped."""
    if not axes or len(axes) != len(shape):
        return _guess_axes(shape)
    table = {"s": "c", "i": "z", "q": "z", "e": "c"}
    out = "".join(table.get(a, a) for a in axes.lower())
    # Two 'z' (e.g. tifffile 'QZYX' pages of stacks) or unknown letters: fall back to position.
    if out.count("z") > 1 or out.count("y") != 1 or out.count("x") != 1:
        return _guess_axes(shape)
    return out


def to_zyx(
    array: da.Array,
    *,
    where: str,
    axes: str | None = None,
    channel: int | None = None,
    allow_2d: bool = False,
) -> tuple[da.Array, str]:
    """Return ``array`` as (z, y, x) plus the axes it had; raise :class:`VolumeError` if it can't."""
    shape = tuple(int(s) for s in array.shape)
    if array.ndim == 0 or 0 in shape:
        raise VolumeError(f"{where}: the array is empty (shape {shape}); there is nothing to open.")
    check_dtype(array.dtype, where)
    axes = normalize_axes(axes, shape)
    stored_axes = axes

    # Drop non-spatial axes of size 1 (OME-Zarr t=1, c=1; single-channel TIFF samples).
    keep = [i for i, a in enumerate(axes) if a in SPATIAL or shape[i] > 1]
    if len(keep) < array.ndim and len(keep) >= 2:
        drop = tuple(i for i in range(array.ndim) if i not in keep)
        array = array.squeeze(axis=drop)
        axes = "".join(axes[i] for i in keep)
        shape = tuple(shape[i] for i in keep)

    extra = [i for i, a in enumerate(axes) if a not in SPATIAL]
    if len(extra) > 1:
        raise VolumeError(
            f"{where}: array of shape {shape} has {len(extra)} non-spatial axes (axes "
            f"{axes!r}); only one channel axis can be chosen. Save one (z, y, x) volume per file."
        )
    if extra:
        ax = extra[0]
        n = shape[ax]
        kind = "RGB(A)" if n in (3, 4) and ax == len(shape) - 1 else "channel"
        if channel is None:
            raise VolumeError(
                f"{where}: array of shape {shape} has a {kind} axis at position {ax} "
                f"(size {n}, axes {axes!r}); pass channel=0..{n - 1} to pick one channel "
                "(CLI: --channel)."
            )
        if not -n <= channel < n:
            raise VolumeError(
                f"{where}: channel={channel} is out of range; the channel axis at position {ax} "
                f"has {n} channels (0..{n - 1})."
            )
        index = [slice(None)] * len(shape)
        index[ax] = channel
        array = array[tuple(index)]
        axes = axes[:ax] + axes[ax + 1 :]
        shape = tuple(int(s) for s in array.shape)
    elif channel not in (None, 0):
        raise VolumeError(
            f"{where}: channel={channel} was given but the array (shape {shape}, axes {axes!r}) "
            "has no channel axis; leave channel unset."
        )

    if array.ndim == 2:
        if not allow_2d:
            raise VolumeError(
                f"{where}: this is a 2D image (shape {shape}) but a 3D volume is needed. Pass "
                "allow_2d=True (CLI: --allow-2d) to treat it as a volume of one slice, or open a "
                "folder of slices / a multi-page file instead."
            )
        array = array[None]
    if array.ndim != 3:
        raise VolumeError(
            f"{where}: expected a 3D (z, y, x) volume but the array has shape {shape} "
            f"(axes {axes!r})."
        )
    return array, stored_axes

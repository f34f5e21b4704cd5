"""Resampling between the data's voxel grid and the model's (prediction at the model's voxel size).

When the data's voxel size differs from the one on the model card by more than
:data:`RESCALE_TOLERANCE` on any axis, prediction reads the input through a lazy
:class:`ResampledView` on the model's grid, predicts there, and maps the affinities back to the
data's grid chunk by chunk (:func:`interpolate_block`), as PlantSeg rescales to its models' voxel
size. Both grids share their physical origin: voxel ``i`` of a grid with voxel size ``s`` has its
centre at ``(i + 0.5) * s``. Interpolation is linear (order 1, separable along z, y, x, edge
values beyond the border), so affinities stay in [0, 1] and nothing is read but the few voxels
around the requested box: volumes larger than memory are resampled block by block.

Channel semantics: an affinity predicted on the model's grid links neighbours one *model* voxel
apart; mapped back it is used as the affinity between neighbours one *data* voxel apart. For
nearest-neighbour affinities this is a reasonable approximation (a boundary between two data
voxels lies between the model voxels interpolated there); long-range offsets keep their voxel
counts, so their physical reach changes by the scale factor. No anti-aliasing is applied when the
input is downsampled (as with ``scipy.ndimage.zoom(order=1)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Box = tuple[tuple[int, int], ...]
Vec3 = tuple[float, float, float]

#: a relative difference above this on any axis makes prediction resample to the model's grid
RESCALE_TOLERANCE = 0.15
#: voxel sizes above this many nm are refused as a unit mistake
MAX_VOXEL_NM = 10_000.0
#: resampling by more than this factor on an axis is refused (the data or the model is wrong)
MAX_FACTOR = 8.0

VOXEL_SIZE_HELP = (
    "pass the data's voxel size in nm as three numbers z, y, x above 0 and at most "
    f"{MAX_VOXEL_NM:g} (voxel_size=(40, 4, 4) in Python, --voxel-size 40,4,4 on the command "
    "line, the Predict section's voxel size field in napari)"
)


def validate_voxel_size(voxel_size: float | Sequence[float] | None) -> Vec3 | None:
    """``voxel_size`` as three floats (z, y, x) nm, ``None`` unchanged; one number means
    isotropic. Zero, negative, non-finite, absurd (> 10 000 nm) or a wrong count raise
    ``ValueError`` saying what to pass."""
    if voxel_size is None:
        return None
    values: Any = (voxel_size,) * 3 if isinstance(voxel_size, int | float) else voxel_size
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"voxel size {voxel_size!r} is not numbers; {VOXEL_SIZE_HELP}") from None
    if len(vals) != 3:
        raise ValueError(f"voxel size {voxel_size!r} has {len(vals)} values, not 3; {VOXEL_SIZE_HELP}")
    bad = [v for v in vals if not (math.isfinite(v) and 0.0 < v <= MAX_VOXEL_NM)]
    if bad:
        what = "not finite" if any(not math.isfinite(v) for v in bad) else (
            "zero or negative" if any(v <= 0 for v in bad) else f"above {MAX_VOXEL_NM:g} nm")
        raise ValueError(f"voxel size {vals} nm is {what}; {VOXEL_SIZE_HELP}")
    return vals  # type: ignore[return-value]


def rescale_factors(data_voxel: Sequence[float] | None, model_voxel: Sequence[float] | None,
                    tolerance: float = RESCALE_TOLERANCE) -> Vec3 | None:
    """Model voxels per data voxel (data / model size) on each axis, or ``None`` when either size
    is unknown or every axis is within ``tolerance`` (relative) of the model's."""
    if data_voxel is None or model_voxel is None:
        return None
    data = validate_voxel_size(data_voxel)
    model = validate_voxel_size(model_voxel)
    factors = tuple(d / m for d, m in zip(data, model, strict=True))
    if all(abs(f - 1.0) <= tolerance for f in factors):
        return None
    return factors  # type: ignore[return-value]


def resampled_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, ...]:
    """The shape of a (z, y, x) volume on the grid ``factors`` times finer (at least 1 voxel)."""
    return tuple(max(1, int(round(int(n) * float(f)))) for n, f in zip(shape, factors, strict=True))


def _coords(start: int, stop: int, step: float, n_in: int) -> np.ndarray:
    """Input coordinates of output voxels ``start..stop`` (``step`` input voxels per output voxel),
    clamped to the input."""
    c = (np.arange(start, stop, dtype=np.float64) + 0.5) * step - 0.5
    return np.clip(c, 0.0, n_in - 1.0)


def source_box(out_box: Sequence[tuple[int, int]], steps: Sequence[float],
               in_shape: Sequence[int]) -> Box:
    """The input box that :func:`interpolate_block` needs for ``out_box``."""
    box = []
    for (a, b), step, n in zip(out_box, steps, in_shape, strict=True):
        if b <= a:
            box.append((0, 0))
            continue
        lo = _coords(a, a + 1, step, n)[0]
        hi = _coords(b - 1, b, step, n)[0]
        box.append((int(math.floor(lo)), min(int(math.floor(hi)) + 2, int(n))))
    return tuple(box)


def interpolate_block(block: np.ndarray, block_origin: Sequence[int],
                      out_box: Sequence[tuple[int, int]], steps: Sequence[float],
                      in_shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of ``out_box`` (last three axes) from ``block``, the part of an input
    of shape ``in_shape`` that starts at ``block_origin`` and covers :func:`source_box`.
    ``steps`` is input voxels per output voxel; leading axes (channels) are kept. float32."""
    out = np.asarray(block, dtype=np.float32)
    lead = out.ndim - 3
    for axis in range(3):
        a, b = out_box[axis]
        c = _coords(a, b, steps[axis], in_shape[axis])
        i0 = np.floor(c).astype(np.intp)
        i1 = np.minimum(i0 + 1, int(in_shape[axis]) - 1)
        w = (c - i0).astype(np.float32).reshape([-1 if k == lead + axis else 1 for k in range(out.ndim)])
        lo = np.take(out, i0 - int(block_origin[axis]), axis=lead + axis)
        hi = np.take(out, i1 - int(block_origin[axis]), axis=lead + axis)
        out = lo + (hi - lo) * w
    return out


def _slices(key: Any, shape: Sequence[int]) -> Box:
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    box = []
    for k, n in zip(key, shape, strict=True):
        if not isinstance(k, slice):
            raise TypeError(f"a ResampledView takes slices (z, y, x), got {k!r}")
        start, stop, step = k.indices(int(n))
        if step != 1:
            raise TypeError("a ResampledView takes slices with step 1")
        box.append((start, max(start, stop)))
    return tuple(box)


class ResampledView:
    """A (z, y, x) image seen on a grid ``factors`` times finer, read lazily: indexing with
    slices reads only the input voxels around the box and interpolates them linearly (float32).
    Wrap it with ``dask.array.from_array(view, chunks=...)`` for a dask array."""

    def __init__(self, image: Any, factors: Sequence[float]) -> None:
        if image.ndim != 3:
            raise ValueError(f"a ResampledView needs a (z, y, x) image, got shape {tuple(image.shape)}")
        self.image = image
        self.factors = tuple(float(f) for f in factors)
        self.in_shape = tuple(int(s) for s in image.shape)
        self.shape = resampled_shape(self.in_shape, self.factors)
        self.steps = tuple(1.0 / f for f in self.factors)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        out_box = _slices(key, self.shape)
        src = source_box(out_box, self.steps, self.in_shape)
        if any(b <= a for a, b in out_box):
            return np.zeros(tuple(b - a for a, b in out_box), dtype=np.float32)
        part = self.image[tuple(slice(a, b) for a, b in src)]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        return interpolate_block(part, [a for a, _ in src], out_box, self.steps, self.in_shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out


def resample(image: Any, factors: Sequence[float], chunks: Sequence[int] = (64, 256, 256)):
    """``image`` (z, y, x) on the grid ``factors`` times finer as a lazy dask array (order 1)."""
    import dask.array as da

    view = ResampledView(image, factors)
    return da.from_array(view, chunks=tuple(min(c, s) for c, s in zip(chunks, view.shape, strict=True)),
                         asarray=True, fancy=False)


@dataclass(frozen=True)
class Rescale:
    """How one prediction resamples: the data's and the model's voxel sizes (nm) and the shape of
    the data; ``factors`` (model voxels per data voxel) and ``model_shape`` follow from them."""

    data_voxel_size: Vec3
    model_voxel_size: Vec3
    data_shape: tuple[int, int, int]

    @property
    def factors(self) -> Vec3:
        return tuple(d / m for d, m in zip(self.data_voxel_size, self.model_voxel_size, strict=True))  # type: ignore[return-value]

    @property
    def model_shape(self) -> tuple[int, ...]:
        return resampled_shape(self.data_shape, self.factors)

    def check(self) -> None:
        """Refuse factors beyond :data:`MAX_FACTOR` (a wrong voxel size more likely than data)."""
        worst = max(max(f, 1.0 / f) for f in self.factors)
        if worst > MAX_FACTOR:
            raise ValueError(
                f"the data's voxel size {self.data_voxel_size} nm differs from the model's "
                f"{self.model_voxel_size} nm by {worst:.1f}x (at most {MAX_FACTOR:g}x is resampled); "
                f"check the voxel size ({VOXEL_SIZE_HELP}) or predict without resampling "
                "(rescale=False, --no-rescale)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_voxel_size": list(self.data_voxel_size),
            "model_voxel_size": list(self.model_voxel_size),
            "factors": [round(f, 6) for f in self.factors],
            "data_shape": list(self.data_shape),
            "model_shape": list(self.model_shape),
            "interpolation": "linear",
        }

    def message(self) -> str:
        fmt = ", ".join(f"{f:.3g}" for f in self.factors)
        return (
            f"the data's voxel size {self.data_voxel_size} nm differs from the model's "
            f"{self.model_voxel_size} nm: predicting on the model's grid (input resampled by "
            f"({fmt}) to {self.model_shape} voxels) and mapping the affinities back to the data's "
            f"{self.data_shape} (rescale=False or --no-rescale turns this off)"
        )


def plan_rescale(model_voxel: Sequence[float] | None, data_voxel: Sequence[float] | None,
                 shape: Sequence[int], rescale: bool = True) -> Rescale | None:
    """The :class:`Rescale` of a prediction, or ``None`` when not needed or turned off.
    ``data_voxel`` is validated either way (``ValueError`` when unusable)."""
    data = validate_voxel_size(data_voxel)
    if not rescale or data is None or model_voxel is None:
        return None
    try:
        model = validate_voxel_size(model_voxel)
    except ValueError:
        return None  # an odd card: predict as before (check_voxel_size stays silent too)
    if rescale_factors(data, model) is None:
        return None
    plan = Rescale(data, model, tuple(int(s) for s in shape))  # type: ignore[arg-type]
    plan.check()
    return plan


def zero_border(pred: np.ndarray, box: Sequence[tuple[int, int]],
                offsets: Sequence[Sequence[int]]) -> np.ndarray:
    """Affinities of ``pred`` (C, z, y, x), at global ``box``, whose neighbour lies before the
    volume's start are set to 0 (the convention of the tiled prediction)."""
    for c, off in enumerate(offsets):
        for axis, o in enumerate(off):
            start = box[axis][0]
            if o > 0 and start < o:
                sl = [slice(None)] * 3
                sl[axis] = slice(0, o - start)
                pred[c][tuple(sl)] = 0
    return pred


def map_back_chunk(box: Box, *, source: Any, source_origin: Sequence[int], plan_factors: Sequence[float],
                   model_shape: Sequence[int], offsets: Sequence[Sequence[int]]) -> np.ndarray:
    """Affinities (C, box) on the data's grid from ``source``, model-grid affinities (C, ...)
    starting at global ``source_origin``: linear interpolation, clipped to [0, 1]."""
    steps = tuple(float(f) for f in plan_factors)  # model voxels per data voxel
    src = source_box(box, steps, model_shape)
    rel = tuple(slice(a - o, b - o) for (a, b), o in zip(src, source_origin, strict=True))
    part = np.asarray(source[(slice(None),) + rel], dtype=np.float32)
    out = interpolate_block(part, [a for a, _ in src], box, steps, model_shape)
    np.clip(out, 0.0, 1.0, out=out)
    return zero_border(out, box, offsets)

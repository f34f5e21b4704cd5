"""Input checks and intensity normalisation to the model's [0, 1] input range.

The model card's ``normalization`` may fix the range (``{"low": .., "high": ..}`` or
``{"min": .., "max": ..}``), ask for percentiles (``{"mode": "percentile", "low": 0.5, "high": 99.5}``)
or be absent/``"minmax"``. Without a fixed range, uint8 data maps 0..255 to 0..1, floats already in
[0, 1] are kept, and any other data (integers of any range, other floats) is scaled between robust
percentiles of a strided sample of the volume, so that 12/16-bit stacks look like 8-bit ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_VOXELS = 2_000_000

#: per-volume robust percentiles: a linear change of contrast or brightness between acquisitions
#: (or a 16-bit stack) maps to the same [0, 1] input; what new models are trained and predicted with
ROBUST_NORMALIZATION = {"mode": "percentile", "low": 0.5, "high": 99.5}


@dataclass(frozen=True)
class IntensityRange:
    """Maps ``low`` to 0 and ``high`` to 1 (clipped)."""

    low: float
    high: float

    def apply(self, data: np.ndarray) -> np.ndarray:
        out = np.asarray(data, dtype=np.float32)
        scale = 1.0 / max(self.high - self.low, 1e-12)
        out = (out - np.float32(self.low)) * np.float32(scale)
        return np.clip(out, 0.0, 1.0, out=out)


def sample(image, max_voxels: int = SAMPLE_VOXELS, crop: int = 64) -> np.ndarray:
    """Up to ~``max_voxels`` of a (z, y, x) array (numpy, dask or zarr), flattened: all of a small
    volume, else ``crop``-sized cubes spread evenly over it (reading only the chunks they touch,
    where a strided sample of a large lazy volume would read every chunk)."""
    shape = tuple(int(s) for s in image.shape)
    if int(np.prod(shape)) <= max_voxels:
        return _read(image[...]).ravel()
    size = tuple(min(crop, s) for s in shape)
    per_axis = max(1, int(np.ceil((max_voxels / np.prod(size)) ** (1 / 3))))
    starts = [np.unique(np.linspace(0, s - c, per_axis).astype(int)) for s, c in zip(shape, size, strict=True)]
    parts = [
        _read(image[z:z + size[0], y:y + size[1], x:x + size[2]]).ravel()
        for z in starts[0] for y in starts[1] for x in starts[2]
    ]
    return np.concatenate(parts)


def _read(part) -> np.ndarray:
    return np.asarray(part.compute() if hasattr(part, "compute") else part)


def check_finite(data: np.ndarray, where: str = "the input") -> None:
    """Refuse NaN/inf (they would turn every affinity of a tile into NaN)."""
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise ValueError(
            f"{where} contains {n_bad} NaN or infinite values; replace them first "
            "(e.g. numpy.nan_to_num(image)) or mask them out"
        )


def _card_norm(normalization: Any) -> dict:
    if normalization is None or isinstance(normalization, str):
        return {"mode": normalization or "auto"}
    if isinstance(normalization, dict):
        return dict(normalization)
    return {"mode": "auto"}


def intensity_range(image, normalization: Any = None) -> IntensityRange:
    """Decide the intensity range of ``image`` from the card's ``normalization`` (see module)."""
    dtype = np.dtype(image.dtype)
    if dtype == np.dtype(bool):
        return IntensityRange(0.0, 1.0)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"image data type {dtype} is not a number type; give an integer or float volume")
    norm = _card_norm(normalization)
    lo_key = next((k for k in ("low", "min") if k in norm), None)
    hi_key = next((k for k in ("high", "max") if k in norm), None)
    mode = str(norm.get("mode", "auto")).lower()
    if mode not in ("percentile",) and lo_key and hi_key:
        return IntensityRange(float(norm[lo_key]), float(norm[hi_key]))
    if mode != "percentile" and dtype == np.uint8:
        return IntensityRange(0.0, 255.0)
    data = sample(image)
    check_finite(data)
    if data.size == 0:
        raise ValueError("the image is empty (a dimension has size 0)")
    if mode != "percentile":
        dmin, dmax = float(data.min()), float(data.max())
        if np.issubdtype(dtype, np.floating) and dmin >= 0.0 and dmax <= 1.0:
            return IntensityRange(0.0, 1.0)
    p_lo = float(norm.get("low", 0.1)) if mode == "percentile" else 0.1
    p_hi = float(norm.get("high", 99.9)) if mode == "percentile" else 99.9
    lo, hi = (float(v) for v in np.percentile(data, [p_lo, p_hi]))
    if hi <= lo:  # flat image: any positive width gives a constant input
        hi = lo + 1.0
    return IntensityRange(lo, hi)

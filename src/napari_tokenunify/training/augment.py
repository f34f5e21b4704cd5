"""Augmentations fit for EM, applied to (raw, labels, mask) patches for affinity finetuning.

Geometry (flips, 90° in-plane rotations, z flip, misalignment, elastic deformation) moves raw,
labels and mask together; intensity changes (contrast, brightness, gamma, noise, blur, missing
sections) touch raw only. Raw is float32 in [0, 1]; labels integer; mask float/bool (1 = use).
Everything draws from the ``numpy.random.Generator`` passed in, so runs are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


def flip_rotate(raw, labels, mask, rng: np.random.Generator):
    """Random y/x/z flips and a random multiple of 90° in-plane (90°/270° only on square planes)."""
    axes = [a for a in (0, 1, 2) if rng.random() < 0.5]
    if axes:
        raw, labels, mask = (np.flip(a, axis=axes) for a in (raw, labels, mask))
    k = int(rng.integers(4)) if raw.shape[1] == raw.shape[2] else 2 * int(rng.integers(2))
    if k:
        raw, labels, mask = (np.rot90(a, k, axes=(1, 2)) for a in (raw, labels, mask))
    return (np.ascontiguousarray(a) for a in (raw, labels, mask))


def intensity(raw: np.ndarray, rng: np.random.Generator, contrast=0.2, brightness=0.1, gamma=0.5) -> np.ndarray:
    """Random contrast scale, brightness shift and gamma (2**U(-gamma, gamma))."""
    c = 1.0 + rng.uniform(-contrast, contrast)
    b = rng.uniform(-brightness, brightness)
    out = (raw - 0.5) * c + 0.5 + b
    out = np.clip(out, 0.0, 1.0) ** (2.0 ** rng.uniform(-gamma, gamma))
    return out.astype(np.float32)


def missing_sections(raw: np.ndarray, rng: np.random.Generator, max_sections: int = 1) -> np.ndarray:
    """Blank 1..max_sections random z sections (as lost or damaged slices look)."""
    out = raw.copy()
    n = int(rng.integers(1, max_sections + 1))
    for z in rng.choice(raw.shape[0], size=min(n, raw.shape[0]), replace=False):
        out[z] = 0.0 if rng.random() < 0.5 else raw.mean()
    return out


def misalign(raw, labels, mask, rng: np.random.Generator, max_shift: int = 4):
    """Shift every section from a random z on by a random in-plane offset (raw and labels together).

    Voxels that wrap around are masked out, and so is the link across the cut in z — which the
    caller gets for free because affinity masks are built from this mask.
    """
    if raw.shape[0] < 2:
        return raw, labels, mask
    z0 = int(rng.integers(1, raw.shape[0]))
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    raw, labels, mask = raw.copy(), labels.copy(), mask.copy()
    for a in (raw, labels, mask):
        a[z0:] = np.roll(a[z0:], (dy, dx), axis=(1, 2))
    if dy > 0:
        mask[z0:, :dy] = 0
    elif dy < 0:
        mask[z0:, dy:] = 0
    if dx > 0:
        mask[z0:, :, :dx] = 0
    elif dx < 0:
        mask[z0:, :, dx:] = 0
    return raw, labels, mask


def elastic(raw, labels, mask, rng: np.random.Generator, alpha: float = 3.0, spacing: int = 16):
    """Smooth in-plane elastic deformation: a coarse random displacement field (up to ``alpha``
    voxels) on a grid every ``spacing`` voxels, upsampled and applied to all sections."""
    z, y, x = raw.shape
    gy, gx = max(2, y // spacing + 1), max(2, x // spacing + 1)
    dy = ndi.zoom(rng.uniform(-alpha, alpha, (gy, gx)), (y / gy, x / gx), order=3)[:y, :x]
    dx = ndi.zoom(rng.uniform(-alpha, alpha, (gy, gx)), (y / gy, x / gx), order=3)[:y, :x]
    yy, xx = np.meshgrid(np.arange(y), np.arange(x), indexing="ij")
    cy = np.broadcast_to(yy + dy, (z, y, x))
    cx = np.broadcast_to(xx + dx, (z, y, x))
    cz = np.broadcast_to(np.arange(z)[:, None, None], (z, y, x))
    coords = np.stack([cz, cy, cx]).astype(np.float32)
    raw = ndi.map_coordinates(raw, coords, order=1, mode="reflect").astype(np.float32)
    labels = ndi.map_coordinates(labels, coords, order=0, mode="reflect").astype(labels.dtype)
    mask = ndi.map_coordinates(mask.astype(np.float32), coords, order=0, mode="constant", cval=0.0)
    return raw, labels, mask.astype(np.float32)


@dataclass
class EMAugment:
    """Probabilities and strengths of each augmentation; call it on one (raw, labels, mask) patch."""

    flip_rotate: bool = True
    intensity_p: float = 0.8
    #: contrast scale 1 ± ``contrast``, brightness shift ± ``brightness`` (of the [0, 1] range) and
    #: gamma 2**U(-gamma, gamma): as wide as the differences between our acquisitions that are left
    #: after per-volume normalisation (the grey-level std of our FIB-SEM cubes differs 1.6-fold)
    contrast: float = 0.5
    brightness: float = 0.2
    gamma: float = 0.6
    noise_p: float = 0.3
    noise_sigma: float = 0.04
    blur_p: float = 0.2
    blur_sigma: float = 1.0
    missing_p: float = 0.1
    misalign_p: float = 0.1
    misalign_shift: int = 4
    elastic_p: float = 0.3
    elastic_alpha: float = 3.0

    def __call__(self, raw, labels, mask, rng: np.random.Generator):
        raw, labels, mask = self.geometry(raw, labels, mask, rng)
        return self.photometric(raw, rng), labels, mask

    def geometry(self, raw, labels, mask, rng: np.random.Generator):
        """The moves (flips, rotations, elastic, misalignment): raw, labels and mask together."""
        raw = np.asarray(raw, dtype=np.float32)
        mask = np.asarray(mask, dtype=np.float32)
        if self.flip_rotate:
            raw, labels, mask = flip_rotate(raw, labels, mask, rng)
        if rng.random() < self.elastic_p:
            raw, labels, mask = elastic(raw, labels, mask, rng, self.elastic_alpha)
        if rng.random() < self.misalign_p:
            raw, labels, mask = misalign(raw, labels, mask, rng, self.misalign_shift)
        return raw, labels, mask

    def photometric(self, raw, rng: np.random.Generator) -> np.ndarray:
        """The intensity changes (contrast, gamma, blur, noise, missing sections): raw only.

        Distillation shows the teacher the patch before these and the student after them."""
        if rng.random() < self.intensity_p:
            raw = intensity(raw, rng, self.contrast, self.brightness, self.gamma)
        if rng.random() < self.blur_p:
            s = rng.uniform(0.3, self.blur_sigma)
            raw = ndi.gaussian_filter(raw, (0.0, s, s)).astype(np.float32)
        if rng.random() < self.noise_p:
            raw = np.clip(raw + rng.normal(0, self.noise_sigma, raw.shape), 0, 1).astype(np.float32)
        if rng.random() < self.missing_p:
            raw = missing_sections(raw, rng)
        return raw

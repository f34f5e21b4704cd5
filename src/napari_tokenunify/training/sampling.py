"""Random training patches from (possibly lazy) volumes.

Volumes may be numpy arrays, dask arrays, h5py/zarr datasets: anything with ``.shape`` that can
be sliced; only the patch is read. A patch larger than its volume along an axis is padded
(raw: mirrored; labels: 0; mask: 0, so padding never enters the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the training patch (z, y, x) of pretraining and finetuning unless a model card names one
DEFAULT_PATCH = (16, 80, 80)


def to_unit(raw) -> np.ndarray:
    """Raw intensities as float32 in [0, 1] (integers scaled by their dtype's range)."""
    a = np.asarray(raw)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype.kind in "ui":
        info = np.iinfo(a.dtype)
        return ((a.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    if a.dtype == bool:
        return a.astype(np.float32)
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _read(array, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    sl = tuple(slice(s, s + n) for s, n in zip(start, shape, strict=False))
    block = array[sl]
    if hasattr(block, "compute"):
        block = block.compute()
    return np.asarray(block)


def _pad_to(block: np.ndarray, shape: Sequence[int], mode: str) -> np.ndarray:
    pad = [(0, max(0, t - s)) for s, t in zip(block.shape, shape, strict=False)]
    if not any(p[1] for p in pad):
        return block
    if mode == "reflect" and all(s > 1 for s in block.shape):
        # np.pad's reflect cannot pad more than size - 1 at once, so mirror repeatedly.
        while any(s < t for s, t in zip(block.shape, shape, strict=False)):
            step = [(0, min(max(0, t - s), s - 1)) for s, t in zip(block.shape, shape, strict=False)]
            block = np.pad(block, step, mode="reflect")
        return block
    if mode == "reflect":
        return np.pad(block, pad, mode="edge")
    return np.pad(block, pad, mode="constant", constant_values=0)


_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclass
class Patch:
    """One training patch: raw in [0, 1] (float32), labels (or None), mask (float32, 1 = use)."""

    raw: np.ndarray
    labels: np.ndarray | None
    mask: np.ndarray
    origin: tuple[int, int, int]
    #: the volume's axis that became each patch axis (``patch = block.transpose(axes)``)
    axes: tuple[int, int, int] = (0, 1, 2)


class PatchSampler:
    """Draws random patches of ``patch_shape`` from one or more volumes.

    ``labels``/``masks`` (optional) are parallel lists to ``volumes``. Volumes are picked with
    probability proportional to their size. With labels, a patch whose usable fraction (mask
    and non-zero labels) is below ``min_labelled`` is redrawn (up to 20 tries).
    ``normalization``: a model card's normalisation (e.g. ``engine.normalize.ROBUST_NORMALIZATION``);
    each volume's intensity range is then decided once, exactly as prediction decides it
    (``engine.normalize.intensity_range``), so training and prediction see the same input.
    Without it, integers are scaled by their dtype's range (:func:`to_unit`).
    ``permute_axes``: for isotropic data (e.g. FIB-SEM), read each patch with its axes in a random
    order that fits the volume and transpose it back to ``patch_shape``, so that z-sections are
    seen as in-plane views and the other way round (three times the views of the same voxels).
    """

    def __init__(
        self,
        volumes: Sequence,
        patch_shape: Sequence[int],
        *,
        labels: Sequence | None = None,
        masks: Sequence | None = None,
        seed: int | np.random.Generator | None = 0,
        min_labelled: float = 0.0,
        normalization: Any = None,
        permute_axes: bool = False,
    ) -> None:
        if not len(volumes):
            raise ValueError("no volumes to sample patches from")
        self.volumes = list(volumes)
        for v in self.volumes:
            if len(v.shape) != 3:
                raise ValueError(f"volumes must be 3D (z, y, x), got shape {tuple(v.shape)}")
        self.patch_shape = tuple(int(p) for p in patch_shape)
        if len(self.patch_shape) != 3 or min(self.patch_shape) < 1:
            raise ValueError(f"patch_shape must be three positive sizes, got {patch_shape}")
        self.labels = list(labels) if labels is not None else None
        self.masks = list(masks) if masks is not None else None
        for name, items in (("labels", self.labels), ("masks", self.masks)):
            if items is not None:
                if len(items) != len(self.volumes):
                    raise ValueError(f"give one {name} volume per raw volume")
                for v, item in zip(self.volumes, items, strict=False):
                    if item is not None and tuple(item.shape) != tuple(v.shape):
                        raise ValueError(f"{name} shape {tuple(item.shape)} differs from raw {tuple(v.shape)}")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.min_labelled = min_labelled
        sizes = np.array([float(np.prod(v.shape)) for v in self.volumes])
        self._p = sizes / sizes.sum()
        self.normalization = normalization
        self.permute_axes = bool(permute_axes)
        self.ranges = None
        if normalization is not None:
            from ..engine.normalize import intensity_range

            self.ranges = [intensity_range(v, normalization) for v in self.volumes]

    def to_input(self, i: int, block: np.ndarray) -> np.ndarray:
        """A raw block of volume ``i`` as the network's [0, 1] input."""
        if self.ranges is None:
            return to_unit(block)
        return self.ranges[i].apply(block)

    def padded(self) -> bool:
        """Whether some volume is smaller than the patch (so patches get padded)."""
        return any(s < p for v in self.volumes for s, p in zip(v.shape, self.patch_shape, strict=False))

    def _permutation(self, i: int) -> tuple[int, int, int]:
        """The axis order a patch of volume ``i`` is read in (identity unless ``permute_axes``):
        one of the six, among those whose read fits inside the volume (identity always allowed)."""
        if not self.permute_axes:
            return (0, 1, 2)
        shape = self.volumes[i].shape
        fits = [perm for perm in _PERMUTATIONS if perm == (0, 1, 2) or all(
            shape[perm[a]] >= self.patch_shape[a] for a in range(3))]
        return fits[int(self.rng.integers(len(fits)))]

    def _one(self, i: int) -> Patch:
        vol = self.volumes[i]
        perm = self._permutation(i)
        # read a block whose axis perm[a] has the patch's size along a; transposing by perm
        # brings it to patch_shape
        read_shape = [0, 0, 0]
        for a in range(3):
            read_shape[perm[a]] = self.patch_shape[a]
        start = tuple(int(self.rng.integers(0, max(0, s - p) + 1)) for s, p in zip(vol.shape, read_shape, strict=False))
        shape = tuple(min(s, p) for s, p in zip(vol.shape, read_shape, strict=False))

        def read(array):  # the block in patch axis order (no copy for the identity)
            return np.ascontiguousarray(_read(array, start, shape).transpose(perm))

        raw = _pad_to(self.to_input(i, read(vol)), self.patch_shape, "reflect")
        mask = np.ones(tuple(shape[p] for p in perm), dtype=np.float32)
        if self.masks is not None and self.masks[i] is not None:
            mask = (read(self.masks[i]) > 0).astype(np.float32)
        mask = _pad_to(mask, self.patch_shape, "constant")
        labels = None
        if self.labels is not None and self.labels[i] is not None:
            labels = _pad_to(read(self.labels[i]), self.patch_shape, "constant")
        return Patch(raw.astype(np.float32), labels, mask, start, perm)

    def sample(self) -> Patch:
        i = int(self.rng.choice(len(self.volumes), p=self._p))
        patch = self._one(i)
        if patch.labels is None or self.min_labelled <= 0:
            return patch
        best = patch
        for _ in range(20):
            usable = float(((patch.labels != 0) & (patch.mask > 0)).mean())
            if usable >= self.min_labelled:
                return patch
            patch = self._one(i)
            best = patch
        return best

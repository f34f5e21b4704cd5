"""The corrected region finetuning trains on: a box cropped with context, its size checked
against one training patch, and the part of it held back to validate on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .targets import TrainingDataError


def crop_box(arrays: list, box, patch_shape) -> tuple[list, np.ndarray]:
    """Crop arrays to ``box`` plus half a patch of context each side; mask = 1 inside the box."""
    shape = arrays[0].shape
    if len(box) != 3:
        raise ValueError(f"box must be three slices or (start, stop) pairs (z, y, x), got {box}")
    lo, hi, inner = [], [], []
    for b, size, p in zip(box, shape, patch_shape, strict=False):
        start, stop = (b.start, b.stop) if isinstance(b, slice) else b
        start, stop = max(0, int(start or 0)), min(size, int(size if stop is None else stop))
        if stop <= start:
            raise TrainingDataError(f"box {box} selects no voxel of a volume of shape {shape}")
        a, z = max(0, start - p // 2), min(size, stop + p // 2)
        lo.append(a)
        hi.append(z)
        inner.append(slice(start - a, stop - a))
    sl = tuple(slice(a, z) for a, z in zip(lo, hi, strict=False))
    cropped = [None if a is None else np.asarray(a[sl]) for a in arrays]
    box_mask = np.zeros(tuple(z - a for a, z in zip(lo, hi, strict=False)), dtype=np.float32)
    box_mask[tuple(inner)] = 1.0
    return cropped, box_mask



def box_bounds(box, shape) -> list[list[int]]:
    """A box (three slices or (start, stop) pairs) as ``[[z0, z1], [y0, y1], [x0, x1]]`` in the volume."""
    out = []
    for b, size in zip(box, shape, strict=False):
        start, stop = (b.start, b.stop) if isinstance(b, slice) else b
        out.append([max(0, int(start or 0)), min(int(size), int(size if stop is None else stop))])
    return out



def check_region_size(mask, patch_shape: Sequence[int]) -> int:
    """The corrected region's voxel count; :class:`TrainingDataError` below one training patch
    (a patch would be mostly outside it: the network would learn from a handful of voxels)."""
    n = int(np.count_nonzero(np.asarray(mask)))
    need = int(np.prod(patch_shape))
    if n < need:
        dims = " × ".join(str(int(p)) for p in patch_shape)
        raise TrainingDataError(
            f"the corrected region holds {n} voxels, fewer than one training patch ({dims} = "
            f"{need} voxels); mark a larger region (correct more labels around it, or give a "
            "larger box or mask), or train on the whole volume"
        )
    return n



def hold_back(raw, labels, mask, share: float, patch_shape: Sequence[int]) -> tuple[Any, tuple | None, dict]:
    """Hold back the last ``share`` of the corrected region along its longest axis to validate on.

    Returns the training mask (the rest), the validation volume ``(raw, labels, mask)`` (cropped
    to the held-back part with half a patch of context) and a note for the card. When the held-back
    part holds fewer than two objects or the rest is too small to train on, nothing is held back
    (the note says why) and training uses the whole region.
    """
    lab = np.asarray(labels)
    region = np.ones(lab.shape, dtype=bool) if mask is None else np.asarray(mask) > 0
    coords = np.nonzero(region)
    lo = [int(c.min()) for c in coords]
    hi = [int(c.max()) + 1 for c in coords]
    axis = int(np.argmax([b - a for a, b in zip(lo, hi, strict=True)]))
    extent = hi[axis] - lo[axis]
    cut = hi[axis] - max(1, int(round(share * extent)))
    along = np.arange(lab.shape[axis]).reshape([-1 if i == axis else 1 for i in range(3)])
    held = region & (along >= cut)
    train = region & (along < cut)
    note: dict[str, Any] = {"share": share, "axis": "zyx"[axis], "from": cut}
    ids = np.unique(lab[held])
    if np.count_nonzero(ids) < 2:
        return mask, None, {**note, "skipped": "the held-back part holds fewer than two objects"}
    if np.count_nonzero(train) < int(np.prod(patch_shape)) or np.count_nonzero(np.unique(lab[train])) < 2:
        return mask, None, {**note, "skipped": "the rest would be too small to train on"}
    note["voxels"] = int(np.count_nonzero(held))
    return train.astype(np.float32), around_selection(raw, lab, held, patch_shape), note



def around_selection(raw, labels: np.ndarray, selected: np.ndarray, patch_shape: Sequence[int]) -> tuple:
    """``(raw, labels, mask)`` cropped to the ``selected`` voxels with half a patch of context."""
    hc = np.nonzero(selected)
    sl = tuple(slice(max(0, int(c.min()) - p // 2), min(s, int(c.max()) + 1 + p // 2))
               for c, p, s in zip(hc, patch_shape, labels.shape, strict=True))
    return np.asarray(raw[sl]), labels[sl], selected[sl].astype(np.float32)

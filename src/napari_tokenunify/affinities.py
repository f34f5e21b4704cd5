"""Affinity conventions shared by prediction, segmentation and training.

Channel ``c`` of an affinity volume belongs to offset ``offsets[c] = (dz, dy, dx)`` (non-negative)
and holds, at voxel ``v``, the affinity between ``v`` and ``v - offset`` — the convention of waterz
and TokenUnify (channel 0 = z, 1 = y, 2 = x for nearest neighbours). Voxels whose neighbour lies
outside the volume have affinity 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEAREST_OFFSETS: tuple[tuple[int, int, int], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def _shifted_pairs(shape: tuple[int, ...], offset: Sequence[int]):
    """Slices (here, there) so that ``a[here]`` and ``a[there]`` are voxel v and v - offset."""
    here, there = [], []
    for size, o in zip(shape, offset, strict=True):
        o = int(o)
        if o >= 0:
            here.append(slice(o, size))
            there.append(slice(0, size - o))
        else:
            here.append(slice(0, size + o))
            there.append(slice(-o, size))
    return tuple(here), tuple(there)


def labels_to_affinities(
    labels: np.ndarray,
    offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS,
    ignore_label: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity targets and a validity mask from an instance label volume (z, y, x).

    Affinity is 1 where both voxels carry the same non-zero id, 0 elsewhere (so label 0 acts as a
    boundary). The mask is 0 where the neighbour lies outside the volume and, if ``ignore_label``
    is given, where *both* voxels carry it (an unlabelled region says nothing), so a boundary
    between an object and label 0 still teaches "no connection".
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {labels.shape}")
    n = len(offsets)
    affs = np.zeros((n,) + labels.shape, dtype=np.float32)
    mask = np.zeros((n,) + labels.shape, dtype=np.float32)
    for c, off in enumerate(offsets):
        here, there = _shifted_pairs(labels.shape, off)
        a, b = labels[here], labels[there]
        affs[c][here] = (a == b) & (a != 0)
        valid = np.ones(a.shape, dtype=bool)
        if ignore_label is not None:
            valid &= ~((a == ignore_label) & (b == ignore_label))
        mask[c][here] = valid
    return affs, mask

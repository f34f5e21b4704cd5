"""Affinity targets and class-balancing weights from instance labels, and checks of training input.

Built on :func:`napari_tokenunify.affinities.labels_to_affinities`: label 0 is a boundary/ignore
label (two 0 voxels say nothing; an object next to 0 means "not connected"), and an optional mask
(1 = use) removes voxels from the loss altogether. Long-range offsets may be given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..affinities import NEAREST_OFFSETS, labels_to_affinities


class TrainingDataError(ValueError):
    """Training data that cannot be used as given; the message says what to do."""


def check_training_pair(raw, labels, mask=None) -> None:
    """Raise :class:`TrainingDataError` when raw/labels/mask cannot train affinities.

    Checks: 3D, same shape, integer labels, at least two distinct non-zero ids, a mask that
    selects something. Reads only what it must (works on numpy or dask arrays).
    """
    raw_shape, lab_shape = tuple(np.shape(raw)), tuple(np.shape(labels))
    if len(raw_shape) != 3:
        raise TrainingDataError(f"raw must be a 3D (z, y, x) volume, got shape {raw_shape}")
    if lab_shape != raw_shape:
        raise TrainingDataError(
            f"labels shape {lab_shape} differs from raw shape {raw_shape}; "
            "give labels that cover exactly the raw volume (crop or pad one of them)"
        )
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iub":
        raise TrainingDataError(
            f"labels must be integer instance ids, got {dtype}; if these are probabilities or "
            "affinities, segment them first, or cast exact integer ids with labels.astype('uint32')"
        )
    if mask is not None:
        if tuple(np.shape(mask)) != raw_shape:
            raise TrainingDataError(
                f"mask shape {tuple(np.shape(mask))} differs from raw shape {raw_shape}"
            )
        if not np.asarray(mask).any():
            raise TrainingDataError(
                "the mask is empty (no voxel selected for training); mark the region to train on "
                "with non-zero mask values or give no mask"
            )
    lab = np.asarray(labels)
    ids = np.unique(lab if mask is None else lab[np.asarray(mask) > 0])
    nonzero = ids[ids != 0]
    where = "" if mask is None else " inside the mask"
    if nonzero.size == 0:
        raise TrainingDataError(
            f"labels are all zero{where} (0 means unlabelled/boundary), so there is nothing to "
            "learn; "
            "paint at least two neighbouring objects"
        )
    if nonzero.size == 1:
        raise TrainingDataError(
            f"labels hold a single object{where} (id {int(nonzero[0])}); affinities need boundaries "
            "between objects to learn from, so label at least two neighbouring objects"
        )


def affinity_targets(
    labels: np.ndarray,
    offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinities (C, Z, Y, X) float32 and a validity mask of the same shape.

    A link counts only when both of its voxels lie inside ``mask`` (when given).
    """
    affs, valid = labels_to_affinities(labels, offsets, ignore_label=0)
    if mask is not None:
        valid = valid * mask_links(mask, offsets)
    return affs, valid.astype(np.float32)


def grow_boundaries(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """``labels`` with boundaries marked 0 (the boundary/ignore label) where two ids touch: a
    labelled voxel whose +z, +y or +x neighbour carries another non-zero id becomes 0, and for
    ``width`` > 1 that band grows by ``width - 1`` voxels to both sides (6-connected).

    Dense labels (every voxel in some body, as `medulla-dense` or painted corrections) put the
    only negative affinity on the single link across each id change, at an arbitrary place
    inside the membrane; labels with a boundary label 0 (gala's) make both links into a
    one-voxel band negative. ``width=1`` gives dense labels the second convention (as
    gunpowder's ``GrowBoundary`` does); labels whose objects never touch are returned unchanged.
    """
    from scipy.ndimage import binary_dilation, generate_binary_structure

    width = int(width)
    if width < 0:
        raise ValueError(f"the boundary width must be 0 or more voxels, got {width}")
    out = np.array(labels, copy=True)
    if width == 0:
        return out
    band = np.zeros(out.shape, dtype=bool)
    for axis in range(out.ndim):
        here = [slice(None)] * out.ndim
        there = [slice(None)] * out.ndim
        here[axis], there[axis] = slice(None, -1), slice(1, None)
        a, b = out[tuple(here)], out[tuple(there)]
        band[tuple(here)] |= (a != b) & (a != 0) & (b != 0)
    if width > 1 and band.any():
        band = binary_dilation(band, generate_binary_structure(out.ndim, 1), iterations=width - 1)
    out[band] = 0
    return out


def mask_links(mask: np.ndarray, offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS) -> np.ndarray:
    """(C, Z, Y, X) float32: 1 where a link's two voxels, v and v - offset, both lie in ``mask``."""
    m = np.asarray(mask) > 0
    m_aff, _ = labels_to_affinities(m.astype(np.uint8), offsets, ignore_label=None)
    # labels_to_affinities on the 0/1 mask: 1 where v and v - offset are both inside.
    return ((m_aff > 0) * m[None]).astype(np.float32)


def balance_weights(affs: np.ndarray, valid: np.ndarray, clip: float = 10.0) -> np.ndarray:
    """Per-channel class-balancing weights: positives and negatives each carry half the loss.

    Boundaries (affinity 0) are rare in EM, so unweighted losses learn to say "connected"
    everywhere. Weights are ``valid * 0.5 / fraction(class)``, capped at ``clip``, and 0 where
    ``valid`` is 0.
    """
    weights = np.zeros_like(affs, dtype=np.float32)
    for c in range(affs.shape[0]):
        v = valid[c] > 0
        n = v.sum()
        if n == 0:
            continue
        pos = (affs[c] > 0.5) & v
        neg = (~(affs[c] > 0.5)) & v
        frac_pos = pos.sum() / n
        frac_neg = neg.sum() / n
        w_pos = min(clip, 0.5 / frac_pos) if frac_pos > 0 else 0.0
        w_neg = min(clip, 0.5 / frac_neg) if frac_neg > 0 else 0.0
        weights[c][pos] = w_pos
        weights[c][neg] = w_neg
    return weights

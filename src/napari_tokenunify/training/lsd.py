"""Local shape descriptors (LSDs) of instance labels: auxiliary training targets.

Sheridan et al. (2022, "Local shape descriptors for neuron segmentation", funkelab/lsd) train an
affinity network to also predict, at every voxel, ten statistics of the part of its own object
that lies within a Gaussian window around it: the offset of that part's centre of mass (3), its
variances along z, y and x (3), its Pearson correlations zy, zx, yx (3) and its size (1). The
extra outputs make the network describe the shape of thin processes, which improves its
affinities; they are dropped before a model is shipped (the output contract stays the three
nearest-neighbour affinities).

This is a NumPy/SciPy re-implementation of the descriptor of ``lsd.train.local_shape_descriptor``
(MIT licence) with the same channels, normalisation to [0, 1] and Gaussian window (truncated at
3 σ), computed per object on its bounding box grown by the window, so it is cheap enough to
compute for every training patch after augmentation. Label 0 (a boundary or unlabelled voxel)
gets no descriptor.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

LSD_CHANNELS = 10
TRUNCATE = 3.0
#: training computes the statistics on every second voxel (lsd's speed-up: ~7 times faster)
LSD_DOWNSAMPLE = 2

#: the (i, j) coordinate pairs of the six second moments: zz, yy, xx, zy, zx, yx
_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def local_shape_descriptors(labels: np.ndarray, sigma: float | tuple[float, float, float],
                            downsample: int = 1) -> np.ndarray:
    """Ten descriptor channels (10, Z, Y, X), float32 in [0, 1], of a 3D label volume.

    ``sigma``: the Gaussian window in voxels (one value or z, y, x). ``downsample``: compute the
    statistics on every ``downsample``-th voxel along each axis and repeat them back (lsd's
    speed-up; the object masks stay exact at full resolution). Voxels of label 0 get zeros.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"local shape descriptors need a 3D label volume, got shape {labels.shape}")
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (3,)).copy()
    if not (np.isfinite(sig).all() and (sig > 0).all()):
        raise ValueError(f"the LSD window sigma must be positive voxels, got {sigma}")
    df = int(downsample)
    if df < 1:
        raise ValueError(f"downsample must be at least 1, got {downsample}")
    out = np.zeros((LSD_CHANNELS,) + labels.shape, dtype=np.float32)
    sub = labels[::df, ::df, ::df]
    sub_sigma = sig / df
    radius = np.ceil(TRUNCATE * sub_sigma).astype(int)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    sub_inverse = inverse[::df, ::df, ::df]
    # index k holds the box of ids[k] (None where it is absent)
    boxes = ndi.find_objects(sub_inverse + 1, max_label=len(ids))
    full_boxes = ndi.find_objects(inverse + 1, max_label=len(ids))
    for k, label in enumerate(ids):
        if label == 0 or full_boxes[k] is None:
            continue
        full_mask_box = full_boxes[k]
        if boxes[k] is None:  # the object misses the subsampled grid: take its nearest points
            starts = [s.start // df for s in full_mask_box]
            stops = [min(n, -(-s.stop // df)) for s, n in zip(full_mask_box, sub.shape, strict=True)]
        else:
            starts = [s.start for s in boxes[k]]
            stops = [s.stop for s in boxes[k]]
        lo = [max(0, a - r) for a, r in zip(starts, radius, strict=True)]
        hi = [min(n, b + r) for b, r, n in zip(stops, radius, sub.shape, strict=True)]
        window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        desc = _descriptor(sub_inverse[window] == k, sub_sigma, df)
        # back to full resolution: each subsampled voxel stands for a df-cube
        full = tuple(slice(a * df, min(n, b * df)) for a, b, n in zip(lo, hi, labels.shape, strict=True))
        up = desc
        for axis in range(3):
            up = np.repeat(up, df, axis=axis + 1)
        up = up[(slice(None),) + tuple(slice(0, s.stop - s.start) for s in full)]
        mine = inverse[full] == k
        out[(slice(None),) + full] += up * mine
    return out


def lsd_targets(labels: np.ndarray, sigma: float, mask: np.ndarray | None = None,
                downsample: int = LSD_DOWNSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of a training patch and their weights (10, Z, Y, X): 1 on labelled voxels
    (label != 0) inside ``mask`` (1 = train here), 0 elsewhere."""
    desc = local_shape_descriptors(labels, sigma, downsample)
    valid = np.asarray(labels) != 0
    if mask is not None:
        valid &= np.asarray(mask) > 0
    weight = np.broadcast_to(valid.astype(np.float32), desc.shape).copy()
    return desc, weight


def _descriptor(mask: np.ndarray, sigma: np.ndarray, df: int) -> np.ndarray:
    """The ten normalised channels of one object (``mask``) on its window, before masking."""
    m = mask.astype(np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(a, sigma=sigma, mode="constant", cval=0.0, truncate=TRUNCATE)

    # coordinates in full-resolution voxels, relative to the window (small numbers: no cancellation)
    grid = np.meshgrid(*(np.arange(n, dtype=np.float64) * df for n in mask.shape), indexing="ij")
    count = smooth(m)
    safe = np.where(count > 0, count, 1.0)
    mean = np.stack([smooth(m * g) / safe for g in grid])
    desc = np.empty((LSD_CHANNELS,) + mask.shape, dtype=np.float64)
    sig_full = sigma * df  # the window in full-resolution voxels
    for d in range(3):  # mean offset, at most about sigma: to [0, 1]
        desc[d] = (mean[d] - grid[d]) / sig_full[d] * 0.5 + 0.5
    cov = [smooth(m * grid[i] * grid[j]) / safe - mean[i] * mean[j] for i, j in _PAIRS]
    var = [np.maximum(c, 1e-3) for c in cov[:3]]
    for d in range(3):  # variance relative to the window's
        desc[3 + d] = cov[d] / sig_full[d] ** 2
    for n, (i, j) in enumerate(_PAIRS[3:]):  # Pearson coefficients in [-1, 1]: to [0, 1]
        desc[6 + n] = cov[3 + n] / np.sqrt(var[i] * var[j]) * 0.5 + 0.5
    desc[9] = count
    np.clip(desc, 0.0, 1.0, out=desc)
    return desc.astype(np.float32)


__all__ = ["LSD_CHANNELS", "LSD_DOWNSAMPLE", "local_shape_descriptors", "lsd_targets"]

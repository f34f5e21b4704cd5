"""Segmentation metrics against ground truth: VOI (split, merge) and adapted Rand error.

Both come from one sparse contingency table of (segment, ground-truth id) voxel counts, which
is summed chunk by chunk, so arrays larger than memory (dask/zarr) are evaluated in bounded
memory. Voxels whose ground truth is ``ignore_label`` (0: membrane / unlabelled) or outside
``mask`` are left out, and with ``boundary_tolerance`` r > 0 also those within r voxels of a
change of ground-truth id (CREMI's boundary tolerance: on dense labels a quarter of the voxels
lie beside a boundary, and where a boundary falls to within a voxel dominates the score;
reported beside the plain score, never instead of it). The definitions follow
``skimage.metrics`` (VOI split = H(seg | gt),
merge = H(gt | seg), in bits; adapted Rand error = 1 - F-score of pair precision/recall).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np


def _blocks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    from itertools import product

    ranges = [range(0, s, c) for s, c in zip(shape, chunks, strict=False)]
    for starts in product(*ranges):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(starts, chunks, shape, strict=False))


def _read(array, sl) -> np.ndarray:
    part = array[sl]
    return np.asarray(part.compute() if hasattr(part, "compute") else part)


def boundary_band(labels: np.ndarray, radius: int = 1) -> np.ndarray:
    """Voxels within ``radius`` voxels (a (2r+1)³ cube) of a voxel with another id."""
    from scipy import ndimage as ndi

    size = (2 * int(radius) + 1,) * labels.ndim
    return ndi.maximum_filter(labels, size=size, mode="nearest") != ndi.minimum_filter(
        labels, size=size, mode="nearest")


def _read_gt(ground_truth, sl: tuple[slice, ...], radius: int) -> tuple[np.ndarray, np.ndarray | None]:
    """ground_truth[sl] and, with ``radius`` > 0, its ``boundary_band`` (computed from one read
    with ``radius`` sections of context, so chunk borders are no boundaries)."""
    if not radius:
        return _read(ground_truth, sl), None
    z = sl[0]
    lo, hi = max(z.start - radius, 0), min(z.stop + radius, ground_truth.shape[0])
    part = _read(ground_truth, (slice(lo, hi),) + tuple(sl[1:]))
    inner = slice(z.start - lo, z.start - lo + (z.stop - z.start))
    return part[inner], boundary_band(part, radius)[inner]


def contingency(
    segmentation, ground_truth, *, ignore_label: int | None = 0, mask=None,
    chunk_voxels: int = 16_000_000, boundary_tolerance: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment ids, gt ids, counts) of every pair that occurs, over the voxels that count."""
    if boundary_tolerance < 0:
        raise ValueError(f"boundary_tolerance must be 0 or more voxels, not {boundary_tolerance}")
    if tuple(segmentation.shape) != tuple(ground_truth.shape):
        raise ValueError(
            f"segmentation shape {tuple(segmentation.shape)} differs from ground-truth shape "
            f"{tuple(ground_truth.shape)}; crop or resample one of them"
        )
    if mask is not None and tuple(mask.shape) != tuple(ground_truth.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from ground truth {tuple(ground_truth.shape)}")
    shape = tuple(ground_truth.shape)
    if len(shape) == 0 or min(shape) == 0:
        raise ValueError("the volumes are empty")
    # chunks: whole trailing planes, as many leading slices as fit in chunk_voxels
    plane = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    lead = max(1, chunk_voxels // max(plane, 1))
    chunks = (lead,) + tuple(shape[1:])
    keys_all, counts_all = [], []
    for sl in _blocks(shape, chunks):
        seg = _read(segmentation, sl).astype(np.uint64, copy=False).ravel()
        gt, band = _read_gt(ground_truth, sl, boundary_tolerance)
        gt = gt.astype(np.uint64, copy=False).ravel()
        keep = np.ones(gt.shape, dtype=bool)
        if ignore_label is not None:
            keep &= gt != np.uint64(ignore_label)
        if mask is not None:
            keep &= _read(mask, sl).astype(bool).ravel()
        if band is not None:
            keep &= ~band.ravel()
        if not keep.all():
            seg, gt = seg[keep], gt[keep]
        if seg.size == 0:
            continue
        keys_all.append(_pairs_counted(seg, gt))
        counts_all.append(keys_all[-1][1])
        keys_all[-1] = keys_all[-1][0]
    if not keys_all:
        raise ValueError(
            "no voxel to evaluate: the ground truth is all ignore_label (or the mask is empty)"
        )
    keys = np.concatenate(keys_all)
    counts = np.concatenate(counts_all)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=counts).astype(np.int64)
    return uniq[:, 0], uniq[:, 1], summed


def _pairs_counted(seg: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (seg, gt) pairs (K, 2) and their counts; one int64 key per voxel, not a 2D sort."""
    seg_u, seg_i = np.unique(seg, return_inverse=True)
    gt_u, gt_i = np.unique(gt, return_inverse=True)
    key = seg_i.astype(np.int64).ravel() * len(gt_u) + gt_i.astype(np.int64).ravel()
    ukey, counts = np.unique(key, return_counts=True)
    return np.stack([seg_u[ukey // len(gt_u)], gt_u[ukey % len(gt_u)]], axis=1), counts


def _entropy_terms(counts: np.ndarray, total: float) -> float:
    p = counts[counts > 0] / total
    return float(-np.sum(p * np.log2(p)))


def metrics_from_contingency(seg_ids, gt_ids, counts) -> dict[str, float]:
    """VOI split/merge and adapted Rand error (with precision and recall) from the table."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    _, seg_inv = np.unique(seg_ids, return_inverse=True)
    _, gt_inv = np.unique(gt_ids, return_inverse=True)
    seg_sizes = np.bincount(seg_inv.ravel(), weights=counts)
    gt_sizes = np.bincount(gt_inv.ravel(), weights=counts)
    h_joint = _entropy_terms(counts, n)
    h_seg = _entropy_terms(seg_sizes, n)
    h_gt = _entropy_terms(gt_sizes, n)
    voi_split = max(h_joint - h_gt, 0.0)  # H(seg | gt)
    voi_merge = max(h_joint - h_seg, 0.0)  # H(gt | seg)
    # adapted Rand (skimage.metrics.adapted_rand_error)
    sum_p_ij2 = float(np.sum(counts**2)) - n
    sum_a2 = float(np.sum(gt_sizes**2)) - n
    sum_b2 = float(np.sum(seg_sizes**2)) - n
    # named as in skimage.metrics.adapted_rand_error
    precision = sum_p_ij2 / sum_a2 if sum_a2 > 0 else 1.0
    recall = sum_p_ij2 / sum_b2 if sum_b2 > 0 else 1.0
    denom = precision + recall
    fscore = 2.0 * precision * recall / denom if denom > 0 else 0.0
    return {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "voi": voi_split + voi_merge,
        "arand": float(1.0 - fscore),
        "arand_precision": float(precision),
        "arand_recall": float(recall),
        "n_voxels": int(n),
    }


def evaluate(segmentation, ground_truth, ignore_label: int | None = 0, mask=None,
             chunk_voxels: int = 16_000_000, boundary_tolerance: int = 0) -> dict[str, float]:
    """VOI (split, merge, sum) and adapted Rand error of ``segmentation`` against
    ``ground_truth`` (numpy, dask or zarr arrays of equal shape), read in chunks of about
    ``chunk_voxels``; ``boundary_tolerance``: leave out voxels this close to a true boundary."""
    table = contingency(segmentation, ground_truth, ignore_label=ignore_label, mask=mask,
                        chunk_voxels=chunk_voxels, boundary_tolerance=boundary_tolerance)
    problem = ground_truth_problem(ground_truth.dtype, len(np.unique(table[1])))
    if problem:
        warnings.warn(GroundTruthWarning(problem), stacklevel=2)
    return metrics_from_contingency(*table)


class GroundTruthWarning(UserWarning):
    """The ground truth does not look like labels (e.g. an EM image was given instead)."""


#: a uint8 ground truth with this many ids or more is far likelier an image than labels
IMAGE_LIKE_IDS = 100


def ground_truth_problem(dtype, n_ids: int) -> str | None:
    """Why a ground truth of this dtype with ``n_ids`` distinct ids (ignored label left out)
    looks like an image rather than labels, or ``None``."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (f"the ground truth is {dtype} (floating point), which labels never are: is it "
                "an image or affinities? Pass the ground-truth labels (integer ids)")
    if dtype.kind in "iu" and dtype.itemsize == 1 and n_ids >= IMAGE_LIKE_IDS:
        return (f"the ground truth is {dtype} with {n_ids} distinct values, like an 8-bit EM "
                "image rather than labels: the scores are meaningless if it is one. Pass the "
                "ground-truth labels (e.g. --gt-dataset for the labels inside a file)")
    return None


def affinity_scores(affinities, ground_truth, offsets, mask=None) -> dict[str, float]:
    """Class-balanced cross-entropy and error rate of predicted ``affinities`` (C, Z, Y, X)
    against the affinities of ``ground_truth`` (each class, cut and connected, half the weight).

    A per-voxel judge of the network alone: unlike VOI after agglomeration it does not jump when
    a few merge decisions flip, so it ranks similar models more steadily on small volumes.
    """
    from ..affinities import labels_to_affinities

    target, valid = labels_to_affinities(np.asarray(ground_truth), offsets)
    if mask is not None:
        valid = valid * (np.asarray(mask) > 0)[None]
    p = np.clip(np.asarray(affinities, dtype=np.float64), 1e-6, 1 - 1e-6)
    cut, same = (valid > 0) & (target == 0), (valid > 0) & (target == 1)
    if not cut.any() or not same.any():
        raise ValueError("the ground truth needs both boundaries and connected voxels to score affinities")
    bce = -(target * np.log(p) + (1 - target) * np.log1p(-p))
    return {"affinity_bce": float(0.5 * bce[cut].mean() + 0.5 * bce[same].mean()),
            "affinity_error": float(0.5 * (p[cut] > 0.5).mean() + 0.5 * (p[same] < 0.5).mean())}

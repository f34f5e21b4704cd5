"""Agglomeration of fragments into neurons: waterz (TokenUnify's setting) and mutex watershed.

waterz merges the pair of neighbouring regions with the lowest score, one pair at a time, until
the lowest score reaches the threshold. :class:`Agglomerator` runs that merging once up to the
highest threshold and keeps the fragments and the merge history (the region graph's merges in
order, with their scores). The segmentation for any threshold is then the fragments relabelled by
the connected components of the merges scored below it — a lookup table, milliseconds, which is
what the napari threshold slider needs — and equals running waterz again at that threshold.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .fragments import as_float_affinities, check_affinities, fragments_from_affinities

#: TokenUnify's waterz setting: median (50th percentile, 256-bin histogram) affinity scoring.
TOKENUNIFY_SCORING = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>"
#: Mean affinity over the contact: every link counts, so a few uncertain links on a large
#: contact do not flip a merge (the bundled default's setting; docs/results.md, rule 13).
MEAN_SCORING = "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>"
#: Short names of the scoring functions a model card can name (``training.segmentation_scoring``).
SCORINGS = {"median": TOKENUNIFY_SCORING, "mean": MEAN_SCORING}


def scoring_function(scoring: str | None) -> str:
    """waterz's scoring expression for a short name ("median", "mean") or an expression as is."""
    if scoring is None:
        return TOKENUNIFY_SCORING
    if scoring in SCORINGS:
        return SCORINGS[scoring]
    if "<" in scoring and "RegionGraphType" in scoring:
        return scoring
    raise ValueError(f"unknown agglomeration scoring {scoring!r}; use one of {', '.join(SCORINGS)} "
                     "or a waterz scoring expression")
DEFAULT_QUEUE = 256
DEFAULT_THRESHOLD = 0.5


@contextmanager
def quiet_stdout():
    """Silence the C++ progress lines waterz prints to the process's stdout."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


def label_dtype(max_id: int) -> np.dtype:
    """uint32 while ids fit, uint64 beyond."""
    return np.dtype(np.uint32) if max_id < 2**32 else np.dtype(np.uint64)


def merge_history(
    affinities: np.ndarray, fragments: np.ndarray, *, scoring: str | None = None,
    discretize_queue: int = DEFAULT_QUEUE, max_threshold: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """waterz merges up to ``max_threshold``: pairs (M, 2) of region ids and scores (M,).

    Ids refer to fragments or to earlier merged regions, which waterz names after one of the two
    it merged, so the connected components of the pairs are the merged regions.

    The history ends at the first merge whose score reaches ``max_threshold``, whatever
    ``max_threshold`` is: waterz's discretised queue stops on a score's bin, so asked to stop at
    0.6 it leaves out a merge scored 0.5985 that it makes when asked for 0.8. Agglomerating one
    bin further and cutting here makes a segmentation at ``t`` the same whether the history was
    built up to ``t`` (``tokenunify run``) or higher (validation sweeps over thresholds).
    """
    import waterz

    scoring = scoring_function(scoring)
    affs = np.ascontiguousarray(affinities[:3], dtype=np.float32)
    frag = np.ascontiguousarray(fragments, dtype=np.uint64).copy()
    slack = 2.0 / discretize_queue if discretize_queue else 0.0
    with quiet_stdout():
        results = list(
            waterz.agglomerate(
                affs, [min(1.0, float(max_threshold) + slack)], fragments=frag, scoring_function=scoring,
                discretize_queue=discretize_queue, return_merge_history=True,
            )
        )
    history = results[0][1]
    pairs = np.array([(m["a"], m["b"]) for m in history], dtype=np.uint64).reshape(-1, 2)
    scores = np.array([m["score"] for m in history], dtype=np.float64)
    above = np.nonzero(scores >= max_threshold)[0]
    end = int(above[0]) if len(above) else len(scores)
    return pairs[:end], scores[:end]


def components_lut(n_nodes: int, pairs: np.ndarray, keep_zero: bool = True) -> np.ndarray:
    """Lookup table node → component id (1..K consecutive; node 0 stays 0 when ``keep_zero``)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n_nodes, n_nodes)
    )
    _, comp = connected_components(graph, directed=False)
    if keep_zero:
        # renumber by first appearance among nodes 1.., so ids are consecutive from 1
        _, first, inverse = np.unique(comp[1:], return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        lut = np.zeros(n_nodes, dtype=np.int64)
        lut[1:] = order[inverse] + 1
        return lut
    return comp.astype(np.int64) + 1


class Agglomerator:
    """Fragments + waterz merge history of one affinity volume; ``segment(t)`` is fast."""

    def __init__(
        self,
        affinities,
        fragments: np.ndarray | None = None,
        *,
        scoring: str | None = None,
        discretize_queue: int = DEFAULT_QUEUE,
        anisotropic: bool | None = None,
        voxel_size: Sequence[float] | None = None,
        max_threshold: float = 1.0,
    ) -> None:
        check_affinities(affinities)
        affs = as_float_affinities(affinities)
        if fragments is None:
            fragments = fragments_from_affinities(affs, anisotropic=anisotropic, voxel_size=voxel_size)
        fragments = np.asarray(fragments)
        if fragments.shape != affs.shape[1:]:
            raise ValueError(
                f"fragments have shape {fragments.shape} but the affinities cover {affs.shape[1:]}"
            )
        from skimage.segmentation import relabel_sequential

        fragments, _, _ = relabel_sequential(fragments.astype(np.uint64, copy=False))
        self.fragments = fragments
        self.n_fragments = int(fragments.max())
        self.max_threshold = float(max_threshold)
        self.pairs, self.scores = merge_history(
            affs, fragments, scoring=scoring, discretize_queue=discretize_queue,
            max_threshold=max_threshold,
        )

    def n_merges(self, threshold: float) -> int:
        """Merges done by waterz before its lowest score reached ``threshold``."""
        above = np.nonzero(self.scores >= threshold)[0]
        return int(above[0]) if len(above) else len(self.scores)

    def lookup(self, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
        """Fragment id → segment id for ``threshold``."""
        if threshold > self.max_threshold:
            raise ValueError(
                f"threshold {threshold} is above the {self.max_threshold} this agglomeration was "
                "computed up to; build the Agglomerator with a higher max_threshold"
            )
        return components_lut(self.n_fragments + 1, self.pairs[: self.n_merges(threshold)])

    def segment(self, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
        """The segmentation (uint32, or uint64 when the ids need it) at ``threshold``."""
        lut = self.lookup(threshold)
        return lut.astype(label_dtype(int(lut.max())))[self.fragments]


def segment_affinities(
    affinities,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    method: str = "waterz",
    fragments: np.ndarray | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
    anisotropic: bool | None = None,
    voxel_size: Sequence[float] | None = None,
    scoring: str | None = None,
) -> np.ndarray:
    """Neuron labels from affinities (C, Z, Y, X) in memory: ``method`` "waterz" (fragments by
    seeded watershed, then agglomeration at ``threshold``) or "mutex" (mutex watershed over all
    ``offsets``, for models with long-range affinities)."""
    if method == "mutex":
        return mutex_watershed(affinities, offsets)
    if method != "waterz":
        raise ValueError(f"unknown segmentation method {method!r}; use 'waterz' or 'mutex'")
    if offsets is not None:
        check_affinities(affinities, offsets)
    agg = Agglomerator(
        affinities, fragments, scoring=scoring, anisotropic=anisotropic, voxel_size=voxel_size,
        max_threshold=max(threshold, DEFAULT_THRESHOLD),
    )
    return agg.segment(threshold)


def mutex_watershed(
    affinities,
    offsets: Sequence[Sequence[int]] | None = None,
    *,
    bias: float | Sequence[float] = -0.5,
    strides: Sequence[Sequence[int]] | None = None,
    randomized_strides: bool = False,
) -> np.ndarray:
    """Mutex watershed (mwatershed) over affinities with any offsets (our convention: channel c
    links v and v - offsets[c]). ``bias`` is added per channel: affinity + bias > 0 attracts,
    < 0 repels."""
    import mwatershed
    from skimage.segmentation import relabel_sequential

    from ..affinities import NEAREST_OFFSETS

    offsets = [tuple(int(v) for v in o) for o in (offsets or NEAREST_OFFSETS)]
    check_affinities(affinities, offsets)
    affs = as_float_affinities(affinities).astype(np.float64)
    bias_arr = np.broadcast_to(np.asarray(bias, dtype=np.float64), (len(offsets),))
    affs += bias_arr[:, None, None, None]
    # mwatershed links v and v + offset: negate ours.
    neg = [[-v for v in o] for o in offsets]
    labels = mwatershed.agglom(
        affs, neg, strides=[list(s) for s in strides] if strides else None,
        randomized_strides=randomized_strides,
    )
    labels, _, _ = relabel_sequential(labels.astype(np.uint64))
    return labels.astype(label_dtype(int(labels.max())))

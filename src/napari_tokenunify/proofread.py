"""Proofreading edits on a neuron label volume (pure numpy; no Qt, no napari).

Every edit function leaves ``labels`` untouched and returns an :class:`Edit`: the bounding box of
the change plus the label values there before and after. The napari widgets apply an edit through
the Labels layer's history-recording API (so napari's undo works) and keep the edits in an
:class:`EditLog`, which tells finetuning which regions a person has corrected. Library users call
:func:`apply_edit`.

Affinity volumes follow :mod:`napari_tokenunify.affinities`: channels first, ``(C, Z, Y, X)``,
values in [0, 1], channel ``c`` linking voxel v and v - offsets[c].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

Region = tuple[slice, slice, slice]


class ProofreadError(ValueError):
    """A proofreading request that cannot be carried out (message says why and what to do)."""


@dataclass
class Edit:
    """One change to a label volume, confined to ``region`` (a bounding box of slices)."""

    kind: str
    region: Region
    before: np.ndarray
    after: np.ndarray
    ids: tuple[int, ...] = ()
    #: what the user should know about the result (e.g. a degenerate split piece); "" if nothing
    warning: str = ""

    @property
    def changed(self) -> np.ndarray:
        """Boolean mask (shape of the region) of the voxels whose label changes."""
        return self.before != self.after

    @property
    def n_changed(self) -> int:
        return int(np.count_nonzero(self.changed))

    def changed_indices(self) -> tuple[np.ndarray, ...]:
        """Full-volume index arrays of the changed voxels (fancy indexing, as napari expects)."""
        local = np.nonzero(self.changed)
        return tuple(idx + sl.start for idx, sl in zip(local, self.region, strict=True))

    def changed_values(self) -> np.ndarray:
        return self.after[self.changed]


def _check_labels(labels: np.ndarray) -> None:
    if labels.ndim != 3:
        raise ProofreadError(f"labels must be a 3D volume (z, y, x), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ProofreadError(f"labels must hold integer ids, got dtype {labels.dtype}")


def _present(labels: np.ndarray, label_id: int) -> np.ndarray:
    mask = labels == label_id
    if label_id == 0:
        raise ProofreadError("label 0 is background; pick a neuron label (a non-zero id)")
    if not mask.any():
        raise ProofreadError(f"label {label_id} does not occur in the labels layer")
    return mask


def _bbox_of(mask: np.ndarray, pad: int = 0) -> Region:
    coords = np.nonzero(mask)
    return tuple(
        slice(max(int(c.min()) - pad, 0), min(int(c.max()) + 1 + pad, size))
        for c, size in zip(coords, mask.shape, strict=True)
    )  # type: ignore[return-value]


def _union_region(a: Region, b: Region) -> Region:
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )  # type: ignore[return-value]


def next_free_id(labels: np.ndarray) -> int:
    """An id not used in ``labels`` (one more than the largest)."""
    return int(labels.max(initial=0)) + 1


def label_bbox(labels: np.ndarray, label_id: int) -> Region:
    """Bounding box (slices) of ``label_id``."""
    _check_labels(labels)
    return _bbox_of(_present(labels, label_id))


def label_centroid(labels: np.ndarray, label_id: int) -> tuple[float, float, float]:
    """Centre of mass of ``label_id`` in voxel coordinates (z, y, x)."""
    _check_labels(labels)
    mask = _present(labels, label_id)
    return tuple(float(c) for c in ndi.center_of_mass(mask))  # type: ignore[return-value]


def label_at(labels: np.ndarray, point: Sequence[float]) -> int:
    """The id at a (z, y, x) point, rounded to the nearest voxel; an error when outside."""
    idx = tuple(int(round(float(p))) for p in point)
    if len(idx) != labels.ndim or any(
        not 0 <= i < s for i, s in zip(idx, labels.shape, strict=True)
    ):
        raise ProofreadError(f"point {tuple(point)} lies outside the labels volume {labels.shape}")
    return int(labels[idx])


def merge_labels(labels: np.ndarray, ids: Iterable[int], target: int | None = None) -> Edit:
    """Give all of ``ids`` one id (``target``, by default the smallest of them)."""
    _check_labels(labels)
    ids = sorted({int(i) for i in ids if int(i) != 0})
    if len(ids) < 2:
        raise ProofreadError("select at least two different non-zero labels to merge")
    target = ids[0] if target is None else int(target)
    masks = np.isin(labels, ids)
    missing = [i for i in ids if not (labels == i).any()]
    if missing:
        raise ProofreadError(f"label(s) {missing} do not occur in the labels layer")
    region = _bbox_of(masks)
    before = np.array(labels[region], copy=True)
    after = before.copy()
    after[np.isin(before, ids)] = target
    return Edit("merge", region, before, after, tuple(ids))


def delete_label(labels: np.ndarray, label_id: int) -> Edit:
    """Set every voxel of ``label_id`` to 0 (background)."""
    _check_labels(labels)
    label_id = int(label_id)
    region = _bbox_of(_present(labels, label_id))
    before = np.array(labels[region], copy=True)
    after = before.copy()
    after[before == label_id] = 0
    return Edit("delete", region, before, after, (label_id,))


def relabel(labels: np.ndarray, label_id: int, new_id: int | None = None) -> Edit:
    """Give ``label_id`` a fresh id (``new_id``, by default one not used anywhere)."""
    _check_labels(labels)
    label_id = int(label_id)
    region = _bbox_of(_present(labels, label_id))
    new_id = next_free_id(labels) if new_id is None else int(new_id)
    if new_id == 0:
        raise ProofreadError("the new id must be non-zero (0 is background); use delete instead")
    if new_id != label_id and (labels == new_id).any():
        raise ProofreadError(f"id {new_id} is already used; leave it empty to get a fresh id")
    before = np.array(labels[region], copy=True)
    after = before.copy()
    after[before == label_id] = new_id
    return Edit("relabel", region, before, after, (label_id, new_id))


def boundary_map(affinities: np.ndarray) -> np.ndarray:
    """The fragments' watershed elevation (``engine.fragments.boundary_map``): high on membranes."""
    from .engine.fragments import as_float_affinities, check_affinities
    from .engine.fragments import boundary_map as engine_boundary_map

    try:
        check_affinities(affinities)
    except ValueError as e:
        raise ProofreadError(str(e)) from None
    return engine_boundary_map(as_float_affinities(affinities))


def split_label(
    labels: np.ndarray,
    seeds: Sequence[Sequence[float]],
    *,
    affinities: np.ndarray | None = None,
    image: np.ndarray | None = None,
    label_id: int | None = None,
) -> Edit:
    """Split one label into as many pieces as there are seed points, by seeded watershed.

    The watershed runs only inside the label, on the affinity boundary map when ``affinities`` are
    given, else on the image (EM membranes are dark, so dark = high), else on the inverted
    distance to the label's border. The first seed keeps the old id; the others get fresh ids.
    Voxels no seed can reach (other pieces of a disconnected label) keep the old id.

    Each seed floods from the whole catchment basin it falls in (see :func:`seed_markers`), not
    from its single voxel: a seed clicked on or near a membrane sits high on the elevation, and a
    one-voxel marker there was flooded by the other seed (a 1-voxel piece, issue 15). A piece
    smaller than ``MIN_PIECE`` voxels is reported in ``Edit.warning``.
    """
    _check_labels(labels)
    pts = [tuple(int(round(float(c))) for c in p) for p in seeds]
    if len(set(pts)) < 2:
        raise ProofreadError(
            "place at least two seed points (in different voxels) to split a label"
        )
    ids = {label_at(labels, p) for p in pts}
    if label_id is None:
        if len(ids) != 1:
            raise ProofreadError(
                f"the seed points fall in different labels {sorted(ids)}; put all seeds inside "
                "the one label to split"
            )
        label_id = ids.pop()
    elif ids != {int(label_id)}:
        raise ProofreadError(f"every seed point must lie inside label {label_id}")
    label_id = int(label_id)
    region = _bbox_of(_present(labels, label_id), pad=1)
    before = np.array(labels[region], copy=True)
    mask = before == label_id

    if affinities is not None:
        affs = np.asarray(affinities[(slice(None),) + region])
        if affs.shape[1:] != before.shape:
            raise ProofreadError(
                f"affinities {np.shape(affinities)} do not match the labels {labels.shape}"
            )
        elevation = boundary_map(affs)
    elif image is not None:
        if np.shape(image) != labels.shape:
            raise ProofreadError(f"image {np.shape(image)} does not match labels {labels.shape}")
        elevation = -np.asarray(image[region], dtype=np.float32)
    else:
        elevation = -ndi.distance_transform_edt(mask)

    from skimage.segmentation import watershed

    local = [tuple(c - sl.start for c, sl in zip(p, region, strict=True)) for p in pts]
    markers = seed_markers(elevation, mask, local)
    pieces = watershed(elevation, markers=markers, mask=mask)

    fresh = next_free_id(labels)
    new_ids = np.array([0, label_id] + [fresh + i for i in range(len(pts) - 1)], dtype=labels.dtype)
    after = before.copy()
    after[mask] = new_ids[pieces[mask]]
    after[mask & (pieces == 0)] = label_id
    sizes = np.bincount(pieces[mask].ravel(), minlength=len(pts) + 1)[1:]
    small = [int(new_ids[k + 1]) for k, n in enumerate(sizes) if n < MIN_PIECE]
    warning = (
        f"piece(s) {small} have fewer than {MIN_PIECE} voxels ({', '.join(str(int(n)) for n in sizes)}"
        " voxels per piece): no boundary separates those seeds; undo (Ctrl-Z) and place the seeds "
        "deeper inside each neuron, or paint the split"
    ) if small else ""
    return Edit("split", region, before, after, tuple(int(i) for i in new_ids[1:]), warning)


#: split pieces smaller than this many voxels are reported as degenerate
MIN_PIECE = 10


def seed_markers(elevation: np.ndarray, mask: np.ndarray, seeds: Sequence[tuple[int, ...]]) -> np.ndarray:
    """Watershed markers (1..n) for seed points: the catchment basin of ``elevation`` (inside
    ``mask``) that each seed falls in. Seeds that share a basin (no ridge between them) share it
    out by distance: each gets the basin's voxels nearer to it than to the others."""
    from skimage.segmentation import watershed

    basins = watershed(elevation, mask=mask)  # one basin per local minimum
    flat = mask & (basins == 0)  # no minimum found (a flat elevation): its connected pieces
    if flat.any():
        pieces, _ = ndi.label(flat)
        basins = np.where(pieces > 0, pieces + basins.max(), basins)
    owner = np.array([int(basins[p]) for p in seeds])
    markers = np.zeros(mask.shape, dtype=np.int32)
    for b in np.unique(owner[owner > 0]):
        ks = np.flatnonzero(owner == b)
        voxels = np.argwhere(basins == b)
        if len(ks) == 1:
            markers[tuple(voxels.T)] = ks[0] + 1
            continue
        pts = np.array([seeds[k] for k in ks], dtype=np.float64)
        d = ((voxels[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2)
        markers[tuple(voxels.T)] = ks[np.argmin(d, axis=1)] + 1
    for k, p in enumerate(seeds, start=1):  # every seed keeps at least its own voxel
        markers[p] = k
    return markers


def apply_edit(labels: np.ndarray, edit: Edit) -> np.ndarray:
    """Write ``edit`` into ``labels`` in place and return it."""
    labels[edit.region] = np.where(edit.changed, edit.after, labels[edit.region])
    return labels


def revert_edit(labels: np.ndarray, edit: Edit) -> np.ndarray:
    """Undo ``edit`` in place (for library users; the widgets use napari's undo)."""
    labels[edit.region] = np.where(edit.changed, edit.before, labels[edit.region])
    return labels


@dataclass
class EditLog:
    """The regions a person corrected, for finetuning on them and for autosave bookkeeping.

    A region may carry a ``token`` (the widgets pass the undo-history entry of the edit); after an
    undo, :meth:`sync` with the tokens still applied drops it from :meth:`regions` and
    :meth:`mask` (a redo brings it back), so finetuning never trains on a correction that was
    taken back. Regions without a token always count.
    """

    shape: tuple[int, int, int]
    _regions: list[Region] = field(default_factory=list)
    _tokens: list[Any] = field(default_factory=list)
    _undone: set[int] = field(default_factory=set)

    def record(self, edit: Edit, token: Any = None) -> None:
        self.mark(edit.region, token)

    def mark(self, region: Sequence[slice], token: Any = None) -> None:
        """Record a changed box (e.g. from a paint stroke), clipped to the volume."""
        box = tuple(
            slice(max(int(s.start or 0), 0), min(int(n if s.stop is None else s.stop), n))
            for s, n in zip(region, self.shape, strict=True)
        )
        if all(s.stop > s.start for s in box):
            self._regions.append(box)  # type: ignore[arg-type]
            self._tokens.append(token)

    def sync(self, is_applied: Callable[[Any], bool]) -> None:
        """Re-read which tokened edits are in effect (after an undo or redo)."""
        self._undone = {i for i, t in enumerate(self._tokens) if t is not None and not is_applied(t)}

    def __len__(self) -> int:
        return len(self._regions) - len(self._undone)

    @property
    def n_recorded(self) -> int:
        """Every edit ever recorded, undone ones included (they may be redone)."""
        return len(self._regions)

    def regions(self) -> list[Region]:
        return [r for i, r in enumerate(self._regions) if i not in self._undone]

    def bounding_box(self) -> Region | None:
        """One box around every edit in effect, or None when there is none."""
        regions = self.regions()
        if not regions:
            return None
        box = regions[0]
        for r in regions[1:]:
            box = _union_region(box, r)
        return box

    def mask(self, margin: int = 0) -> np.ndarray:
        """Boolean volume, True inside the (optionally enlarged) box of every edit in effect."""
        out = np.zeros(self.shape, dtype=bool)
        for r in self.regions():
            sl = tuple(
                slice(max(s.start - margin, 0), min(s.stop + margin, n))
                for s, n in zip(r, self.shape, strict=True)
            )
            out[sl] = True
        return out

    def clear(self) -> None:
        self._regions.clear()
        self._tokens.clear()
        self._undone.clear()


@dataclass
class UncertainSpot:
    """A block of the volume ranked by :func:`uncertainty_ranking` (higher score: check first).

    ``center`` is the block's centre voxel (whole numbers, so a viewer shows a real section);
    ``extent`` its size in voxels (z, y, x).
    """

    score: float
    region: Region
    center: tuple[int, int, int]

    @property
    def extent(self) -> tuple[int, int, int]:
        return tuple(r.stop - r.start for r in self.region)  # type: ignore[return-value]


def block_starts(size: int, block: int) -> list[int]:
    """Starts of full blocks along one axis: a regular grid, the last block moved back to end
    at the edge (so it overlaps its neighbour instead of being a sliver); one block, the whole
    axis, when the axis is shorter than a block."""
    size, block = int(size), max(1, int(block))
    if size <= block:
        return [0]
    starts = list(range(0, size - block + 1, block))
    if starts[-1] + block < size:
        starts.append(size - block)
    return starts


def block_grid(shape: Sequence[int], block: Sequence[int]) -> list[Region]:
    """Every full block (``block`` voxels, clipped to ``shape`` only where the volume is
    smaller) of the grid :func:`block_starts` lays over ``shape`` (z, y, x)."""
    from itertools import product

    block = [min(max(1, int(b)), int(s)) for b, s in zip(block, shape, strict=True)]
    axes = [block_starts(s, b) for s, b in zip(shape, block, strict=True)]
    return [
        tuple(slice(a, a + b) for a, b in zip(starts, block, strict=True))  # type: ignore[misc]
        for starts in product(*axes)
    ]


def boundary_uncertainty(
    affinities: np.ndarray, labels: np.ndarray, threshold: float = 0.5, width: float = 0.5
) -> np.ndarray:
    """Per voxel: how close to a decision the boundaries between segments it touches were.

    For every nearest-neighbour pair of voxels with different non-zero ``labels``, the weight
    ``max(0, 1 - |a - (1 - threshold)| / width)`` of the pair's affinity ``a`` is added to both
    voxels. ``1 - threshold`` is where the agglomeration (waterz's one-minus-median-affinity
    score) decides between merging and keeping a boundary, so a pair near it is a boundary
    that almost went the other way: a likely split, or a merge just avoided. Affinities follow
    the package convention (channel c at voxel v links v and v - e_c; the first three channels
    are the nearest neighbours z, y, x).
    """
    affs = np.asarray(affinities, dtype=np.float32)
    lab = np.asarray(labels)
    if affs.ndim != 4 or affs.shape[0] < 3 or affs.shape[1:] != lab.shape:
        raise ProofreadError(
            f"affinities (channels, z, y, x) {affs.shape} do not match labels {lab.shape}"
        )
    target = 1.0 - float(threshold)
    out = np.zeros(lab.shape, dtype=np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        there = [slice(None)] * 3
        here[axis], there[axis] = slice(1, None), slice(None, -1)
        a, b = lab[tuple(here)], lab[tuple(there)]
        across = (a != b) & (a != 0) & (b != 0)
        close = np.clip(1.0 - np.abs(affs[axis][tuple(here)] - target) / float(width), 0.0, 1.0)
        weight = np.where(across, close, np.float32(0))
        out[tuple(here)] += weight
        out[tuple(there)] += weight
    return out


def minority_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per element of two labelings (same shape): True where its piece in ``a`` is not the
    largest one of its segment in ``b``, or its segment in ``b`` not the largest one of its piece
    in ``a`` (0 is a label like any other here)."""
    shape = np.shape(a)
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    au, ai = np.unique(a, return_inverse=True)
    bu, bi = np.unique(b, return_inverse=True)
    pairs, counts = np.unique(ai.astype(np.int64) * len(bu) + bi, return_counts=True)
    pa, pb = pairs // len(bu), pairs % len(bu)
    main_b = np.empty(len(au), dtype=np.int64)
    order = np.lexsort((-counts, pa))  # per piece of a, its largest segment of b first
    first = np.r_[True, pa[order][1:] != pa[order][:-1]]
    main_b[pa[order][first]] = pb[order][first]
    main_a = np.empty(len(bu), dtype=np.int64)
    order = np.lexsort((-counts, pb))
    first = np.r_[True, pb[order][1:] != pb[order][:-1]]
    main_a[pb[order][first]] = pa[order][first]
    return ((main_b[ai] != bi) | (main_a[bi] != ai)).reshape(shape)


def minority_voxels(a: np.ndarray, b: np.ndarray) -> int:
    """How many voxels :func:`minority_mask` marks: where two labelings of a block disagree."""
    return int(np.count_nonzero(minority_mask(a, b)))


#: the lower agglomeration thresholds (shares of the labels' one) whose pieces the merge term of
#: :func:`uncertainty_ranking` compares the labels with ("shares")
MERGE_LEVELS = (1 / 3, 1 / 2, 2 / 3)
#: the same as steps below the labels' threshold ("steps", rule 20 in docs/results.md)
MERGE_STEPS = (0.15, 0.10, 0.05)
#: the merge levels "Next place to check" uses (rule 20: "shares" sat far below where the mean
#: scoring merges at t 0.6)
DEFAULT_MERGE_LEVELS = "steps"


#: what "Next place to check" ranks blocks by: the affinities alone ("affinity uncertainty") or
#: the labels' boundaries near the threshold plus late merges ("segment boundaries and merges").
#: Rule 39 (docs/results.md, session 15): over the last three defaults on the two validation
#: crops the affinities' lowest ratio to random blocks was 1.80, the labels' 1.66
RANK_SIGNALS = ("affinity uncertainty", "segment boundaries and merges")
DEFAULT_RANK_SIGNAL = "affinity uncertainty"


def merge_thresholds(threshold: float, levels: str = DEFAULT_MERGE_LEVELS) -> list[float]:
    """The lower thresholds the merge term compares the labels with: :data:`MERGE_LEVELS` times
    ``threshold`` ("shares") or ``threshold`` minus :data:`MERGE_STEPS` ("steps", at least 0.01)."""
    t = float(threshold)
    if levels == "shares":
        return [f * t for f in MERGE_LEVELS]
    if levels == "steps":
        return [max(0.01, t - d) for d in MERGE_STEPS]
    raise ValueError(f"merge levels must be 'shares' or 'steps', got {levels!r}")


def _mostly_overlaps(a: Region, b: Region, share: float = 0.5) -> bool:
    inter = 1
    for x, y in zip(a, b, strict=True):
        inter *= max(0, min(x.stop, y.stop) - max(x.start, y.start))
    size = int(np.prod([s.stop - s.start for s in a]))
    return inter > share * size


def _block_sums(u: np.ndarray) -> np.ndarray:
    """Summed-area table (Y + 1, X + 1) of ``u`` (Z, Y, X) summed over Z."""
    sat = np.zeros((u.shape[1] + 1, u.shape[2] + 1), dtype=np.float64)
    sat[1:, 1:] = u.sum(axis=0).cumsum(0).cumsum(1)
    return sat


def _box_sum(sat: np.ndarray, y0: int, x0: int, by: int, bx: int) -> float:
    return float(sat[y0 + by, x0 + bx] - sat[y0, x0 + bx] - sat[y0 + by, x0] + sat[y0, x0])


def uncertainty_ranking(
    affinities: np.ndarray,
    block: Sequence[int] = (8, 32, 32),
    top: int | None = 20,
    min_score: float = 0.0,
    *,
    labels: np.ndarray | None = None,
    threshold: float = 0.5,
    agglomerator: Any = None,
    merge_levels: str = DEFAULT_MERGE_LEVELS,
    with_affinities: bool = False,
) -> list[UncertainSpot]:
    """Full blocks ranked by where errors are likely, best first ("Next place to check").

    With ``labels`` (the segmentation being proofread, same z, y, x shape) a block's score is
    the mean :func:`boundary_uncertainty` at ``threshold`` (the agglomeration threshold the
    labels were made at): boundaries between segments whose affinity sits near the merge
    decision (a likely split). With an ``agglomerator`` too (the engine's ``Agglomerator`` of
    these affinities, or anything with ``segment(threshold)``), a merge term is added: the share
    of the block's voxels where the labels and the agglomeration at lower thresholds
    (:func:`merge_thresholds` with ``merge_levels``) disagree (:func:`minority_voxels`, averaged
    over the levels): segments that only merged close to the threshold (a likely merge). With
    ``with_affinities`` (and labels) the affinities' own uncertainty is a term too. Each term is
    divided by its mean over the volume's blocks, and the score is their sum. Without labels it
    is the mean ``min(a, 1 - a)`` over channels and voxels (0 sure, 0.5 coin flip): the
    affinity uncertainty.

    Only full blocks are ranked (:func:`block_grid`: the last block of each axis is moved back
    inside the volume), never edge slivers, and a block mostly covered by a better-ranked one
    is left out. Reads one slab of blocks at a time, so ``affinities`` (and ``labels``) may be
    zarr or dask arrays.
    """
    shape = tuple(int(s) for s in np.shape(affinities))
    if len(shape) != 4:
        raise ProofreadError(f"affinities must be (channels, z, y, x), got shape {shape}")
    if labels is not None and tuple(np.shape(labels)) != shape[1:]:
        raise ProofreadError(
            f"labels {tuple(np.shape(labels))} do not match the affinities' volume {shape[1:]}"
        )
    vol = shape[1:]
    block = tuple(min(max(1, int(b)), s) for b, s in zip(block, vol, strict=True))
    bz, by, bx = block
    ys, xs = block_starts(vol[1], by), block_starts(vol[2], bx)
    lower = []
    if labels is not None and agglomerator is not None:
        lower = [np.asarray(agglomerator.segment(t)) for t in merge_thresholds(threshold, merge_levels)]
        if any(seg.shape != vol for seg in lower):
            raise ProofreadError(
                f"the agglomerator segments a volume of {lower[0].shape}, not the affinities' {vol}"
            )
    spots: list[tuple[UncertainSpot, tuple[int, int, int]]] = []
    merge: list[float] = []
    extra: list[float] = []  # the affinity uncertainty term (with_affinities and labels)
    both = with_affinities and labels is not None
    for iz, z0 in enumerate(block_starts(vol[0], bz)):
        # one section more each side: the boundaries across the slab's two faces count too
        lo, hi = max(z0 - 1, 0), min(z0 + bz + 1, vol[0])
        slab = np.asarray(affinities[:, lo:hi], dtype=np.float32)
        if labels is None:
            u = np.minimum(slab, 1.0 - slab).mean(axis=0)
        else:
            u = boundary_uncertainty(slab, np.asarray(labels[lo:hi]), threshold)
        u = u[z0 - lo : z0 - lo + bz]
        sat_a = _block_sums(np.minimum(slab, 1.0 - slab).mean(axis=0)[z0 - lo : z0 - lo + bz]) if both else None
        lab_slab = np.asarray(labels[z0 : z0 + bz]) if lower else None
        sat = _block_sums(u)
        for iy, y0 in enumerate(ys):
            for ix, x0 in enumerate(xs):
                s = _box_sum(sat, y0, x0, by, bx) / (bz * by * bx)
                if both:
                    extra.append(_box_sum(sat_a, y0, x0, by, bx) / (bz * by * bx))
                region = (slice(z0, z0 + bz), slice(y0, y0 + by), slice(x0, x0 + bx))
                center = (z0 + bz // 2, y0 + by // 2, x0 + bx // 2)
                spots.append((UncertainSpot(s, region, center), (iz, iy, ix)))
                if lower:
                    local = (slice(None), region[1], region[2])
                    merge.append(float(np.mean([
                        minority_voxels(seg[region], lab_slab[local]) for seg in lower
                    ])) / (bz * by * bx))
    terms = [t for t in (merge, extra) if t]
    if terms:  # every term in units of its volume mean, added
        split_mean = float(np.mean([sp.score for sp, _ in spots])) or 1.0
        means = [float(np.mean(t)) or 1.0 for t in terms]
        for i, (sp, _) in enumerate(spots):
            sp.score = sp.score / split_mean + sum(t[i] / m for t, m in zip(terms, means, strict=True))
    spots = [item for item in spots if item[0].score >= min_score]
    spots.sort(key=lambda item: -item[0].score)
    kept: dict[tuple[int, int, int], UncertainSpot] = {}
    for spot, (iz, iy, ix) in spots:
        # an edge block moved back overlaps only its grid neighbours: never show it after them
        near = (kept.get((iz + a, iy + b, ix + c)) for a in (-1, 0, 1) for b in (-1, 0, 1)
                for c in (-1, 0, 1))
        if not any(k is not None and _mostly_overlaps(spot.region, k.region) for k in near):
            kept[(iz, iy, ix)] = spot
        if top is not None and len(kept) >= top:
            break
    return list(kept.values())

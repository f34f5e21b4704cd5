"""Small-object cleanup of label volumes: minimum size and hole filling.

Both work on the contact graph of labels (which ids touch which, face-connected), so they cost a
few passes over the volume whatever the number of ids:
- a segment smaller than ``min_size`` voxels joins the neighbour it shares the most faces with
  (or becomes 0 when it touches nothing but 0);
- a segment enclosed by a single other segment (touching nothing else and not the volume border)
  is a hole and takes that segment's id.
"""

from __future__ import annotations

import numpy as np

from .agglomerate import label_dtype


def contacts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face contacts between different ids: arrays (a, b, count) with a != b, both directions."""
    pairs = []
    for axis in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        a = labels[tuple(lo)].ravel()
        b = labels[tuple(hi)].ravel()
        diff = a != b
        pairs.append(np.stack([a[diff], b[diff]], axis=1))
    both = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=labels.dtype)
    both = np.concatenate([both, both[:, ::-1]])
    if len(both) == 0:
        empty = np.zeros(0, dtype=labels.dtype)
        return empty, empty, np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(both, axis=0, return_counts=True)
    return uniq[:, 0], uniq[:, 1], counts


def _border_ids(labels: np.ndarray) -> np.ndarray:
    faces = []
    for axis in range(labels.ndim):
        faces.append(np.take(labels, 0, axis=axis).ravel())
        faces.append(np.take(labels, -1, axis=axis).ravel())
    return np.unique(np.concatenate(faces))


def _apply(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    if not mapping:
        return labels
    ids = np.unique(labels)
    target = ids.copy()
    for i, src in enumerate(ids):
        dst = int(src)
        seen = set()
        while dst in mapping and dst not in seen:  # follow chains a -> b -> c
            seen.add(dst)
            dst = mapping[dst]
        target[i] = dst
    return target[np.searchsorted(ids, labels)]


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Give every segment enclosed by exactly one other segment that segment's id."""
    labels = np.asarray(labels)
    a, b, _ = contacts(labels)
    border = set(_border_ids(labels).tolist())
    mapping: dict[int, int] = {}
    if len(a):
        starts = np.r_[0, np.nonzero(np.diff(a))[0] + 1]
        for s, e in zip(starts, np.r_[starts[1:], len(a)], strict=False):
            ida = int(a[s])
            if ida == 0 or ida in border or e - s != 1 or int(b[s]) == 0:
                continue
            mapping[ida] = int(b[s])
    return _apply(labels, mapping)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge segments below ``min_size`` voxels into their main neighbour (0 if only 0)."""
    labels = np.asarray(labels)
    if min_size <= 1:
        return labels
    ids, sizes = np.unique(labels, return_counts=True)
    small = {int(i) for i, s in zip(ids, sizes, strict=False) if i != 0 and s < min_size}
    if not small:
        return labels
    a, b, counts = contacts(labels)
    mapping: dict[int, int] = {}
    best: dict[int, tuple[int, int]] = {}
    for x, y, c in zip(a.tolist(), b.tolist(), counts.tolist(), strict=False):
        if x in small and y != 0 and (x not in best or c > best[x][1]):
            best[x] = (y, c)
    for x in small:
        mapping[x] = best[x][0] if x in best else 0
    # a small segment may point to another small one; _apply follows chains, break 2-cycles
    for x, y in list(mapping.items()):
        if mapping.get(y) == x and x < y:
            mapping[x] = y
            mapping.pop(y, None)
    return _apply(labels, mapping)


def cleanup(labels: np.ndarray, *, min_size: int = 0, fill: bool = False) -> np.ndarray:
    """Optional hole filling, then minimum size; ids are made consecutive (uint32/uint64)."""
    from skimage.segmentation import relabel_sequential

    out = np.asarray(labels)
    if fill:
        out = fill_holes(out)
    if min_size and min_size > 1:
        out = remove_small(out, int(min_size))
    out, _, _ = relabel_sequential(out)
    return out.astype(label_dtype(int(out.max()) if out.size else 0))

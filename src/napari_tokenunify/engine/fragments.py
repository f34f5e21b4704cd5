"""Fragments (over-segmentation) by seeded watershed on affinities.

As in TokenUnify / lsd: the boundary map is one minus the mean nearest-neighbour affinity; seeds
are the maxima of the distance transform of the inside (boundary map below a threshold), and a
watershed of the boundary map from those seeds labels every voxel. Anisotropic data
(z voxels much thicker than in-plane) is done section by section in 2D, isotropic data in 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ..affinities import NEAREST_OFFSETS


def check_affinities(affinities, offsets: Sequence[Sequence[int]] | None = None) -> None:
    """Refuse arrays that are not (C, Z, Y, X) affinities; with ``offsets``, one channel each."""
    shape = tuple(affinities.shape)
    if len(shape) != 4:
        raise ValueError(
            f"affinities must be 4D (channels, z, y, x), got shape {shape}; a label or image "
            "volume cannot be used as affinities"
        )
    if shape[0] < 3 or (offsets is not None and shape[0] != len(offsets)):
        want = len(offsets) if offsets is not None else "at least 3"
        raise ValueError(
            f"affinities have {shape[0]} channels but {want} are expected (offsets "
            f"{', '.join(str(tuple(o)) for o in (offsets or NEAREST_OFFSETS))}); the first three "
            "channels must be the z, y, x nearest-neighbour affinities"
        )
    if min(shape[1:]) < 1:
        raise ValueError(f"affinities are empty: shape {shape}")


def as_float_affinities(affinities) -> np.ndarray:
    """float32 in [0, 1] (uint8 stores are affinity × 255)."""
    a = np.asarray(affinities.compute() if hasattr(affinities, "compute") else affinities)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError("affinities contain NaN or infinite values; check the prediction")
    return a


BOUNDARY_KINDS = ("backward", "symmetric", "symmetric-min")


def boundary_map(affinities: np.ndarray, use_z: bool = True, kind: str = "backward") -> np.ndarray:
    """One voxel's boundary value from the nearest-neighbour affinities (channels 0..2 = z, y, x;
    channel c at v links v and v - e_c).

    ``kind`` "backward": 1 - mean of the three links to the lower neighbours (TokenUnify/lsd's
    map; a boundary between i - 1 and i shows on voxel i only). "symmetric": 1 - mean of all six
    links of the voxel (those at the volume's edge left out), so both voxels beside a cut see it.
    "symmetric-min": 1 - the weakest of the six links.
    """
    if kind not in BOUNDARY_KINDS:
        raise ValueError(f"unknown boundary kind {kind!r}; use one of {', '.join(BOUNDARY_KINDS)}")
    channels = [0, 1, 2] if use_z else [1, 2]
    if kind == "backward":
        return 1.0 - np.mean(affinities[channels], axis=0, dtype=np.float32)
    shape = affinities.shape[1:]
    reduce_min = kind == "symmetric-min"
    acc = np.full(shape, np.inf if reduce_min else 0.0, dtype=np.float32)
    count = np.zeros(shape, dtype=np.float32)
    for c in channels:
        a = affinities[c].astype(np.float32, copy=False)
        lo = [slice(None)] * 3
        lo[c] = slice(1, None)  # the link of v to v - e_c exists for v[c] >= 1
        hi = [slice(None)] * 3
        hi[c] = slice(0, -1)  # the same link seen from v - e_c
        for dst, src in ((tuple(lo), tuple(lo)), (tuple(hi), tuple(lo))):
            if reduce_min:
                np.minimum(acc[dst], a[src], out=acc[dst])
            else:
                acc[dst] += a[src]
                count[dst] += 1
    if reduce_min:
        acc[~np.isfinite(acc)] = 1.0
        return 1.0 - acc
    return 1.0 - acc / np.maximum(count, 1)


FLOODS = ("voxels", "edges")


def _seeded_watershed(boundary: np.ndarray, threshold: float, min_seed_distance: float,
                      affinities: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Seeds at the distance-transform maxima of the inside (``boundary`` below ``threshold``),
    flooded over the boundary map, or over the affinity graph when ``affinities`` (3, Z, Y, X)
    are given (:mod:`.edge_flood`)."""
    inside = boundary < threshold
    if not inside.any():
        inside = boundary <= boundary.min()
    dist = ndi.distance_transform_edt(inside).astype(np.float32)
    size = max(3, int(2 * min_seed_distance + 1))
    maxima = (dist == ndi.maximum_filter(dist, size=size)) & inside
    seeds, n = ndi.label(maxima)
    if n == 0:
        return np.ones(boundary.shape, dtype=np.uint64), 1
    if affinities is not None:
        from .edge_flood import flood_affinities

        return flood_affinities(affinities, seeds.reshape(affinities.shape[1:])).reshape(boundary.shape), n
    labels = watershed(boundary, seeds)
    return labels.astype(np.uint64), n


def fragments_from_affinities(
    affinities,
    *,
    anisotropic: bool | None = None,
    voxel_size: Sequence[float] | None = None,
    boundary_threshold: float = 0.5,
    min_seed_distance: float = 3.0,
    boundary: str = "backward",
    flood: str = "voxels",
) -> np.ndarray:
    """Fragments (uint64, 1..n, every voxel labelled) from affinities (C, Z, Y, X).

    ``flood`` "voxels": a watershed of the boundary map from the seeds (each voxel is a height);
    "edges": the same seeds flooded over the affinity graph, strongest link first, so a cut stays
    on the link the network cut (:mod:`.edge_flood`).

    ``anisotropic`` (2D per section) defaults to True when ``voxel_size`` has z ≥ 2× the in-plane
    size, or when the volume is a single section.
    """
    check_affinities(affinities)
    if flood not in FLOODS:
        raise ValueError(f"unknown flood {flood!r}; use one of {', '.join(FLOODS)}")
    affs = as_float_affinities(affinities)
    if anisotropic is None:
        anisotropic = bool(voxel_size is not None and voxel_size[0] >= 2 * max(voxel_size[1:]))
        anisotropic = anisotropic or affs.shape[1] == 1
    if not anisotropic:
        labels, _ = _seeded_watershed(boundary_map(affs, kind=boundary), boundary_threshold, min_seed_distance,
                                      affs[:3] if flood == "edges" else None)
        return labels
    bmap = boundary_map(affs, use_z=False, kind=boundary)
    out = np.zeros(bmap.shape, dtype=np.uint64)
    next_id = 0
    for z in range(bmap.shape[0]):
        # one section: its z links join nothing, so the flood stays in the section
        labels, n = _seeded_watershed(bmap[z], boundary_threshold, min_seed_distance,
                                      affs[:3, z:z + 1] if flood == "edges" else None)
        out[z] = labels + np.uint64(next_id)
        next_id += int(labels.max())
    return out

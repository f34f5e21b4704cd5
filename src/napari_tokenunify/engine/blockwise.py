"""Blockwise segmentation for volumes that do not fit in memory.

1. Fragments per block: seeded watershed on the block plus ``context`` voxels, cropped to the
   block, ids ``(block number << 32) | local id`` (unique without coordination), written to a
   ``fragments`` array.
2. Agglomeration across faces: per block, waterz on the block plus context (the fragments of
   the neighbours included) up to the threshold; every local segment that owns a fragment in the
   block links all its fragments, so a neuron cut by a face is joined by the blocks on both sides.
3. One global relabelling: the links' connected components give consecutive ids over the whole
   volume (uint32, uint64 when needed); each block's fragments are mapped and written.

Each step is a list of independent block tasks (here, or on dask.distributed workers that read
and write the same Zarr store).

With an output store every finished block task is recorded there (``fragment_counts``,
``links/<block>`` + ``links_done``, and the store's ``done`` for the relabelling), so a run that
was cancelled or crashed resumes where it stopped when called again with the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..progress import CancelToken, ProgressCallback
from .agglomerate import (
    DEFAULT_QUEUE,
    DEFAULT_THRESHOLD,
    components_lut,
    label_dtype,
    merge_history,
    scoring_function,
)
from .executor import run_tasks
from .fragments import as_float_affinities, check_affinities, fragments_from_affinities
from .tiling import Block

LOCAL_BITS = 32


def _clip(box, shape):
    return tuple((max(a, 0), min(b, s)) for (a, b), s in zip(box, shape, strict=False))


def _slices(box):
    return tuple(slice(a, b) for a, b in box)


def _read_affs(affinities, box) -> np.ndarray:
    return as_float_affinities(affinities[(slice(None),) + _slices(box)])


def block_fragments(block: Block, *, affinities, fragments_out, number: int,
                    anisotropic: bool | None, voxel_size) -> int:
    """Step 1 for one block; returns its number of fragments."""
    shape = tuple(affinities.shape[1:])
    tile = _clip(block.tile, shape)
    affs = _read_affs(affinities, tile)
    frag = fragments_from_affinities(affs, anisotropic=anisotropic, voxel_size=voxel_size)
    inner = tuple(slice(c0 - t0, c1 - t0) for (c0, c1), (t0, _) in zip(block.core, tile, strict=False))
    from skimage.segmentation import relabel_sequential

    core, _, _ = relabel_sequential(frag[inner])
    n = int(core.max())
    core = core.astype(np.uint64)
    core[core > 0] |= np.uint64(number) << np.uint64(LOCAL_BITS)
    fragments_out[_slices(block.core)] = core
    return n


def block_links(block: Block, *, affinities, fragments, threshold: float, scoring: str,
                discretize_queue: int) -> np.ndarray:
    """Step 2 for one block: pairs (K, 2) of global fragment ids to join."""
    shape = tuple(affinities.shape[1:])
    tile = _clip(block.tile, shape)
    affs = _read_affs(affinities, tile)
    frag = np.asarray(fragments[_slices(tile)])
    ids, local = np.unique(frag, return_inverse=True)
    local = local.reshape(frag.shape).astype(np.uint64)
    if ids[0] != 0:  # keep 0 for "no fragment"; local ids start at 1
        local += np.uint64(1)
        ids = np.r_[np.uint64(0), ids]
    pairs, scores = merge_history(affs, local, scoring=scoring, discretize_queue=discretize_queue,
                                  max_threshold=threshold)
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    lut = components_lut(len(ids), pairs)
    inner = tuple(slice(c0 - t0, c1 - t0) for (c0, c1), (t0, _) in zip(block.core, tile, strict=False))
    in_core = np.zeros(len(ids), dtype=bool)
    in_core[np.unique(local[inner]).astype(np.int64)] = True
    nodes = np.arange(1, len(ids))
    seg = lut[nodes]
    # each local segment with a fragment in this block: link all its fragments to one of those
    owner = {}
    for node, s in zip(nodes[in_core[nodes]], seg[in_core[nodes]], strict=False):
        owner.setdefault(int(s), int(node))
    links = [(ids[node], ids[owner[int(s)]]) for node, s in zip(nodes, seg, strict=False)
             if int(s) in owner and owner[int(s)] != node]
    return np.array(links, dtype=np.uint64).reshape(-1, 2)


def block_relabel(item, *, fragments, labels_out, dtype: str) -> int:
    """Step 3 for one block: write final ids (``item`` = (block, lut for its local ids))."""
    block, lut = item
    frag = np.asarray(fragments[_slices(block.core)])
    local = (frag & np.uint64((1 << LOCAL_BITS) - 1)).astype(np.int64)
    table = np.r_[0, np.asarray(lut)].astype(dtype)
    labels_out[_slices(block.core)] = table[local]
    return block.n_core_voxels


def regular_blocks(shape, block_shape, context) -> tuple[tuple[int, ...], list[Block]]:
    """Blocks of ``block_shape`` (the last ones smaller) reading ``context`` voxels around."""
    from itertools import product

    grid_shape = tuple(-(-s // b) for s, b in zip(shape, block_shape, strict=True))
    blocks = []
    for index in product(*(range(n) for n in grid_shape)):
        core = tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block_shape, shape, strict=True))
        tile = tuple((a - c, z + c) for (a, z), c in zip(core, context, strict=True))
        blocks.append(Block(tuple(index), core, tile))
    return grid_shape, blocks


def global_lookup(counts: Sequence[int], links: Sequence[np.ndarray]):
    """Connected components of all links over all fragments → per-block lookup tables."""
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.r_[0, np.cumsum(counts)]
    n = int(offsets[-1])
    pairs = np.concatenate([np.asarray(x, dtype=np.uint64).reshape(-1, 2) for x in links]) if links else np.zeros((0, 2), np.uint64)
    mask = np.uint64((1 << LOCAL_BITS) - 1)

    def index(g):
        number = (g >> np.uint64(LOCAL_BITS)).astype(np.int64)
        return offsets[number] + (g & mask).astype(np.int64) - 1

    ia, ib = index(pairs[:, 0]), index(pairs[:, 1])
    graph = coo_matrix((np.ones(len(ia), dtype=np.int8), (ia, ib)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # consecutive ids in order of first appearance
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    final = rank[inverse] + 1
    n_ids = int(final.max()) if n else 0
    luts = [final[offsets[i]: offsets[i + 1]] for i in range(len(counts))]
    return luts, n_ids


def segment_blockwise(
    affinities,
    out: str | Path | None = None,
    *,
    block_shape: Sequence[int] = (64, 256, 256),
    context: Sequence[int] | int = (8, 32, 32),
    threshold: float = DEFAULT_THRESHOLD,
    anisotropic: bool | None = None,
    voxel_size: Sequence[float] | None = None,
    scoring: str | None = None,
    discretize_queue: int = DEFAULT_QUEUE,
    overwrite: bool = False,
    client=None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
):
    """Segment affinities (C, Z, Y, X; numpy, dask or zarr) block by block.

    Returns a numpy array, or with ``out`` (a ``.zarr`` path) the zarr ``labels`` array of a
    group that also keeps the ``fragments``. With ``client`` (dask.distributed) the block tasks
    run on its workers, which then need ``affinities`` as a zarr array (they open it by path).
    """
    check_affinities(affinities)
    scoring = scoring_function(scoring)
    shape = tuple(int(s) for s in affinities.shape[1:])
    if isinstance(context, int):
        context = (context,) * 3
    block_shape = tuple(min(int(b), s) for b, s in zip(block_shape, shape, strict=False))
    context = tuple(int(c) for c in context)
    grid_shape, blocks = regular_blocks(shape, block_shape, context)
    if anisotropic is None:
        anisotropic = bool(voxel_size is not None and voxel_size[0] >= 2 * max(voxel_size[1:]))

    if out is None:
        if client is not None:
            raise ValueError("blockwise segmentation on a cluster needs an output path (.zarr)")
        return _segment_in_memory(
            affinities, shape, blocks, threshold=threshold, anisotropic=anisotropic,
            voxel_size=voxel_size, scoring=scoring, discretize_queue=discretize_queue,
            progress=progress, cancel=cancel,
        )
    from .store import BlockStore

    store = BlockStore.create(
        out, "labels", shape=shape, chunks=block_shape, dtype="uint64", grid_shape=grid_shape,
        settings={"blockwise": True, "threshold": threshold, "block": list(block_shape),
                  "context": list(context), "shape": list(shape), "scoring": scoring,
                  "anisotropic": anisotropic, "discretize_queue": discretize_queue},
        attrs={"kind": "labels", "voxel_size": list(voxel_size) if voxel_size else None},
        overwrite=overwrite, resume=True,
    )
    rec = _Records(store.group, shape, block_shape, grid_shape)
    todo = [(b, i) for i, b in enumerate(blocks) if rec.counts[b.index] < 0]
    run_tasks(
        _fragments_task, todo, client=client, progress=progress, cancel=cancel,
        message="fragments", affinities=affinities, fragments_out=rec.fragments,
        anisotropic=anisotropic, voxel_size=voxel_size,
        on_result=lambda item, n: rec.counts.__setitem__(item[0].index, n),
    )
    counts = [int(rec.counts[b.index]) for b in blocks]
    todo = [(b, i) for i, b in enumerate(blocks) if not rec.links_done[b.index]]
    run_tasks(
        _links_task, todo, client=client, progress=progress, cancel=cancel,
        message="agglomerating", affinities=affinities, fragments=rec.fragments,
        threshold=threshold, scoring=scoring, discretize_queue=discretize_queue,
        on_result=lambda item, pairs: rec.save_links(item[0], item[1], pairs),
    )
    links = [rec.load_links(i) for i in range(len(blocks))]
    luts, n_ids = global_lookup(counts, links)
    dtype = str(label_dtype(n_ids))
    labels = store.group["labels"]
    if np.dtype(labels.dtype) != np.dtype(dtype):
        # the final dtype is known only now: recreate the labels array with it (no block of it
        # was written yet, or they were written with this dtype and it is not recreated)
        labels = store.group.create_array("labels", shape=shape, chunks=block_shape, dtype=dtype,
                                          fill_value=0, overwrite=True)
        store.done[...] = 0
    todo = [(b, lut) for b, lut in zip(blocks, luts, strict=False) if not store.is_done(b.index)]
    run_tasks(
        block_relabel, todo, client=client, progress=progress, cancel=cancel,
        message="relabelling", fragments=rec.fragments, labels_out=labels, dtype=dtype,
        on_result=lambda item, _: store.mark_done(item[0].index),
    )
    labels.attrs.update({"n_ids": n_ids})
    store.finish(n_ids=n_ids)
    return store.group["labels"]


def _segment_in_memory(affinities, shape, blocks, *, threshold, anisotropic, voxel_size, scoring,
                       discretize_queue, progress, cancel) -> np.ndarray:
    """The three steps with numpy arrays (no store: nothing to resume)."""
    fragments = np.zeros(shape, dtype=np.uint64)
    counts = run_tasks(
        _fragments_task, list(zip(blocks, range(len(blocks)), strict=False)), progress=progress,
        cancel=cancel, message="fragments", affinities=affinities, fragments_out=fragments,
        anisotropic=anisotropic, voxel_size=voxel_size,
    )
    links = run_tasks(
        block_links, blocks, progress=progress, cancel=cancel, message="agglomerating",
        affinities=affinities, fragments=fragments, threshold=threshold, scoring=scoring,
        discretize_queue=discretize_queue,
    )
    luts, n_ids = global_lookup(counts, links)
    dtype = str(label_dtype(n_ids))
    labels = np.zeros(shape, dtype=dtype)
    run_tasks(
        block_relabel, list(zip(blocks, luts, strict=False)), progress=progress, cancel=cancel,
        message="relabelling", fragments=fragments, labels_out=labels, dtype=dtype,
    )
    return labels


class _Records:
    """What a blockwise store keeps between runs: fragments, their counts and the links."""

    def __init__(self, group, shape, block_shape, grid_shape) -> None:
        def array(name, dtype, fill, array_shape, chunks):
            if name in group:
                return group[name]
            return group.create_array(name, shape=array_shape, chunks=chunks, dtype=dtype,
                                      fill_value=fill)

        one = (1,) * len(grid_shape)
        self.fragments = array("fragments", "uint64", 0, shape, block_shape)
        self.counts = array("fragment_counts", "int64", -1, grid_shape, one)  # -1: not done
        self.links_done = array("links_done", "uint8", 0, grid_shape, one)
        self.links = group.require_group("links")

    def save_links(self, block: Block, number: int, pairs: np.ndarray) -> None:
        pairs = np.asarray(pairs, dtype=np.uint64).reshape(-1, 2)
        self.links.create_array(str(number), shape=pairs.shape, chunks=(max(1, len(pairs)), 2),
                                dtype="uint64", fill_value=0, overwrite=True)[...] = pairs
        self.links_done[block.index] = 1  # only once the pairs are stored

    def load_links(self, number: int) -> np.ndarray:
        return np.asarray(self.links[str(number)][...], dtype=np.uint64).reshape(-1, 2)


def _links_task(item, **kwargs) -> np.ndarray:
    block, _ = item
    return block_links(block, **kwargs)


def _fragments_task(item, **kwargs) -> int:
    block, number = item
    return block_fragments(block, number=number, **kwargs)

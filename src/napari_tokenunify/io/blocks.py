"""Chunk-by-chunk writing from dask (or numpy) arrays, with progress and cancellation."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence

import dask
import dask.array as da
import numpy as np

from ..progress import CancelToken, ProgressReporter, check_cancel

Block = tuple[slice, ...]


def block_grid(shape: Sequence[int], block: Sequence[int]) -> list[Block]:
    """Slices of a regular grid of ``block``-sized pieces covering ``shape`` (C order)."""
    ranges = [range(0, s, b) for s, b in zip(shape, block, strict=False)]
    return [
        tuple(slice(o, min(o + b, s)) for o, b, s in zip(origin, block, shape, strict=False))
        for origin in itertools.product(*ranges)
    ]


MAX_WRITE_BLOCK_BYTES = 256 * 2**20
MAX_BATCH_BYTES = 512 * 2**20


def write_grid(array: da.Array, storage_chunks: Sequence[int]) -> list[Block]:
    """Blocks to compute and write: whole multiples of the storage chunks that cover the array's
    own dask chunks, so every dask chunk is computed about once (a computed graph, e.g. a
    prediction, is not recomputed for each small storage chunk) and every write covers whole
    storage chunks (no read-modify-write). Capped at ~256 MiB per block."""
    block = []
    for axis, cs in enumerate(storage_chunks):
        cd = max(array.chunks[axis]) if array.chunks[axis] else cs
        block.append(min(array.shape[axis], cs * -(-cd // cs)))

    def nbytes(b):
        return int(np.prod(b)) * array.dtype.itemsize

    while nbytes(block) > MAX_WRITE_BLOCK_BYTES:
        axis = max(range(len(block)), key=lambda a: block[a] // storage_chunks[a])
        if block[axis] <= storage_chunks[axis]:
            break
        block[axis] = storage_chunks[axis] * max(1, (block[axis] // storage_chunks[axis]) // 2)
    return block_grid(array.shape, block)


def _batches(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def write_blocks(
    array: da.Array | np.ndarray,
    store: Callable[[Block, np.ndarray], None],
    blocks: list[Block],
    *,
    reporter: ProgressReporter | None = None,
    cancel: CancelToken | None = None,
    skip_zero: bool = False,
) -> None:
    """Compute ``array`` block by block (a few in parallel) and hand each to ``store``.

    Only one batch of blocks is in memory at a time, so a volume larger than RAM streams
    through. ``skip_zero`` skips all-zero blocks (their fill value) for chunked formats.
    """
    # A few blocks at once (dask reads/computes them in parallel), within ~512 MiB.
    first = blocks[0] if blocks else ()
    block_bytes = int(np.prod([b.stop - b.start for b in first])) * array.dtype.itemsize
    batch_size = max(1, min(8, os.cpu_count() or 1, MAX_BATCH_BYTES // max(block_bytes, 1)))
    for batch in _batches(blocks, batch_size):
        check_cancel(cancel)
        if isinstance(array, da.Array):
            values = dask.compute(*[array[b] for b in batch])
        else:
            values = [np.asarray(array[b]) for b in batch]
        for b, value in zip(batch, values, strict=False):
            check_cancel(cancel)
            if not (skip_zero and not value.any()):
                store(b, value)
            if reporter is not None:
                reporter.advance(1, amount=float(value.size), block=b)

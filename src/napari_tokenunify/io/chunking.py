"""Dask chunk shapes that follow a file's storage chunks (so a slice reads only what it touches)."""

from __future__ import annotations

from collections.abc import Sequence

TARGET_BYTES = 16 * 2**20  # one dask chunk ~16 MiB: few tasks for big files, small reads


def dask_chunks(
    shape: Sequence[int],
    storage_chunks: Sequence[int] | None,
    itemsize: int,
    target_bytes: int = TARGET_BYTES,
) -> tuple[int, ...]:
    """Whole multiples of ``storage_chunks`` grown (first axis first) up to ``target_bytes``.

    Without storage chunks (contiguous HDF5, PNG slices) the first axis is split into single
    planes or slabs of about ``target_bytes``.
    """
    shape = [max(1, int(s)) for s in shape]
    if not storage_chunks or len(storage_chunks) != len(shape):
        plane = itemsize
        for s in shape[1:]:
            plane *= s
        depth = max(1, min(shape[0], target_bytes // max(plane, 1)))
        return (depth, *shape[1:])
    chunks = [max(1, min(int(c), s)) for c, s in zip(storage_chunks, shape, strict=False)]

    def nbytes(c):
        n = itemsize
        for v in c:
            n *= v
        return n

    for axis in range(len(shape)):
        while chunks[axis] < shape[axis]:
            grown = chunks.copy()
            grown[axis] = min(shape[axis], chunks[axis] * 2)
            if nbytes(grown) > target_bytes:
                break
            chunks = grown
    return tuple(chunks)

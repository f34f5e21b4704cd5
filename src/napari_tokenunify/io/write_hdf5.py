"""HDF5 writer: one chunked, gzip-compressed dataset with the voxel size as attributes."""

from __future__ import annotations

from pathlib import Path

import dask.array as da

from ..progress import CancelToken
from .blocks import write_blocks, write_grid


def write_hdf5(
    tmp: Path,
    array: da.Array,
    *,
    dataset: str,
    kind: str,
    voxel_size: tuple[float, float, float] | None,
    chunks: tuple[int, ...],
    reporter_factory,
    cancel: CancelToken | None,
) -> None:
    import h5py

    blocks = write_grid(array, chunks)
    reporter = reporter_factory(len(blocks))
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset(
            dataset,
            shape=array.shape,
            dtype=array.dtype,
            chunks=chunks,
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            fillvalue=0,
        )
        dset.attrs["kind"] = kind
        if voxel_size is not None:
            dset.attrs["resolution_nm_zyx"] = [float(v) for v in voxel_size]
            dset.attrs["resolution"] = [float(v) for v in voxel_size]

        def store(block, value):
            dset[block] = value

        write_blocks(array, store, blocks, reporter=reporter, cancel=cancel, skip_zero=True)

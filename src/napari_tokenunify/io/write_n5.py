"""N5 writer through tensorstore: one gzip dataset inside an N5 root, (x, y, z) on disk."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da

from ..progress import CancelToken
from .blocks import write_blocks, write_grid
from .sources import open_n5_tensorstore


def write_n5(
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
    tmp.mkdir()
    (tmp / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    folder = tmp / dataset
    view = open_n5_tensorstore(
        str(folder),
        create=True,
        metadata={
            "dimensions": [int(s) for s in array.shape][::-1],
            "blockSize": [int(c) for c in chunks][::-1],
            "dataType": array.dtype.name,
            "compression": {"type": "gzip", "level": 4},
        },
    )
    blocks = write_grid(array, chunks)

    def store(block, value):
        view[block].write(value).result()

    write_blocks(
        array, store, blocks, reporter=reporter_factory(len(blocks)), cancel=cancel, skip_zero=True
    )
    attrs_file = folder / "attributes.json"
    attrs = json.loads(attrs_file.read_text())
    attrs["tokenunify"] = {"kind": kind}
    if voxel_size is not None:
        # N5 order (x, y, z[, c]); tensorstore checks that the length matches the rank.
        xyz = [float(v) for v in voxel_size][::-1] + [1.0] * (array.ndim - 3)
        attrs["resolution"] = xyz
        attrs["pixelResolution"] = {"dimensions": xyz, "unit": "nm"}
    attrs_file.write_text(json.dumps(attrs))

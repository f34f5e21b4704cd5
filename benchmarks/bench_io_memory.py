"""Peak memory (RSS) while opening a large on-disk volume and reading one 64³ block.

Creates, in a temporary folder, a Zarr written by ``write_volume`` (mostly empty: only a band of
z-planes holds data; empty chunks are not stored, as zarr does) and a BigTIFF made with
``tifffile.memmap`` (a sparse file, uncompressed pages; a few planes hold data). Then, for each,
a fresh Python process imports the package, records its peak RSS (VmHWM), opens the file with
``open_volume``, reads ``data[z:z+64, y:y+64, x:x+64]`` and records the peak RSS again.

    python benchmarks/bench_io_memory.py            # 20 GB volumes (1250 x 4000 x 4000 uint8)
    python benchmarks/bench_io_memory.py --gb 2     # quicker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np
def peak_mib():
    # VmHWM: peak resident set of this process image (ru_maxrss would include the parent's
    # peak inherited at fork time).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import dask  # noqa: F401
from napari_tokenunify.io import open_volume
base = peak_mib()
t0 = time.perf_counter()
vol = open_volume(sys.argv[1])
t_open = time.perf_counter() - t0
after_open = peak_mib()
z, y, x = (int(v) for v in sys.argv[2:5])
t0 = time.perf_counter()
block = vol.data[z:z + 64, y:y + 64, x:x + 64].compute()
t_block = time.perf_counter() - t0
print(json.dumps({
    "shape": vol.shape, "nbytes_gb": vol.data.nbytes / 1e9, "dask_chunks": vol.data.chunksize,
    "numblocks": vol.data.numblocks, "block_sum": int(block.sum(dtype=np.int64)),
    "peak_after_import_mib": base, "peak_after_open_mib": after_open,
    "peak_after_block_mib": peak_mib(), "open_s": t_open, "block_s": t_block,
}))
"""


def vm_hwm_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path, corner: tuple[int, int, int]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), *map(str, corner)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_zarr(path: Path, shape: tuple[int, int, int]) -> float:
    import dask.array as da

    from napari_tokenunify.io import write_volume

    band = 128  # z-planes with data; the rest is background (0), as in a sparse label volume

    def fill(block_info=None):
        loc = block_info[None]["array-location"]
        sh = block_info[None]["chunk-shape"]
        if loc[0][0] >= band:
            return np.zeros(sh, np.uint8)
        zz = np.arange(loc[0][0], loc[0][1])[:, None, None]
        yy = np.arange(loc[1][0], loc[1][1])[None, :, None]
        return ((zz + yy) % 251 + 1).astype(np.uint8) * np.ones(sh, np.uint8)

    chunks = (64, 512, 512)
    arr = da.map_blocks(
        fill,
        chunks=da.core.normalize_chunks(chunks, shape),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), np.uint8),
    )
    t0 = time.perf_counter()
    write_volume(path, arr, kind="image", chunks=(64, 256, 256), voxel_size=(8, 8, 8))
    return time.perf_counter() - t0


def make_tiff(path: Path, shape: tuple[int, int, int]) -> float:
    import tifffile

    t0 = time.perf_counter()
    mm = tifffile.memmap(
        path,
        shape=shape,
        dtype=np.uint8,
        bigtiff=True,
        metadata={"axes": "ZYX", "voxel_size_nm": [8, 8, 8]},
    )
    for z in range(0, 128):  # a band of planes with data; the rest stays sparse zeros
        mm[z] = ((np.arange(shape[1])[:, None] + z) % 251 + 1).astype(np.uint8)
    mm.flush()
    del mm
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=20.0, help="volume size in GB (uint8)")
    ap.add_argument("--dir", default=None, help="where to create the files (default: a temp dir)")
    args = ap.parse_args()
    side = 4000 if args.gb >= 4 else 2000
    depth = max(64, int(round(args.gb * 1e9 / (side * side))))
    shape = (depth, side, side)
    corner = (32, side // 2, side // 2)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        results = {}
        t = make_zarr(tmp / "big.zarr", shape)
        write_peak = vm_hwm_mib()  # this process so far: imports + streaming the 20 GB write
        on_disk = sum(f.stat().st_size for f in (tmp / "big.zarr").rglob("*") if f.is_file())
        results["zarr"] = {
            "create_s": t,
            "write_peak_rss_mib": write_peak,
            "on_disk_mb": on_disk / 1e6,
            **measure(tmp / "big.zarr", corner),
        }
        t = make_tiff(tmp / "big.tif", shape)
        results["tiff"] = {
            "create_s": t,
            "file_gb": (tmp / "big.tif").stat().st_size / 1e9,
            **measure(tmp / "big.tif", corner),
        }
    print(json.dumps({"shape": shape, "results": results}, indent=1))
    print(
        f"write_volume of the {results['zarr']['nbytes_gb']:.1f} GB zarr: "
        f"{results['zarr']['create_s']:.1f} s, peak RSS {results['zarr']['write_peak_rss_mib']:.0f} MiB"
    )
    for name, r in results.items():
        print(
            f"{name:5s} {r['nbytes_gb']:.1f} GB: peak RSS after import {r['peak_after_import_mib']:.0f} MiB, "
            f"after open {r['peak_after_open_mib']:.0f} MiB, after one 64^3 block "
            f"{r['peak_after_block_mib']:.0f} MiB (open {r['open_s']:.2f} s, block {r['block_s']:.3f} s)"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Write the small real EM sample shipped inside the package (``napari_tokenunify/samples``):
sections 0-31, y 0-99, x 0-127 of the gala example test volume (FIB-SEM of the Drosophila
medulla, 10 nm), with its neuron labels (0 = membrane / unlabelled), its licence and citation.

  python scripts/make_sample.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "napari_tokenunify" / "samples"
CROP = (slice(0, 32), slice(0, 100), slice(0, 128))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    src = args.data / "medulla-labeled"
    with h5py.File(src / "test-image.h5", "r") as f:
        raw = f["stack"][CROP]
    with h5py.File(src / "test-gt.lzf.h5", "r") as f:
        gt = f["stack"][CROP].astype(np.uint32)
    np.savez_compressed(OUT / "medulla_fibsem.npz", raw=raw, labels=gt,
                        voxel_size_nm=np.array([10.0, 10.0, 10.0]),
                        crop=np.array([[s.start, s.stop] for s in CROP]))
    shutil.copyfile(src / "LICENSE.txt", OUT / "LICENSE.txt")
    shutil.copyfile(src / "CITATION.bib", OUT / "CITATION.bib")
    print(f"wrote {OUT / 'medulla_fibsem.npz'} {raw.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The fixed data splits that models are trained, chosen and reported on (read in place from
``../shared/data``; nothing here is committed data).

- ``TRAIN``: every labelled voxel outside the validation and test sets.
- ``VALIDATION``: 2.2 M voxels from two volumes, never trained on; every choice (model, checkpoint,
  threshold, flips) is made here, by :data:`SELECTION_RULE`.
- ``TEST``: the gala test volume, reported only, never used for a choice.

A gap of four sections separates training and validation in ``medulla-dense``, so that no
training patch touches a validation section.
"""

from __future__ import annotations  # noqa: I001 (napari_tokenunify before torch, on purpose)

import os
from dataclasses import dataclass
from pathlib import Path

# before any benchmark imports torch: short OpenMP waits (threads.py), as the CLI and the widget
# get them; with torch first, its spinning OpenMP threads contend with the numba scan's
import napari_tokenunify  # noqa: F401
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TOKENUNIFY_SHARED_DATA", REPO.parent / "shared" / "data"))

SELECTION_RULE = (
    "the lowest mean VOI (split + merge) over the VALIDATION volumes, each predicted as "
    "`tokenunify run` predicts (the card's normalisation, tiles and flips) and segmented at one "
    "shared threshold, the one of THRESHOLDS with the lowest mean VOI"
)
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class Crop:
    """A labelled (or unlabelled) region of a shared-data file."""

    name: str
    raw_file: str
    raw_key: str
    labels_file: str | None
    labels_key: str | None
    region: tuple[slice, slice, slice]

    def available(self) -> bool:
        return (DATA / self.raw_file).exists() and (self.labels_file is None or (DATA / self.labels_file).exists())

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        import h5py

        if not self.available():
            raise FileNotFoundError(
                f"{DATA / self.raw_file} is missing: put the shared data at {DATA} "
                "or set TOKENUNIFY_SHARED_DATA"
            )
        with h5py.File(DATA / self.raw_file, "r") as f:
            raw = f[self.raw_key][self.region]
        labels = None
        if self.labels_file is not None:
            with h5py.File(DATA / self.labels_file, "r") as f:
                labels = f[self.labels_key][self.region].astype(np.uint32)
        return raw, labels

    def in_context(self) -> Crop:
        """The whole volume this crop was cut from (its labels too): predicting that and scoring
        only ``region`` shows the crop as a part of a larger volume is predicted (with tile
        borders where the crop alone has none)."""
        from dataclasses import replace

        return replace(self, name=f"{self.name} in its volume", region=(ALL, ALL, ALL))

    @property
    def n_voxels(self) -> int:
        import h5py

        with h5py.File(DATA / self.raw_file, "r") as f:
            shape = f[self.raw_key].shape
        return int(np.prod([len(range(*s.indices(n))) for s, n in zip(self.region, shape, strict=True)]))


ALL = slice(None)
DENSE = "medulla-dense/train.h5"
LAB_IMG, LAB_GT = "medulla-labeled/train-image.h5", "medulla-labeled/train-gt.lzf.h5"

TRAIN = (
    Crop("medulla-dense z0-85", DENSE, "raw", DENSE, "labels", (slice(0, 86), ALL, ALL)),
    Crop("medulla-labeled/train x0-135", LAB_IMG, "stack", LAB_GT, "stack", (ALL, ALL, slice(0, 136))),
)
VALIDATION = (
    Crop("medulla-dense z90-119", DENSE, "raw", DENSE, "labels", (slice(90, 120), ALL, ALL)),
    Crop("medulla-labeled/train x136-199", LAB_IMG, "stack", LAB_GT, "stack", (ALL, ALL, slice(136, None))),
)
TEST = (
    Crop("medulla-labeled/test", "medulla-labeled/test-image.h5", "stack",
         "medulla-labeled/test-gt.lzf.h5", "stack", (ALL, ALL, ALL)),
)
#: for adapting a model that never saw the volume (bench_adapt.py, issue 14): the whole gala
#: training volume, e.g. for a model trained on ``medulla-dense`` only; it overlaps TRAIN and
#: VALIDATION, so it is never used to train or choose a generalist
ADAPT = (
    Crop("medulla-labeled/train", LAB_IMG, "stack", LAB_GT, "stack", (ALL, ALL, ALL)),
)
UNLABELED = (
    Crop("medulla-unlabeled", "medulla-unlabeled/raw.h5", "raw", None, None, (ALL, ALL, ALL)),
    Crop("medulla-unlabeled-400", "medulla-unlabeled-400/raw.h5", "raw", None, None, (ALL, ALL, ALL)),
)


def load_all(crops) -> list[tuple[np.ndarray, np.ndarray | None]]:
    return [c.load() for c in crops]

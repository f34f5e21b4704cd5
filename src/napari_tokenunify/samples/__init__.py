"""A small real EM sample shipped with the package (no download, no ../shared/data needed).

Sections 0-31, y 0-99, x 0-127 of the gala example test volume: focused-ion-beam SEM of the
Drosophila medulla at 10 nm, with its neuron labels (0 = membrane / unlabelled: ignore it when
scoring). Source: janelia-flyem/gala, tests/example-data; BSD-style licence in ``LICENSE.txt``,
cite per ``CITATION.bib`` (both in this folder). ``scripts/make_sample.py`` wrote it. The default
model never trained on this volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np

NAME = "medulla FIB-SEM (gala test volume crop)"
SOURCE = "janelia-flyem/gala tests/example-data, test volume, z 0:32, y 0:100, x 0:128"


@dataclass(frozen=True)
class Sample:
    """A sample volume with what travels with it: voxel size, provenance, licence."""

    image: np.ndarray
    labels: np.ndarray
    voxel_size: tuple[float, float, float]
    name: str = NAME
    source: str = SOURCE
    licence: str = field(default="BSD-style (HHMI), see samples/LICENSE.txt", repr=False)


def medulla_sample() -> Sample:
    """The shipped real sample (uint8 image, uint32 labels, 10 nm voxels)."""
    with resources.files(__name__).joinpath("medulla_fibsem.npz").open("rb") as f:
        data = np.load(f)
        image, labels = data["raw"], data["labels"]
        voxel = tuple(float(v) for v in data["voxel_size_nm"])
    return Sample(image=image, labels=labels, voxel_size=voxel)  # type: ignore[arg-type]

"""benchmarks/body_fit.py: the mean affinity inside one body (a diagnosis script)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import body_fit  # noqa: E402


def test_interior_leaves_out_the_voxels_beside_another_id():
    labels = np.zeros((3, 4, 6), np.uint32)
    labels[:, :, 3:] = 7
    inside = body_fit.interior(labels)
    assert not inside[:, :, 2:4].any()  # either side of the x boundary
    assert inside[:, :, :2].all() and inside[:, :, 4:].all()  # volume faces count as shared


def test_body_fit_separates_the_body_from_the_others():
    labels = np.ones((120, 8, 8), np.uint32)
    labels[:, :, 4:] = 280
    affs = np.full((3, *labels.shape), 0.9, np.float32)
    affs[:, labels == 280] = 0.5
    affs[:, :45] = 0.0  # sections before 40-89 only in part
    fit = body_fit.body_fit(affs, labels, 280)
    val = fit["validation z90-119"]
    assert val["body"] == 0.5 and abs(val["other_bodies"] - 0.9) < 1e-5
    assert val["body_voxels"] == 30 * 8 * 3  # columns 5-7 (column 4 borders the other body)
    trained = fit["trained z40-89"]
    assert 0.0 < trained["body"] < 0.5 and trained["body_voxels"] == 50 * 8 * 3

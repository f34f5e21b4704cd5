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


def test_fitted_fills_the_body_and_cuts_its_edges():
    labels = np.zeros((4, 5, 6), np.uint32)
    labels[:, 1:4, 2:5] = 280
    affs = np.full((3, *labels.shape), 0.5, np.float32)
    filled = body_fit.fitted(affs, labels, 280, cut_edges=False)
    cut = body_fit.fitted(affs, labels, 280, cut_edges=True)
    # x links (channel 2) at voxel v join v and v - 1 along x
    assert filled[2, 0, 2, 3] == 1.0 and filled[2, 0, 2, 2] == 0.5  # inside; entering the body
    assert cut[2, 0, 2, 2] == 0.0 and cut[2, 0, 2, 5] == 0.0 and cut[2, 0, 2, 1] == 0.5
    assert cut[1, 0, 1, 3] == 0.0 and cut[1, 0, 2, 3] == 1.0  # y: entering, inside
    assert (filled[0, 1:, 1:4, 2:5] == 1.0).all() and (filled[0, 0] == 0.5).all()  # no link before z 0
    assert (affs == 0.5).all()  # the input is left as it was

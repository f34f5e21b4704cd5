"""Reading the real FIB-SEM volumes in ../shared/data in place (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tokenunify.io import open_volume

pytestmark = pytest.mark.shared_data


def test_unlabeled_raw_voxel_size_and_lazy_block(shared_data):
    v = open_volume(shared_data / "medulla-unlabeled" / "raw.h5")
    assert v.dataset == "raw" and v.shape == (250, 250, 250) and v.dtype == np.uint8
    assert v.voxel_size == (10.0, 10.0, 10.0)
    block = v.data[100:164, 100:164, 100:164].compute()
    assert block.shape == (64, 64, 64) and 20 < block.mean() < 235 and block.std() > 5


def test_labeled_image_and_gt(shared_data):
    img = open_volume(shared_data / "medulla-labeled" / "train-image.h5")
    assert img.dataset == "stack" and img.shape == (50, 100, 200)
    gt = open_volume(shared_data / "medulla-labeled" / "train-gt.lzf.h5", dataset="stack")
    assert gt.dtype == np.int32 and gt.shape == img.shape
    ids = np.unique(gt.data.compute())
    assert len(ids[ids != 0]) == 87  # the README's count for the training labels
    v = open_volume(shared_data / "medulla-labeled" / "test-image.h5", voxel_size=(10, 10, 10))
    assert v.voxel_size == (10.0, 10.0, 10.0)

"""The agglomeration threshold a model card recommends is the CLI's default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tokenunify.cli import main
from napari_tokenunify.model import ModelCard

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_card_recommended_threshold():
    assert ModelCard().recommended_threshold == 0.5
    assert ModelCard(training={"segmentation_threshold": 0.2}).recommended_threshold == 0.2
    assert ModelCard(metrics={"threshold": 0.3}).recommended_threshold == 0.3
    assert ModelCard(training={"segmentation_threshold": 7}).recommended_threshold == 0.5


def test_segment_uses_the_threshold_recorded_with_the_affinities(tmp_path, capsys):
    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.io import open_volume, write_volume
    from napari_tokenunify.model import build_model, save_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    vol = make_synthetic_volume((16, 32, 48), seed=5)
    write_volume(tmp_path / "image.tif", vol.image, kind="image", voxel_size=vol.voxel_size)
    torch.manual_seed(0)
    model = build_model("tiny")
    model.card.training["segmentation_threshold"] = 0.15
    save_model(model, tmp_path / "model")
    assert main(["predict", str(tmp_path / "image.tif"), str(tmp_path / "affs.zarr"), "--model",
                 str(tmp_path / "model"), "--tile", "16,32,32", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "affs.zarr"), str(tmp_path / "seg.tif"), "--quiet"]) == 0
    assert "threshold 0.15 (the model card's" in capsys.readouterr().err
    seg = open_volume(tmp_path / "seg.tif").data.compute()
    import zarr

    affs = zarr.open_group(tmp_path / "affs.zarr", mode="r")["affinities"][:]
    expected = segment(affs, threshold=0.15, voxel_size=vol.voxel_size).labels
    assert int(seg.max()) == int(expected.max())
    # an explicit threshold wins, and says nothing about the card
    assert main(["segment", str(tmp_path / "affs.zarr"), str(tmp_path / "seg9.tif"), "--quiet",
                 "--threshold", "0.9"]) == 0
    assert "model card" not in capsys.readouterr().err


def test_demo_auto_sample_is_the_shipped_real_crop(tmp_path, capsys, monkeypatch):
    """The real sample ships inside the package: the demo needs no ../shared/data."""
    monkeypatch.setenv("TOKENUNIFY_SHARED_DATA", str(tmp_path / "nowhere"))
    assert main(["demo", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "sample: medulla" in out and "at threshold" in out and "VOI split" in out


def test_card_recommended_scoring_and_names():
    from napari_tokenunify.engine.agglomerate import (
        MEAN_SCORING,
        TOKENUNIFY_SCORING,
        scoring_function,
    )

    assert ModelCard().recommended_scoring == "median"
    assert ModelCard(training={"segmentation_scoring": "mean"}).recommended_scoring == "mean"
    assert ModelCard(training={"segmentation_scoring": "bogus"}).recommended_scoring == "median"
    assert scoring_function("mean") == MEAN_SCORING and scoring_function(None) == TOKENUNIFY_SCORING
    assert scoring_function(TOKENUNIFY_SCORING) == TOKENUNIFY_SCORING
    with pytest.raises(ValueError, match="unknown agglomeration scoring 'max'.*median, mean"):
        scoring_function("max")


def test_segment_uses_the_scoring_recorded_with_the_affinities(tmp_path, capsys):
    """A card that names mean scoring is segmented with it by `tokenunify segment` (and `run`),
    in memory and blockwise, unless --scoring says otherwise."""
    import zarr

    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.io import open_volume, write_volume
    from napari_tokenunify.model import build_model, save_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    vol = make_synthetic_volume((16, 48, 48), seed=3)
    write_volume(tmp_path / "image.tif", vol.image, kind="image", voxel_size=vol.voxel_size)
    torch.manual_seed(0)
    model = build_model("tiny")
    model.card.training.update(segmentation_threshold=0.5, segmentation_scoring="mean")
    save_model(model, tmp_path / "model")
    assert main(["predict", str(tmp_path / "image.tif"), str(tmp_path / "affs.zarr"), "--model",
                 str(tmp_path / "model"), "--tile", "16,48,48", "--device", "cpu", "--quiet"]) == 0
    affs = zarr.open_group(tmp_path / "affs.zarr", mode="r")["affinities"][:]
    mean = segment(affs, threshold=0.5, scoring="mean", voxel_size=vol.voxel_size).labels
    median = segment(affs, threshold=0.5, scoring="median", voxel_size=vol.voxel_size).labels
    assert not np.array_equal(mean, median)  # the choice matters on these affinities
    for extra, expected in (([], mean), (["--scoring", "median"], median)):
        out = tmp_path / f"seg{len(extra)}.tif"
        assert main(["segment", str(tmp_path / "affs.zarr"), str(out), "--quiet", *extra]) == 0
        assert np.array_equal(np.asarray(open_volume(out).data), expected)
    blockwise = segment(affs, threshold=0.5, scoring="mean", blockwise=True,
                        block_shape=(16, 48, 48), voxel_size=vol.voxel_size).labels
    assert np.array_equal(np.asarray(blockwise), mean)  # one block: the same agglomeration

"""The agglomeration threshold a model card recommends is the CLI's default."""

from __future__ import annotations

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

"""benchmarks/bench_quality.py's in-context scoring on a tiny synthetic volume: the crop's
affinities are cut out of the whole volume's prediction and segmented alone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_quality as bq  # noqa: E402


def test_in_context_predicts_the_whole_volume_and_segments_only_the_crop(tmp_path, monkeypatch):
    import torch

    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import build_model, load_model, save_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    vol = make_synthetic_volume((16, 48, 48), seed=3)
    torch.manual_seed(0)
    net = build_model("tiny")
    net.card.patch_size = [16, 32, 32]
    net.card.training = {"segmentation_threshold": 0.4, "segmentation_scoring": "mean"}
    folder = save_model(net, tmp_path / "m")
    region = (slice(8, 16), slice(None), slice(10, 48))
    gt = vol.labels[region].astype(np.uint32)
    scores = bq.run_in_context(str(folder), vol.image, gt, region, None)

    model = load_model(folder, device="cpu")
    whole = np.asarray(predict_affinities(vol.image, model, device="cpu", dtype="float16"))
    crop = whole[(slice(None), *region)].astype(np.float32)
    assert crop[0, 0].any() and crop[2, :, :, 0].any()  # the whole prediction links them outside
    crop[0, 0] = 0  # links leaving the crop (z and x start inside the volume; y does not)
    crop[2, :, :, 0] = 0
    labels = segment(crop, threshold=0.4, scoring="mean").labels
    assert labels.shape == gt.shape
    expected = evaluate(labels, gt, ignore_label=0)
    assert scores["voi"] == pytest.approx(expected["voi_split"] + expected["voi_merge"])
    assert scores["arand"] == pytest.approx(expected["arand"])
    assert scores["mvoxel_per_s"] > 0 and np.isfinite(scores["voi_tol1"])
    # the crop alone is predicted with tiles of its own: another prediction, another score
    alone = np.asarray(predict_affinities(vol.image[region], model, device="cpu", dtype="float16"))
    assert not np.array_equal(alone.astype(np.float32), crop)

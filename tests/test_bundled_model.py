"""The bundled default model: present, small, documented, and far better than an untrained
network on real FIB-SEM it never saw (a crop of medulla-labeled/test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tokenunify.model.bundled import bundled_path

# A crop of the test volume keeps the test fast; the full-volume numbers are in docs/results.md.
CROP = (slice(0, 32), slice(0, 100), slice(0, 112))
# An untrained network scores VOI 3.4–8.9 on this crop (seeds 0–2, thresholds 0.2/0.5; measured in
# the test as well); the bundled default scores 0.36 there (session 10; 0.69 for the session-7 default, 0.98, 0.86 and 1.0
# for the defaults before). It must stay under this bound.

VOI_BOUND = 2.0


def test_bundled_model_files_and_card():
    from napari_tokenunify.model import load_model

    path = bundled_path("default")
    size_mb = (path / "model.safetensors").stat().st_size / 1e6
    assert size_mb < 20, f"bundled model is {size_mb:.1f} MB"
    model = load_model("default", device="cpu")
    card = model.card
    assert card.out_channels == 3 and card.offsets == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    t = card.training
    # Inputs, steps, time and hardware of every stage are recorded, with the data it was chosen on
    # and the rule that chose it; the TokenUnify pretraining is the first stage of the lineage.
    for key in ("steps", "seconds", "hardware", "finetune_data", "validation_data", "selection_rule"):
        assert key in t, key
    start = t
    while "pretrain" not in start:
        assert "continued_from" in start, "the card must lead back to the TokenUnify pretraining"
        start = start["continued_from"]
    assert start["pretrain"]["mixture"] == {"random": 1.0, "next": 1.0, "next_all": 1.0}
    assert not set(t["finetune_data"]) & set(t["validation_data"])
    # The input normalisation used in training travels with the model and is robust per volume.
    assert card.normalization["mode"] == "percentile"
    assert list(card.voxel_size_nm) == [10.0, 10.0, 10.0]
    # The benchmark it was chosen by (bench_quality.py, as shipped) is recorded.
    assert card.metrics["validation_mean"]["voi"] < 1.636  # the old default's, same benchmark
    assert "medulla-labeled/test" in card.metrics["bench_quality"]
    x = torch.rand(1, 1, *card.patch_size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, *card.patch_size) and torch.isfinite(y).all()


def _test_crop(shared_data, crop=CROP) -> tuple[np.ndarray, np.ndarray]:
    """The test volume's raw data and ground truth inside ``crop`` (all of it: ``...``)."""
    import h5py

    with h5py.File(shared_data / "medulla-labeled" / "test-image.h5", "r") as f:
        raw = f["stack"][crop]
    with h5py.File(shared_data / "medulla-labeled" / "test-gt.lzf.h5", "r") as f:
        gt = f["stack"][crop].astype(np.uint32)
    return raw, gt


def _voi(model, raw, gt, threshold, tta="none", scoring=None):
    from napari_tokenunify.engine.agglomerate import segment_affinities
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.predict import predict_affinities

    affs = predict_affinities(raw, model, device="cpu", dtype="float32", tta=tta)
    if scoring is None:  # the card's, as `tokenunify run` segments
        card = getattr(model, "card", None)
        scoring = card.recommended_scoring if card is not None else "median"
    scores = evaluate(segment_affinities(affs, threshold=threshold, scoring=scoring), gt)
    return scores["voi_split"] + scores["voi_merge"], scores


@pytest.mark.shared_data
def test_bundled_model_beats_untrained_on_real_test_crop(shared_data):
    from napari_tokenunify.model import build_model, load_model

    raw, gt = _test_crop(shared_data)
    model = load_model("default", device="cpu")
    threshold = float(model.card.training.get("segmentation_threshold", 0.5))
    trained, scores = _voi(model, raw, gt, threshold)

    torch.manual_seed(0)
    untrained_model = build_model("tiny", out_channels=3).eval()
    untrained_model.card.patch_size = list(model.card.patch_size)
    untrained, _ = _voi(untrained_model, raw, gt, threshold, scoring=model.card.recommended_scoring)

    assert untrained > VOI_BOUND, f"untrained VOI {untrained:.3f} should not reach the bound"
    assert trained < VOI_BOUND, f"bundled model VOI {trained:.3f} ({scores}) exceeds {VOI_BOUND}"
    assert trained < 0.6 * untrained


# The earlier issue's quality targets, for the default with the flips its card recommends.
UNET_VOI_BOUND, UNET_ARAND_BOUND = 1.0, 0.15


def test_bundled_unet_loads_as_a_model():
    from napari_tokenunify.model import load_model
    from napari_tokenunify.model.bundled import bundled_names
    from napari_tokenunify.model.unet import ResidualUNet3D

    assert {"default", "unet"} <= set(bundled_names())
    assert (bundled_path("unet") / "model.safetensors").stat().st_size / 1e6 < 20
    model = load_model("unet", device="cpu")
    assert isinstance(model, ResidualUNet3D) and not model.training
    card = model.card
    assert card.preset == "unet" and card.recommended_threshold == card.training["segmentation_threshold"]
    for key in ("steps", "seconds", "hardware", "batch_size", "finetune_data", "validation_data"):
        assert key in card.training, key


@pytest.mark.shared_data
def test_bundled_unet_is_trained_and_holds_under_acquisition_changes(shared_data):
    """The bundled U-Net (rule 16c, docs/results.md: the ablation's U-Net arm, trained on all
    labelled data outside the validation set with percentile normalisation) scores VOI 1.50 on
    the test crop (an untrained network 3.4-8.9), and on the validation crop halved contrast and
    +20 brightness move its VOI by 2 % (2.21 -> 2.16). The U-Net it replaced scored 0.38 on the
    test crop but moved from 2.09 to 3.03 (+45 %) there: it was trained on gala's volume alone,
    without the percentile normalisation."""
    from napari_tokenunify.model import load_model

    model = load_model("unet", device="cpu")
    card = model.card
    assert card.normalization["mode"] == "percentile" and card.recommended_scoring == "mean"
    raw, gt = _test_crop(shared_data)
    voi, scores = _voi(model, raw, gt, card.recommended_threshold)
    assert voi < VOI_BOUND, scores
    perturb_contrast = _benchmark_module("bench_quality").perturb_contrast
    raw, gt = _validation_crop()
    v0, _ = _voi(model, raw, gt, card.recommended_threshold)
    v1, _ = _voi(model, perturb_contrast(raw, 0.5, 20.0), gt, card.recommended_threshold)
    assert abs(v1 - v0) < 0.1 * v0, (v0, v1)


@pytest.mark.shared_data
def test_bundled_default_as_shipped_meets_the_quality_targets_on_the_real_test_volume(shared_data):
    """The default with the flips and threshold its card recommends (what ``tokenunify run`` and
    the Predict section use) meets the earlier issue's targets on the whole test volume: VOI < 1.0,
    ARAND < 0.15 (it scores 0.76 / 0.11 without flips; the previous default 0.72 / 0.089 with 8)."""
    from napari_tokenunify.model import load_model

    raw, gt = _test_crop(shared_data, ...)
    model = load_model("default", device="cpu")
    card = model.card
    voi, scores = _voi(model, raw, gt, card.recommended_threshold, tta=card.recommended_tta)
    assert voi < UNET_VOI_BOUND and scores["arand"] < UNET_ARAND_BOUND, scores


# A crop of the validation volume medulla-dense z 90-119 (never trained on): y, x 0:160.
# Measured (docs/results.md, session 7): the default before session 7, as shipped (8 flips,
# t 0.3), VOI 2.03 / ARAND 0.42; the session-7 default 1.57 / 0.17 (no flips, median, t 0.15);
# the session-8 default 1.41 (mean scoring, t 0.6; 1.40 with contrast/2 + 20); the session-10
# default 1.47 (1.52 with contrast/2 + 20; it is better on the whole validation set, 0.976 against 0.998).
VAL_CROP = (slice(None), slice(0, 160), slice(0, 160))
VAL_VOI_BOUND = 1.5


def _benchmark_module(name: str):
    """A module of ``benchmarks/`` (the splits and the perturbation the benchmark uses)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def _validation_crop():
    crop = _benchmark_module("quality_sets").VALIDATION[0]
    if not crop.available():
        pytest.skip(f"shared data for {crop.name} not found (put ../shared/data beside the repo)")
    raw, gt = crop.load()
    return raw[VAL_CROP], gt[VAL_CROP]


@pytest.mark.shared_data
def test_bundled_default_as_shipped_beats_the_earlier_defaults_on_a_validation_crop(shared_data):
    from napari_tokenunify.model import load_model

    raw, gt = _validation_crop()
    model = load_model("default", device="cpu")
    card = model.card
    voi, scores = _voi(model, raw, gt, card.recommended_threshold, tta=card.recommended_tta)
    assert voi < VAL_VOI_BOUND, scores


@pytest.mark.shared_data
def test_bundled_default_is_stable_under_halved_contrast_and_shifted_brightness(shared_data):
    """Issue 13's robustness target on the validation crop: contrast halved and brightness +20
    grey levels change VOI by less than 10 % and the affinities by less than 0.01 on average
    (the previous default's affinities moved by 0.022 there)."""
    from napari_tokenunify.engine.agglomerate import segment_affinities
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    perturb_contrast = _benchmark_module("bench_quality").perturb_contrast
    raw, gt = _validation_crop()
    model = load_model("default", device="cpu")
    card = model.card
    out = []
    for r in (raw, perturb_contrast(raw, 0.5, 20.0)):
        affs = np.asarray(predict_affinities(r, model, device="cpu", dtype="float32",
                                             tta=card.recommended_tta))
        s = evaluate(segment_affinities(affs, threshold=card.recommended_threshold,
                                        scoring=card.recommended_scoring), gt)
        out.append((affs, s["voi_split"] + s["voi_merge"]))
    (a0, v0), (a1, v1) = out
    assert float(np.abs(a1 - a0).mean()) < 0.01
    assert abs(v1 - v0) < 0.1 * v0, (v0, v1)

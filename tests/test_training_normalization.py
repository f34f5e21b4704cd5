"""Per-volume robust normalisation: the same in training and prediction, recorded in the card,
and stable under changes of contrast and brightness; multi-volume finetuning and a validation
set scored at one shared threshold."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tokenunify.engine.normalize import ROBUST_NORMALIZATION, intensity_range
from napari_tokenunify.training.augment import EMAugment
from napari_tokenunify.training.finetune import finetune, validate, validate_set
from napari_tokenunify.training.sampling import PatchSampler

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def volumes():
    from napari_tokenunify.synthetic import make_synthetic_volume

    return [make_synthetic_volume((16, 48, 48), seed=s) for s in (1, 2)]


def _low_contrast(image: np.ndarray) -> np.ndarray:
    out = (image.astype(np.float32) - image.mean()) * 0.5 + image.mean() + 20
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_percentile_normalisation_undoes_contrast_and_brightness(volumes):
    image = volumes[0].image
    changed = _low_contrast(image)
    a = intensity_range(image, ROBUST_NORMALIZATION).apply(image)
    b = intensity_range(changed, ROBUST_NORMALIZATION).apply(changed)
    # the same input up to the rounding of the halved grey levels (one level of 255 / range)
    assert np.abs(a - b).mean() < 0.01
    # without it (uint8 mapped 0..255 to 0..1) the network would see a quite different input
    plain = np.abs(image / 255.0 - changed / 255.0).mean()
    assert plain > 5 * np.abs(a - b).mean()


def test_sampler_normalises_each_volume_as_prediction_does(volumes):
    bright = np.clip(volumes[0].image.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    sampler = PatchSampler([bright], (16, 48, 48), normalization=ROBUST_NORMALIZATION, seed=0)
    patch = sampler.sample().raw
    want = intensity_range(bright, ROBUST_NORMALIZATION).apply(bright)
    np.testing.assert_allclose(patch, want, atol=1e-6)
    legacy = PatchSampler([bright], (16, 48, 48), seed=0).sample().raw
    np.testing.assert_allclose(legacy, bright / 255.0, atol=1e-6)


def test_augmentation_is_wide_enough_for_halved_contrast():
    aug = EMAugment()
    assert aug.contrast >= 0.5 and aug.brightness >= 0.15


def test_finetune_on_several_volumes_records_the_normalisation(tmp_path, volumes):
    raws = [v.image for v in volumes]
    labels = [v.labels for v in volumes]
    model = finetune(raws, labels, init="scratch", steps=4, patch_shape=(16, 32, 32),
                     validation=[(v.image, v.labels) for v in volumes], val_every=2,
                     threshold=(0.3, 0.5), out_dir=tmp_path / "run")
    assert model.card.normalization == ROBUST_NORMALIZATION
    import json

    card = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card["normalization"] == ROBUST_NORMALIZATION
    header = (tmp_path / "run" / "validation.csv").read_text().splitlines()[0].split(",")
    assert {"voi", "threshold", "voi_0", "voi_1"} <= set(header)


def test_finetune_keeps_the_starting_models_normalisation(volumes):
    from napari_tokenunify.model import build_model

    start = build_model("tiny")
    start.card.normalization = {"low": 0.0, "high": 255.0}
    model = finetune(volumes[0].image, volumes[0].labels, init=start, steps=1, patch_shape=(16, 32, 32))
    assert model.card.normalization == {"low": 0.0, "high": 255.0}


def test_validate_set_shares_one_threshold(volumes):
    from napari_tokenunify.model import build_model

    net = build_model("tiny").eval()
    net.card.patch_size = [16, 32, 32]
    thresholds = (0.2, 0.5, 0.8)
    res = validate_set(net, [(v.image, v.labels) for v in volumes], threshold=thresholds)
    singles = [validate(net, v.image, v.labels, threshold=res["threshold"]) for v in volumes]
    assert res["threshold"] in thresholds
    assert res["voi"] == pytest.approx(np.mean([s["voi"] for s in singles]), rel=1e-6)
    assert [p["voi"] for p in res["per_volume"]] == pytest.approx([s["voi"] for s in singles], rel=1e-6)
    for t in thresholds:  # no other shared threshold has a lower mean VOI
        alt = np.mean([validate(net, v.image, v.labels, threshold=t)["voi"] for v in volumes])
        assert res["voi"] <= alt + 1e-9


def test_finetune_several_volumes_bad_input(volumes):
    from napari_tokenunify.training.targets import TrainingDataError

    with pytest.raises(TrainingDataError, match="one labels volume"):
        finetune([volumes[0].image, volumes[1].image], [volumes[0].labels], steps=1)
    with pytest.raises(TrainingDataError, match="box restricts one volume"):
        finetune([volumes[0].image], [volumes[0].labels], box=(slice(0, 8),) * 3, steps=1)

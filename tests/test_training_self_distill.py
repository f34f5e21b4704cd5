"""Self-distillation (rule 14): a trained starting model is its own teacher by default, its
targets are what it predicted (given or predicted once), distillation samples are normalised
as prediction normalises, and the CLI and widget options are refused clearly when they make no
sense."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_tokenunify.affinities import NEAREST_OFFSETS
from napari_tokenunify.engine.normalize import ROBUST_NORMALIZATION
from napari_tokenunify.model import build_model, save_model
from napari_tokenunify.training.config import FinetuneConfig
from napari_tokenunify.training.distill import TeacherTargets
from napari_tokenunify.training.finetune import finetune
from napari_tokenunify.training.self_distill import (
    TEACHER_NAME,
    crop_around,
    distillation_volumes,
    region_centre,
)

OFFSETS = [tuple(o) for o in NEAREST_OFFSETS]
PATCH = (16, 32, 32)
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def volume():
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((16, 48, 48), seed=7)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    torch.manual_seed(0)
    net = build_model("tiny")
    net.card.name = "start-net"
    return save_model(net, tmp_path_factory.mktemp("start") / "start-net")


def test_distillation_samples_are_normalised_like_prediction():
    """A low-contrast uint8 volume (grey levels 100-140): with the card's percentile
    normalisation the raw patch spans [0, 1], as the labelled samples and prediction see it,
    not 100/255-140/255 (the bug rule 14's run had)."""
    rng = np.random.default_rng(0)
    raw = rng.integers(100, 141, size=(16, 32, 32)).astype(np.uint8)
    affs = np.full((3, *raw.shape), 0.5, np.float32)
    plain = TeacherTargets(None, [raw], PATCH, OFFSETS, np.random.default_rng(1), affinities=[affs], tta="none")
    normed = TeacherTargets(None, [raw], PATCH, OFFSETS, np.random.default_rng(1), affinities=[affs],
                            tta="none", normalization=ROBUST_NORMALIZATION)
    x_plain, _, _ = plain.sample(None)
    x_norm, _, _ = normed.sample(None)
    assert x_plain.max() <= 141 / 255 + 1e-6 and x_plain.min() >= 100 / 255 - 1e-6
    assert x_norm.min() == 0.0 and x_norm.max() == 1.0
    from napari_tokenunify.engine.normalize import intensity_range

    np.testing.assert_allclose(x_norm, intensity_range(raw, ROBUST_NORMALIZATION).apply(raw))


def test_teacher_affinities_are_read_lazily_patch_by_patch():
    """A zarr array of affinities is indexed per sample, never loaded whole."""
    import zarr

    raw = np.zeros((16, 32, 32), np.uint8)
    store = zarr.zeros((3, 16, 32, 32), chunks=(3, 8, 16, 16), dtype="f4")
    store[:] = 0.25
    tt = TeacherTargets(None, [raw], (8, 16, 16), OFFSETS, np.random.default_rng(0), affinities=[store], tta="none")
    assert tt.affinities[0] is store
    _, target, weight = tt.sample(None)
    assert target.shape == (3, 8, 16, 16) and np.allclose(target[weight > 0], 0.25)


def test_crop_around_the_corrections_stays_inside_and_small():
    shape = (200, 400, 400)
    sl = crop_around(shape, (190, 10, 200), 1_000_000, PATCH)
    sizes = [s.stop - s.start for s in sl]
    assert np.prod(sizes) <= 1_000_000 and all(s >= p for s, p in zip(sizes, PATCH, strict=True))
    assert all(0 <= s.start and s.stop <= n for s, n in zip(sl, shape, strict=True))
    assert sl[0].stop == 200 and sl[1].start == 0  # moved inside, next to the corrections
    mask = np.zeros((40, 60, 60), np.uint8)
    mask[30:40, 0:10, 20:30] = 1
    assert region_centre(mask.shape, mask) == (35.0, 5.0, 25.0)
    assert region_centre((10, 10, 10), box=[[0, 4], [2, 6], [0, 10]]) == (2.0, 4.0, 5.0)
    small, big = np.zeros((8, 8, 8)), np.zeros((40, 60, 60))
    out = distillation_volumes([small, big], [None, mask], None, (4, 4, 4), max_voxels=20_000)
    assert out[0] is small and np.prod(out[1].shape) <= 20_000


def test_a_trained_start_teaches_itself_by_default(volume, start_model, tmp_path):
    mask = np.zeros(volume.labels.shape, np.uint8)
    mask[:, :, :32] = 1
    kw = {"steps": 2, "patch_shape": PATCH, "augment": False, "holdout": 0.0}
    model = finetune(volume.image, volume.labels, mask=mask, init=start_model, **kw)
    d = model.card.training["distillation"]
    assert d["teacher"] == TEACHER_NAME and d["share"] == FinetuneConfig().distill_p == 0.5
    assert d["affinities"] == "predicted" and d["volume_shapes"] == [list(volume.image.shape)]
    assert model.card.training["config"]["self_distill"] is True
    # the user's affinities are used as they are: no prediction (a shape that does not fit is refused)
    given = np.full((3, *volume.image.shape), 0.9, np.float32)
    model = finetune(volume.image, volume.labels, mask=mask, init=start_model, teacher_affinities=[given], **kw)
    assert model.card.training["distillation"]["affinities"] == "given"
    with pytest.raises(ValueError, match="do not fit"):
        finetune(volume.image, volume.labels, mask=mask, init=start_model,
                 teacher_affinities=[given[:, :8]], **kw)
    # off: by the config, for a new network, and then given affinities make no sense
    off = finetune(volume.image, volume.labels, mask=mask, init=start_model, self_distill=False, **kw)
    assert "distillation" not in off.card.training
    scratch = finetune(volume.image, volume.labels, mask=mask, init="scratch", **kw)
    assert "distillation" not in scratch.card.training
    with pytest.raises(ValueError, match="teacher_affinities needs a teacher"):
        finetune(volume.image, volume.labels, mask=mask, init="scratch", teacher_affinities=[given], **kw)


def test_self_distillation_pulls_toward_the_start(volume, start_model):
    """With every sample the start's own targets (distill_p 1), a high learning rate changes
    the network's output on the volume far less than training on the labels does."""
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    start = load_model(start_model, device="cpu")
    before = predict_affinities(volume.image, start, device="cpu", tile_shape=PATCH)
    kw = {"steps": 30, "patch_shape": PATCH, "augment": False, "holdout": 0.0, "lr": 5e-3, "ema": None}
    own = finetune(volume.image, volume.labels, init=start_model, distill_p=1.0, **kw)
    labels = finetune(volume.image, volume.labels, init=start_model, self_distill=False, **kw)

    def moved(m):
        return float(np.abs(predict_affinities(volume.image, m, device="cpu", tile_shape=PATCH) - before).mean())

    assert moved(own) < 0.5 * moved(labels)


def test_cli_teacher_affinities_and_no_self_distill(tmp_path, volume, start_model, capsys):
    import tifffile

    from napari_tokenunify.cli import build_parser, main
    from napari_tokenunify.cli.cmd_finetune import finetune_config

    args = build_parser().parse_args(["finetune", "--raw", "r", "--labels", "l", "--out", "o", "--no-self-distill"])
    assert finetune_config(args) == FinetuneConfig(self_distill=False)
    tifffile.imwrite(tmp_path / "raw.tif", volume.image)
    tifffile.imwrite(tmp_path / "labels.tif", volume.labels)
    io = ["--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "labels.tif"), "--steps", "1",
          "--patch", *map(str, PATCH), "--holdout", "0", "--quiet"]
    # the start's affinities from `tokenunify predict` are its targets
    assert main(["predict", str(tmp_path / "raw.tif"), str(tmp_path / "start.zarr"), "--model", str(start_model),
                 "--tile", "16,32,32", "--quiet"]) == 0
    assert main(["finetune", *io, "--init", str(start_model), "--out", str(tmp_path / "ft"), "--steps", "2",
                 "--teacher-affinities", str(tmp_path / "start.zarr")]) == 0
    card = json.loads((tmp_path / "ft" / "model" / "card.json").read_text())
    assert card["training"]["distillation"]["affinities"] == "given"
    # another model's affinities are refused, saying what to do
    assert main(["predict", str(tmp_path / "raw.tif"), str(tmp_path / "other.zarr"), "--model", "unet",
                 "--tile", "16,32,32", "--quiet"]) == 0
    capsys.readouterr()
    rc = main(["finetune", *io, "--init", str(start_model), "--out", str(tmp_path / "bad"),
               "--teacher-affinities", str(tmp_path / "other.zarr")])
    err = capsys.readouterr().err
    assert rc == 1 and "predicted with another model" in err and "Traceback" not in err
    rc = main(["finetune", *io, "--init", str(start_model), "--out", str(tmp_path / "bad2"), "--no-self-distill",
               "--teacher-affinities", str(tmp_path / "start.zarr")])
    assert rc == 1 and "--no-self-distill" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()

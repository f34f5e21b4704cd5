"""Finetuning settings (FinetuneConfig), the finetuned model's card (provenance), bad input that
is refused with what to do, outputs that would overwrite a model, and ``tokenunify info MODEL``."""

from __future__ import annotations

import dataclasses
import datetime
import json

import numpy as np
import pytest
import torch

from napari_tokenunify.cli import build_parser, main
from napari_tokenunify.model import build_model, load_model, save_model, weights_sha256
from napari_tokenunify.model.bundled import BUNDLED_DIR
from napari_tokenunify.training.checkpoints import CheckpointError, guard_output
from napari_tokenunify.training.config import DEFAULT_THRESHOLDS, FinetuneConfig
from napari_tokenunify.training.finetune import finetune, rechoose_threshold, resolve_config
from napari_tokenunify.training.targets import TrainingDataError

PATCH = (16, 32, 32)
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def volume():
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((16, 48, 48), seed=1)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A saved tiny model with a name, a threshold and old scores of its own."""
    torch.manual_seed(0)
    net = build_model("tiny")
    net.card.name = "start-net"
    net.card.training = {"segmentation_threshold": 0.3, "steps": 99}
    net.card.metrics = {"old-test": {"voi": 9.0, "arand": 0.9}}
    return save_model(net, tmp_path_factory.mktemp("start") / "start-net")


# -- the config ------------------------------------------------------------------------------

def test_config_defaults_types_and_round_trip():
    c = FinetuneConfig()
    assert c.steps == 5000 and c.lr == 5e-4 and c.ema == 0.99 and c.holdout == 0.2
    assert c.time_budget_s == 300.0  # rule 30: five minutes end training, not the step count
    assert c.patch_shape is None and c.thresholds == DEFAULT_THRESHOLDS
    d = FinetuneConfig(patch_shape=[16, 32, 32], thresholds=[0.3], steps=10.0)
    assert d.patch_shape == PATCH and d.thresholds == (0.3,) and d.steps == 10
    assert FinetuneConfig.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    assert c.with_(lr=3e-3).lr == 3e-3 and c.lr == 5e-4  # frozen: a copy
    with pytest.raises(TypeError, match="unknown finetune option"):
        c.with_(learning_rate=1)


@pytest.mark.parametrize("bad, match", [
    ({"steps": 0}, "steps must be at least 1"), ({"lr": 0}, "learning rate"),
    ({"ema": 1.5}, "between 0 and 1"), ({"patch_shape": (16, 32)}, "three positive"),
    ({"holdout": 0.9}, "holdout"), ({"time_budget_s": -1}, "time budget"),
    ({"thresholds": ()}, "thresholds"), ({"teacher_tta": "xy"}, "teacher_tta"),
    ({"steps": 2.5}, "whole number"),
])
def test_config_refuses_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**bad)


def test_keywords_override_the_config_as_before():
    base = FinetuneConfig(steps=7, lr=2e-3)
    cfg, aug = resolve_config(base, steps=3, threshold=0.4)
    assert (cfg.steps, cfg.lr, cfg.thresholds, aug) == (3, 2e-3, (0.4,), None)
    from napari_tokenunify.training.augment import EMAugment

    custom = EMAugment()
    cfg, aug = resolve_config(None, augment=custom)
    assert cfg.augment is True and aug is custom
    with pytest.raises(TypeError, match="unexpected keyword"):
        resolve_config(None, stepz=3)


def test_finetune_takes_a_config_and_records_it(volume):
    cfg = FinetuneConfig(steps=2, patch_shape=PATCH, augment=False, lr=2e-3, seed=4)
    model = finetune(volume.image, volume.labels, config=cfg, steps=3)  # the keyword wins
    recorded = model.card.training["config"]
    assert recorded["steps"] == 3 and recorded["lr"] == 2e-3 and recorded["seed"] == 4
    assert FinetuneConfig.from_dict(recorded) == cfg.with_(steps=3)
    assert model.training_info["steps"] == 3


# -- provenance ------------------------------------------------------------------------------

def test_finetuned_card_says_what_it_came_from_and_was_trained_on(volume, start_model, tmp_path):
    mask = np.zeros(volume.labels.shape, np.uint8)
    mask[:, 4:44, 4:44] = 1
    model = finetune(volume.image, volume.labels, mask=mask, init=start_model, out_dir=tmp_path / "ft",
                     steps=2, patch_shape=PATCH, augment=False, data={"raw": "em.h5", "labels": "gt.h5"},
                     voxel_size_nm=(40, 8, 8), holdout=0.0, rechoose_margin=None)
    card = json.loads((tmp_path / "ft" / "model" / "card.json").read_text())
    today = datetime.date.today().isoformat()
    assert card["name"] == f"start-net-ft-{today}" == model.card.name
    assert "start-net finetuned on em.h5" in card["description"]
    t = card["training"]
    start = t["started_from"]
    assert start["name"] == "start-net" and start["source"] == str(start_model.resolve())
    assert start["weights_sha256"] == weights_sha256(load_model(start_model, device="cpu"))
    assert start["training"]["steps"] == 99  # the start's own record, kept beside the new one
    assert t["data"] == {"raw": "em.h5", "labels": "gt.h5", "shape": [16, 48, 48], "voxel_size_nm": [40.0, 8.0, 8.0]}
    assert t["region"] == {"kind": "mask", "voxels": int(mask.sum())}
    assert t["steps"] == 2 and t["device"] == "cpu" and t["seconds"] >= 0 and t["finished"].startswith(today)
    assert t["config"]["patch_shape"] == list(PATCH) and t["config"]["steps"] == 2
    assert card["voxel_size_nm"] == [40.0, 8.0, 8.0]  # the network learnt at the data's voxel size
    assert "old-test" not in card["metrics"]  # never the start's old scores
    # no validation, no re-choice: the start's threshold carries over
    assert t["segmentation_threshold"] == 0.3 and "starting model" in t["threshold_choice"]
    # the finetuned model's own hash is what `info` prints and a next finetune records
    assert weights_sha256(load_model(tmp_path / "ft" / "model", device="cpu")) == weights_sha256(model)


def test_holdout_keeps_the_start_threshold_by_default(volume):
    """Rule 17: held-back corrections choose the checkpoint at the start's threshold only."""
    start = build_model("tiny")
    start.card.training = {"segmentation_threshold": 0.3}
    box = (slice(0, 16), slice(0, 48), slice(0, 40))
    model = finetune(volume.image, volume.labels, box=box, init=start, steps=2, patch_shape=PATCH,
                     augment=False, holdout=0.25, thresholds=(0.1, 0.5, 0.9), rechoose_margin=None)
    assert model.card.metrics["validation"]["threshold"] == 0.3 == model.card.recommended_threshold
    assert "starting model's, kept" in model.card.training["threshold_choice"]
    assert model.card.training["config"]["keep_start_threshold"] is True
    # from scratch there is no threshold to keep: the held-back corrections choose one
    scratch = finetune(volume.image, volume.labels, box=box, init="scratch", steps=2, patch_shape=PATCH,
                       augment=False, holdout=0.25, thresholds=(0.1, 0.5, 0.9))
    assert scratch.card.training["threshold_choice"] == "best of the held-back corrections"


@pytest.mark.parametrize("holdout, source", [(0.25, "held-back corrections"),
                                             (0.0, "corrections (in-sample)")])
def test_the_kept_model_scores_every_threshold_and_rechooses_only_with_a_margin(volume, holdout, source):
    """The kept model's table on the held-back corrections (or, with nothing held back, on the
    corrections themselves) is recorded; ``rechoose_margin`` 0 takes its best, None the start's."""
    start = build_model("tiny")
    start.card.training = {"segmentation_threshold": 0.3}
    common = dict(box=(slice(0, 16), slice(0, 48), slice(0, 40)), init=start, steps=2, patch_shape=PATCH,
                  augment=False, holdout=holdout, thresholds=(0.1, 0.5, 0.9))
    kept = finetune(volume.image, volume.labels, rechoose_margin=None, **common)
    tables = kept.card.training["threshold_tables"]
    assert list(tables) == [source]
    table = {float(t): v for t, v in tables[source].items()}
    assert set(table) == {0.1, 0.3, 0.5, 0.9} and all(v >= 0 for v in table.values())
    assert kept.card.recommended_threshold == 0.3  # no margin: the start's, whatever the table says
    best = min(table, key=lambda t: (table[t], abs(t - 0.3)))
    again = finetune(volume.image, volume.labels, rechoose_margin=0.0, **common)
    assert again.card.training["threshold_tables"] == tables
    assert again.card.recommended_threshold == best
    if best != 0.3:
        assert source in again.card.training["threshold_choice"]
    assert again.card.training["config"]["rechoose_margin"] == 0.0
    if holdout == 0.0:  # from scratch there is no start threshold to weigh against: no table
        scratch = finetune(volume.image, volume.labels, **{**common, "init": "scratch"})
        assert "threshold_tables" not in scratch.card.training
        assert "start_on_corrections" not in scratch.card.training


@pytest.mark.parametrize("holdout", [0.25, 0.0])
def test_the_card_records_the_start_on_all_the_corrections(volume, holdout):
    """The starting model, as it was, scored at every threshold on all the corrections (held
    back or not): the same table as scoring the start there directly, and ``info`` shows it."""
    from napari_tokenunify.engine.normalize import ROBUST_NORMALIZATION
    from napari_tokenunify.model.card import describe_card
    from napari_tokenunify.training.regions import around_selection
    from napari_tokenunify.training.validation import threshold_table

    start = build_model("tiny")
    start.card.training = {"segmentation_threshold": 0.3}
    # the patch (prediction tile) and normalisation finetuning scores with, so that scoring the
    # start directly below sees the same input
    start.card = dataclasses.replace(start.card, patch_size=list(PATCH), normalization=dict(ROBUST_NORMALIZATION))
    box = (slice(0, 16), slice(0, 48), slice(0, 40))
    model = finetune(volume.image, volume.labels, box=box, init=start, steps=2, patch_shape=PATCH,
                     augment=False, holdout=holdout, thresholds=(0.1, 0.5, 0.9), lr=1e-2, ema=None)
    on = model.card.training["start_on_corrections"]
    selected = np.zeros(volume.labels.shape, bool)
    selected[box] = True
    direct = threshold_table(start, around_selection(volume.image, np.asarray(volume.labels), selected, PATCH),
                             (0.1, 0.3, 0.5, 0.9))
    assert on["table"] == {f"{t:g}": round(v, 4) for t, v in direct.items()}
    assert on["threshold"] == 0.3 and on["best"] == min(direct, key=lambda t: (direct[t], abs(t - 0.3)))
    assert on["best_gain"] == pytest.approx(1 - direct[on["best"]] / direct[0.3], abs=1e-4)
    assert any(line.startswith("  the start on the corrections: VOI") for line in describe_card(model.card))


def test_start_margin_returns_the_start_unless_a_checkpoint_beats_it(volume):
    """``start_margin``: the starting model competes with the checkpoints on the held-back
    corrections; a margin nothing can meet returns its weights unchanged and says so."""
    from napari_tokenunify.model.card import describe_card

    start = build_model("tiny")
    start.card.training = {"segmentation_threshold": 0.3}
    common = dict(box=(slice(0, 16), slice(0, 48), slice(0, 40)), init=start, steps=2, patch_shape=PATCH,
                  augment=False, holdout=0.25, lr=1e-2, ema=None, val_every=1, rechoose_margin=None)
    original = {k: v.clone() for k, v in start.state_dict().items()}
    kept = finetune(volume.image, volume.labels, start_margin=0.999, **common)
    assert all(torch.equal(v, original[k]) for k, v in kept.state_dict().items())
    t = kept.card.training
    assert t["best_step"] == 0 and t["steps"] == 2 and t["config"]["start_margin"] == 0.999
    assert "starting model, unchanged" in t["kept"] and "start_margin" in t["kept"]
    assert any(line.startswith("  kept: the starting model") for line in describe_card(kept.card))
    assert kept.card.recommended_threshold == 0.3
    from napari_tokenunify.training.unet import ResidualUNet3D

    untrained = ResidualUNet3D(out_channels=3, widths=(4, 8, 16))  # a bare network: no card, no threshold
    fresh = finetune(volume.image, volume.labels, start_margin=0.999, **{**common, "init": untrained})
    assert "kept" not in fresh.card.training and fresh.card.training["best_step"] > 0
    trained = finetune(volume.image, volume.labels, start_margin=None, **common)  # the best checkpoint
    assert "kept" not in trained.card.training and trained.card.training["best_step"] > 0
    assert any(not torch.equal(v, original[k]) for k, v in trained.state_dict().items())
    with pytest.raises(ValueError, match="start_margin"):
        FinetuneConfig(start_margin=1.0)
    assert FinetuneConfig(start_margin="0.05").start_margin == 0.05


def test_rechoose_threshold_needs_the_margin():
    table = {0.1: 1.0, 0.3: 0.8, 0.6: 0.95}
    assert rechoose_threshold(table, 0.6, None) == 0.6
    assert rechoose_threshold(table, 0.6, 0.1) == 0.3  # 0.8 is 16 % below 0.95
    assert rechoose_threshold(table, 0.6, 0.2) == 0.6  # not 20 %
    assert rechoose_threshold(table, 0.6, 0.0) == 0.3
    assert rechoose_threshold({0.3: 0.5, 0.6: 0.5}, 0.6, 0.0) == 0.6  # a tie keeps the start
    assert rechoose_threshold(table, 0.45, 0.0) == 0.45  # a start the table lacks is kept
    with pytest.raises(ValueError, match="rechoose_margin"):
        FinetuneConfig(rechoose_margin=1.0)
    with pytest.raises(ValueError, match="rechoose_margin"):
        FinetuneConfig(rechoose_margin=-0.1)
    assert FinetuneConfig(rechoose_margin="0.1").rechoose_margin == 0.1


def test_holdout_validates_on_held_back_corrections_and_sets_the_threshold(volume):
    box = (slice(0, 16), slice(0, 48), slice(0, 40))
    model = finetune(volume.image, volume.labels, box=box, init=build_model("tiny"), steps=2,
                     patch_shape=PATCH, augment=False, holdout=0.25, thresholds=(0.1, 0.5, 0.9),
                     name="my-model", keep_start_threshold=False)
    card = model.card
    assert card.name == "my-model"
    region = card.training["region"]
    assert region["kind"] == "box" and region["box"] == [[0, 16], [0, 48], [0, 40]]
    held = region["holdout"]
    assert held["share"] == 0.25 and held["axis"] == "y" and held["voxels"] > 0 and "skipped" not in held
    after, before = card.metrics["validation"], card.metrics["validation_before"]
    assert after["threshold"] in (0.1, 0.5, 0.9) and "voi" in before
    assert card.recommended_threshold == after["threshold"]
    assert card.training["threshold_choice"] == "best of the held-back corrections"
    assert model.validation_before == before


def test_a_holdout_without_two_objects_is_skipped_and_says_so(volume):
    labels = volume.labels.copy()
    labels[:, 40:, :] = 0  # the held-back end of the region holds no object
    model = finetune(volume.image, labels, init=None, steps=1, patch_shape=PATCH, augment=False,
                     holdout=0.1, voxel_size_nm=8)
    held = model.card.training["region"]["holdout"]
    assert "fewer than two objects" in held["skipped"] and "validation" not in model.card.metrics
    assert model.card.training["started_from"] == {"name": "scratch", "preset": "tiny"}
    assert model.card.name.startswith("scratch-ft-") and model.card.voxel_size_nm == [8.0, 8.0, 8.0]


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("region, match", [
    ("empty", "mask is empty"),
    ("zeros", "all zero inside the mask"),
    ("small mask", "fewer than one training patch"),
    ("small box", "fewer than one training patch"),
])
def test_finetune_refuses_regions_it_cannot_learn_from(volume, tmp_path, region, match):
    labels, mask, box = volume.labels.copy(), np.zeros(volume.labels.shape, np.uint8), None
    if region == "zeros":
        mask[:, :24] = 1
        labels[:, :24] = 0  # corrections only of label 0
    elif region == "small mask":
        mask[:8, 10:30, 10:30] = 1
    elif region == "small box":
        mask, box = None, (slice(0, 16), slice(8, 30), slice(8, 30))
    with pytest.raises(TrainingDataError, match=match) as err:
        finetune(volume.image, labels, mask=mask, box=box, steps=1, out_dir=tmp_path / "x", patch_shape=PATCH)
    if "patch" in match:
        assert "mark a larger region" in str(err.value)
    if region == "zeros":
        assert "paint at least two" in str(err.value)
    assert not (tmp_path / "x").exists()


def test_outputs_never_overwrite_the_start_or_the_bundled_models(tmp_path, start_model):
    for out in (BUNDLED_DIR, BUNDLED_DIR / "default", BUNDLED_DIR / "new", BUNDLED_DIR.parent.parent):
        with pytest.raises(CheckpointError, match="bundled models"):
            guard_output(out, None)
    from napari_tokenunify.training.checkpoints import _protected

    assert (BUNDLED_DIR / "default").resolve() in [p for p, _ in _protected("default")]  # a name
    loaded = load_model(start_model, device="cpu")  # a model remembers where it was read from
    with pytest.raises(CheckpointError, match="initial model"):
        guard_output(start_model, loaded, model_subdir=None)
    with pytest.raises(CheckpointError, match="initial model"):
        guard_output(start_model.parent, loaded, model_subdir="start-net")  # out/start-net is the start
    guard_output(start_model.parent, loaded, model_subdir=None)  # beside it is fine
    guard_output(tmp_path / "run", "default")


# -- the command line ------------------------------------------------------------------------

def _args(*extra):
    return build_parser().parse_args(["finetune", "--raw", "r.tif", "--labels", "l.tif", "--out", "o", *extra])


def test_cli_defaults_are_the_config_defaults():
    from napari_tokenunify.cli.cmd_finetune import finetune_config

    args = _args()
    assert finetune_config(args) == FinetuneConfig()
    d = FinetuneConfig()
    assert (args.steps, args.lr, args.batch_size, args.patch, args.augment, args.ema, args.head_steps,
            args.val_every, args.holdout, args.time_budget, args.seed, args.checkpoint_every,
            args.distill_p, args.teacher_tta, args.distill_margin) == (
        d.steps, d.lr, d.batch_size, d.patch_shape, d.augment, d.ema, d.head_steps, d.val_every,
        d.holdout, d.time_budget_s, d.seed, d.checkpoint_every, d.distill_p, d.teacher_tta, d.distill_margin)
    assert finetune_config(_args("--distill-margin", "0.25")) == d.with_(distill_margin=0.25)
    cfg = finetune_config(_args("--steps", "3", "--patch", "16", "32", "32", "--no-augment",
                                "--threshold", "0.2", "0.4", "--holdout", "0.2", "--time-budget", "60"))
    # thresholds given are thresholds to choose among, so the start's is not kept
    assert cfg == d.with_(steps=3, patch_shape=PATCH, augment=False, thresholds=(0.2, 0.4), holdout=0.2,
                          time_budget_s=60.0, keep_start_threshold=False)
    assert finetune_config(_args("--rechoose-threshold", "--no-self-distill")) == d.with_(
        keep_start_threshold=False, self_distill=False)
    assert finetune_config(_args("--ema", "0", "--holdout", "0")) == d.with_(ema=None, holdout=0.0)
    assert finetune_config(_args("--grow-boundaries", "1")) == d.with_(grow_boundaries=1)
    assert finetune_config(_args("--rechoose-margin", "0.15")) == d.with_(rechoose_margin=0.15)
    assert finetune_config(_args("--rechoose-margin", "-1")) == d.with_(rechoose_margin=None)
    assert finetune_config(_args("--start-margin", "0.05")) == d.with_(start_margin=0.05)
    assert finetune_config(_args("--start-margin", "-1")) == d.with_(start_margin=None)
    assert finetune_config(_args("--permute-axes")) == d.with_(permute_axes=True)
    assert finetune_config(_args("--permute-axes", "off")) == d.with_(permute_axes=False)
    assert d.permute_axes is None and finetune_config(_args("--permute-axes", "auto")) == d
    assert finetune_config(_args("--time-budget", "0")).time_budget_s is None  # 0: no limit
    assert finetune_config(_args("--anneal-to-budget")) == d.with_(anneal_to_budget=True)
    assert finetune_config(_args("--no-anneal-to-budget")) == d.with_(anneal_to_budget=False)


def _write(tmp_path, volume, mask=None):
    import tifffile

    tifffile.imwrite(tmp_path / "raw.tif", volume.image)
    tifffile.imwrite(tmp_path / "labels.tif", volume.labels)
    if mask is not None:
        tifffile.imwrite(tmp_path / "mask.tif", mask)
    return ["--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "labels.tif")]


def test_cli_finetune_name_card_and_info(tmp_path, volume, start_model, capsys):
    io = _write(tmp_path, volume)
    rc = main(["finetune", *io, "--init", str(start_model), "--out", str(tmp_path / "ft"), "--steps", "2",
               "--patch", "16", "32", "32", "--name", "lab-ft", "--voxel-size", "40", "8", "8", "--quiet",
               "--holdout", "0"])  # without held-back corrections the start's threshold carries over
    assert rc == 0
    out = capsys.readouterr().out
    assert "finetuned model 'lab-ft'" in out
    card = json.loads((tmp_path / "ft" / "model" / "card.json").read_text())
    assert card["name"] == "lab-ft" and card["training"]["data"]["raw"] == str(tmp_path / "raw.tif")
    assert card["training"]["config"]["steps"] == 2
    assert main(["info", str(tmp_path / "ft" / "model")]) == 0
    text = capsys.readouterr().out
    sha = weights_sha256(load_model(tmp_path / "ft" / "model", device="cpu"))
    start_sha = weights_sha256(load_model(start_model, device="cpu"))
    for words in ("name: lab-ft", "start-net finetuned on", "preset: tiny", "voxel size (nm, z y x): (40, 8, 8)",
                  "normalization:", "recommended threshold: 0.3", "recommended test-time flips: none",
                  f"started from: start-net (weights sha256 {start_sha[:16]}", "region: kind whole volume",
                  "run: 2 steps", "steps 2, teacher_tta yx", f"weights sha256: {sha}",
                  # 40 x 8 x 8 nm: serial sections, so no permuted views (rule 46's auto)
                  "permuted views: off (auto: the voxel size 40 × 8 × 8 nm is not isotropic)"):
        assert words in text, words
    assert main(["info"]) == 0  # without a model: versions and devices, as before
    assert "napari-tokenunify" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing-here")]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_finetune_bad_input_is_a_sentence_not_a_traceback(tmp_path, volume, capsys):
    mask = np.zeros(volume.labels.shape, np.uint8)
    mask[:4, :10, :10] = 1
    io = _write(tmp_path, volume, mask)
    rc = main(["finetune", *io, "--mask", str(tmp_path / "mask.tif"), "--init", "scratch",
               "--out", str(tmp_path / "ft"), "--steps", "1", "--patch", "16", "32", "32", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "fewer than one training patch" in err and "mark a larger region" in err
    assert "Traceback" not in err and not (tmp_path / "ft").exists()
    rc = main(["finetune", *io, "--init", "default", "--out", str(BUNDLED_DIR / "default"), "--steps", "1",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "would overwrite" in err and "Traceback" not in err
    rc = main(["finetune", *io, "--out", str(tmp_path / "x"), "--holdout", "0.9", "--quiet"])
    assert rc == 1 and "holdout" in capsys.readouterr().err


def test_info_tells_in_training_from_as_shipped_validation(capsys):
    assert main(["info", "unet"]) == 0
    text = capsys.readouterr().out
    # the bundled U-Net's two validation figures differ (2.240 in training, 1.880 as shipped)
    assert "validation in training (chose the checkpoint): VOI 2.240" in text
    assert "validation as shipped (bench_quality, mean): VOI 1.880" in text


def test_a_bundled_start_is_recorded_by_its_name_not_this_machines_path():
    from napari_tokenunify.model.bundled import portable_source
    from napari_tokenunify.training.finetune import start_record

    model = load_model("default", device="cpu")
    record = start_record(model, model.source_path)
    assert record["source"] == "default" and record["weights_sha256"] == weights_sha256(model)
    assert portable_source("/some/where/else/model") == "/some/where/else/model"
    # the bundled cards themselves carry no path of the machine they were trained on
    from napari_tokenunify.model.bundled import BUNDLED_DIR

    for name in ("default", "unet"):
        assert "/work/" not in (BUNDLED_DIR / name / "card.json").read_text()


def test_a_long_lineage_keeps_every_generation_s_hash_but_not_its_whole_record():
    """Each finetuning nests its start's training record; past LINEAGE_DEPTH generations only
    who the start was (name, weights hash) stays, so cards stop growing with every generation."""
    from napari_tokenunify.training.start import LINEAGE_DEPTH, trim_lineage

    training: dict = {"steps": 0, "history": list(range(100))}
    for g in range(1, 8):
        training = {"steps": g, "history": list(range(100)),
                    "started_from": {"name": f"gen{g - 1}", "weights_sha256": f"{g - 1:064d}",
                                     "training": training}}
    trimmed = trim_lineage(training)
    chain, node = [], trimmed
    while "started_from" in node:
        start = node["started_from"]
        chain.append(start)
        node = start.get("training", {})
    assert [s["name"] for s in chain][:LINEAGE_DEPTH + 1] == ["gen6", "gen5", "gen4", "gen3"][:LINEAGE_DEPTH + 1]
    assert all("training" in s for s in chain[:LINEAGE_DEPTH])
    last = chain[LINEAGE_DEPTH]
    assert "training" not in last and last["weights_sha256"] == f"{6 - LINEAGE_DEPTH:064d}" and "trimmed" in last
    # the hashes of every older generation stay, nearest first
    assert [e["weights_sha256"] for e in last["earlier"]] == [f"{g:064d}" for g in range(5 - LINEAGE_DEPTH, -1, -1)]
    assert trim_lineage(trimmed) == trimmed  # trimming again (a card of a card) changes nothing
    assert len(json.dumps(trimmed)) < len(json.dumps(training))
    assert trim_lineage({"steps": 1}) == {"steps": 1}

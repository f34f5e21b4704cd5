"""The Finetune section as one loop in a real viewer (tiny model, few steps, small volume): its
defaults are FinetuneConfig()'s (as the CLI's are), the new model gets a name and a card saying
where it came from, the Model section shows that card, *Predict again* writes a new store and a
new labels layer and leaves the edited labels alone, bad regions and unsafe folders are refused."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import datetime

import numpy as np
import pytest

from napari_tokenunify.training.config import FinetuneConfig
from widget_support import docked, notes, pick, small_volume, wait_job  # noqa: F401

pytestmark = pytest.mark.gui
PATCH = (16, 32, 32)


def test_finetune_section_defaults_are_the_config_defaults(docked):
    _, widget = docked
    panel = widget.panel("Finetune")
    d = FinetuneConfig()
    assert panel.steps.value == d.steps
    assert panel.lr.value == pytest.approx(d.lr, rel=1e-9)
    assert panel.budget.value == int(d.time_budget_s or 0)
    assert panel.holdout.value == pytest.approx(d.holdout)
    assert panel.config() == d  # what it trains with when nothing is changed
    from napari_tokenunify.cli import build_parser
    from napari_tokenunify.cli.cmd_finetune import finetune_config

    args = build_parser().parse_args(["finetune", "--raw", "r", "--labels", "l", "--out", "o"])
    assert finetune_config(args) == panel.config()  # the CLI's defaults are the widget's


def _layers(viewer, vol):
    image = viewer.add_image(vol.image, name="em")
    labels = viewer.add_labels(np.array(vol.labels), name="seg")
    return image, labels


def test_finetune_name_card_use_and_predict_again(docked, small_volume, qtbot, notes, monkeypatch):
    import torch

    from napari_tokenunify.model import build_model, weights_sha256

    viewer, widget = docked
    torch.manual_seed(0)
    start = build_model("tiny")
    start_sha = weights_sha256(start)
    widget.session.model = start
    image, labels = _layers(viewer, small_volume)
    # an earlier prediction with the old model: Predict again must leave its store alone
    predict = widget.panel("Predict")
    pick(predict.image, image)
    predict.scope.value = "whole volume"
    predict.tile_shape = PATCH
    wait_job(qtbot, predict.predict(), timeout_ms=120_000)
    old_store = predict.store_path(image)
    old_affs = np.asarray(viewer.layers["em affinities"].data[...]).copy()

    panel = widget.panel("Finetune")
    pick(panel.image, image)
    pick(panel.labels, labels)
    today = datetime.date.today().isoformat()
    assert panel.name.value == f"tiny-ft-seg-{today}"  # proposed, editable
    panel.name.value = "my-tiny"
    panel.region.value = "box"
    panel.box.value = "0:16, 0:48, 0:40"
    panel.steps.value = 2
    panel.holdout.value = 0.25
    panel.patch_shape = PATCH
    # two steps rarely beat the start by start_margin; the start kept is the next test's case
    monkeypatch.setattr(panel, "config", lambda c=panel.config(): c.with_(start_margin=None))
    job = wait_job(qtbot, panel.start(), timeout_ms=300_000)
    assert job.error is None, notes.messages
    model = widget.session.finetuned
    assert not model.training_info.get("kept")
    card = model.card
    assert card.name == "my-tiny"
    t = card.training
    assert t["started_from"]["name"] == "tiny" and t["started_from"]["weights_sha256"] == start_sha
    assert t["data"]["image"] == "em" and t["data"]["labels"] == "seg" and t["data"]["shape"] == [16, 48, 48]
    assert t["region"]["kind"] == "box" and t["region"]["box"] == [[0, 16], [0, 48], [0, 40]]
    assert t["config"] == panel.config().with_(patch_shape=PATCH, holdout=0.25, steps=2).to_dict()
    # the held-back corrections' choice: the start's threshold, or their clearly better one
    assert (card.recommended_threshold == card.metrics["validation"]["threshold"]
            or "best of the held-back corrections" in t["threshold_choice"])
    assert "held-back VOI" in panel.status.value
    # self-distillation took its targets from the start's affinities layer, the whole volume
    assert t["distillation"]["affinities"] == "given" and t["distillation"]["volume_shapes"] == [[16, 48, 48]]
    # napari's default scale says nothing of the voxel size: no permuted views (rule 46's auto)
    assert t["permuted_views"] == {"on": False, "why": "auto: the voxel size is unknown"}
    assert "permuted views" not in panel.status.value

    panel.use()
    text = widget.panel("Model").card.value
    assert "my-tiny" in text and "finetuned from tiny on seg" in text

    edited = np.array(labels.data, copy=True)
    job = wait_job(qtbot, panel.predict_again(), timeout_ms=300_000)
    assert job.error is None, notes.messages
    affs_layer, seg_layer = panel.again_layers
    assert seg_layer.name == "segmentation (my-tiny)" and "my-tiny" in affs_layer.name
    assert np.array_equal(np.asarray(labels.data), edited)  # the edited labels are untouched
    assert seg_layer.metadata["tokenunify"]["threshold"] == card.recommended_threshold
    assert np.asarray(seg_layer.data).shape == small_volume.labels.shape and np.asarray(seg_layer.data).any()
    new_store = affs_layer.metadata["tokenunify"]["store"]
    assert new_store != str(old_store)
    assert np.array_equal(np.asarray(viewer.layers["em affinities"].data[...]), old_affs)
    import zarr

    assert np.array_equal(np.asarray(zarr.open_group(str(old_store), mode="r")["affinities"][...]), old_affs)
    assert notes.has("predicted again", "my-tiny", "unchanged")
    # a second run goes to new layers again (nothing is replaced)
    job = wait_job(qtbot, panel.predict_again(), timeout_ms=300_000)
    assert job.error is None, notes.messages
    assert panel.again_layers[1].name == "segmentation (my-tiny) 2"
    assert seg_layer in viewer.layers


@pytest.mark.parametrize("case, words", [
    ("small box", ("fewer than one training patch", "mark a larger region")),
    ("only zeros", ("all zero", "paint at least two")),
])
def test_finetune_refuses_regions_with_a_message(docked, small_volume, qtbot, notes, case, words):
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    widget.session.model = build_model("tiny")
    image, labels = _layers(viewer, small_volume)
    if case == "only zeros":
        labels.data = np.zeros_like(small_volume.labels)
    panel = widget.panel("Finetune")
    pick(panel.image, image)
    pick(panel.labels, labels)
    panel.region.value = "box"
    panel.box.value = "0:8, 0:20, 0:20" if case == "small box" else "0:16, 0:48, 0:48"
    panel.patch_shape = PATCH
    panel.steps.value = 1
    job = wait_job(qtbot, panel.start())
    assert job.error is not None and notes.has("Finetune failed", *words), notes.messages
    assert widget.session.finetuned is None


def test_save_refuses_the_start_models_folder_and_the_bundled_models(docked, tmp_path, qtbot, notes):
    from napari_tokenunify.model import build_model, load_model, save_model
    from napari_tokenunify.model.bundled import BUNDLED_DIR

    _, widget = docked
    folder = save_model(build_model("tiny"), tmp_path / "start")
    before = (folder / "model.safetensors").read_bytes()
    widget.session.model = load_model(folder, device="cpu")
    new = build_model("tiny")
    new.training_info = {"started_from": {"name": "start", "source": str(folder)}}
    widget.session.finetuned = new
    panel = widget.panel("Finetune")
    for target in (folder, BUNDLED_DIR / "default"):
        panel.save_dir.value = target
        assert panel.save() is None
        assert notes.has("Save model failed", "would overwrite"), notes.messages
    assert (folder / "model.safetensors").read_bytes() == before
    panel.save_dir.value = tmp_path / "elsewhere"
    wait_job(qtbot, panel.save())
    assert (tmp_path / "elsewhere" / "card.json").exists()


def test_finetune_status_says_when_the_starting_model_was_kept(docked, small_volume):
    """``FinetuneConfig.start_margin``: when no checkpoint beat the start on the held-back
    corrections, the section says the model it hands on is the start, unchanged."""
    from napari_tokenunify.model import build_model
    from napari_tokenunify.training.finetune import finetune

    _, widget = docked
    panel = widget.panel("Finetune")
    start = build_model("tiny")
    start.card.training = {"segmentation_threshold": 0.3}
    model = finetune(small_volume.image, small_volume.labels, box=(slice(0, 16), slice(0, 48), slice(0, 40)),
                     init=start, steps=2, patch_shape=PATCH, augment=False, holdout=0.25, start_margin=0.999)
    panel._on_result(model)
    assert widget.session.finetuned is model
    assert "kept unchanged" in panel.status.value and "held-back VOI" in panel.status.value


def test_predict_again_after_a_finetuning_that_kept_its_start_predicts_nothing(
        docked, small_volume, qtbot, notes, monkeypatch):
    """A finetuning that returned its start unchanged (``start_margin``) holds the start's
    network: *Predict again* then segments the start's finished affinities at the new card's
    threshold (a new labels layer, no new prediction), and says there is nothing to do when
    the threshold did not change either."""
    from dataclasses import replace

    import napari_tokenunify.engine.predict as engine_predict
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    start = build_model("tiny")
    start.card.training = {"segmentation_threshold": 0.3, "segmentation_scoring": "mean"}
    widget.session.model = start
    image, labels = _layers(viewer, small_volume)
    image.scale = labels.scale = (10, 10, 10)  # isotropic, as FIB-SEM: permuted views (rule 46)
    predict = widget.panel("Predict")
    pick(predict.image, image)
    predict.scope.value = "whole volume"
    predict.tile_shape = PATCH
    wait_job(qtbot, predict.predict(), timeout_ms=120_000)
    old_affs = viewer.layers["em affinities"]

    panel = widget.panel("Finetune")
    pick(panel.image, image)
    pick(panel.labels, labels)
    panel.region.value = "box"
    panel.box.value = "0:16, 0:48, 0:40"
    panel.steps.value = 2
    panel.holdout.value = 0.25
    panel.patch_shape = PATCH
    monkeypatch.setattr(panel, "config", lambda c=panel.config(): c.with_(start_margin=0.999, rechoose_margin=None))
    job = wait_job(qtbot, panel.start(), timeout_ms=300_000)
    assert job.error is None, notes.messages
    model = widget.session.finetuned
    assert model.training_info.get("kept") and model.card.recommended_threshold == 0.3
    assert model.card.training["permuted_views"]["on"] is True
    assert "permuted views" in panel.status.value and "kept unchanged" in panel.status.value
    n_layers = len(viewer.layers)

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted again although the network is the start's")

    monkeypatch.setattr(engine_predict, "predict_affinities", no_prediction)
    # the threshold did not change: the segmentation would be the same
    assert panel.predict_again() is None
    assert notes.has("Nothing to predict again", "unchanged"), notes.messages
    assert len(viewer.layers) == n_layers
    # the held-back corrections re-chose the threshold: the start's affinities, segmented again
    model.card = replace(model.card, training={**model.card.training, "segmentation_threshold": 0.6})
    job = wait_job(qtbot, panel.predict_again(), timeout_ms=120_000)
    assert job.error is None, notes.messages
    assert len(viewer.layers) == n_layers + 1  # a labels layer; no new affinities layer
    seg_layer = viewer.layers[-1]
    assert seg_layer.metadata["tokenunify"]["threshold"] == 0.6
    from napari_tokenunify.engine.agglomerate import Agglomerator

    expected = Agglomerator(np.asarray(old_affs.data), scoring="mean", max_threshold=0.6).segment(0.6)
    assert np.array_equal(np.asarray(seg_layer.data), expected)
    assert notes.has("segmented again", "nothing predicted", "0.6"), notes.messages
    assert np.array_equal(np.asarray(labels.data), small_volume.labels)  # the edited labels untouched

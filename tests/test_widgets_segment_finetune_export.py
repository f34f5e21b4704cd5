"""Segment, finetune and export sections in a real viewer (tiny model, few steps, small volume)."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_tokenunify.affinities import labels_to_affinities
from widget_support import docked, notes, pick, small_volume, wait_job, zarr_labels  # noqa: F401

pytestmark = pytest.mark.gui


def _soft_affinities(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    affs, _ = labels_to_affinities(labels)
    return np.clip(0.1 + 0.8 * affs + rng.normal(0, 0.05, affs.shape), 0, 1).astype(np.float32)


def test_segment_and_rethreshold(docked, small_volume, qtbot):
    viewer, widget = docked
    affs = viewer.add_image(_soft_affinities(small_volume.labels), name="em affinities")
    panel = widget.panel("Segment")
    pick(panel.affinities, affs)
    wait_job(qtbot, panel.segment())
    layer = viewer.layers["segmentation"]
    seg = np.array(layer.data)
    assert seg.shape == small_volume.labels.shape
    # Each true cell is (almost entirely) one segment: the affinities say exactly that.
    from napari_tokenunify.engine.evaluate import evaluate

    scores = evaluate(seg, small_volume.labels)
    assert scores["voi_split"] + scores["voi_merge"] < 0.5
    key = next(iter(widget.session.agglomerators))
    agg = widget.session.agglomerators[key]
    panel.threshold.value = 0.95  # merges much more, from the kept fragments
    qtbot.waitUntil(lambda: "0.95" in panel.status.value, timeout=30000)
    assert widget.session.agglomerators[key] is agg  # fragments were not rebuilt
    assert len(np.unique(layer.data)) < len(np.unique(seg))
    panel.min_size.value = 10**6
    wait_job(qtbot, panel.segment())
    assert not np.asarray(layer.data).any()  # everything is smaller than a million voxels


def test_volumes_over_the_memory_limit_segment_blockwise_into_a_store(docked, small_volume, qtbot,
                                                                      tmp_path, monkeypatch, notes):
    """Above the in-memory limit Segment runs blockwise into a Zarr store (which a cancelled run
    resumes: tested in test_engine_segment) and the layer shows that store."""
    import zarr

    from napari_tokenunify.engine.agglomerate import segment_affinities
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.widgets.segment_panel import blockwise_store

    monkeypatch.setenv("TOKENUNIFY_IN_MEMORY_VOXELS", "1000")
    monkeypatch.setenv("TOKENUNIFY_CACHE_DIR", str(tmp_path))
    viewer, widget = docked
    soft = _soft_affinities(small_volume.labels)
    affs = viewer.add_image(soft, name="em affinities")
    panel = widget.panel("Segment")
    pick(panel.affinities, affs)
    panel.min_size.value = 5
    job = wait_job(qtbot, panel.segment())
    assert job.error is None, notes.messages
    assert notes.has("blockwise", "minimum size")
    layer = viewer.layers["segmentation"]
    store = blockwise_store(affs, panel.threshold.value)
    assert store.parent == tmp_path / "segmentations" and store.exists()
    assert isinstance(layer.data, zarr.Array)
    seg = np.asarray(layer.data[...])
    mem = segment_affinities(soft, panel.threshold.value)
    assert evaluate(seg, mem, ignore_label=None)["voi"] <= 0.05
    assert "segments at threshold" in panel.status.value and not panel.status.value.startswith("0 ")
    assert not widget.session.agglomerators  # nothing was kept in memory for the slider


def _finetune_on_edits(widget, viewer, small_volume, qtbot, notes, model):
    image = viewer.add_image(small_volume.image, name="em")
    labels = viewer.add_labels(np.array(small_volume.labels), name="seg")
    widget.session.model = model
    panel = widget.panel("Finetune")
    pick(panel.image, image)
    pick(panel.labels, labels)
    panel.start()
    assert notes.has("no edited regions")
    # A proofreading edit marks its region for finetuning; an undo takes it back out (the region
    # holds the model's own labels again), a redo puts it back.
    proof = widget.panel("Proofread")
    pick(proof.labels, labels)
    ids = [int(i) for i in np.unique(small_volume.labels)[1:3]]
    proof.ids.value = f"{ids[0]}, {ids[1]}"
    proof.merge()
    labels.undo()
    assert len(widget.session.edit_logs[id(labels)]) == 0
    labels.redo()
    assert len(widget.session.edit_logs[id(labels)]) == 1
    panel.steps.value = 15
    panel.lr.value = 3e-3
    panel.patch_shape = (16, 32, 32)
    job = wait_job(qtbot, panel.start(), timeout_ms=300_000)
    assert job.error is None, notes.messages
    losses = panel.losses
    assert len(losses) == 15
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    assert widget.session.finetuned is not None
    assert len(panel.plot.line.get_xdata()) == 15
    return panel


def test_finetune_emmamba_tiny_on_edited_regions_loss_falls(docked, small_volume, qtbot, notes):
    viewer, widget = docked
    from napari_tokenunify.model import build_model

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    _finetune_on_edits(widget, viewer, small_volume, qtbot, notes, build_model("tiny"))


def test_finetune_bundled_unet_then_save_and_reload(docked, small_volume, qtbot, tmp_path, notes):
    """The bundled U-Net finetunes from the widget like EMmamba and saves as a model card."""
    viewer, widget = docked
    from napari_tokenunify.model import load_model

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    panel = _finetune_on_edits(widget, viewer, small_volume, qtbot, notes, load_model("unet", device="cpu"))
    panel.save_dir.value = tmp_path / "my-unet"
    wait_job(qtbot, panel.save())
    reloaded = load_model(tmp_path / "my-unet", device="cpu")
    assert type(reloaded).__name__ == "ResidualUNet3D" and reloaded.card.preset == "unet"
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), widget.session.finetuned.eval()(x))


def test_save_use_and_compare_new_model(docked, small_volume, qtbot, tmp_path, notes):
    viewer, widget = docked
    from napari_tokenunify.model import build_model, load_model

    image = viewer.add_image(small_volume.image, name="em")
    panel = widget.panel("Finetune")
    pick(panel.image, image)
    panel.use()
    assert notes.has("no finetuned model")
    widget.session.finetuned = build_model("tiny")
    panel.save_dir.value = tmp_path / "new-model"
    wait_job(qtbot, panel.save())
    assert (tmp_path / "new-model" / "model.safetensors").exists()
    assert load_model(tmp_path / "new-model", device="cpu") is not None
    panel.use()
    assert widget.session.model is widget.session.finetuned
    assert "parameters" in widget.panel("Model").card.value
    wait_job(qtbot, panel.compare(), timeout_ms=120_000)
    new = viewer.layers["em affinities (finetuned)"]
    assert new.data.ndim == 4 and new.data.shape[0] == 3
    assert 0 < np.prod(new.data.shape[1:]) <= np.prod(small_volume.image.shape)


def test_finetune_refuses_mismatched_labels(docked, small_volume, notes):
    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    other = viewer.add_labels(np.zeros((4, 8, 8), np.uint32), name="other")
    panel = widget.panel("Finetune")
    pick(panel.image, image)
    pick(panel.labels, other)
    assert panel.start() is None
    assert notes.has("different", "same z, y, x") or notes.has("has shape")
    panel.cancel()
    assert notes.has("No finetuning to cancel")
    panel.save()
    assert notes.has("no finetuned model")


@pytest.mark.parametrize("suffix", [".zarr", ".tif", ".h5"])
def test_export_and_read_back(docked, small_volume, qtbot, tmp_path, suffix):
    viewer, widget = docked
    seg = viewer.add_labels(np.array(small_volume.labels), name="seg", scale=(10, 10, 10))
    affs = viewer.add_image(_soft_affinities(small_volume.labels), name="affs")
    from napari_tokenunify.model import build_model

    widget.session.model = build_model("tiny")
    panel = widget.panel("Export")
    pick(panel.labels, seg)
    pick(panel.affinities, affs if suffix == ".zarr" else None)
    out = tmp_path / f"seg{suffix}"
    panel.path.value = out
    job = wait_job(qtbot, panel.export())
    assert job.error is None
    from napari_tokenunify.io import open_volume

    back = open_volume(out)
    np.testing.assert_array_equal(np.asarray(back.data), small_volume.labels)
    card = json.loads((tmp_path / "seg.model-card.json").read_text())
    assert card["preset"] == "tiny"
    if suffix == ".zarr":
        assert (tmp_path / "seg-affinities.zarr").exists()


def test_export_streams_a_store_backed_labels_layer(docked, small_volume, qtbot, tmp_path):

    from napari_tokenunify.io import open_volume

    viewer, widget = docked
    seg = viewer.add_labels(zarr_labels(tmp_path / "blockwise.zarr", small_volume.labels), name="seg")
    panel = widget.panel("Export")
    pick(panel.labels, seg)
    pick(panel.affinities, None)
    panel.path.value = tmp_path / "out.tif"
    job = wait_job(qtbot, panel.export())
    assert job.error is None
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "out.tif").data), small_volume.labels)


def test_export_refuses_existing_and_unwritable_paths(docked, small_volume, tmp_path, notes):
    viewer, widget = docked
    seg = viewer.add_labels(np.array(small_volume.labels), name="seg")
    panel = widget.panel("Export")
    pick(panel.labels, seg)
    existing = tmp_path / "seg.tif"
    existing.write_bytes(b"keep me")
    panel.path.value = existing
    assert panel.export() is None
    assert notes.has("already exists")
    assert existing.read_bytes() == b"keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        panel.path.value = locked / "seg.zarr"
        assert panel.export() is None
        assert notes.has("cannot write")
    finally:
        os.chmod(locked, 0o700)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    panel.path.value = a_file / "seg.zarr"
    assert panel.export() is None
    assert notes.has("cannot write", "not a folder")
    panel.path.value = tmp_path / "seg.png"
    assert panel.export() is None
    assert notes.has("unknown format")


def test_slider_starts_at_the_model_cards_threshold(docked, small_volume, qtbot):
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    panel = widget.panel("Segment")
    model = build_model("tiny")
    model.card.training["segmentation_threshold"] = 0.2
    widget.events.model_changed.emit(model)
    assert panel.threshold.value == pytest.approx(0.2)
    # once something is segmented, a new model leaves the user's threshold alone
    affs = viewer.add_image(_soft_affinities(small_volume.labels), name="em affinities")
    pick(panel.affinities, affs)
    panel.threshold.value = 0.6
    wait_job(qtbot, panel.segment())
    model.card.training["segmentation_threshold"] = 0.3
    widget.events.model_changed.emit(model)
    assert panel.threshold.value == pytest.approx(0.6)

"""Model section (bad model files, devices) and autosave of corrected labels."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import numpy as np
import pytest

from napari_tokenunify.widgets.autosave import SUFFIX, autosave_path
from napari_tokenunify.widgets.model_panel import FILE, SOURCES, TINY
from widget_support import docked, notes, pick, small_volume, wait_job, zarr_labels  # noqa: F401

pytestmark = pytest.mark.gui


def test_a_file_that_is_not_a_model_is_reported(docked, qtbot, tmp_path, notes):
    viewer, widget = docked
    panel = widget.panel("Model")
    bogus = tmp_path / "notes.safetensors"
    bogus.write_text("this is not a model")
    panel.source.value = FILE
    panel.path.value = bogus
    job = wait_job(qtbot, panel.load())
    assert job.error is not None and widget.session.model is None
    assert notes.has("Load model failed", "notes.safetensors", "safetensors")
    panel.path.value = tmp_path  # a folder without a model
    wait_job(qtbot, panel.load())
    assert notes.has("Load model failed", "model.safetensors")


def test_unavailable_device_is_reported(docked, qtbot, notes):
    viewer, widget = docked
    from napari_tokenunify.devices import available_devices

    if "cuda" in available_devices():
        pytest.skip("this machine has CUDA")
    panel = widget.panel("Model")
    panel.device.value = "cuda"
    panel.source.value = FILE
    panel.path.value = __file__
    wait_job(qtbot, panel.load())
    assert widget.session.device == "cuda"
    assert any("Load model failed" in m for m in notes.messages)


def test_tiny_model_card_is_shown(docked, qtbot):
    viewer, widget = docked
    panel = widget.panel("Model")
    panel.source.value = TINY
    wait_job(qtbot, panel.load())
    text = panel.card.value
    assert "preset: tiny" in text and "parameters:" in text and "voxel size" in text


def test_bundled_unet_can_be_chosen_and_its_card_is_shown(docked, qtbot):
    viewer, widget = docked
    panel = widget.panel("Model")
    assert "unet (bundled)" in SOURCES and panel.source.choices[0] == "default (bundled)"
    panel.source.value = "unet (bundled)"
    wait_job(qtbot, panel.load())
    assert type(widget.session.model).__name__ == "ResidualUNet3D"
    assert "preset: unet (unet)" in panel.card.value
    # short lines a person can read: how to run it and how it scored, not the nested record
    assert "recommended: threshold 0.05, test-time flips none" in panel.card.value
    assert "trained from scratch: 3000 steps" in panel.card.value  # not "finetuned from"
    # the as-shipped and the in-training validation are told apart (they differ: 1.880 vs 2.240)
    assert "validation as shipped (bench_quality, mean): VOI 1.880, ARAND 0.252" in panel.card.value
    assert "validation in training (chose the checkpoint): VOI 2.240" in panel.card.value
    assert "continued_from" not in panel.card.value and len(panel.card.value.splitlines()) < 15


def test_autosave_writes_changed_labels_at_intervals(docked, small_volume, qtbot, tmp_path):
    viewer, widget = docked
    layer = viewer.add_labels(np.array(small_volume.labels), name="seg")
    saver = widget.autosaver
    assert saver.save_changed() is None  # nothing changed yet
    proof = widget.panel("Proofread")
    pick(proof.labels, layer)
    label_id = int(np.unique(small_volume.labels)[1])
    layer.selected_label = label_id
    proof.delete()
    assert saver.pending == 1
    job = wait_job(qtbot, saver.save_changed())
    assert job.error is None and saver.pending == 0
    path = saver.saved[id(layer)]
    # not read from a file: this session's own folder in the autosave folder
    assert path.name == "seg.zarr" and path.parent.parent == tmp_path / "autosave"
    from napari_tokenunify.io import open_volume

    back = np.asarray(open_volume(path).data)
    assert not (back == label_id).any()
    np.testing.assert_array_equal(back, np.asarray(layer.data))


def _store_labels_selected(docked, small_volume, tmp_path):
    """A Zarr-backed labels layer chosen in Proofread, with one of its ids selected."""
    viewer, widget = docked
    layer = viewer.add_labels(zarr_labels(tmp_path / "seg.zarr", small_volume.labels), name="seg")
    proof = widget.panel("Proofread")
    pick(proof.labels, layer)
    layer.selected_label = int(np.unique(small_volume.labels)[1])
    return widget, layer, proof, layer.selected_label


def test_store_backed_labels_are_edited_in_place_and_not_copied_by_autosave(docked, small_volume, qtbot,
                                                                            tmp_path):
    """A labels layer backed by a Zarr store (a blockwise segmentation) keeps its edits in that
    store, so autosave does not copy the volume into memory."""
    import zarr

    widget, layer, proof, label_id = _store_labels_selected(docked, small_volume, tmp_path)
    proof.delete()
    saver = widget.autosaver
    assert saver.pending == 1
    assert saver.save_changed() is None and saver.pending == 0 and id(layer) not in saver.saved
    on_disk = zarr.open_array(str(tmp_path / "seg.zarr"), mode="r")[...]
    assert not (on_disk == label_id).any()  # the edit is in the store itself
    layer.undo()
    assert (zarr.open_array(str(tmp_path / "seg.zarr"), mode="r")[...] == label_id).any()


def test_a_store_too_big_for_free_memory_is_refused_unchanged(docked, small_volume, tmp_path, notes,
                                                              monkeypatch):
    import zarr

    from napari_tokenunify.widgets import checks

    widget, layer, proof, label_id = _store_labels_selected(docked, small_volume, tmp_path)
    monkeypatch.setattr(checks, "free_memory_bytes", lambda: layer.data.nbytes)  # 30 % of it is too little
    proof.delete()
    assert notes.has("Delete label", "GiB is free: nothing was changed")
    on_disk = zarr.open_array(str(tmp_path / "seg.zarr"), mode="r")[...]
    np.testing.assert_array_equal(on_disk, small_volume.labels)
    proof.add_selected()  # needs no read of the volume
    assert proof.ids.value == str(label_id)


def test_autosave_goes_beside_the_data(make_napari_viewer, small_volume, tmp_path):
    from napari_tokenunify.io import write_volume

    src = write_volume(tmp_path / "stack.tif", small_volume.labels, kind="labels")
    viewer = make_napari_viewer()
    layers = viewer.open(src, plugin="napari-tokenunify")
    path = autosave_path(layers[0])
    assert path == tmp_path / f"stack{SUFFIX}" / f"{layers[0].name}.zarr"


def test_autosave_on_close_goes_where_the_edits_were_saved_before(make_napari_viewer, small_volume,
                                                                 tmp_path, monkeypatch):
    """On close the image choice is already gone: the target is the one recorded while it was
    known (beside the data), and labels of data from no file never share a file with another
    session's: every dataset's "segmentation" used to land in one autosave/segmentation.zarr."""
    from napari_tokenunify.io import open_volume, write_volume
    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget

    monkeypatch.setenv("TOKENUNIFY_AUTOSAVE_DIR", str(tmp_path / "autosave"))

    def session(image_layer_from, label_id):
        viewer = make_napari_viewer()
        widget = TokenUnifyWidget(viewer)
        viewer.window.add_dock_widget(widget)
        image = image_layer_from(viewer)
        seg = viewer.add_labels(np.array(small_volume.labels), name="segmentation")
        pick(widget.panel("Predict").image, image)
        proof = widget.panel("Proofread")
        pick(proof.labels, seg)
        seg.selected_label = label_id
        proof.delete()
        during = widget.autosaver.path_for(seg)
        viewer.layers.remove(image)  # as on close: the image choice is cleared first
        assert widget.panel("Predict").image.value is None
        viewer.close()
        saved = widget.autosaver.saved[id(seg)]
        assert saved == during and saved.exists()
        assert not (np.asarray(open_volume(saved).data) == label_id).any()
        return saved

    (tmp_path / "data").mkdir()
    src = write_volume(tmp_path / "data" / "stack.tif", small_volume.image, kind="image")
    ids = [int(i) for i in np.unique(small_volume.labels)[1:4]]
    beside = session(lambda v: v.open(str(src), plugin="napari-tokenunify")[0], ids[0])
    assert beside == tmp_path / "data" / f"stack{SUFFIX}" / "segmentation.zarr"
    first = session(lambda v: v.add_image(small_volume.image, name="em"), ids[1])
    second = session(lambda v: v.add_image(small_volume.image, name="em"), ids[2])
    assert first != second and first.parent != second.parent
    assert first.is_relative_to(tmp_path / "autosave") and first.name == "em-segmentation.zarr"
    back = np.asarray(open_volume(first).data)  # the second session did not write over it
    assert not (back == ids[1]).any() and (back == ids[2]).any()
    assert not (tmp_path / "autosave" / "segmentation.zarr").exists()

"""Predict section in a real viewer: tiny model, cancel mid-way and resume, close while running."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_tokenunify.progress import Cancelled
from napari_tokenunify.widgets.model_panel import TINY
from widget_support import docked, notes, pick, small_volume, wait_job  # noqa: F401

pytestmark = pytest.mark.gui


class SlowCounter:
    """Wraps a model's forward: counts tiles and sleeps a little, so a cancel lands mid-run."""

    def __init__(self, model, delay_s: float = 0.15) -> None:
        self.tiles = 0
        self.delay_s = delay_s
        self._forward = model.forward
        model.forward = self

    def __call__(self, x):
        self.tiles += int(x.shape[0])
        time.sleep(self.delay_s)
        return self._forward(x)


def _tiny_model(widget, qtbot):
    panel = widget.panel("Model")
    panel.source.value = TINY
    wait_job(qtbot, panel.load())
    assert widget.session.model is not None
    assert "parameters" in panel.card.value
    return widget.session.model


def _done(store) -> tuple[int, int]:
    import zarr

    done = zarr.open_group(str(store), mode="r")["done"][...]
    return int(done.sum()), int(done.size)


def test_predict_cancel_resume(docked, small_volume, qtbot, notes, tmp_path):
    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    model = _tiny_model(widget, qtbot)
    counter = SlowCounter(model)
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "whole volume"
    panel.tile_shape = (16, 32, 32)
    store = tmp_path / "em-affinities.zarr"
    panel.store.value = store

    job = panel.predict()
    qtbot.waitUntil(lambda: job._latest is not None, timeout=60000)
    assert panel.cancel()
    assert not panel.cancel()  # cancelling twice: a message, not a second cancel
    assert notes.has("already stopping")
    wait_job(qtbot, job)
    assert isinstance(job.error, Cancelled)
    assert notes.has("cancelled")
    first_tiles = counter.tiles
    n_done, n_blocks = _done(store)
    assert 0 < n_done < n_blocks

    job = wait_job(qtbot, panel.predict())
    assert job.error is None
    assert _done(store) == (n_blocks, n_blocks)
    assert counter.tiles - first_tiles == n_blocks - n_done  # resumed: finished tiles skipped
    layer = viewer.layers["em affinities"]
    data = np.asarray(layer.data)
    assert data.shape == (3, *small_volume.image.shape)
    assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1
    assert data.std() > 0
    assert layer.metadata["tokenunify"]["store"] == str(store)


def test_region_only_predicts_that_region(docked, small_volume, qtbot, tmp_path):
    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    _tiny_model(widget, qtbot)
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "region only"
    panel.region.value = "0:8, 0:24, 0:24"
    panel.tile_shape = (16, 32, 32)
    panel.store.value = tmp_path / "roi.zarr"
    wait_job(qtbot, panel.predict())
    n_done, n_blocks = _done(tmp_path / "roi.zarr")
    assert 0 < n_done < n_blocks
    data = np.asarray(viewer.layers["em affinities"].data)
    assert data[:, :8, :24, :24].std() > 0 and not data[:, :, 40:, 40:].any()


def test_bad_image_layers_are_refused_with_a_message(docked, notes):
    viewer, widget = docked
    panel = widget.panel("Predict")
    assert panel.predict() is None
    assert notes.has("Predict failed", "no image layer")
    flat = viewer.add_image(np.zeros((32, 32), np.uint8), name="flat")
    pick(panel.image, flat)
    assert panel.predict() is None
    assert notes.has("2D")
    rgb = viewer.add_image(np.zeros((8, 32, 32, 3), np.uint8), name="rgb", rgb=True)
    pick(panel.image, rgb)
    assert panel.predict() is None
    assert notes.has("RGB")
    panel.cancel()
    assert notes.has("No prediction to cancel")


def test_closing_the_viewer_stops_the_worker(make_napari_viewer, small_volume, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENUNIFY_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    from napari_tokenunify.engine.store import BlockStore
    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget

    viewer = make_napari_viewer()
    widget = TokenUnifyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    image = viewer.add_image(small_volume.image, name="em")
    seg = viewer.add_labels(np.array(small_volume.labels), name="seg")
    _tiny_model(widget, qtbot)
    SlowCounter(widget.session.model, delay_s=0.3)
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "whole volume"
    panel.tile_shape = (16, 32, 32)
    store = tmp_path / "close.zarr"
    panel.store.value = store
    job = panel.predict()
    qtbot.waitUntil(lambda: job._latest is not None, timeout=60000)
    seg.data_setitem((np.array([1]), np.array([2]), np.array([3])), 77)  # an unsaved edit
    viewer.close()
    assert job.finished and isinstance(job.error, Cancelled)
    assert not BlockStore.open(store, "affinities", mode="r").complete  # not marked complete
    saved = widget.autosaver.saved[id(seg)]
    assert saved.exists() and saved.is_relative_to(tmp_path / "autosave")  # autosaved on close
    from napari_tokenunify.io import open_volume

    assert int(np.asarray(open_volume(saved).data)[1, 2, 3]) == 77


def test_visible_box_follows_the_view(make_napari_viewer):
    from napari_tokenunify.widgets.view import camera, canvas_size, visible_box

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((40, 200, 300), np.uint8))
    viewer.dims.set_point(0, 20)
    cam = camera(viewer)
    cam.center = (100, 150)
    cam.zoom = 4.0
    h, w = canvas_size(viewer) or (600, 800)
    (z0, z1), (y0, y1), (x0, x1) = visible_box(viewer, layer, depth=16)
    assert (z0, z1) == (12, 28)
    assert abs((y0 + y1) / 2 - 100) <= 2 and abs((y1 - y0) - min(200, h / 4)) <= 3
    assert abs((x0 + x1) / 2 - 150) <= 2 and abs((x1 - x0) - min(300, w / 4)) <= 3
    viewer.dims.ndisplay = 3
    assert visible_box(viewer, layer) == ((0, 40), (0, 200), (0, 300))


def test_bundled_default_model_loads_on_first_use(docked, qtbot, tmp_path):
    from napari_tokenunify.synthetic import make_synthetic_volume

    viewer, widget = docked
    vol = make_synthetic_volume((16, 32, 32), seed=5)
    image = viewer.add_image(vol.image, name="em")
    assert widget.session.model is None
    panel = widget.panel("Predict")
    # the flips offered are the ones the default's card recommends, before its weights load
    from napari_tokenunify.model import load_model

    recommended = load_model("default", device="cpu").card.recommended_tta
    assert panel.tta.value == recommended
    pick(panel.image, image)
    panel.scope.value = "whole volume"
    panel.store.value = tmp_path / "d.zarr"
    job = wait_job(qtbot, panel.predict())
    assert job.error is None
    assert widget.session.model is not None and widget.session.model.card is not None
    assert "preset" in widget.panel("Model").card.value
    assert np.asarray(viewer.layers["em affinities"].data).std() > 0
    import zarr

    assert zarr.open_group(str(tmp_path / "d.zarr"), mode="r").attrs["settings"].get("tta", "none") == recommended
    assert panel.tta.value == recommended
    # a model whose card recommends other flips moves the choice there; the user can still change it
    other = load_model("unet", device="cpu")
    other.card.training = {**other.card.training, "test_time_flips": "yx"}
    widget.session.model = other
    widget.events.model_changed.emit(other)
    assert panel.tta.value == "yx"
    panel.tta.value = "none"
    assert widget.session.tta == "none"


def test_current_view_only_predicts_what_is_on_screen(docked, small_volume, qtbot, tmp_path):
    from napari_tokenunify.model import build_model
    from napari_tokenunify.widgets.view import camera

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    widget.session.model = build_model("tiny")
    viewer.dims.set_point(0, 2)
    cam = camera(viewer)
    cam.center = (8, 8)
    cam.zoom = 200.0  # a few voxels on screen, near the first corner
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "current view only"
    panel.tile_shape = (16, 32, 32)
    panel.store.value = tmp_path / "view.zarr"
    wait_job(qtbot, panel.predict())
    n_done, n_blocks = _done(tmp_path / "view.zarr")
    assert 0 < n_done < n_blocks
    data = np.asarray(viewer.layers["em affinities"].data)
    assert data[:, 2, 8, 8].any() and not data[:, :, 40:, 40:].any()


def test_test_time_flips_are_chosen_in_the_panel(docked, small_volume, qtbot, notes, tmp_path):
    import zarr

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    model = _tiny_model(widget, qtbot)
    counter = SlowCounter(model, delay_s=0.0)
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "region only"
    panel.region.value = "0:8, 0:24, 0:24"
    panel.tile_shape = (16, 32, 32)
    store = tmp_path / "flips.zarr"
    panel.store.value = store
    assert panel.tta.value == "none"
    panel.tta.value = "yx"
    assert widget.session.tta == "yx"
    wait_job(qtbot, panel.predict())
    n_done, _ = _done(store)
    assert counter.tiles == 4 * n_done  # each tile and its three in-plane mirror images
    assert zarr.open_group(str(store), mode="r").attrs["settings"]["tta"] == "yx"
    # the same store with other flips is a different run: kept intact, a new store is used
    panel.tta.value = "none"
    wait_job(qtbot, panel.predict())
    assert notes.has("kept it") and not notes.has("overwrite")
    assert _done(store)[0] == n_done
    assert viewer.layers["em affinities"].metadata["tokenunify"]["store"] == str(
        tmp_path / "flips-2.zarr")


def _whole_volume(panel, image, store):
    pick(panel.image, image)
    panel.scope.value = "whole volume"
    panel.tile_shape = (16, 32, 32)
    panel.store.value = store


def test_predict_on_a_finished_store_reuses_it_and_loads_the_model(docked, small_volume, qtbot,
                                                                  notes, tmp_path):
    """Defect 2: a finished store of the same model and settings is reused (nothing computed, no
    CLI hint); the model that made it is loaded, so Segment starts at that model's threshold."""
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    first = build_model("tiny").eval()
    first.card.training = {"segmentation_threshold": 0.3}
    panel = widget.panel("Predict")
    store = tmp_path / "em-affinities.zarr"
    _whole_volume(panel, image, store)
    panel.tta.value = "none"
    wait_job(qtbot, panel.predict(model=first))
    before = np.asarray(viewer.layers["em affinities"].data)
    # a new session of the widget: no model loaded yet, the store is finished
    widget.session.model = None
    widget.session.agglomerators.clear()
    widget.panel("Segment").threshold.value = 0.5
    counter = SlowCounter(first, delay_s=0.0)
    job = wait_job(qtbot, panel.predict(model=first))
    assert job.error is None and counter.tiles == 0  # nothing predicted again
    assert notes.has("Reused the finished prediction", "em-affinities.zarr")
    assert not notes.has("overwrite") and not notes.has("failed")
    layer = viewer.layers["em affinities"]
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    assert layer.metadata["tokenunify"]["store"] == str(store)
    assert widget.session.model is first
    assert widget.panel("Segment").threshold.value == pytest.approx(0.3)


def test_another_model_keeps_the_old_store_and_shows_its_own(docked, small_volume, qtbot, notes,
                                                            tmp_path):
    """Defects 3 and 9: another model (or other flips) on a predicted image keeps the old store,
    predicts into a new one, and the layer, the threshold and the model belong together; the
    message is one short line (no model cards in it). Going back reuses the first store."""
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    panel, segment = widget.panel("Predict"), widget.panel("Segment")
    store = tmp_path / "em-affinities.zarr"
    _whole_volume(panel, image, store)
    panel.tta.value = "none"
    a = build_model("tiny").eval()
    a.card.training = {"segmentation_threshold": 0.3}
    widget.session.model = a
    wait_job(qtbot, panel.predict())
    layer = viewer.layers["em affinities"]
    affs_a = np.asarray(layer.data)
    segment.affinities.value = layer
    wait_job(qtbot, segment.segment())
    assert segment._key(layer) in widget.session.agglomerators

    import torch

    torch.manual_seed(1)
    b = build_model("tiny").eval()  # other weights and another card
    b.card.name = "other tiny"
    b.card.training = {"segmentation_threshold": 0.7}
    widget.session.model = b
    widget.events.model_changed.emit(b)
    # the shown affinities are still a's: the threshold stays a's until b has predicted
    assert segment.threshold.value == pytest.approx(0.3)
    start = len(notes.messages)
    job = wait_job(qtbot, panel.predict())
    assert job.error is None
    new = notes.messages[start:]
    assert any("kept it" in m and "em-affinities-2.zarr" in m for m in new), new
    assert all(len(m) < 300 and "{" not in m for m in new), new
    assert _done(store)[0] == _done(store)[1]  # the first store is intact
    second = tmp_path / "em-affinities-2.zarr"
    assert layer.metadata["tokenunify"]["store"] == str(second)
    affs_b = np.asarray(layer.data)
    import zarr

    np.testing.assert_array_equal(affs_b, zarr.open_group(str(second), mode="r")["affinities"][...])
    assert not np.array_equal(affs_a, affs_b)
    assert segment.threshold.value == pytest.approx(0.7)  # b's, as the affinities shown are b's
    assert segment._key(layer) not in widget.session.agglomerators  # a's fragments dropped

    widget.session.tta = panel.tta.value = "yx"  # other flips: a third store
    wait_job(qtbot, panel.predict())
    assert layer.metadata["tokenunify"]["store"] == str(tmp_path / "em-affinities-3.zarr")
    panel.tta.value = "none"
    widget.session.model = a  # back to the first model: its finished store is reused
    counter = SlowCounter(a, delay_s=0.0)
    wait_job(qtbot, panel.predict())
    assert counter.tiles == 0, (notes.messages[-3:], layer.metadata)
    assert layer.metadata["tokenunify"]["store"] == str(store)
    np.testing.assert_array_equal(np.asarray(layer.data), affs_a)
    assert segment.threshold.value == pytest.approx(0.3)


def test_predict_rescales_to_the_model_voxel_size_unless_unticked(docked, small_volume, qtbot,
                                                                 notes, tmp_path):
    import zarr

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    model = _tiny_model(widget, qtbot)
    model.card.voxel_size_nm = [10.0, 10.0, 10.0]
    panel = widget.panel("Predict")
    assert panel.rescale.value is True and panel.rescale.text == "rescale to the model's voxel size"
    pick(panel.image, image)
    panel.scope.value = "whole volume"
    panel.tile_shape = (16, 32, 32)
    panel.voxel.value = "10, 20, 20"  # twice the card's in-plane voxel size
    panel.store.value = tmp_path / "rescaled.zarr"
    job = wait_job(qtbot, panel.predict())
    assert job.error is None
    group = zarr.open_group(str(tmp_path / "rescaled.zarr"), mode="r")
    assert group.attrs["complete"] and group.attrs["rescale"]["factors"] == [1.0, 2.0, 2.0]
    assert group.attrs["rescale"]["model_shape"] == [16, 96, 96]
    layer = viewer.layers["em affinities"]
    data = np.asarray(layer.data)
    assert data.shape == (3, *small_volume.image.shape)  # on the data's grid
    assert data.std() > 0 and data.min() >= 0 and data.max() <= 1
    assert layer.metadata["tokenunify"]["rescale"]["factors"] == [1.0, 2.0, 2.0]
    assert "model's voxel size" in panel.status.value
    assert notes.has("Predicted at the model's voxel size", "(10.0, 20.0, 20.0) nm")
    # unticked: predicted on the data's grid, with the mismatch warning as before
    panel.rescale.value = False
    panel.store.value = tmp_path / "plain.zarr"
    job = wait_job(qtbot, panel.predict())
    assert job.error is None
    assert "rescale" not in zarr.open_group(str(tmp_path / "plain.zarr"), mode="r").attrs
    assert viewer.layers["em affinities"].metadata["tokenunify"]["rescale"] is None
    assert notes.has("differs from the model's", "results may be poor")


def test_bad_voxel_sizes_are_refused_in_the_notification_area(docked, small_volume, notes):
    viewer, widget = docked
    panel = widget.panel("Predict")
    image = viewer.add_image(small_volume.image, name="em")
    pick(panel.image, image)
    for text, why in [("0, 4, 4", "zero or negative"), ("40, nan, 4", "not finite"),
                      ("40, 4, 20000", "above 10000"), ("forty", "not numbers"), ("40, 4", "not 3")]:
        panel.voxel.value = text
        assert panel.predict() is None
        assert notes.has("Predict failed", why)
    assert notes.has("voxel size")
    # the layer's scale is the voxel size when the field is empty: an absurd one is refused too
    panel.voxel.value = ""
    odd = viewer.add_image(small_volume.image, name="odd", scale=(40_000, 10, 10))
    pick(panel.image, odd)
    assert panel.predict() is None
    assert notes.has("Predict failed", "40000.0", "pass the data's voxel size")
    assert "odd affinities" not in viewer.layers


def _record_writes(monkeypatch):
    """The cores the engine writes into a store, in order (in the worker thread)."""
    from napari_tokenunify.engine.predict import PredictionPlan

    written: list = []
    original = PredictionPlan.write

    def write(self, block, result):
        original(self, block, result)
        if self.store is not None:  # not the preview, which is kept in memory
            written.append(block.core)

    monkeypatch.setattr(PredictionPlan, "write", write)
    return written


def _record_refreshes(layer, panel, written, centre):
    """Each refresh of ``layer``: (tiles written by then, whether the view centre shows data)."""
    seen: list = []
    original = layer.refresh

    def refresh(*args, **kwargs):
        out = original(*args, **kwargs)
        cz, cy, cx = (int(c) for c in centre)
        seen.append((len(written), bool(np.asarray(panel.live[:, cz, cy, cx]).any()),
                     panel.live.preview is not None))
        return out

    layer.refresh = refresh
    return seen


def _view_near_a_corner(viewer, image):
    """A view centred near a corner of the volume and wider than it there: the centre of the
    visible part (clipped to the volume) lies in another tile than the centre of the view."""
    from napari_tokenunify.widgets.view import camera, canvas_size

    h, w = canvas_size(viewer) or (600, 800)
    viewer.dims.set_point(0, 8)
    cam = camera(viewer)
    cam.center = (90.0, 5.0)
    cam.zoom = min(h, w) / 120.0  # about 120 voxels across: half of it falls outside
    from napari_tokenunify.widgets.predict_panel import view_centre

    centre = view_centre(viewer, image)
    assert abs(centre[1] - 90) < 1 and abs(centre[2] - 5) < 1
    return centre


def test_current_view_first_starts_at_the_view_centre_and_shows_it_at_once(
        docked, qtbot, tmp_path, monkeypatch):
    """Issue 16 item 3: the tile under the centre of the view is predicted (and written) first,
    and the layer is refreshed right after it, before the next tile is done."""
    from napari_tokenunify.engine.tiling import boxes_intersect
    from napari_tokenunify.model import build_model
    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.widgets.view import visible_box

    viewer, widget = docked
    vol = make_synthetic_volume((16, 96, 96), seed=4)
    image = viewer.add_image(vol.image, name="em")
    model = build_model("tiny").eval()
    widget.session.model = model
    SlowCounter(model, delay_s=0.4)
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "current view first"
    panel.tile_shape = (16, 32, 32)
    panel.tta.value = "none"
    panel.store.value = tmp_path / "first.zarr"
    centre = _view_near_a_corner(viewer, image)
    box = visible_box(viewer, image)
    clipped_centre = [(a + b) / 2 for a, b in box]
    written = _record_writes(monkeypatch)
    job = panel.predict()
    seen = _record_refreshes(panel.layer, panel, written, centre)
    wait_job(qtbot, job)
    assert job.error is None and len(written) == 16
    holds = lambda core, p: all(a <= v < b for v, (a, b) in zip(p, core, strict=True))  # noqa: E731
    assert holds(written[0], centre)
    assert not holds(written[0], clipped_centre)  # the old order started from the visible box
    assert all(boxes_intersect(c, box) for c in written[:4])  # the rest of the view next
    # refreshed with the centre tile shown while it was the only one written
    assert any(s[:2] == (1, True) for s in seen), seen
    assert panel.first_tile_s is not None


def test_flips_show_a_preview_of_the_centre_tile_first(docked, qtbot, tmp_path, monkeypatch):
    """With test-time flips the centre tile is first predicted once without them and shown,
    before any full-quality tile is written; the finished layer holds only the store."""
    import zarr

    from napari_tokenunify.model import build_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    viewer, widget = docked
    vol = make_synthetic_volume((16, 96, 96), seed=4)
    image = viewer.add_image(vol.image, name="em")
    model = build_model("tiny").eval()
    widget.session.model = model
    counter = SlowCounter(model, delay_s=0.2)
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "current view only"
    panel.tile_shape = (16, 32, 32)
    panel.tta.value = "yx"
    store = tmp_path / "flips-first.zarr"
    panel.store.value = store
    centre = _view_near_a_corner(viewer, image)
    written = _record_writes(monkeypatch)
    from napari_tokenunify.widgets import predict_panel

    preview_first: list = []  # in the worker: the preview is computed before any tile is written
    original_preview = predict_panel.preview_tile

    def preview_tile(*args, **kwargs):
        preview_first.append(not written)
        return original_preview(*args, **kwargs)

    monkeypatch.setattr(predict_panel, "preview_tile", preview_tile)
    job = panel.predict()
    seen = _record_refreshes(panel.layer, panel, written, centre)
    wait_job(qtbot, job)
    assert job.error is None and written
    # the preview is shown at the view centre (the order against the first full tile is the
    # worker's, checked below: the GUI's poll may come a tile late on a busy machine)
    assert any(has_data and preview for _, has_data, preview in seen), seen
    assert preview_first == [True], "a full-quality tile was written before the preview was ready"
    assert counter.tiles == 1 + 4 * len(written)  # one preview tile without flips, then 4 each
    assert zarr.open_group(str(store), mode="r").attrs["settings"]["tta"] == "yx"
    assert panel.live.preview is None
    np.testing.assert_array_equal(np.asarray(viewer.layers["em affinities"].data),
                                  zarr.open_group(str(store), mode="r")["affinities"][...])


def test_segment_uses_the_scoring_of_the_model_that_predicted(docked, small_volume, qtbot, tmp_path):
    """The Segment section agglomerates with the scoring the predicting model's card names (the
    bundled default: mean affinity), as `tokenunify run` does, not always with the median."""
    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    model.card.training = {"segmentation_threshold": 0.5, "segmentation_scoring": "mean"}
    panel = widget.panel("Predict")
    _whole_volume(panel, image, tmp_path / "em-affinities.zarr")
    panel.tta.value = "none"
    wait_job(qtbot, panel.predict(model=model))
    layer = viewer.layers["em affinities"]
    assert layer.metadata["tokenunify"]["scoring"] == "mean"
    seg = widget.panel("Segment")
    seg.affinities.value = layer
    seg.threshold.value = 0.5
    wait_job(qtbot, seg.segment())
    labels = np.asarray(seg.labels_layer.data)
    affs = np.asarray(layer.data)
    expected = segment(affs, threshold=0.5, scoring="mean").labels
    median = segment(affs, threshold=0.5, scoring="median").labels
    assert not np.array_equal(expected, median)  # the two scorings differ on these affinities
    np.testing.assert_array_equal(labels, expected)

"""Large volumes in a real viewer (issue 15, defect 6): an empty 2000×20000×20000 Zarr opens as a
lazy multiscale layer without freezing napari, and Predict on it works for the view (level 0,
lazily) while the whole volume is refused with the reason."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import time

import numpy as np
import pytest

from widget_support import docked, notes, pick, wait_job  # noqa: F401

pytestmark = pytest.mark.gui

HUGE = (2000, 20000, 20000)


@pytest.fixture
def huge_zarr(tmp_path):
    import zarr

    path = tmp_path / "huge.zarr"
    zarr.create_array(str(path), shape=HUGE, chunks=(64, 512, 512), dtype="uint8", fill_value=0)
    return path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _done(store) -> set:
    from napari_tokenunify.engine.store import BlockStore

    return BlockStore.open(store, "affinities", mode="r").done_indices()


def test_a_huge_zarr_opens_as_a_multiscale_layer_without_freezing(docked, huge_zarr, qtbot):
    viewer, _widget = docked
    before = _rss_mb()
    t0 = time.perf_counter()
    (layer,) = viewer.open(str(huge_zarr), plugin="napari-tokenunify")
    qtbot.wait(50)
    took = time.perf_counter() - t0
    assert layer.multiscale and tuple(layer.data.shape) == HUGE
    assert took < 60, f"adding the layer took {took:.1f} s"  # was 46.6 s and 7.6 GiB, one level
    assert _rss_mb() - before < 1500
    # another section: one more section of one level is read
    t0 = time.perf_counter()
    viewer.dims.set_point(0, 1000)
    qtbot.wait(50)
    assert time.perf_counter() - t0 < 30
    assert _rss_mb() - before < 1500


def test_predict_on_a_huge_image_predicts_the_view_and_refuses_the_whole(
        docked, huge_zarr, qtbot, notes, tmp_path):
    from napari_tokenunify.model import build_model
    from napari_tokenunify.progress import Cancelled
    from napari_tokenunify.widgets.checks import LayerError
    from napari_tokenunify.widgets.view import camera, canvas_size

    viewer, widget = docked
    (image,) = viewer.open(str(huge_zarr), plugin="napari-tokenunify")
    widget.session.model = build_model("tiny").eval()
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.tile_shape = (16, 32, 32)
    panel.tta.value = "none"
    h, w = canvas_size(viewer) or (600, 800)
    viewer.dims.set_point(0, 1000)
    camera(viewer).center = (10000.0, 10000.0)
    camera(viewer).zoom = min(h, w) / 40.0  # about 40 voxels across
    before = _rss_mb()

    panel.scope.value = "whole volume"
    panel.store.value = tmp_path / "whole.zarr"
    assert panel.predict() is None  # refused before anything starts
    assert notes.has("too large to predict whole", "current view only", "tokenunify predict")
    assert image.name + " affinities" not in viewer.layers

    panel.scope.value = "current view only"
    store = tmp_path / "view.zarr"
    panel.store.value = store
    job = wait_job(qtbot, panel.predict())
    assert job.error is None
    layer = viewer.layers[image.name + " affinities"]
    assert layer.multiscale and tuple(layer.data.shape) == (3, *HUGE)
    done = _done(store)
    assert 0 < len(done) <= 27
    assert np.asarray(layer.data[0][:, 1000, 10000, 10000]).any()
    assert not np.asarray(layer.data[0][:, 1000, 10000, 11000]).any()  # outside the view

    panel.scope.value = "current view first"  # the whole volume cannot follow: the view only
    panel.store.value = tmp_path / "first.zarr"
    job = wait_job(qtbot, panel.predict())
    assert job.error is None and notes.has("predicted the view only")
    assert len(_done(tmp_path / "first.zarr")) == len(done)
    assert camera(viewer).zoom == pytest.approx(min(h, w) / 40.0)  # adding the 4D layer kept the view
    assert _rss_mb() - before < 1500

    camera(viewer).zoom = 0.03  # the whole section in view: millions of tiles
    panel.scope.value = "current view only"
    panel.store.value = tmp_path / "zoomed-out.zarr"
    assert panel.predict() is None and notes.has("tiles", "zoom in")
    # with the bundled default not loaded yet, the same checks run in the worker
    widget.session.model = None
    job = wait_job(qtbot, panel.predict())
    assert isinstance(job.error, LayerError) and not isinstance(job.error, Cancelled)

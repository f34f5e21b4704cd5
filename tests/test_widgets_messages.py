"""Small things a user notices in the dock widget (issue 15, defect 10): rate units, the empty
model path, status lines after failure or Cancel, an unwritable export."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import errno

import numpy as np
import pytest

from napari_tokenunify.progress import Cancelled, Progress
from napari_tokenunify.widgets.model_panel import FILE
from widget_support import docked, notes, pick, small_volume, wait_job  # noqa: F401

pytestmark = pytest.mark.gui


def test_progress_rate_unit_is_not_doubled():
    from napari_tokenunify.widgets.workers import _format_rate

    assert _format_rate(Progress(1, 4, "predicting affinities", 12345.0, "voxels/s")) == \
        ", 12.3 kvoxels/s"


def test_empty_model_path_asks_for_a_model_file(docked, qtbot, notes):
    viewer, widget = docked
    panel = widget.panel("Model")
    panel.source.value = FILE
    panel.path.value = ""  # a cleared field: magicgui gives the working folder
    wait_job(qtbot, panel.load())
    assert notes.has("Load model failed", "choose a model file")
    assert not notes.has("model.safetensors not found")


class _Model:
    """Wraps a model's forward: sleeps (so Cancel lands mid-run) or fails."""

    def __init__(self, model, fail: bool = False) -> None:
        self._forward, self.fail = model.forward, fail
        model.forward = self

    def __call__(self, x):
        if self.fail:
            raise RuntimeError("the device ran out of memory")
        import time

        time.sleep(0.2)
        return self._forward(x)


def test_status_lines_say_how_a_run_ended(docked, small_volume, qtbot, notes, tmp_path):
    from napari_tokenunify.model import build_model

    viewer, widget = docked
    image = viewer.add_image(small_volume.image, name="em")
    panel = widget.panel("Predict")
    pick(panel.image, image)
    panel.scope.value = "whole volume"
    panel.tile_shape = (16, 32, 32)
    panel.tta.value = "none"
    model = build_model("tiny").eval()
    widget.session.model = model
    slow = _Model(model)
    panel.store.value = tmp_path / "a.zarr"
    job = panel.predict()
    qtbot.waitUntil(lambda: "tiles" in panel.status.value, timeout=60000)
    panel.cancel()
    wait_job(qtbot, job)
    assert isinstance(job.error, Cancelled)
    assert "cancelled" in panel.status.value and "writing to" not in panel.status.value

    slow.fail = True
    panel.store.value = tmp_path / "b.zarr"
    job = wait_job(qtbot, panel.predict())
    assert job.error is not None
    assert "failed" in panel.status.value and "writing to" not in panel.status.value
    assert notes.has("Predict affinities failed", "ran out of memory")


def test_unwritable_export_is_a_sentence_not_an_errno(docked, small_volume, qtbot, notes, tmp_path,
                                                    monkeypatch):
    import napari_tokenunify.io as io

    viewer, widget = docked
    layer = viewer.add_labels(np.asarray(small_volume.labels), name="seg")
    panel = widget.panel("Export")
    pick(panel.labels, layer)
    target = tmp_path / "out" / "seg.zarr"
    panel.path.value = target

    def refuse(path, *args, **kwargs):  # what the OS says for a folder one cannot write to
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(io, "write_volume", refuse)
    wait_job(qtbot, panel.export())
    assert notes.has("Export seg failed", "permission denied", "choose a folder")
    assert not any("Errno" in m for m in notes.messages), notes.messages
    assert "failed" in panel.status.value

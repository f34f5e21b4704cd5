"""Helpers for the napari widget tests: a docked TokenUnify widget and notification capture."""

from __future__ import annotations

import numpy as np
import pytest


class Notes:
    """Messages shown in napari's notification area since the fixture started."""

    def __init__(self) -> None:
        from napari.utils.notifications import notification_manager

        self._records = notification_manager.records
        self._start = len(self._records)

    @property
    def messages(self) -> list[str]:
        return [str(n.message) for n in self._records[self._start :]]

    def has(self, *words: str) -> bool:
        return any(all(w.lower() in m.lower() for w in words) for m in self.messages)


def wait_job(qtbot, job, timeout_ms: int = 120_000):
    assert job is not None, "the action was refused (see notifications)"
    qtbot.waitUntil(lambda: job.finished, timeout=timeout_ms)
    return job


@pytest.fixture
def notes():
    return Notes()


@pytest.fixture
def docked(make_napari_viewer, tmp_path, monkeypatch):
    """A viewer with the TokenUnify dock widget; autosave and caches go to tmp_path."""
    monkeypatch.setenv("TOKENUNIFY_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    monkeypatch.setenv("TOKENUNIFY_CACHE_DIR", str(tmp_path / "cache"))
    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget

    viewer = make_napari_viewer()
    widget = TokenUnifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="TokenUnify")
    yield viewer, widget
    widget.shutdown()


@pytest.fixture(scope="session")
def small_volume():
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((16, 48, 48), seed=3)


def pick(combo, layer) -> None:
    combo.reset_choices()
    combo.value = layer


def add_image_and_truth(viewer, vol):
    image = viewer.add_image(vol.image, name="em")
    truth = viewer.add_labels(np.asarray(vol.labels), name="truth")
    return image, truth


def zarr_labels(path, labels):
    """A Zarr array on disk holding ``labels``: the kind of store a blockwise segmentation makes."""
    import zarr

    z = zarr.open_array(str(path), mode="w", shape=labels.shape, chunks=(8, 32, 32), dtype="uint32")
    z[...] = labels
    return z

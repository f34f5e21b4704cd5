"""Autosave corrected labels next to the data, at intervals and when the viewer closes.

A labels layer is saved only when it changed since the last save (napari's ``paint`` event fires for
brush strokes, fills and our proofreading edits). The copy is taken in the GUI thread (cheap next to
a write) and written in a background job through the library writer, which writes to a temporary
name and renames, so a crash mid-save leaves the previous autosave intact.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from .notify import report_error
from .workers import Job, start_job

DEFAULT_INTERVAL_S = 60.0
SUFFIX = ".tokenunify-autosave"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "labels"


def source_path(layer: Any) -> Path | None:
    """The file a layer was opened from, if napari knows it."""
    src = getattr(getattr(layer, "source", None), "path", None)
    return Path(src) if src else None


def autosave_base() -> Path:
    """The folder for labels of data not read from a file: ``$TOKENUNIFY_AUTOSAVE_DIR`` or
    ``~/.napari-tokenunify/autosave``."""
    env = os.environ.get("TOKENUNIFY_AUTOSAVE_DIR")
    return Path(env) if env else Path.home() / ".napari-tokenunify" / "autosave"


def autosave_path(
    labels: Any, image: Any = None, directory: str | Path | None = None,
    session_dir: str | Path | None = None,
) -> Path:
    """Where ``labels`` is autosaved: beside the file it (or its image) came from.

    ``<data dir>/<data name>.tokenunify-autosave/<layer name>.zarr``; for layers not read from a file,
    ``<session_dir>/<image name>-<layer name>.zarr`` (``session_dir`` is one folder per viewer
    session under :func:`autosave_base`, so another session's data never writes over it).
    """
    name = _safe(labels.name) + ".zarr"
    if directory is not None:
        return Path(directory) / name
    for layer in (labels, image):
        src = source_path(layer) if layer is not None else None
        if src is not None:
            return src.parent / (src.name.split(".")[0] + SUFFIX) / name
    base = Path(session_dir) if session_dir is not None else autosave_base()
    if image is not None:
        name = f"{_safe(image.name)}-{name}"
    return base / name


def write_labels_copy(path: Path, data: np.ndarray, progress=None, cancel=None) -> Path:
    """Write a labels snapshot (overwriting the previous autosave atomically)."""
    from napari_tokenunify.io import write_volume

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(path, data, kind="labels", overwrite=True, progress=progress, cancel=cancel)


class Autosaver(QObject):
    """Saves the labels layers it watches when they changed, every ``interval_s`` and on close."""

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        directory: str | Path | None = None,
        image_for: Any = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.image_for = image_for  # callable(labels layer) -> image layer or None
        self._dirty: dict[int, Any] = {}
        self.saved: dict[int, Path] = {}
        # id(layer) -> (weak reference to the layer, its autosave file), fixed at the first edit
        self._targets: dict[int, tuple[Any, Path]] = {}
        self._session_dir: Path | None = None
        self._job: Job | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(int(interval_s * 1000))
        self._timer.timeout.connect(self.save_changed)
        self._timer.start()

    def mark_dirty(self, layer: Any) -> None:
        self._dirty[id(layer)] = layer
        self.path_for(layer)  # the target is decided now, while the layer's image is known

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def session_dir(self) -> Path:
        """This session's own folder under :func:`autosave_base` (made on first use)."""
        if self._session_dir is None:
            import tempfile
            import time

            base = autosave_base()
            base.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self._session_dir = Path(tempfile.mkdtemp(prefix=f"{stamp}-", dir=base))
        return self._session_dir

    def path_for(self, layer: Any) -> Path:
        """The layer's autosave file: decided at its first edit (while the image it belongs to is
        still chosen; on close the choice is gone) and then kept; never one another layer of
        this session writes."""
        import weakref

        known = self._targets.get(id(layer))
        if known is not None and known[0]() is layer:
            return known[1]
        image = self.image_for(layer) if self.image_for is not None else None
        session = None
        if self.directory is None and source_path(layer) is None and (
                image is None or source_path(image) is None):
            session = self.session_dir()
        path = autosave_path(layer, image, self.directory, session)
        taken = {p for ref, p in self._targets.values() if ref() is not None}
        stem, n = path.name.removesuffix(".zarr"), 2
        while path in taken:
            path = path.with_name(f"{stem}-{n}.zarr")
            n += 1
        self._targets[id(layer)] = (weakref.ref(layer), path)
        return path

    def _snapshot(self) -> list[tuple[Path, np.ndarray, int]]:
        items = []
        for key, layer in list(self._dirty.items()):
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            if not isinstance(data, np.ndarray):
                # a layer backed by a store (e.g. a blockwise segmentation in Zarr): every edit
                # is written into that store already, and copying a volume of that size into
                # memory is what the store avoids
                continue
            items.append((self.path_for(layer), np.array(data, copy=True), key))
        self._dirty.clear()
        return items

    def save_changed(self) -> Job | None:
        """Save every changed layer in the background (skipped while a save is running)."""
        if not self._dirty or (self._job is not None and not self._job.finished):
            return None
        items = self._snapshot()
        if not items:  # only store-backed layers changed: their edits are on disk already
            return None

        def save(progress=None, cancel=None):
            return [(key, write_labels_copy(path, data)) for path, data, key in items]

        def done(result):
            for key, path in result:
                self.saved[key] = path

        self._job = start_job(save, "Autosave labels", on_result=done, show_progress=False)
        return self._job

    def flush(self) -> None:
        """Save now, in this thread (used on close, when there is no time for a worker)."""
        self._timer.stop()
        if self._job is not None and not self._job.finished:
            self._job.wait(30)
        for path, data, key in self._snapshot():
            try:
                self.saved[key] = write_labels_copy(path, data)
            except Exception as exc:  # noqa: BLE001
                report_error(exc, f"Autosave to {path}")

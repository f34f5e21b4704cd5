"""Export section: labels (and optionally affinities) through the library writers, with the model
card written beside them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, FileEdit, PushButton

from .base import Panel, StatusLine, is_affinity_layer, layer_combo
from .checks import LayerError, layer_array, require_affinities, require_labels
from .notify import reporting, show_info

SUFFIXES = (".zarr", ".ome.zarr", ".tif", ".tiff", ".h5", ".hdf5")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def sibling(path: Path, tag: str) -> Path:
    """``out/seg.ome.zarr`` + ``affinities`` → ``out/seg-affinities.ome.zarr``."""
    suffix = _suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}-{tag}{suffix}")


def card_path(path: Path) -> Path:
    suffix = _suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}.model-card.json")


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse early (before any work) a path that exists or cannot be written."""
    if str(path) in ("", "."):
        raise LayerError("choose where to export (a path ending in .zarr, .ome.zarr, .tif or .h5)")
    if not _suffix(path):
        raise LayerError(
            f"unknown format for {path.name}: use a name ending in {', '.join(SUFFIXES)}"
        )
    if path.exists() and not overwrite:
        raise LayerError(f"{path} already exists: choose another name or tick 'overwrite'")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LayerError(f"cannot write to {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise LayerError(f"cannot write to {parent}: choose a folder you have write access to")


def _voxel_size(layer: Any) -> tuple[float, float, float] | None:
    scale = tuple(float(s) for s in layer.scale[-3:])
    return scale if any(abs(s - 1.0) > 1e-9 for s in scale) else None


class ExportPanel(Panel):
    title = "Export"

    def __init__(self, viewer, session, events) -> None:
        super().__init__(viewer, session, events)
        self.labels = layer_combo(viewer, "Labels", "labels", nullable=False)
        self.affinities = layer_combo(viewer, "Image", "affinities", is_affinity_layer)
        self.path = FileEdit(label="export to", mode="w", filter="*.zarr *.tif *.tiff *.h5")
        self.overwrite = CheckBox(label="overwrite", value=False)
        self.export_btn = PushButton(text="Export")
        self.status = StatusLine()
        self.form.extend(
            [self.labels, self.affinities, self.path, self.overwrite, self.export_btn, self.status]
        )
        self.export_btn.changed.connect(self.export)

    def export(self, *_: Any):
        with reporting("Export"):
            layer = self.labels.value
            labels = require_labels(layer, action="export")
            path = Path(str(self.path.value or ""))
            overwrite = bool(self.overwrite.value)
            check_target(path, overwrite)
            affs_layer = self.affinities.value
            affs = None
            aff_path = None
            if affs_layer is not None:
                affs = require_affinities(affs_layer, tuple(labels.shape))
                aff_path = sibling(path, "affinities")
                check_target(aff_path, overwrite)
            # an in-memory layer is copied (the user may keep editing while it is written); a
            # store-backed one (e.g. a blockwise segmentation) is streamed chunk by chunk
            data = np.array(labels, copy=True) if isinstance(labels, np.ndarray) else labels
            voxel = _voxel_size(layer)
            model = self.session.model
            card = getattr(model, "card", None) if model is not None else None

            def work(progress=None, cancel=None):
                from napari_tokenunify.io import write_volume

                written = [
                    write_volume(path, data, kind="labels", voxel_size=voxel, overwrite=overwrite,
                                 progress=progress, cancel=cancel)
                ]
                if affs is not None:
                    written.append(
                        write_volume(aff_path, affs, kind="affinities",
                                     voxel_size=voxel, overwrite=overwrite, cancel=cancel)
                    )
                if card is not None:
                    cp = card_path(path)
                    cp.write_text(card.to_json())
                    written.append(cp)
                return written

            def done(written):
                self.status.value = "wrote " + ", ".join(str(p) for p in written)
                show_info(f"Exported {layer.name} to {written[0]}")

            return self.run(work, f"Export {layer.name}", on_result=done)
        return None

    def labels_array(self) -> Any:
        return layer_array(self.labels.value)

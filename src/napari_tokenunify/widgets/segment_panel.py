"""Segment section: affinities → neuron labels; the threshold slider re-agglomerates from the kept
fragments and merge history (the engine's ``Agglomerator``), so moving it is fast.

Volumes above the engine's in-memory limit are segmented blockwise into a Zarr store beside the
affinities (resumed if a cancelled run left one), shown lazily (a large one, ``io.pyramid.is_large``,
as a multiscale pyramid, so napari reads only the visible tile of one level); the slider then only
sets the threshold for the next Segment, since every threshold is a new blockwise run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import FloatSlider, PushButton, SpinBox

from napari_tokenunify.io.pyramid import as_dask, is_large, lazy_pyramid

from .base import Panel, StatusLine, is_affinity_layer, layer_combo
from .checks import layer_array, require_affinities
from .notify import reporting, show_info
from .state import edit_log_for

LABELS_NAME = "segmentation"


def in_memory_limit() -> int:
    """Voxels above which Segment goes blockwise (``TOKENUNIFY_IN_MEMORY_VOXELS`` overrides)."""
    from napari_tokenunify.engine.store import IN_MEMORY_MAX_VOXELS

    return int(os.environ.get("TOKENUNIFY_IN_MEMORY_VOXELS", IN_MEMORY_MAX_VOXELS))


def _recorded_threshold(layer: Any) -> float | None:
    """The threshold recommended by the model that made an affinity layer (recorded by Predict)."""
    value = (getattr(layer, "metadata", {}).get("tokenunify") or {}).get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def recorded_scoring(layer: Any) -> str:
    """The agglomeration scoring the threshold of an affinity layer's model was chosen with
    (recorded by Predict), else "median"."""
    value = (getattr(layer, "metadata", {}).get("tokenunify") or {}).get("scoring")
    return value if value in ("median", "mean") else "median"


def blockwise_store(affs_layer: Any, threshold: float) -> Path:
    """Where a blockwise segmentation of ``affs_layer`` goes: beside its affinity store, else in
    the user's cache folder (as predictions do)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", affs_layer.name).strip("_") or "affinities"
    store = (affs_layer.metadata.get("tokenunify") or {}).get("store")
    if store:
        base = Path(store).parent
    else:
        env = os.environ.get("TOKENUNIFY_CACHE_DIR")
        base = (Path(env) if env else Path.home() / ".napari-tokenunify") / "segmentations"
    return base / f"{name}-labels-t{threshold:.2f}.zarr"


def labels_levels(labels: Any, voxel_size: Any = None) -> list[Any]:
    """What a labels layer shows of ``labels``: a large store (``io.pyramid.is_large``) as a lazy
    nearest-neighbour pyramid (level 0 in dask: napari slices a level before it reads one section;
    the coarse levels read the store itself), anything else as it is (one level)."""
    if isinstance(labels, np.ndarray) or not is_large(labels.shape, labels.dtype):
        return [labels]
    levels = lazy_pyramid(as_dask(labels), voxel_size, reader=labels)
    return levels if len(levels) > 1 else [labels]


class SegmentPanel(Panel):
    title = "Segment"

    def __init__(self, viewer, session, events) -> None:
        super().__init__(viewer, session, events)
        self.affinities = layer_combo(viewer, "Image", "affinities", is_affinity_layer, nullable=False)
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.01, value=0.5)
        self.min_size = SpinBox(label="minimum size", min=0, max=10**9, value=0)
        self.segment_btn = PushButton(text="Segment")
        self.status = StatusLine()
        self.form.extend([self.affinities, self.threshold, self.min_size, self.segment_btn, self.status])
        self.segment_btn.changed.connect(self.segment)
        self.threshold.changed.connect(self._threshold_moved)
        events.model_changed.connect(self._use_card_threshold)
        events.affinities_changed.connect(self._affinities_changed)
        self._pending: float | None = None
        self.labels_layer: Any = None

    def _use_card_threshold(self, model: Any) -> None:
        """Start the slider at the threshold the model's card recommends, until something is
        segmented (after that the slider stays where the user put it)."""
        card = getattr(model, "card", None)
        if card is None or self.session.agglomerators:
            return
        layer = self.affinities.value
        if layer is not None and _recorded_threshold(layer) is not None:
            return  # the affinities shown come from the model that recorded it: it stays
        self.threshold.value = min(max(card.recommended_threshold, self.threshold.min),
                                   self.threshold.max)

    def _affinities_changed(self, layer: Any) -> None:
        """New affinities in ``layer`` (a Predict run): fragments of the old ones are dropped and
        the slider moves to the threshold of the model that made them."""
        self.session.agglomerators.pop(self._key(layer), None)
        self.affinities.reset_choices()
        if self.affinities.value is None or self.affinities.value is layer:
            self.affinities.value = layer
            threshold = _recorded_threshold(layer)
            if threshold is not None:
                self.threshold.value = min(max(threshold, self.threshold.min), self.threshold.max)

    def _key(self, layer: Any) -> str:
        return f"{layer.name}:{id(layer)}"

    def segment(self, *_: Any):
        """Build fragments + merge history (once per affinity layer), then label at the threshold."""
        with reporting("Segment"):
            layer = self.affinities.value
            affs = require_affinities(layer)
            key = self._key(layer)
            threshold, min_size = float(self.threshold.value), int(self.min_size.value)
            scoring = recorded_scoring(layer)
            agg = self.session.agglomerators.get(key)

            if int(np.prod(affs.shape[1:])) > in_memory_limit():
                return self._segment_blockwise(layer, affs, threshold, min_size)

            def work(progress=None, cancel=None):
                from napari_tokenunify.engine.agglomerate import Agglomerator
                from napari_tokenunify.engine.cleanup import remove_small

                a = agg
                if a is None:
                    a = Agglomerator(np.asarray(affs), scoring=scoring)
                labels = a.segment(threshold)
                if min_size > 0:
                    labels = remove_small(labels, min_size)
                return a, labels, threshold

            self.status.value = "segmenting…" if agg is not None else "building fragments…"
            return self.run(work, "Segment", on_result=lambda r: self._show(layer, key, *r))
        return None

    def _segment_blockwise(self, layer: Any, affs: Any, threshold: float, min_size: int):
        """Too large for memory: blockwise into a Zarr store, resumed when a run was cancelled."""
        if min_size > 0:
            show_info(f"'{layer.name}' is segmented blockwise: the minimum size is not applied "
                      "(use `tokenunify segment` with cleanup on a machine with enough memory)")
        out = blockwise_store(layer, threshold)
        voxel = tuple(float(v) for v in layer.scale[-3:])

        def work(progress=None, cancel=None):
            from napari_tokenunify.engine.blockwise import segment_blockwise
            from napari_tokenunify.engine.store import unfinished_blockwise

            # resume what a cancelled run left; anything else there is replaced
            labels = segment_blockwise(
                affs, out, threshold=threshold, scoring=recorded_scoring(layer), voxel_size=voxel,
                overwrite=not unfinished_blockwise(str(out)),
                progress=progress, cancel=cancel,
            )
            return None, labels, threshold

        self.status.value = f"segmenting blockwise into {out}…"
        return self.run(work, "Segment", on_result=lambda r: self._show(layer, None, *r))

    def _threshold_moved(self, value: float) -> None:
        layer = self.affinities.value
        if layer is None or self._key(layer) not in self.session.agglomerators:
            return  # nothing segmented yet: the slider only sets the value for Segment
        if self.busy:
            self._pending = float(value)  # re-run with the latest value when the current one ends
            return
        self.segment()

    def _show(self, affs_layer: Any, key: str | None, agg: Any, labels: Any, threshold: float) -> None:
        if key is not None:
            self.session.agglomerators[key] = agg
        target = self.labels_layer
        if target is not None and target in self.viewer.layers and edit_log_for(self.session, target).n_recorded:
            show_info(
                f"'{target.name}' has proofreading edits; the new threshold goes to a new layer"
            )
            target = None
        levels = labels_levels(labels, tuple(float(v) for v in affs_layer.scale[-3:]))
        multiscale = len(levels) > 1
        data = levels if multiscale else levels[0]
        if target is not None and target in self.viewer.layers and bool(target.multiscale) != multiscale:
            self.viewer.layers.remove(target)  # no edits (above): a pyramid cannot become one array
        if target is None or target not in self.viewer.layers:
            name = LABELS_NAME if LABELS_NAME not in self.viewer.layers else f"{LABELS_NAME} t={threshold:.2f}"
            target = self.viewer.add_labels(
                data, name=name, scale=affs_layer.scale[-3:], translate=affs_layer.translate[-3:],
                multiscale=multiscale,
            )
        else:
            target.data = data
        target.metadata["tokenunify"] = {"kind": "labels", "threshold": threshold}
        self.labels_layer = target
        if isinstance(labels, np.ndarray):
            n = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
        else:  # a blockwise store: it counted its ids
            n = int(getattr(labels, "attrs", {}).get("n_ids", 0) or 0)
        self.status.value = f"{n} segments at threshold {threshold:.2f}"
        if self._pending is not None and abs(self._pending - threshold) > 1e-9:
            self._pending = None
            self.segment()
        self._pending = None

    def labels_data(self) -> np.ndarray | None:
        return None if self.labels_layer is None else layer_array(self.labels_layer)

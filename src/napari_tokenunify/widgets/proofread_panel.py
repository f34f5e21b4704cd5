"""Proofread section: merge, split from seeds, delete, new id, jump to a label, next place to check.

Edits are computed by :mod:`napari_tokenunify.proofread` and written with the Labels layer's
``data_setitem`` so each is one step of napari's own undo (Ctrl+Z). Alt+click on the labels layer
adds the label under the cursor to the merge list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, LineEdit, PushButton, SpinBox

from napari_tokenunify import proofread as pr

from .base import Panel, StatusLine, is_affinity_layer, is_volume_layer, layer_combo
from .checks import LayerError, labels_in_memory, layer_array, require_affinities, require_labels
from .notify import reporting, show_info, show_warning
from .segment_panel import in_memory_limit
from .view import go_to

SEEDS_LAYER = "split seeds"


def apply_edit_to_layer(layer: Any, edit: pr.Edit) -> int:
    """Write an edit through napari's history API (one undo step); returns voxels changed."""
    n = edit.n_changed
    if n:
        layer.data_setitem(edit.changed_indices(), edit.changed_values())
    return n


def writable(data: Any) -> bool:
    """Whether an edit can be written into a layer's array: numpy, or a Zarr array (a store made
    by a blockwise segmentation); not dask (what the reader gives), which is read-only."""
    if isinstance(data, np.ndarray):
        return bool(data.flags.writeable)
    return type(data).__module__.split(".")[0] == "zarr"


def parse_ids(text: str) -> list[int]:
    """``"3, 7 9"`` → ``[3, 7, 9]``; a clear error for anything else."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise LayerError(
            f"could not read label ids from {text!r}: type whole numbers separated by commas"
        ) from None


class ProofreadPanel(Panel):
    title = "Proofread"

    def __init__(self, viewer, session, events) -> None:
        super().__init__(viewer, session, events)
        self.labels = layer_combo(viewer, "Labels", "labels", nullable=False)
        self.affinities = layer_combo(viewer, "Image", "affinities", is_affinity_layer, nullable=False)
        self.image = layer_combo(viewer, "Image", "image", is_volume_layer)
        self.ids = LineEdit(label="label ids", tooltip="ids to merge, e.g. '4, 9' (Alt+click adds)")
        self.add_selected_btn = PushButton(text="+ selected label")
        self.merge_btn = PushButton(text="Merge ids")
        self.split_btn = PushButton(text="Split by seed points")
        self.delete_btn = PushButton(text="Delete selected label")
        self.relabel_btn = PushButton(text="New id for selected label")
        self.jump_id = SpinBox(label="jump to id", min=0, max=2**31 - 1)
        self.jump_btn = PushButton(text="Jump")
        self.next_btn = PushButton(text="Next place to check")
        self.rank_by = ComboBox(label="rank by", choices=list(pr.RANK_SIGNALS), value=pr.DEFAULT_RANK_SIGNAL,
                                tooltip="what Next place to check ranks blocks by: the affinities' "
                                "uncertainty (the default, rule 39 in docs/results.md), or the labels' "
                                "boundaries near the threshold and late merges")
        self.status = StatusLine()
        self.form.extend(
            [
                self.labels,
                self.affinities,
                self.image,
                self.ids,
                self.add_selected_btn,
                self.merge_btn,
                self.split_btn,
                self.delete_btn,
                self.relabel_btn,
                self.jump_id,
                self.jump_btn,
                self.rank_by,
                self.next_btn,
                self.status,
            ]
        )
        self.add_selected_btn.changed.connect(self.add_selected)
        self.merge_btn.changed.connect(self.merge)
        self.split_btn.changed.connect(self.split)
        self.delete_btn.changed.connect(self.delete)
        self.relabel_btn.changed.connect(self.new_id)
        self.jump_btn.changed.connect(lambda *_: self.jump_to(self.jump_id.value))
        self.next_btn.changed.connect(self.next_spot)
        self.labels.changed.connect(self._bind_labels)
        self._spots: list[pr.UncertainSpot] = []
        self._spot_index = -1
        self._spots_key: Any = None
        self._ranked_by = ""
        self._bound: Any = None

    # -- helpers -----------------------------------------------------------------------------
    def _labels(self) -> tuple[Any, np.ndarray]:
        layer = self.labels.value
        data = require_labels(layer, action="proofreading")
        # a store-backed layer (e.g. a blockwise segmentation in Zarr) is read for the edit's
        # computation when it fits in memory; the edit is written back into the store through
        # the layer
        arr = labels_in_memory(layer, data)
        if not writable(data) or getattr(layer, "multiscale", False):
            layer, arr = self._editable(layer, arr)
        return layer, arr

    def _editable(self, layer: Any, arr: np.ndarray) -> tuple[Any, np.ndarray]:
        """Labels read lazily from a file (dask, read-only) cannot take an edit: load them into
        memory (``labels_in_memory`` refused already when they do not fit) and say so."""
        arr = arr if arr.flags.writeable and arr is not layer_array(layer) else np.array(arr)
        size = f"{arr.nbytes / 2**20:.0f} MiB"
        if getattr(layer, "multiscale", False):  # napari cannot turn a pyramid into one array
            name = f"{layer.name} (editable)"
            new = self.viewer.add_labels(
                arr, name=name, scale=layer.scale, translate=layer.translate,
                metadata=dict(layer.metadata),
            )
            layer.visible = False
            self.labels.reset_choices()
            self.labels.value = new
            show_info(f"'{layer.name}' is multiscale (napari edits one resolution only); its full "
                      f"resolution is now in memory as '{name}' ({size}), where the edits go")
            return new, arr
        layer.data = arr
        show_info(f"'{layer.name}' was read from a file (read-only); it is now in memory "
                  f"({size}) so it can be edited; autosave and Export save it")
        return layer, arr

    def _apply(self, layer, edit: pr.Edit, what: str) -> None:
        n = apply_edit_to_layer(layer, edit)
        self.status.value = f"{what}: {n} voxels changed (Ctrl+Z undoes)"

    def _bind_labels(self, *_: Any) -> None:
        """Alt+click on the chosen labels layer adds the id under the cursor to the merge list."""
        layer = self.labels.value
        if layer is self._bound:
            return
        if self._bound is not None and self._alt_click in self._bound.mouse_drag_callbacks:
            self._bound.mouse_drag_callbacks.remove(self._alt_click)
        self._bound = layer
        if layer is not None:
            layer.mouse_drag_callbacks.append(self._alt_click)

    def _alt_click(self, layer, event) -> None:
        if "Alt" not in getattr(event, "modifiers", ()):
            return
        value = layer.get_value(
            event.position,
            view_direction=event.view_direction,
            dims_displayed=event.dims_displayed,
            world=True,
        )
        if value:
            self.add_id(int(value))

    def add_id(self, label_id: int) -> None:
        ids = parse_ids(self.ids.value)
        if label_id and label_id not in ids:
            ids.append(label_id)
        self.ids.value = ", ".join(str(i) for i in ids)

    def add_selected(self, *_: Any) -> None:
        with reporting("Add selected label"):
            layer = self.labels.value
            require_labels(layer, action="proofreading")
            self.add_id(int(layer.selected_label))

    def _selected(self, layer) -> int:
        label_id = int(layer.selected_label)
        if label_id == 0:
            raise LayerError("select a label first (pick it with the colour picker or Jump to)")
        return label_id

    # -- edits -------------------------------------------------------------------------------
    def merge(self, *_: Any) -> None:
        with reporting("Merge"):
            layer, data = self._labels()
            ids = parse_ids(self.ids.value)
            edit = pr.merge_labels(data, ids)
            self._apply(layer, edit, f"merged {list(edit.ids)} into {edit.ids[0]}")
            layer.selected_label = edit.ids[0]
            self.ids.value = ""

    def split(self, *_: Any) -> None:
        with reporting("Split"):
            layer, data = self._labels()
            seeds = self.viewer.layers[SEEDS_LAYER] if SEEDS_LAYER in self.viewer.layers else None
            if seeds is None or len(seeds.data) < 2:
                if seeds is None:
                    seeds = self.viewer.add_points(
                        ndim=3, name=SEEDS_LAYER, size=4, face_color="yellow"
                    )
                    seeds.scale = layer.scale
                    seeds.translate = layer.translate
                seeds.mode = "add"
                self.viewer.layers.selection.active = seeds
                show_info(
                    f"Click two or more points inside the label to split (layer '{SEEDS_LAYER}'), "
                    "then press Split again"
                )
                return
            points = [layer.world_to_data(seeds.data_to_world(p)) for p in seeds.data]
            affs = self.affinities.value
            image = self.image.value
            edit = pr.split_label(
                data,
                points,
                affinities=require_affinities(affs, data.shape) if affs is not None else None,
                image=layer_array(image) if affs is None and image is not None else None,
            )
            message = f"split label {edit.ids[0]} into {list(edit.ids)}"
            self._apply(layer, edit, f"{message}; {edit.warning}" if edit.warning else message)
            if edit.warning:
                show_warning(f"Split: {edit.warning}")
            seeds.data = np.zeros((0, 3))

    def delete(self, *_: Any) -> None:
        with reporting("Delete label"):
            layer, data = self._labels()
            label_id = self._selected(layer)
            self._apply(layer, pr.delete_label(data, label_id), f"deleted label {label_id}")

    def new_id(self, *_: Any) -> None:
        with reporting("New id"):
            layer, data = self._labels()
            label_id = self._selected(layer)
            edit = pr.relabel(data, label_id)
            self._apply(layer, edit, f"label {label_id} is now {edit.ids[1]}")
            layer.selected_label = edit.ids[1]

    # -- navigation --------------------------------------------------------------------------
    def _go_to(self, layer, center, extent=None) -> None:
        """Move the dims sliders and the camera to a data point of ``layer`` (zoom to ``extent``)."""
        go_to(self.viewer, layer, center, extent)

    def jump_to(self, label_id: int) -> None:
        with reporting("Jump to label"):
            layer, data = self._labels()
            box = pr.label_bbox(data, int(label_id))
            center = pr.label_centroid(data, int(label_id))
            self._go_to(layer, center, [s.stop - s.start for s in box])
            layer.selected_label = int(label_id)
            self.status.value = f"label {label_id}: centre {tuple(round(c) for c in center)}"

    def _ranking_labels(self, shape: tuple[int, ...]) -> tuple[Any, Any, float | None]:
        """The labels layer to rank with (when it matches the affinities' volume), its data and
        the threshold it was segmented at (recorded by Segment, else by Predict on the
        affinities); ``(None, None, None)`` when there is none."""
        layer = self.labels.value
        data = None if layer is None else layer_array(layer)
        if data is None or data.ndim != 3 or tuple(data.shape) != tuple(shape[-3:]):
            return None, None, None
        threshold = None
        for source in (layer, self.affinities.value):
            value = (getattr(source, "metadata", {}).get("tokenunify") or {}).get("threshold")
            if isinstance(value, (int, float)):
                threshold = float(value)
                break
        return layer, data, 0.5 if threshold is None else threshold

    def _agglomerator(self, affs_layer: Any) -> Any:
        """The merge history Segment kept for this affinity layer (its key there), or None."""
        return self.session.agglomerators.get(f"{affs_layer.name}:{id(affs_layer)}")

    def next_spot(self, *_: Any) -> None:
        """Visit the next place to check: full blocks ranked by the affinities' uncertainty
        (*rank by*'s default), or by the boundaries between the labels' segments whose
        affinities sit near the merge decision plus the segments that merged only close to the
        threshold (``proofread.uncertainty_ranking`` with Segment's merge history, built here
        when there is none and the volume fits in memory; plain affinity uncertainty when no
        labels layer matches). Ranked once per affinity + labels layer and signal."""
        with reporting("Next place to check"):
            affs_layer = self.affinities.value
            affs = require_affinities(affs_layer)
            by_labels = self.rank_by.value == "segment boundaries and merges"
            labels_layer, labels, threshold = (self._ranking_labels(affs.shape) if by_labels
                                               else (None, None, None))
            key = (id(affs_layer), affs.shape, id(labels_layer), threshold)
            if key != self._spots_key:
                if self.busy:
                    show_info("Still ranking the places to check…")
                    return
                self.status.value = "ranking the places to check…"

                agg = self._agglomerator(affs_layer) if labels is not None else None
                build = agg is None and labels is not None and int(np.prod(affs.shape[1:])) <= in_memory_limit()
                by = ("affinity uncertainty" if labels is None else "segment boundaries and merges"
                      if agg is not None or build else "segment boundaries")

                def rank(progress=None, cancel=None):
                    a = agg
                    if build:
                        from napari_tokenunify.engine.agglomerate import Agglomerator

                        from .segment_panel import recorded_scoring

                        a = Agglomerator(np.asarray(affs), scoring=recorded_scoring(affs_layer),
                                         max_threshold=threshold or 0.5)
                    return pr.uncertainty_ranking(
                        affs, top=200, labels=labels, threshold=threshold or 0.5, agglomerator=a
                    )

                def done(spots):
                    self._spots, self._spot_index, self._spots_key = spots, -1, key
                    self._ranked_by = by
                    self.next_spot()

                self.run(rank, "Rank places to check", on_result=done, show_progress=False)
                return
            if not self._spots:
                show_info("No places to check found")
                return
            self._spot_index = (self._spot_index + 1) % len(self._spots)
            spot = self._spots[self._spot_index]
            channel = 0
            if self.viewer.dims.ndim >= 4:  # keep the affinity channel the user is looking at
                channel = int(round(float(affs_layer.world_to_data(self.viewer.dims.point[-4:])[0])))
            self._go_to(affs_layer, (channel, *spot.center), [1, *spot.extent])
            self.status.value = (
                f"place {self._spot_index + 1} of {len(self._spots)} ({self._ranked_by}, score "
                f"{spot.score:.3f}): block {'×'.join(str(e) for e in spot.extent)} centred at "
                f"z,y,x {spot.center}"
            )

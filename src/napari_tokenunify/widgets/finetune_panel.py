"""Finetune section: train the current model on the corrected labels, watch the loss, save the
new model (under a new name, its card saying what it came from and was trained on), use it, and
predict the image again with it (into a new store and a new labels layer; the edited labels stay
as they are). The training settings start from ``FinetuneConfig()``, as ``tokenunify finetune``'s
options do."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, SpinBox

from napari_tokenunify.training.config import FinetuneConfig

from .base import Panel, StatusLine, is_volume_layer, layer_combo
from .checks import LayerError, require_image, require_labels
from .notify import reporting, show_info
from .predict_panel import _voxel_size, default_store, parse_region
from .state import edit_log_for
from .view import visible_box
from .workers import limit_torch_threads

REGIONS = ("edited regions", "box", "whole volume")
DEFAULTS = FinetuneConfig()  # the CLI's defaults too (cli/cmd_finetune.py)


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG relative luminance of an sRGB colour (0..1 channels)."""
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: Any, b: Any) -> float:
    """WCAG contrast ratio of two colours (anything matplotlib reads): 1 (none) to 21."""
    from matplotlib.colors import to_rgb

    la, lb = sorted((_luminance(to_rgb(a)), _luminance(to_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def theme_colours(theme_id: str | None) -> dict[str, str]:
    """The loss plot's colours from a napari theme: its background, its text for ticks and
    labels, and its accent for the curve (mixed towards the text where the accent is too pale on
    the background, as the light theme's is)."""
    from matplotlib.colors import to_hex, to_rgb

    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_id or "dark")
        bg, text = theme.background.as_hex(), theme.text.as_hex()
        line, edge = theme.current.as_hex(), theme.icon.as_hex()
    except Exception:  # noqa: BLE001 (no napari theme of that name: matplotlib's own look)
        bg, text, line, edge = "#ffffff", "#000000", "#1f77b4", "#000000"
    mix = 0.0
    while contrast(line, bg) < 3.0 and mix < 1.0:
        mix += 0.25
        line = to_hex([(1 - mix) * a + mix * b for a, b in zip(to_rgb(line), to_rgb(text), strict=True)])
    return {"background": bg, "text": text, "line": line, "edge": edge}


class LossPlot:
    """A small matplotlib canvas with the loss curve, in the viewer's theme colours (and
    following a change of theme).

    Drawing happens in the GUI thread, so it is kept cheap: a fixed layout (``tight_layout``
    doubled the cost) and at most one redraw per ``min_interval_s`` (measured: 30-60 ms a draw on
    a busy 2-core machine; redrawing every step made one 100-190 ms stall per step).
    """

    def __init__(self, min_interval_s: float = 1.0, viewer: Any = None) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 1.6))
        self.figure.subplots_adjust(left=0.2, right=0.97, top=0.95, bottom=0.27)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(120)
        self.canvas.setMinimumWidth(120)  # shrinks with a narrow dock (its own hint is 300 px)
        self.ax = self.figure.add_subplot(111)
        (self.line,) = self.ax.plot([], [], lw=1)
        self.ax.set_xlabel("step", fontsize=7)
        self.ax.set_ylabel("loss", fontsize=7)
        self.ax.tick_params(labelsize=6)
        self.ax.xaxis.get_major_locator().set_params(integer=True)  # steps: no 1.5
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0
        self.colours: dict[str, str] = {}
        self.viewer = viewer
        self.set_theme(getattr(viewer, "theme", None))
        theme_event = getattr(getattr(viewer, "events", None), "theme", None)
        if theme_event is not None:
            theme_event.connect(self._on_theme)

    def _on_theme(self, event: Any) -> None:
        try:
            self.set_theme(getattr(event, "value", None) or getattr(self.viewer, "theme", None))
        except RuntimeError:  # the canvas was deleted with the widget
            pass

    def set_theme(self, theme_id: str | None) -> None:
        """Colour the figure, axes, ticks, labels and curve from napari theme ``theme_id``."""
        c = self.colours = theme_colours(theme_id)
        self.figure.set_facecolor(c["background"])
        self.ax.set_facecolor(c["background"])
        self.ax.tick_params(colors=c["text"], labelcolor=c["text"])
        for spine in self.ax.spines.values():
            spine.set_color(c["edge"])
        self.ax.xaxis.label.set_color(c["text"])
        self.ax.yaxis.label.set_color(c["text"])
        self.line.set_color(c["line"])
        self.canvas.draw_idle()

    def show(self, losses: list[float], force: bool = False) -> bool:
        """Update the curve; returns whether it was redrawn (skipped if drawn very recently)."""
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval_s:
            return False
        self._last_draw = now
        self.line.set_data(np.arange(1, len(losses) + 1), losses)
        self.ax.relim()
        self.ax.autoscale_view()
        self.canvas.draw_idle()
        return True


class FinetunePanel(Panel):
    title = "Finetune"

    def __init__(self, viewer, session, events) -> None:
        super().__init__(viewer, session, events)
        self.image = layer_combo(viewer, "Image", "image", is_volume_layer, nullable=False)
        self.labels = layer_combo(viewer, "Labels", "labels", nullable=False)
        self.region = ComboBox(label="train on", choices=list(REGIONS), value=REGIONS[0])
        self.box = LineEdit(label="box", tooltip="z0:z1, y0:y1, x0:x1 (when training on a box)")
        d = DEFAULTS
        self.steps = SpinBox(label="steps", min=1, max=100000, value=d.steps)
        self.lr = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4, value=d.lr)
        self.lr.native.setDecimals(6)
        self.budget = SpinBox(label="time budget (s)", min=0, max=10**7, value=int(d.time_budget_s or 0),
                              tooltip="stop after this many seconds with the best model so far (0: no limit)")
        self.holdout = FloatSpinBox(
            label="hold back", min=0.0, max=0.5, step=0.05, value=d.holdout,
            tooltip="share of the corrected region held back to check the new model on and "
                    "keep its best checkpoint (0: train on all of it)")
        self.name = LineEdit(label="new model name", tooltip="the name in the new model's card")
        self.start_btn = PushButton(text="Finetune")
        self.cancel_btn = PushButton(text="Cancel")
        self.save_dir = FileEdit(label="save to", mode="d")
        self.save_btn = PushButton(text="Save as new model")
        self.use_btn = PushButton(text="Use new model")
        self.again_btn = PushButton(text="Predict again with new model")
        self.compare_btn = PushButton(text="Re-predict view with new model")
        self.status = StatusLine()
        self.form.extend(
            [
                self.image, self.labels, self.region, self.box, self.steps, self.lr, self.budget,
                self.holdout, self.name, self.start_btn, self.cancel_btn,
            ]
        )
        self.plot = LossPlot(viewer=viewer)
        self._layout.addWidget(self.plot.canvas)
        self.after = type(self.form)(labels=True, widgets=[
            self.save_dir, self.save_btn, self.use_btn, self.again_btn, self.compare_btn, self.status,
        ])
        self._layout.addWidget(self.after.native)
        self.start_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)
        self.save_btn.changed.connect(self.save)
        self.use_btn.changed.connect(self.use)
        self.again_btn.changed.connect(self.predict_again)
        self.compare_btn.changed.connect(self.compare)
        self.labels.changed.connect(self._propose_name)
        events.model_changed.connect(self._propose_name)
        self.losses: list[float] = []
        self.patch_shape: tuple[int, int, int] | None = None  # finetune's default; tests use small
        self.tile_shape: tuple[int, int, int] | None = None  # Predict again: the engine's default
        self.again_layers: tuple[Any, Any] | None = None  # the layers the last Predict again added
        self.start_model: Any = None  # the model the last finetuning started from
        self._proposed = ""
        self._propose_name()

    def config(self) -> FinetuneConfig:
        """The training settings: ``FinetuneConfig()`` with the section's fields applied."""
        return DEFAULTS.with_(
            steps=int(self.steps.value), lr=float(self.lr.value),
            time_budget_s=float(self.budget.value) or None, holdout=float(self.holdout.value),
            patch_shape=self.patch_shape,
        )

    def proposed_name(self) -> str:
        """``<start model>-ft-<labels layer>-<date>``: the name the section offers."""
        from napari_tokenunify.training.finetune import default_name, start_name

        model = self.session.model
        start = start_name(model) if model is not None else "default"
        layer = self.labels.value
        return default_name(start, tag=getattr(layer, "name", None))

    def _propose_name(self, *_: Any) -> None:
        """Offer a new name unless the user typed one."""
        if self.name.value.strip() in ("", self._proposed):
            self._proposed = self.proposed_name()
            self.name.value = self._proposed

    def reset_choices(self, *_: Any) -> None:
        super().reset_choices()
        self.after.reset_choices()

    def _mask(self, labels_layer: Any, shape) -> tuple[np.ndarray | None, Any]:
        mode = self.region.value
        if mode == "whole volume":
            return None, None
        if mode == "box":
            box = parse_region(self.box.value, tuple(shape))
            return None, tuple(slice(a, b) for a, b in box)
        log = edit_log_for(self.session, labels_layer)
        if not len(log):
            raise LayerError(
                f"no edited regions in '{labels_layer.name}' yet: proofread some labels first, "
                "or train on a box or the whole volume"
            )
        return log.mask(margin=4).astype(np.uint8), None

    def start(self, *_: Any):
        with reporting("Finetune"):
            if self.busy:
                show_info("Finetuning is already running; cancel it first")
                return None
            image_layer, labels_layer = self.image.value, self.labels.value
            raw = require_image(image_layer, "finetuning")
            labels = require_labels(labels_layer, image_layer, "finetuning")
            mask, box = self._mask(labels_layer, labels.shape)
            config = self.config()
            init = self.session.model if self.session.model is not None else "default"
            device = self.session.device
            name = self.name.value.strip() or self.proposed_name()
            src = getattr(getattr(image_layer, "source", None), "path", None)
            data = {"image": image_layer.name, "labels": labels_layer.name,
                    **({"image_file": str(src)} if src else {})}
            voxel = _voxel_size("", image_layer)
            labels_copy = np.array(labels, copy=True)  # the user may keep editing meanwhile
            start_affs = (start_affinities(self.viewer, init, np.shape(raw))
                          if config.self_distill else None)
            self.losses = []
            losses = self.losses

            def work(progress=None, cancel=None):
                from napari_tokenunify.training.finetune import finetune

                def report(p):
                    if "loss" in p.extra:
                        losses.append(float(p.extra["loss"]))
                    if progress is not None:
                        progress(p)

                return finetune(
                    np.asarray(raw), labels_copy, mask=mask, box=box, init=init, config=config,
                    device=device, resume=False, name=name, data=data, voxel_size_nm=voxel,
                    progress=report, cancel=cancel,
                    **({"teacher_affinities": [start_affs]} if start_affs is not None else {}),
                )

            self.status.value = "finetuning…"
            self.start_model = init
            return self.run(
                work, "Finetune", on_progress=self._on_progress, on_result=self._on_result,
                interval_ms=250,
            )
        return None

    def cancel(self, *_: Any) -> bool:
        job = self.current_job()
        if job is None:
            show_info("No finetuning to cancel")
            return False
        return job.cancel()

    def _on_progress(self, p) -> None:
        self.plot.show(list(self.losses))
        last = f", loss {self.losses[-1]:.4f}" if self.losses else ""
        self.status.value = f"step {p.done}/{p.total}{last}"

    def _on_result(self, model: Any) -> None:
        self.session.finetuned = model
        self.plot.show(list(self.losses), force=True)
        t = getattr(model, "training_info", {}) or {}
        line = f"'{model.card.name}': {t.get('steps', len(self.losses))} steps, {t.get('seconds', 0):.0f} s"
        before, after = getattr(model, "validation_before", None), model.card.metrics.get("validation")
        if after:
            was = f"{before['voi']:.3f} → " if before else ""
            line += f"; held-back VOI {was}{after['voi']:.3f}, threshold {model.card.recommended_threshold:g}"
        if (t.get("permuted_views") or {}).get("on"):  # isotropic data: six views of each patch
            line += "; trained on permuted views (isotropic voxels)"
        if t.get("kept"):  # FinetuneConfig.start_margin: no checkpoint was clearly better
            line += "; no checkpoint beat the starting model on the held-back corrections, so it is kept unchanged"
        self.status.value = line + "; save it, use it or predict again"

    def _require_finetuned(self) -> Any:
        if self.session.finetuned is None:
            raise LayerError("no finetuned model yet: press Finetune first")
        model = self.session.finetuned
        name = self.name.value.strip()
        card = getattr(model, "card", None)
        if card is not None and name and card.name != name:  # the field is editable after training too
            model.card = replace(card, name=name)
        return model

    def save(self, *_: Any):
        with reporting("Save model"):
            model = self._require_finetuned()
            directory = str(self.save_dir.value or "")
            if directory in ("", "."):
                raise LayerError("choose a folder to save the new model in")
            path = Path(directory)
            _guard_save(path, model, self.session.model)

            def work(progress=None, cancel=None):
                from napari_tokenunify.model import save_model

                return save_model(model, path, getattr(model, "card", None))

            return self.run(
                work, "Save model", show_progress=False,
                on_result=lambda p: show_info(f"Saved the finetuned model to {p}"),
            )
        return None

    def use(self, *_: Any) -> None:
        with reporting("Use new model"):
            model = self._require_finetuned()
            self.session.model = model
            card = getattr(model, "card", None)
            self.session.model_source = f"finetuned: {getattr(card, 'name', '') or 'new model'}"
            self.events.model_changed.emit(model)

    def predict_again(self, *_: Any):
        """Predict the whole image with the new model into a new store and segment it at the new
        card's threshold into a new labels layer; old affinities and the edited labels are kept."""
        with reporting("Predict again"):
            model = self._require_finetuned()
            if self.busy:
                show_info("Finetuning is still running; wait for it or cancel it first")
                return None
            if self.session.model is not model:
                self.use()  # the loop goes on with the new model (the Model section shows its card)
            image_layer = self.image.value
            image = require_image(image_layer, "prediction")
            edited = self.labels.value
            card = model.card
            name = card.name or "finetuned"
            threshold = float(card.recommended_threshold)
            scoring = card.recommended_scoring
            store = again_store(image_layer, name)
            device, tta, tile = self.session.device, self.session.tta, self.tile_shape
            voxel = _voxel_size("", image_layer)
            chosen: dict[str, Any] = {"out": store, "tta": tta}
            # a finetuning that kept its start unchanged (start_margin) predicts what the start
            # predicted: its finished affinities are segmented again instead of predicted again
            reuse = same_weights_affinities(self.viewer, self.start_model, model, np.shape(image), tta)
            if reuse is not None and _same_segmentation(self.start_model, model):
                self.status.value = (f"'{name}' is the starting model unchanged, with its threshold "
                                     f"{threshold:g}: predicting again would give the same segmentation")
                show_info(f"Nothing to predict again: {self.status.value}")
                return None
            from .segment_panel import in_memory_limit

            in_memory = int(np.prod(image.shape)) <= in_memory_limit()

            def work(progress=None, cancel=None):
                if reuse is not None:
                    affs, used = reuse
                else:
                    from napari_tokenunify.engine.predict import TilePredictor, predict_affinities

                    from .predict_stores import in_free_store_call

                    predict = in_free_store_call(predict_affinities, chosen)
                    store.parent.mkdir(parents=True, exist_ok=True)
                    predictor = TilePredictor(model, device=device, tta=tta)
                    limit_torch_threads()
                    affs = predict(image, model, out=store, tile_shape=tile, device=device,
                                   voxel_size=voxel, progress=progress, cancel=cancel,
                                   predictor=predictor, rescale=True)
                    used = Path(chosen["out"])
                if in_memory:
                    from napari_tokenunify.engine.agglomerate import Agglomerator

                    labels = Agglomerator(np.asarray(affs), scoring=scoring,
                                          max_threshold=threshold).segment(threshold)
                else:
                    from napari_tokenunify.engine.blockwise import segment_blockwise
                    from napari_tokenunify.engine.store import unfinished_blockwise

                    out = used.with_name(f"{used.stem}-labels-t{threshold:.2f}.zarr")
                    if reuse is not None:  # beside the start's store, named for the new model,
                        # never over labels of an earlier run (they may be edited)
                        from napari_tokenunify.engine.store import store_candidates

                        out = next(p for p in store_candidates(
                            store.with_name(f"{store.stem}-labels-t{threshold:.2f}.zarr")) if not p.exists())
                        out.parent.mkdir(parents=True, exist_ok=True)
                    labels = segment_blockwise(
                        affs, out, threshold=threshold, scoring=scoring, voxel_size=voxel,
                        overwrite=not unfinished_blockwise(str(out)), progress=progress, cancel=cancel)
                return used, affs, labels

            def show(result) -> None:
                used, affs, labels = result
                self._show_again(image_layer, edited, model, used, affs, labels, threshold, tta,
                                 reused=reuse is not None)

            self.status.value = (f"segmenting the starting model's affinities again at '{name}''s "
                                 f"threshold {threshold:g}…" if reuse is not None
                                 else f"predicting again with '{name}'…")
            return self.run(work, "Predict again", on_result=show)
        return None

    def _show_again(self, image_layer: Any, edited: Any, model: Any, store: Path, affs: Any,
                    labels: Any, threshold: float, tta: str, reused: bool = False) -> None:
        """New layers for the new prediction and segmentation (existing ones are left alone;
        ``reused``: the affinities are an existing layer's, so only the segmentation is new)."""
        card = model.card
        name = card.name or "finetuned"
        scale, translate = tuple(image_layer.scale[-3:]), tuple(image_layer.translate[-3:])
        affs_layer = None
        if not reused:
            affs_layer = self.viewer.add_image(
                affs, name=_free_name(self.viewer, f"{image_layer.name} affinities ({name})"),
                contrast_limits=(0, 1), colormap="magma", opacity=0.6, scale=(1, *scale),
                translate=(0, *translate), visible=False,
            )
            affs_layer.metadata["tokenunify"] = {
                "kind": "affinities", "store": str(store), "model": name, "threshold": threshold,
                "tta": tta, "scoring": model.card.recommended_scoring}
        seg_layer = self.viewer.add_labels(
            labels, name=_free_name(self.viewer, f"segmentation ({name})"), scale=scale, translate=translate)
        seg_layer.metadata["tokenunify"] = {"kind": "labels", "threshold": threshold, "model": name}
        if affs_layer is not None:
            self.events.affinities_changed.emit(affs_layer)
        kept = f"; your edited labels in '{edited.name}' are unchanged" if edited is not None else ""
        if reused:
            message = (f"'{name}' is the starting model's network unchanged, so its affinities in "
                       f"{store.name} were segmented again (nothing predicted) at the new threshold "
                       f"{threshold:g} into the new layer '{seg_layer.name}'{kept}")
        else:
            message = (f"Predicted again with '{name}' into {store.name} (the old affinities are kept) "
                       f"and segmented at its threshold {threshold:g} into the new layer "
                       f"'{seg_layer.name}'{kept}")
        self.status.value = f"'{seg_layer.name}': threshold {threshold:g}{kept}"
        show_info(message)
        self.again_layers = (affs_layer, seg_layer)

    def compare(self, *_: Any):
        """Predict the visible region with the finetuned model into a new in-memory layer."""
        with reporting("Re-predict"):
            model = self._require_finetuned()
            image_layer = self.image.value
            image = require_image(image_layer, "re-prediction")
            box = visible_box(self.viewer, image_layer)
            device, tta = self.session.device, self.session.tta

            def work(progress=None, cancel=None):
                from napari_tokenunify.engine.predict import TilePredictor, predict_affinities

                predictor = TilePredictor(model, device=device, tta=tta)
                limit_torch_threads()
                return predict_affinities(
                    image, model, crop=box, device=device, progress=progress, cancel=cancel,
                    predictor=predictor,
                )

            def show(affs):
                name = f"{image_layer.name} affinities (finetuned)"
                scale = tuple(image_layer.scale[-3:])
                translate = tuple(
                    t + a * s for t, (a, _), s in zip(image_layer.translate[-3:], box, scale, strict=True)
                )
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
                layer = self.viewer.add_image(
                    np.asarray(affs), name=name, contrast_limits=(0, 1), colormap="magma",
                    opacity=0.6, scale=(1, *scale), translate=(0, *translate),
                )
                layer.metadata["tokenunify"] = {"kind": "affinities", "box": box}

            return self.run(work, "Re-predict with finetuned model", on_result=show)
        return None


def _predicted_layers(viewer: Any, model: Any, shape: tuple):
    """(data, store settings, store path) of every layer holding finished affinities that
    ``model`` predicted for a volume of ``shape`` (its store records that model)."""
    from napari_tokenunify.engine.predict import predicted_with

    if model is None or isinstance(model, (str, Path)):
        return
    for layer in viewer.layers:
        meta = layer.metadata.get("tokenunify") or {}
        if meta.get("kind") != "affinities" or not meta.get("store"):
            continue
        data = layer.data[0] if layer.multiscale else layer.data
        if tuple(data.shape[1:]) != tuple(shape) or not predicted_with(meta["store"], model):
            continue
        attrs = _store_attrs(meta["store"])
        if not attrs.get("complete", False):  # a cancelled prediction: part of it is empty
            continue
        yield data, attrs.get("settings") or {}, Path(meta["store"])


def start_affinities(viewer: Any, model: Any, shape: tuple) -> Any:
    """The affinities the starting ``model`` predicted for a volume of ``shape`` (a layer whose
    store records that model, whatever the flips): self-distillation's targets, so finetuning
    need not predict them again. ``None`` when no layer holds them (finetuning then predicts
    them itself)."""
    return next((data for data, _, _ in _predicted_layers(viewer, model, shape)), None)


def same_weights_affinities(viewer: Any, start: Any, model: Any, shape: tuple, tta: str) -> tuple[Any, Path] | None:
    """(affinities, store) that ``start`` predicted for ``shape`` with the flips ``tta`` when
    ``model`` holds exactly ``start``'s network (a finetuning that kept its start), so that
    predicting with ``model`` would give the same numbers; else ``None``."""
    if start is None or isinstance(start, (str, Path)) or not _same_network(start, model):
        return None
    norms = [getattr(getattr(m, "card", None), "normalization", None) for m in (start, model)]
    if norms[0] != norms[1]:  # the same network fed other intensities predicts otherwise
        return None
    for data, settings, store in _predicted_layers(viewer, start, shape):
        if settings.get("tta", "none") == tta:
            return data, store
    return None


def _same_network(a: Any, b: Any) -> bool:
    """Whether ``b`` is ``a``'s network: same class, same tensors (a start can only be kept by a
    finetuning that copied all of it, so the two have the same outputs too)."""
    import torch

    if type(a) is not type(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k].detach().cpu(), sb[k].detach().cpu()) for k in sa)


def _same_segmentation(start: Any, model: Any) -> bool:
    """Whether ``model``'s card segments as ``start``'s does (threshold and scoring)."""
    a, b = getattr(start, "card", None), getattr(model, "card", None)
    if a is None or b is None:
        return False
    return (float(a.recommended_threshold) == float(b.recommended_threshold)
            and a.recommended_scoring == b.recommended_scoring)


def _store_attrs(store: str | Path) -> dict:
    import zarr

    try:
        return dict(zarr.open_group(str(store), mode="r").attrs)
    except Exception:  # noqa: BLE001 - unreadable: do not use it
        return {}


def again_store(image_layer: Any, model_name: str) -> Path:
    """Where *Predict again* writes: beside the Predict section's default store, named after the
    model (``<image>-affinities-<model>.zarr``); a store of another run there is kept and the next
    free name used, so old affinities are never written over."""
    base = default_store(image_layer)
    tag = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_") or "finetuned"
    return base.with_name(f"{base.name.removesuffix('.zarr')}-{tag}.zarr")


def _free_name(viewer: Any, name: str) -> str:
    """``name``, or ``name 2``, ``name 3``… when a layer already has it."""
    if name not in viewer.layers:
        return name
    n = 2
    while f"{name} {n}" in viewer.layers:
        n += 1
    return f"{name} {n}"


def _guard_save(path: Path, model: Any, current: Any) -> None:
    """Refuse to save over the model the new one started from, the current model's folder or the
    bundled models (``CheckpointError`` with what to do)."""
    from napari_tokenunify.training.checkpoints import guard_output

    start = (getattr(model, "training_info", None) or {}).get("started_from") \
        or (getattr(getattr(model, "card", None), "training", None) or {}).get("started_from") or {}
    guard_output(path, start.get("source") if isinstance(start, dict) else None, model_subdir=None)
    if current is not None and current is not model:
        guard_output(path, current, model_subdir=None)

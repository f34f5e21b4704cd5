"""Finetune section: train the current model on the corrected labels, watch the loss, save the
new model, and re-predict the visible region with it to compare."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

from .base import Panel, is_volume_layer, layer_combo
from .checks import LayerError, require_image, require_labels
from .notify import reporting, show_info
from .predict_panel import parse_region
from .state import edit_log_for
from .view import visible_box
from .workers import limit_torch_threads

REGIONS = ("edited regions", "box", "whole volume")


class LossPlot:
    """A small matplotlib canvas with the loss curve.

    Drawing happens in the GUI thread, so it is kept cheap: a fixed layout (``tight_layout``
    doubled the cost) and at most one redraw per ``min_interval_s`` (measured: 30-60 ms a draw on
    a busy 2-core machine; redrawing every step made one 100-190 ms stall per step).
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 1.6))
        self.figure.subplots_adjust(left=0.2, right=0.97, top=0.95, bottom=0.27)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(120)
        self.ax = self.figure.add_subplot(111)
        (self.line,) = self.ax.plot([], [], lw=1)
        self.ax.set_xlabel("step", fontsize=7)
        self.ax.set_ylabel("loss", fontsize=7)
        self.ax.tick_params(labelsize=6)
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0

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
        self.steps = SpinBox(label="steps", min=1, max=100000, value=200)
        self.lr = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4, value=1e-3)
        self.start_btn = PushButton(text="Finetune")
        self.cancel_btn = PushButton(text="Cancel")
        self.save_dir = FileEdit(label="save to", mode="d")
        self.save_btn = PushButton(text="Save as new model")
        self.use_btn = PushButton(text="Use new model")
        self.compare_btn = PushButton(text="Re-predict view with new model")
        self.status = Label(value="")
        self.form.extend(
            [
                self.image, self.labels, self.region, self.box, self.steps, self.lr,
                self.start_btn, self.cancel_btn,
            ]
        )
        self.plot = LossPlot()
        self._layout.addWidget(self.plot.canvas)
        self.after = type(self.form)(labels=True, widgets=[
            self.save_dir, self.save_btn, self.use_btn, self.compare_btn, self.status,
        ])
        self._layout.addWidget(self.after.native)
        self.start_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)
        self.save_btn.changed.connect(self.save)
        self.use_btn.changed.connect(self.use)
        self.compare_btn.changed.connect(self.compare)
        self.losses: list[float] = []
        self.patch_shape: tuple[int, int, int] | None = None  # finetune's default; tests use small

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
            image_layer = self.image.value
            raw = require_image(image_layer, "finetuning")
            labels = require_labels(self.labels.value, image_layer, "finetuning")
            mask, box = self._mask(self.labels.value, labels.shape)
            init = self.session.model if self.session.model is not None else "default"
            steps, lr, device = int(self.steps.value), float(self.lr.value), self.session.device
            kwargs = {} if self.patch_shape is None else {"patch_shape": self.patch_shape}
            labels_copy = np.array(labels, copy=True)  # the user may keep editing meanwhile
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
                    np.asarray(raw), labels_copy, mask=mask, box=box, init=init, steps=steps,
                    lr=lr, device=device, resume=False, progress=report, cancel=cancel, **kwargs,
                )

            self.status.value = "finetuning…"
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
        self.status.value = f"finetuned ({len(self.losses)} steps); save it or re-predict to compare"

    def _require_finetuned(self) -> Any:
        if self.session.finetuned is None:
            raise LayerError("no finetuned model yet: press Finetune first")
        return self.session.finetuned

    def save(self, *_: Any):
        with reporting("Save model"):
            model = self._require_finetuned()
            directory = str(self.save_dir.value or "")
            if directory in ("", "."):
                raise LayerError("choose a folder to save the new model in")
            path = Path(directory)

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
            self.events.model_changed.emit(model)

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

"""Predict section: affinities for an image layer, tile by tile, into a reusable Zarr store.

The affinity layer is backed by the store itself and refreshed (throttled) while tiles finish, so
results appear as they are computed; a cancelled run resumes from the completed tiles next time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, LineEdit, PushButton

from napari_tokenunify.engine.tta import TTA_LABELS
from napari_tokenunify.progress import format_rate

from .base import Panel, is_volume_layer, layer_combo
from .checks import LayerError, require_image
from .notify import reporting, show_info
from .predict_stores import in_free_store_call, store_message
from .view import visible_box
from .workers import limit_torch_threads

SCOPES = ("current view first", "current view only", "region only", "whole volume")
AFFINITY_SUFFIX = " affinities"
REFRESH_MS = 500


class LiveArray:
    """Read-only view of an affinity store that a worker is still writing.

    It stands in for the store before the store exists (reads give zeros), so the layer can be
    added when the user presses Predict rather than in the middle of the run (adding a layer
    costs napari a few hundred ms). A chunk caught mid-write also reads as zeros; the next
    refresh shows it. napari never sees an exception from a half-written file.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any = "float16") -> None:
        self.path = Path(path)
        self.array: Any = None
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.try_open()

    def try_open(self) -> bool:
        if self.array is None and (self.path / "affinities").exists():
            try:
                import zarr

                arr = zarr.open_group(str(self.path), mode="r")["affinities"]
            except Exception:  # noqa: BLE001 - not written yet
                return False
            if tuple(arr.shape) == self.shape:
                self.array, self.dtype = arr, np.dtype(arr.dtype)
        return self.array is not None

    def __getitem__(self, key: Any) -> np.ndarray:
        if self.array is not None or self.try_open():
            try:
                return np.asarray(self.array[key])
            except Exception:  # noqa: BLE001 - partial chunk; shown on the next refresh
                pass
        return np.zeros(np.empty(self.shape, dtype=bool)[key].shape, dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self) -> int:
        return self.shape[0]


def default_store(image_layer: Any) -> Path:
    """Beside the data when the layer came from a file, else in the user's cache folder."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", image_layer.name).strip("_") or "image"
    src = getattr(getattr(image_layer, "source", None), "path", None)
    if src:
        src = Path(src)
        return src.parent / (src.name.split(".")[0] + ".tokenunify") / f"{name}-affinities.zarr"
    env = os.environ.get("TOKENUNIFY_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".napari-tokenunify" / "predictions"
    return base / f"{name}-affinities.zarr"


def parse_region(text: str, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    from napari_tokenunify.engine.tiling import parse_box

    if not text.strip():
        raise LayerError("type a region as z0:z1, y0:y1, x0:x1 (voxels), e.g. 0:16, 0:128, 0:128")
    return parse_box(text, shape)


class PredictPanel(Panel):
    title = "Predict"

    def __init__(self, viewer, session, events) -> None:
        super().__init__(viewer, session, events)
        self.image = layer_combo(viewer, "Image", "image", is_volume_layer, nullable=False)
        self.scope = ComboBox(label="scope", choices=list(SCOPES), value=SCOPES[0])
        self.region = LineEdit(label="region", tooltip="z0:z1, y0:y1, x0:x1 in voxels")
        self.store = FileEdit(label="store (.zarr)", mode="w", filter="*.zarr")
        if session.model is None:  # what the bundled default, used when none is chosen, recommends
            session.tta = _bundled_default_tta()
        self.tta = ComboBox(
            label="test-time flips", choices=[(v, k) for k, v in TTA_LABELS.items()],
            value=session.tta,
            tooltip="average each tile over its mirror images: a little more accurate, 4 or 8 "
                    "times slower (a store predicted without them is not resumed with them)",
        )
        self.tta.changed.connect(self._set_tta)
        self._keep_tta = False
        events.model_changed.connect(self._use_card_tta)
        self.voxel = LineEdit(label="voxel size (nm)",
                              tooltip="z, y, x in nm, e.g. 40, 4, 4; empty: the layer's scale")
        self.rescale = CheckBox(
            text="rescale to the model's voxel size", value=True,
            tooltip="when the data's voxel size differs from the model card's by more than 15%, "
                    "predict on the model's grid and map the affinities back",
        )
        self.predict_btn = PushButton(text="Predict affinities")
        self.cancel_btn = PushButton(text="Cancel")
        self.status = Label(value="")
        self.form.extend(
            [self.image, self.scope, self.region, self.store, self.tta, self.voxel,
             self.rescale, self.predict_btn,
             self.cancel_btn, self.status]
        )
        self.predict_btn.changed.connect(self.predict)
        self.cancel_btn.changed.connect(self.cancel)
        self.tile_shape: tuple[int, int, int] | None = None  # engine default; tests use small tiles
        self.layer: Any = None
        self.live: LiveArray | None = None

    def _set_tta(self, value: str) -> None:
        self.session.tta = value

    def _use_card_tta(self, model: Any) -> None:
        """Offer the test-time flips the new model's card recommends (the user may change them)."""
        card = getattr(model, "card", None)
        if card is not None and not self._keep_tta:
            self.tta.value = card.recommended_tta

    def store_path(self, image_layer: Any) -> Path:
        value = str(self.store.value or "")
        return Path(value) if value not in ("", ".") else default_store(image_layer)

    def _roi(self, image_layer: Any, shape) -> tuple[Any, bool]:
        scope = self.scope.value
        if scope == "whole volume":
            return None, False
        if scope == "region only":
            return parse_region(self.region.value, shape), True
        return visible_box(self.viewer, image_layer), scope == "current view only"

    def predict(self, *_: Any, model: Any = None):
        """Start prediction; returns the Job (None when the input was refused)."""
        with reporting("Predict"):
            if self.busy:
                show_info("A prediction is already running; cancel it first")
                return None
            image_layer = self.image.value
            image = require_image(image_layer, "prediction")
            roi, roi_only = self._roi(image_layer, tuple(image.shape))
            out = self.store_path(image_layer)
            session, device, tile = self.session, self.session.device, self.tile_shape
            tta = session.tta
            model = model if model is not None else session.model
            voxel, rescale = _voxel_size(self.voxel.value, image_layer), self.rescale.value
            info: dict[str, Any] = {"voxel_size": voxel}
            self.status.value = f"writing to {out}"
            chosen: dict[str, Any] = {"out": out, "tta": tta}  # the store used: see _follow_store

            def work(progress=None, cancel=None):
                from napari_tokenunify.engine.predict import TilePredictor, predict_affinities

                # a finished store of this run is reused, one of another run kept (a new one used)
                predict_affinities = in_free_store_call(predict_affinities, chosen)  # noqa: N806
                m = model
                if m is None:
                    from napari_tokenunify.model import load_model

                    m = load_model("default", device=device)
                out.parent.mkdir(parents=True, exist_ok=True)
                predictor = TilePredictor(m, device=device, tta=tta)
                limit_torch_threads()  # the predictor set all cores; leave one to the GUI
                result = predict_affinities(
                    image, m, out=out, tile_shape=tile, device=device, roi=roi,
                    roi_only=roi_only, voxel_size=voxel, progress=progress, cancel=cancel,
                    predictor=predictor, rescale=rescale, info=info,
                )
                return m, result

            self._pending_layer, self._info = (image_layer, out), info
            self._show_store(image_layer, out, model, tuple(image.shape))
            self._chosen = chosen
            return self.run(
                work, "Predict affinities", on_progress=self._on_progress,
                on_result=self._on_result, interval_ms=REFRESH_MS,
            )
        return None

    def cancel(self, *_: Any) -> bool:
        job = self.current_job()
        if job is None:
            show_info("No prediction to cancel")
            return False
        return job.cancel()

    def _show_store(self, image_layer: Any, out: Path, model: Any, shape: tuple[int, ...]) -> None:
        """Add (or reuse) the affinity layer now; it fills in as tiles finish."""
        from napari_tokenunify.engine.predict import model_offsets

        n_ch = len(model_offsets(model)) if model is not None else 3
        data = LiveArray(out, (n_ch, *shape))
        name = image_layer.name + AFFINITY_SUFFIX
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
        else:
            layer = self.viewer.add_image(
                data, name=name, contrast_limits=(0, 1), colormap="magma", opacity=0.6,
                scale=(1, *image_layer.scale[-3:]), translate=(0, *image_layer.translate[-3:]),
            )
        layer.metadata["tokenunify"] = {"kind": "affinities", "store": str(out)}
        self.layer, self.live = layer, data

    def _follow_store(self) -> None:
        """Show the store the run really uses (another than chosen when that holds another run)."""
        out = (getattr(self, "_chosen", None) or {}).get("out")
        if out is None or self.live is None or Path(out) == self.live.path:
            return
        self.live = LiveArray(Path(out), self.live.shape, self.live.dtype)
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.data = self.live
            self.layer.metadata.setdefault("tokenunify", {})["store"] = str(out)

    def _settle(self, model: Any) -> None:
        """After a run: the layer shows the store used and records the model that made it (its
        threshold is the one Segment starts from), with one short line about the store."""
        chosen = getattr(self, "_chosen", None) or {}
        self._follow_store()
        if "out" in chosen:
            self._pending_layer = (self._pending_layer[0], Path(chosen["out"]))
        message = store_message(chosen)
        if message:
            show_info(message)
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return
        card = getattr(model, "card", None)
        layer.metadata.setdefault("tokenunify", {}).update(
            kind="affinities", store=str(self._pending_layer[1]),
            model=(getattr(card, "name", "") or getattr(card, "preset", "")) if card else type(model).__name__,
            threshold=card.recommended_threshold if card is not None else None,
            tta=chosen.get("tta", self.session.tta),
        )
        self.events.affinities_changed.emit(layer)

    def _on_progress(self, p) -> None:
        self._follow_store()
        if self.layer is not None and self.layer in self.viewer.layers:
            self.live.try_open()
            self.layer.refresh()
        rate = format_rate(p.rate, p.rate_unit or "voxels/s")  # "850 voxels/s", not "0.00 M…"
        rate = f", {rate}" if rate else ""
        self.status.value = f"{p.done}/{p.total} tiles{rate}"

    def _on_result(self, result) -> None:
        model, array = result
        self._settle(model)
        if self.session.model is None:  # the default, loaded for this run: keep the flips it ran with
            self.session.model = model
            self._keep_tta = True
            try:
                self.events.model_changed.emit(model)
            finally:
                self._keep_tta = False
        layer = self.layer
        if layer is not None and layer in self.viewer.layers:
            if not self.live.try_open():  # other channel count than guessed: show the store itself
                layer.data = LiveArray(self._pending_layer[1], tuple(array.shape), array.dtype)
            layer.refresh()
        rs = getattr(self, "_info", {}).get("rescale")
        if layer is not None:
            layer.metadata.setdefault("tokenunify", {})["rescale"] = rs
        done = f"done: {self._pending_layer[1]}"
        self.status.value = done + (" (predicted at the model's voxel size)" if rs else "")
        note = _voxel_note(model, getattr(self, "_info", {}))
        if note:
            show_info(note)


def _voxel_size(text: str, layer: Any) -> tuple[float, float, float] | None:
    """The voxel size typed in the section (z, y, x nm; one number: every axis), else the layer's
    scale (``None`` when it is napari's default of 1); unusable values raise ``ValueError``."""
    from napari_tokenunify.engine.resample import validate_voxel_size

    if str(text or "").strip():
        try:
            vals = [float(v) for v in re.split(r"[,;x\s]+", str(text).strip()) if v]
        except ValueError:
            raise LayerError(f"voxel size {text!r} is not numbers; type z, y, x in nm (e.g. "
                             "40, 4, 4) or leave it empty to use the layer's scale") from None
        return validate_voxel_size(vals[0] if len(vals) == 1 else vals)
    scale = tuple(float(s) for s in layer.scale[-3:])
    if len(scale) != 3 or all(abs(v - 1.0) <= 1e-6 for v in scale):
        return None
    return validate_voxel_size(scale)


def _voxel_note(model: Any, info: dict[str, Any]) -> str | None:
    """The line shown after a run whose voxel size differs from the model card's."""
    rs = info.get("rescale")
    if rs:
        return (f"Predicted at the model's voxel size: the data's {tuple(rs['data_voxel_size'])} nm "
                f"was resampled to the model's {tuple(rs['model_voxel_size'])} nm and the affinities "
                "mapped back (untick 'rescale to the model's voxel size' to turn this off)")
    from napari_tokenunify.engine.predict import voxel_size_mismatch

    msg = voxel_size_mismatch(model, info.get("voxel_size"))
    return f"Predict: {msg}" if msg else None


def _bundled_default_tta() -> str:
    """The test-time flips the bundled default's card recommends (read without the weights)."""
    try:
        from napari_tokenunify.model import ModelCard
        from napari_tokenunify.model.bundled import bundled_path

        return ModelCard.from_json((bundled_path("default") / "card.json").read_text()).recommended_tta
    except Exception:  # noqa: BLE001 - a missing or unreadable card: no flips
        return "none"


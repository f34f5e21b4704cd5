"""Predict section: affinities for an image layer, tile by tile, into a reusable Zarr store.

The affinity layer is backed by the store itself and refreshed (throttled) while tiles finish, so
results appear as they are computed; a cancelled run resumes from the completed tiles next time.
*Current view first/only* start with the tile under the centre of the view and show it the
moment it is done; with test-time flips (or resampling to the model's voxel size) that tile is
first predicted once without them as a preview (about 1 s on a laptop CPU), replaced when the
full-quality tile is written. Large volumes (``io.pyramid.is_large``) get a multiscale affinity
layer that reads only the finished blocks of the visible tile; a whole large volume whose
affinities would not fit on the disk (or need over a million tiles) is not predicted from the
viewer: *whole volume* is refused with the reason and *current view first* predicts the view only.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, LineEdit, PushButton
from qtpy.QtCore import QTimer

from napari_tokenunify.engine.tta import TTA_LABELS
from napari_tokenunify.io.pyramid import is_large
from napari_tokenunify.io.store_view import StoreView, store_layer_data, store_pyramid
from napari_tokenunify.progress import Progress, format_rate

from .base import Panel, StatusLine, is_volume_layer, layer_combo
from .checks import LayerError, require_image
from .notify import reporting, show_info
from .predict_stores import in_free_store_call, store_message
from .view import camera, visible_box
from .workers import limit_torch_threads

SCOPES = ("current view first", "current view only", "region only", "whole volume")
AFFINITY_SUFFIX = " affinities"
REFRESH_MS = 500
#: how often the GUI looks for the first tile (shown at once, not at the next throttled refresh)
FIRST_TILE_POLL_MS = 20
#: a run from the viewer predicts at most this many tiles (more: ``tokenunify predict``)
MAX_VIEWER_TILES = 2**18
VIEW_SCOPES = ("current view first", "current view only")


class LiveArray(StoreView):
    """Read-only view of an affinity store that a worker is still writing (``io.store_view``).

    It stands in for the store before the store exists (reads give zeros), so the layer can be
    added when the user presses Predict rather than in the middle of the run (adding a layer
    costs napari a few hundred ms). Only finished blocks are read, so a chunk caught mid-write
    reads as zeros and the next refresh shows it: napari never sees an exception from a
    half-written file, and nothing is allocated beyond what napari asks for. A preview tile
    (``set_preview``) shows where the store has nothing yet.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any = "float16",
                 name: str = "affinities", step: tuple[int, ...] | None = None) -> None:
        super().__init__(path, shape, dtype, name, step)


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
        self.status = StatusLine()
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
        self.live_levels: list[LiveArray] = []
        self.first_tile_s: float | None = None  # last run: Predict pressed -> first tile shown

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
            shape = tuple(int(s) for s in image.shape)
            roi, roi_only = self._roi(image_layer, shape)
            point = view_centre(self.viewer, image_layer) if self.scope.value in VIEW_SCOPES else None
            out = self.store_path(image_layer)
            session, device, tile = self.session, self.session.device, self.tile_shape
            tta = session.tta
            model = model if model is not None else session.model
            voxel, rescale = _voxel_size(self.voxel.value, image_layer), self.rescale.value
            info: dict[str, Any] = {"voxel_size": voxel}
            self.status.value = f"writing to {out}"
            chosen: dict[str, Any] = {"out": out, "tta": tta}  # the store used: see _follow_store
            first: dict[str, Any] = {}  # "at": when the first tile (or its preview) was ready
            scope, name = self.scope.value, image_layer.name
            if model is not None:  # refused before any layer is added
                roi_only = viewer_limits(model, shape, tile, out, name, scope, roi, roi_only, chosen)
            self._show_store(image_layer, out, model, shape)

            def work(progress=None, cancel=None):
                from napari_tokenunify.engine.predict import TilePredictor, predict_affinities

                # a finished store of this run is reused, one of another run kept (a new one used)
                predict_affinities = in_free_store_call(predict_affinities, chosen)  # noqa: N806
                m = model
                if m is None:
                    from napari_tokenunify.model import load_model

                    m = load_model("default", device=device)
                nonlocal roi_only
                if model is None:  # checked here once the default is loaded
                    roi_only = viewer_limits(m, shape, tile, out, name, scope, roi, roi_only, chosen)
                out.parent.mkdir(parents=True, exist_ok=True)
                if point is not None and (tta != "none" or _rescales(m, voxel, shape, rescale)):
                    if not _complete_store(out):
                        first["preview"] = preview_tile(
                            image, m, point, tile=tile, device=device, voxel_size=voxel,
                            rescale=rescale, cancel=cancel)
                        first.setdefault("at", time.perf_counter())
                predictor = TilePredictor(m, device=device, tta=tta)
                limit_torch_threads()  # the predictor set all cores; leave one to the GUI

                def report(p: Progress) -> None:
                    if not p.extra.get("skipped") and p.message == "predicting affinities":
                        first.setdefault("at", time.perf_counter())
                    if progress is not None:
                        progress(p)

                result = predict_affinities(
                    image, m, out=out, tile_shape=tile, device=device, roi=roi,
                    roi_only=roi_only, voxel_size=voxel, progress=report, cancel=cancel,
                    predictor=predictor, rescale=rescale, info=info, first_point=point,
                )
                return m, result

            self._pending_layer, self._info = (image_layer, out), info
            self._chosen = chosen
            job = self.run(
                work, "Predict affinities", on_progress=self._on_progress,
                on_result=self._on_result, interval_ms=REFRESH_MS,
            )
            self._watch_first_tile(first, job)
            return job
        return None

    def _watch_first_tile(self, first: dict[str, float], job: Any) -> None:
        """Refresh the layer as soon as the first tile (or its preview) is ready, not at the next
        throttled refresh; ``first_tile_s`` is then the time from pressing Predict."""
        pressed = time.perf_counter()
        self.first_tile_s = None
        timer = QTimer(self)
        timer.setInterval(FIRST_TILE_POLL_MS)

        def tick() -> None:
            if "at" in first:
                if "preview" in first:
                    for v in self.live_levels:
                        v.set_preview(*first["preview"])
                self._refresh_layer()
                self.first_tile_s = time.perf_counter() - pressed
            if "at" in first or job.finished:
                timer.stop()
                timer.deleteLater()

        timer.timeout.connect(tick)
        timer.start()
        self._first_timer = timer

    def cancel(self, *_: Any) -> bool:
        job = self.current_job()
        if job is None:
            show_info("No prediction to cancel")
            return False
        return job.cancel()

    def _show_store(self, image_layer: Any, out: Path, model: Any,
                    shape: tuple[int, ...]) -> list[LiveArray]:
        """Add (or reuse) the affinity layer now; it fills in as tiles finish. A large volume
        gets a multiscale layer (every level reads only the finished blocks it shows)."""
        from napari_tokenunify.engine.predict import model_offsets

        n_ch = len(model_offsets(model)) if model is not None else 3
        self._scale = tuple(float(v) for v in image_layer.scale[-3:])
        self._set_levels(self._make_levels(out, (n_ch, *shape)), image_layer)
        return self.live_levels

    def _make_levels(self, out: Path, shape: tuple[int, ...], dtype: Any = "float16") -> list[LiveArray]:
        first = LiveArray(Path(out), shape, dtype)
        if not is_large(shape, first.dtype):
            return [first]
        return store_pyramid(first, getattr(self, "_scale", None))

    def _set_levels(self, levels: list[LiveArray], image_layer: Any = None) -> None:
        """Show ``levels`` in the affinity layer (made, or remade when it changes between one
        level and several); the run's preview stays when it moves to another store."""
        old = getattr(self, "live_levels", None) or []
        if image_layer is None and old and old[0].preview is not None:
            for v in levels:
                v.preview = old[0].preview
        multiscale = len(levels) > 1
        data = store_layer_data(levels) if multiscale else levels[0]
        layer = self.layer
        if image_layer is not None:
            name = image_layer.name + AFFINITY_SUFFIX
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is not None and layer in self.viewer.layers and bool(layer.multiscale) != multiscale:
            self.viewer.layers.remove(layer)
            layer = None
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
        elif image_layer is not None or layer is None:
            src = image_layer if image_layer is not None else self._pending_layer[0]
            with kept_view(self.viewer):  # a 4D layer would reset the view: the user's stays
                layer = self.viewer.add_image(
                    data, name=src.name + AFFINITY_SUFFIX, contrast_limits=(0, 1),
                    colormap="magma", opacity=0.6, multiscale=multiscale,
                    scale=(1, *src.scale[-3:]), translate=(0, *src.translate[-3:]),
                )
        layer.metadata.setdefault("tokenunify", {}).update(kind="affinities", store=str(levels[0].path))
        self.layer, self.live, self.live_levels = layer, levels[0], levels

    def _refresh_layer(self) -> None:
        """Show what the store (and the preview) holds now."""
        if self.layer is not None and self.layer in self.viewer.layers:
            for v in self.live_levels:
                v.try_open()
            self.layer.refresh()

    def _follow_store(self) -> None:
        """Show the store the run really uses (another than chosen when that holds another run)."""
        out = (getattr(self, "_chosen", None) or {}).get("out")
        if out is None or self.live is None or Path(out) == self.live.path:
            return
        self._set_levels(self._make_levels(Path(out), self.live.base_shape, self.live.dtype))

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
        if chosen.get("note"):
            show_info(chosen["note"])
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return
        card = getattr(model, "card", None)
        layer.metadata.setdefault("tokenunify", {}).update(
            kind="affinities", store=str(self._pending_layer[1]),
            model=(getattr(card, "name", "") or getattr(card, "preset", "")) if card else type(model).__name__,
            threshold=card.recommended_threshold if card is not None else None,
            scoring=card.recommended_scoring if card is not None else "median",
            tta=chosen.get("tta", self.session.tta),
        )
        self.events.affinities_changed.emit(layer)

    def _on_progress(self, p) -> None:
        self._follow_store()
        self._refresh_layer()
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
                self._set_levels(self._make_levels(self._pending_layer[1], tuple(array.shape),
                                                   array.dtype))
            for v in self.live_levels:
                v.set_preview(None)  # the run is over: the store holds what it computed
            self._refresh_layer()
            layer = self.layer
        rs = getattr(self, "_info", {}).get("rescale")
        if layer is not None:
            layer.metadata.setdefault("tokenunify", {})["rescale"] = rs
        done = f"done: {self._pending_layer[1]}"
        self.status.value = done + (" (predicted at the model's voxel size)" if rs else "")
        note = _voxel_note(model, getattr(self, "_info", {}))
        if note:
            show_info(note)


@contextmanager
def kept_view(viewer: Any) -> Iterator[None]:
    """Keep the camera and the shown section through the block (adding a layer with more
    dimensions makes napari reset the view, so a second *current view* run would predict the
    whole section)."""
    cam = camera(viewer)
    center, zoom, point = tuple(cam.center), float(cam.zoom), tuple(viewer.dims.point)
    try:
        yield
    finally:
        offset = viewer.dims.ndim - len(point)
        for axis, value in enumerate(point):
            if offset + axis not in viewer.dims.displayed:
                viewer.dims.set_point(offset + axis, value)
        cam = camera(viewer)
        cam.center, cam.zoom = center, zoom


def view_centre(viewer: Any, layer: Any) -> tuple[float, float, float]:
    """The centre of the view in ``layer``'s data voxels (z, y, x): the shown section and the
    camera's centre, clipped into the volume (in 3D display, the camera's 3D centre)."""
    shape = tuple(int(s) for s in layer.data.shape[-3:])
    ndim = viewer.dims.ndim
    world = np.array(viewer.dims.point, dtype=float)
    displayed = list(viewer.dims.displayed)
    cam = camera(viewer).center[-len(displayed):]
    for d, axis in enumerate(displayed):
        world[axis] = cam[d]
    data = np.asarray(layer.world_to_data(world[ndim - layer.ndim:] if ndim > layer.ndim else world))
    return tuple(float(min(max(c, 0.0), s - 1e-3)) for c, s in zip(data[-3:], shape, strict=True))


def whole_volume_problem(model: Any, shape: tuple[int, ...], tile: Any, out: Path,
                         name: str) -> str | None:
    """Why the whole of a volume is not predicted from the viewer (``None``: it can be): its
    affinities (float16, before compression) would not fit in the free disk space at ``out``, or
    it needs more than ``MAX_VIEWER_TILES`` tiles."""
    from napari_tokenunify.engine.predict import model_offsets, plan_tiles
    from napari_tokenunify.engine.tiling import TileGrid

    n_vox = int(np.prod(shape, dtype=np.float64))
    need = len(model_offsets(model)) * n_vox * 2
    where = Path(out).parent
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    tile_shape, halo = plan_tiles(model, shape, tile)
    n_tiles = len(TileGrid(shape, tile_shape, halo))
    if need <= free and n_tiles <= MAX_VIEWER_TILES:
        return None
    size = "×".join(str(s) for s in shape)
    if need > free:
        reason = (f"its affinities need {need / 2**40:.1f} TiB on disk, {free / 2**30:.0f} GiB "
                  f"is free at {where}")
    else:
        reason = f"it needs {n_tiles:,} tiles (at most {MAX_VIEWER_TILES:,} from the viewer)"
    return (f"'{name}' ({size} voxels) is too large to predict whole from the viewer: {reason}; "
            "choose 'current view only' or 'region only', or run `tokenunify predict` "
            "(resumable, can run on a cluster)")


def viewer_limits(model: Any, shape: tuple[int, ...], tile: Any, out: Path, name: str,
                  scope: str, roi: Any, roi_only: bool, chosen: dict[str, Any]) -> bool:
    """What a run from the viewer may do (the new ``roi_only``): a whole large volume (see
    :func:`whole_volume_problem`) is refused for *whole volume* and cut to the view for *current
    view first* (the reason goes to ``chosen["note"]``); a view or region of more than
    ``MAX_VIEWER_TILES`` tiles is refused (``LayerError``)."""
    if roi is None or not roi_only:
        why = whole_volume_problem(model, shape, tile, out, name)
        if why and scope == "whole volume":
            raise LayerError(why)
        if why:
            roi_only, chosen["note"] = True, why.split(": choose")[0] + ": predicted the view only"
    if roi is not None and roi_only:
        n_tiles = tiles_in_box(model, shape, tile, roi)
        if n_tiles > MAX_VIEWER_TILES:
            where = "view" if scope in VIEW_SCOPES else "region"
            raise LayerError(
                f"the {where} of '{name}' needs {n_tiles:,} tiles (at most {MAX_VIEWER_TILES:,} "
                "from the viewer): zoom in or choose a smaller region, or run `tokenunify predict`")
    return roi_only


def tiles_in_box(model: Any, shape: tuple[int, ...], tile: Any,
                 box: tuple[tuple[int, int], ...]) -> int:
    """How many tiles of the prediction grid meet ``box`` (counted from index ranges)."""
    from napari_tokenunify.engine.predict import plan_tiles
    from napari_tokenunify.engine.tiling import TileGrid

    tile_shape, halo = plan_tiles(model, shape, tile)
    grid = TileGrid(shape, tile_shape, halo)
    n = 1
    for (a, b), c, g in zip(box, grid.core_shape, grid.grid_shape, strict=True):
        n *= max(0, min(g, -(-int(b) // c)) - max(0, int(a) // c))
    return n


def _rescales(model: Any, voxel: Any, shape: tuple[int, ...], rescale: bool) -> bool:
    """Whether a run resamples to the model's voxel size (its first tile then shows only after
    every tile in view is predicted and mapped back, so a preview comes first)."""
    from napari_tokenunify.engine.predict import card_voxel_size
    from napari_tokenunify.engine.resample import plan_rescale

    return plan_rescale(card_voxel_size(model), voxel, shape, rescale) is not None


def _complete_store(out: Path) -> bool:
    """Whether ``out`` holds a finished store (then it is reused or kept: no preview needed)."""
    try:
        import zarr

        return bool(zarr.open_group(str(out), mode="r").attrs.get("complete"))
    except Exception:  # noqa: BLE001 - none there yet
        return False


def preview_box(model: Any, shape: tuple[int, ...], point: tuple[float, ...], tile: Any,
                factors: tuple[float, ...] | None = None) -> tuple[tuple[int, int], ...]:
    """The box (data voxels) of the one tile under ``point``: the core of the prediction
    grid's block holding it, or on the model's grid (``factors``: model voxels per data voxel)
    a box of one core's size around it."""
    from napari_tokenunify.engine.predict import plan_tiles
    from napari_tokenunify.engine.tiling import TileGrid

    if factors is None:
        tile_shape, halo = plan_tiles(model, shape, tile)
        grid = TileGrid(shape, tile_shape, halo)
        return grid.block(grid.index_of(point)).core
    m_shape = tuple(max(1, int(round(s * f))) for s, f in zip(shape, factors, strict=True))
    tile_shape, halo = plan_tiles(model, m_shape, tile)
    core = TileGrid(m_shape, tile_shape, halo).core_shape
    box = []
    for p, c, f, n in zip(point, core, factors, shape, strict=True):
        size = max(1, min(n, int(c / f)))
        a = min(max(int(p) - size // 2, 0), n - size)
        box.append((a, a + size))
    return tuple(box)


def preview_tile(image: Any, model: Any, point: tuple[float, ...], *, tile: Any = None,
                 device: Any = "auto", voxel_size: Any = None, rescale: bool = True,
                 cancel: Any = None) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """The tile under ``point`` predicted at the card's cheapest setting (no test-time flips),
    in memory: (box, affinities) for :meth:`StoreView.set_preview`."""
    from napari_tokenunify.engine.predict import TilePredictor, card_voxel_size, predict_affinities
    from napari_tokenunify.engine.resample import plan_rescale

    shape = tuple(int(s) for s in image.shape)
    plan = plan_rescale(card_voxel_size(model), voxel_size, shape, rescale)
    box = preview_box(model, shape, point, tile, plan.factors if plan is not None else None)
    predictor = TilePredictor(model, device=device, tta="none")
    limit_torch_threads()  # the predictor set all cores; leave one to the GUI
    # the run itself warns about the voxel size and resampling; said once is enough (the filter
    # is process-wide for the ~1 s of the preview)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        affs = predict_affinities(image, model, out=None, crop=box, tile_shape=tile,
                                  predictor=predictor, voxel_size=voxel_size, rescale=rescale,
                                  cancel=cancel)
    return box, np.asarray(affs, dtype=np.float16)


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


"""Tiled affinity prediction: any volume size, resumable, cancellable, batched, any device.

The engine relies only on the model being a ``torch.nn.Module`` mapping (B, 1, Z, Y, X) in [0, 1]
to (B, C, Z, Y, X) affinities, optionally with ``card`` (patch_size, offsets, normalization,
voxel_size_nm), ``valid_shape(shape)`` and ``input_divisor``.
"""

from __future__ import annotations

import itertools
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..affinities import NEAREST_OFFSETS
from ..devices import configure_cpu_threads, resolve_device
from ..progress import CancelToken, ProgressCallback, ProgressReporter, check_cancel
from .normalize import IntensityRange, check_finite, intensity_range
from .resample import (
    RESCALE_TOLERANCE,
    ResampledView,
    Rescale,
    map_back_chunk,
    plan_rescale,
    source_box,
    validate_voxel_size,
)
from .store import BlockStore, is_store
from .tiling import Block, Box, TileGrid, boxes_intersect, check_box, order_blocks, read_padded

DEFAULT_PATCH = (32, 128, 128)
OUT_DTYPES = ("float32", "float16", "uint8")
ARRAY_NAME = "affinities"
#: inside a rescaled prediction's store: the affinities on the model's grid (removed when done)
MODEL_GRID = "model_grid"


class RescaleWarning(UserWarning):
    """Prediction resamples the input to the model's voxel size (see ``engine.resample``)."""


# ---- what the engine needs to know about a model ---------------------------------------------
def model_card(model) -> Any:
    return getattr(model, "card", None)


def model_offsets(model) -> tuple[tuple[int, int, int], ...]:
    offsets = getattr(model_card(model), "offsets", None) or NEAREST_OFFSETS
    return tuple(tuple(int(v) for v in o) for o in offsets)


def valid_shape(model, shape: Sequence[int]) -> tuple[int, int, int]:
    """Round ``shape`` up to one the model accepts (``model.valid_shape`` or ``input_divisor``)."""
    fn = getattr(model, "valid_shape", None)
    if callable(fn):
        return tuple(int(s) for s in fn(tuple(int(s) for s in shape)))
    div = getattr(model, "input_divisor", 1) or 1
    divs = (div,) * 3 if isinstance(div, int) else tuple(div)
    return tuple(-(-int(s) // d) * d for s, d in zip(shape, divs, strict=False))


def default_halo(tile_shape: Sequence[int]) -> tuple[int, int, int]:
    """1/16 of the tile per side (at least 1 voxel): ~82% of each tile is kept, so a volume
    needs ~1.5× fewer tiles than a sliding window with 25% overlap."""
    return tuple(max(1, int(t) // 16) for t in tile_shape)


def plan_tiles(
    model, shape: Sequence[int], tile_shape: Sequence[int] | None = None,
    halo: Sequence[int] | int | None = None,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Tile and halo for a region of ``shape``: the card's patch size (shrunk for small volumes,
    so a 2D section is not predicted as 32 copies), made valid for the model."""
    card = model_card(model)
    if tile_shape is None:
        tile_shape = tuple(getattr(card, "patch_size", None) or DEFAULT_PATCH)
    tile_shape = tuple(int(t) for t in tile_shape)
    if len(tile_shape) != 3 or min(tile_shape) < 1:
        raise ValueError(f"tile_shape must be three positive sizes (z, y, x), got {tile_shape}")
    if halo is None:
        halo = default_halo(tile_shape)
    elif isinstance(halo, int):
        halo = (halo,) * 3
    halo = tuple(int(h) for h in halo)
    tile = valid_shape(model, [min(t, s + 2 * h) for t, s, h in zip(tile_shape, shape, halo, strict=False)])
    tile = tuple(max(t, 2 * h + 1) for t, h in zip(tile, halo, strict=False))
    tile = valid_shape(model, tile)
    return tile, halo


def card_voxel_size(model) -> tuple[float, ...] | None:
    """The voxel size (z, y, x) nm the model's card says it was trained at, or ``None``."""
    vs = getattr(model_card(model), "voxel_size_nm", None)
    return tuple(float(v) for v in vs) if vs is not None else None


def voxel_size_mismatch(model, voxel_size: Sequence[float] | None,
                        tolerance: float = RESCALE_TOLERANCE) -> str | None:
    """What :func:`check_voxel_size` warns about (``None`` when the sizes agree or are unknown)."""
    card_vs = card_voxel_size(model)
    if voxel_size is None or card_vs is None:
        return None
    data = np.asarray(voxel_size, dtype=float)
    want = np.asarray(card_vs, dtype=float)
    if data.shape != want.shape or np.any(want <= 0):
        return None
    if np.all(np.abs(data / want - 1.0) <= tolerance):
        return None
    return (
        f"the data's voxel size {tuple(float(v) for v in data)} nm differs from the model's "
        f"{tuple(float(v) for v in want)} nm; results may be poor — rescale the data or use a "
        "model trained at this resolution (prediction resamples to the model's voxel "
        "size unless rescale=False / --no-rescale)"
    )


def check_voxel_size(model, voxel_size: Sequence[float] | None,
                     tolerance: float = RESCALE_TOLERANCE) -> str | None:
    """Warn (and return the message) when the data's voxel size differs from the card's (the
    prediction is then not resampled: ``rescale=False``)."""
    msg = voxel_size_mismatch(model, voxel_size, tolerance)
    if msg is not None:
        warnings.warn(msg, UserWarning, stacklevel=3)
    return msg


def affinity_store_attrs(offsets, voxel_size, dtype: str, crop, **extra) -> dict:
    """The attributes an affinity store carries (what readers and Segment need to use it)."""
    return {"offsets": [list(o) for o in offsets], "kind": "affinities",
            "tokenunify": {"kind": "affinities"},
            "voxel_size": list(voxel_size) if voxel_size is not None else None,
            "scale": 1 / 255 if dtype == "uint8" else 1.0,
            "crop_origin": [a for a, _ in crop], **extra}


def _is_oom(err: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


class TilePredictor:
    """Runs the model on batches of tiles: normalisation, device, autocast and OOM back-off;
    ``tta`` ("none", "yx", "zyx") averages each tile over its mirror images (see ``engine.tta``)."""

    def __init__(
        self, model: torch.nn.Module, *, device: str | torch.device = "auto",
        batch_size: int | None = None, autocast: bool = True, tta: str = "none",
    ) -> None:
        from .tta import check_tta

        self.offsets = model_offsets(model)
        check_tta(tta, self.offsets)
        self.tta = tta
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            configure_cpu_threads()
        self.model = model.to(self.device).eval()
        if batch_size is None:
            batch_size = 4 if self.device.type == "cuda" else 1
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.autocast = autocast and self.device.type == "cuda" and getattr(
            model, "supports_autocast", True
        )

    def _autocast_ctx(self):
        if not self.autocast:
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _affinities(self, x: torch.Tensor) -> torch.Tensor:
        """The model's first ``len(offsets)`` channels: any after them are training-only outputs
        (e.g. local shape descriptors, ``training.lsd``), not affinities."""
        return self.model(x)[:, : len(self.offsets)]

    def _forward(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles[:, None])).to(self.device)
        with torch.inference_mode(), self._autocast_ctx():
            if self.tta == "none":
                y = self._affinities(x)
            else:
                from .tta import flip_average

                y = flip_average(self._affinities, x, self.offsets, self.tta)
        return y.float().cpu().numpy()

    def predict(self, tiles: np.ndarray, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Affinities (N, C, Z, Y, X) for normalised tiles (N, Z, Y, X); a CUDA out-of-memory
        halves the batch and retries (kept smaller for the rest of the run)."""
        outputs = []
        i = 0
        while i < len(tiles):
            n = min(self.batch_size, len(tiles) - i)
            try:
                outputs.append(self._forward(tiles[i : i + n]))
            except Exception as err:  # noqa: BLE001 - only OOM is handled
                if not _is_oom(err) or n == 1:
                    raise
                self.batch_size = max(1, n // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(
                    f"out of memory with a batch of {n} tiles; retrying with {self.batch_size}",
                    RuntimeWarning, stacklevel=2,
                )
                continue
            i += n
            if on_batch is not None:
                on_batch(n)
        return np.concatenate(outputs, axis=0)


def resolve_tta(tta: str | None, predictor: TilePredictor | None) -> str:
    """The test-time augmentation of a run: the predictor's, or ``tta`` (default "none")."""
    if predictor is None:
        return "none" if tta is None else tta
    if tta is not None and tta != predictor.tta:
        raise ValueError(f"tta={tta!r} differs from the given predictor's {predictor.tta!r}")
    return predictor.tta


def _to_out_dtype(pred: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.rint(np.clip(pred, 0.0, 1.0) * 255.0).astype(np.uint8)
    return pred.astype(dtype)


def _zero_outside(pred: np.ndarray, block: Block, offsets, volume_box: Box) -> np.ndarray:
    """Affinities whose neighbour lies outside the volume are 0 (the shared convention)."""
    for c, off in enumerate(offsets):
        for axis, o in enumerate(off):
            start = block.core[axis][0]
            lo = volume_box[axis][0]
            if o > 0 and start - lo < o:
                sl = [slice(None)] * 3
                sl[axis] = slice(0, o - (start - lo))
                pred[c][tuple(sl)] = 0
    return pred


class BlockRunner:
    """Predicts whole blocks of one image: reads tiles with context, keeps the cores."""

    def __init__(self, image, predictor: TilePredictor, grid: TileGrid, norm: IntensityRange,
                 offsets, out_dtype: str, volume_box: Box) -> None:
        self.image = image
        self.predictor = predictor
        self.grid = grid
        self.norm = norm
        self.offsets = offsets
        self.out_dtype = out_dtype
        self.volume_box = volume_box

    def read(self, blocks: Sequence[Block]) -> np.ndarray:
        """Normalised input tiles (N, Z, Y, X) of ``blocks``."""
        tiles = []
        for b in blocks:
            raw = read_padded(self.image, b.tile)
            check_finite(raw, f"the input block at {b.core}")
            tiles.append(self.norm.apply(raw))
        return np.stack(tiles)

    def run(self, blocks: Sequence[Block], tiles: np.ndarray | None = None) -> list[np.ndarray]:
        """Output cores of ``blocks`` (``tiles`` when already read)."""
        preds = self.predictor.predict(self.read(blocks) if tiles is None else tiles)
        results = []
        for b, p in zip(blocks, preds, strict=False):
            core = p[(slice(None),) + b.core_in_tile()]
            core = _zero_outside(np.array(core), b, self.offsets, self.volume_box)
            results.append(_to_out_dtype(core, self.out_dtype))
        return results


def as_3d(image):
    """(y, x) sections become (1, y, x); anything but 2D/3D is refused."""
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise ValueError(
            f"the image must be 3D (z, y, x) or a 2D section (y, x), got shape {tuple(image.shape)}; "
            "pick one channel / time point first"
        )
    if min(image.shape) < 1:
        raise ValueError(f"the image is empty: shape {tuple(image.shape)}")
    return image


def model_id(model) -> str:
    """What a store records as the model that predicted it: its card (JSON) or its class name."""
    card = model_card(model)
    if card is not None and hasattr(card, "to_json"):
        try:
            return card.to_json()
        except Exception:  # noqa: BLE001 - an odd card still gets a run, only without an id
            pass
    return type(model).__name__


def predicted_with(store_path, model) -> bool | None:
    """Whether the affinity store at ``store_path`` was predicted by ``model`` (the
    :func:`model_id` it records, whatever the flips); ``None`` when the path is no store of ours
    or records no model."""
    try:
        import zarr

        settings = zarr.open_group(str(store_path), mode="r").attrs.get("settings") or {}
    except Exception:  # noqa: BLE001 - not a zarr group: nothing recorded
        return None
    if "model" not in settings:
        return None
    return settings["model"] == model_id(model)


def prediction_settings(model, shape, tile, halo, crop, dtype, norm, tta: str = "none") -> dict[str, Any]:
    n_params = int(sum(p.numel() for p in model.parameters()))
    return {
        "input_shape": list(shape), "tile_shape": list(tile), "halo": list(halo),
        "crop": [list(c) for c in crop], "dtype": dtype, "offsets": [list(o) for o in model_offsets(model)],
        "intensity": [norm.low, norm.high], "model": model_id(model),
        "n_parameters": n_params,
        # only when used, so stores written before test-time flips existed still resume
        **({"tta": tta} if tta != "none" else {}),
    }


@dataclass
class PredictionPlan:
    """Everything decided before the first tile: grid, blocks still to do, output target."""

    grid: TileGrid
    blocks: list[Block]
    todo: list[Block]
    norm: IntensityRange
    offsets: tuple[tuple[int, int, int], ...]
    dtype: str
    volume_box: Box
    target: Any
    store: BlockStore | None

    def write(self, block: Block, result: np.ndarray) -> None:
        origin = self.grid.origin
        rel = tuple(slice(a - o, z - o) for (a, z), o in zip(block.core, origin, strict=False))
        self.target[(slice(None),) + rel] = result
        if self.store is not None:
            self.store.mark_done(block.index)

    def finish(self):
        if self.store is not None:
            if len(self.store.done_indices()) == len(self.grid):
                self.store.finish()
            return self.store.array
        return self.target


def plan_prediction(
    image, model, *, out=None, tile_shape=None, halo=None, dtype="float16", roi=None,
    roi_only=False, crop=None, voxel_size=None, overwrite=False, tta="none",
    norm: IntensityRange | None = None, first_point: Sequence[float] | None = None,
) -> PredictionPlan:
    """Check the inputs, lay out the tiles and open (or resume) the output (``norm``: the
    intensity range, when decided already; else from the image and the card; ``first_point``:
    the block holding it goes first, see ``predict_affinities``)."""
    if dtype not in OUT_DTYPES:
        raise ValueError(f"dtype must be one of {OUT_DTYPES}, got {dtype!r}")
    shape = tuple(int(s) for s in image.shape)
    crop = check_box(crop, shape) if crop is not None else tuple((0, s) for s in shape)
    region = tuple(b - a for a, b in crop)
    if roi is not None:
        roi = check_box(roi, shape)
    check_voxel_size(model, voxel_size)
    offsets = model_offsets(model)
    tile, halo = plan_tiles(model, region, tile_shape, halo)
    grid = TileGrid(region, tile, halo, origin=tuple(a for a, _ in crop),
                    bounds=tuple((0, s) for s in shape))
    if norm is None:
        norm = intensity_range(image, getattr(model_card(model), "normalization", None))
    n_ch = len(offsets)
    if roi is not None and roi_only:  # only the blocks in view are listed (a large volume has millions)
        blocks = order_blocks(grid.blocks_meeting(roi), roi, first_point)
    else:
        blocks = order_blocks(grid.blocks(), roi, first_point)
    store = None
    if out is not None:
        settings = prediction_settings(model, shape, tile, halo, crop, dtype, norm, tta)
        store = BlockStore.create(
            out, ARRAY_NAME, shape=(n_ch,) + region, chunks=(n_ch,) + grid.core_shape,
            dtype=dtype, grid_shape=grid.grid_shape, settings=settings, overwrite=overwrite,
            attrs=affinity_store_attrs(offsets, voxel_size, dtype, crop),
        )
        done = store.done_indices()
        target = store.array
    else:
        done = set()
        target = np.zeros((n_ch,) + region, dtype=dtype)
    todo = [b for b in blocks if b.index not in done]
    return PredictionPlan(grid, blocks, todo, norm, offsets, dtype,
                          tuple((0, s) for s in shape), target, store)


def predict_affinities(
    image,
    model: torch.nn.Module,
    *,
    out: str | Path | None = None,
    tile_shape: Sequence[int] | None = None,
    halo: Sequence[int] | int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    dtype: str = "float16",
    roi: Box | None = None,
    roi_only: bool = False,
    crop: Box | None = None,
    voxel_size: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    predictor: TilePredictor | None = None,
    tta: str | None = None,
    rescale: bool = True,
    info: dict[str, Any] | None = None,
    first_point: Sequence[float] | None = None,
):
    """Predict affinities (C, Z, Y, X) for ``image`` (z, y, x) tile by tile.

    - ``out``: a ``.zarr`` path to write block by block (returns the zarr array; an unfinished
      store made with the same settings is resumed, skipping its completed blocks) or ``None``
      to return a numpy array.
    - ``dtype``: "float16", "float32" or "uint8" (affinity × 255, rounded).
    - ``roi``: a box (z, y, x) predicted first (nearest its centre first); with ``roi_only`` the
      rest is left for a later call; ``first_point`` (z, y, x voxels, e.g. the centre of the
      view) puts the block holding it first. ``crop``: predict only this box (the output has its shape,
      the context around it is still read from the image).
    - a 2D image is predicted as a single section: the output is (C, 1, Y, X).
    - ``cancel`` is checked before every batch of tiles (one tile on CPU by default).
    - ``tta``: "none" (default), "yx" or "zyx": average each tile over its 4 or 8 mirror images
      (4 or 8 times the compute; a given ``predictor`` carries its own).
    - ``voxel_size``: the data's (z, y, x) nm (zero, negative, non-finite or > 10 000 nm raise
      ``ValueError``). With ``rescale`` (default) and a card whose ``voxel_size_nm`` differs by
      more than 15 % on an axis, the input is resampled lazily to the model's grid, predicted
      there (``tile_shape`` is then in model-grid voxels) and the affinities are mapped back to
      the data's grid (same shape as without), with a :class:`RescaleWarning`; the store's
      attributes and settings record it under ``rescale`` (see ``engine.resample``).
    - ``info``: a dict to fill with what the run did: ``info["rescale"]`` is ``None`` or the
      resampling record.
    """
    image = as_3d(image)
    tta = resolve_tta(tta, predictor)
    if dtype not in OUT_DTYPES:
        raise ValueError(f"dtype must be one of {OUT_DTYPES}, got {dtype!r}")
    plan_rs = plan_rescale(card_voxel_size(model), voxel_size, image.shape, rescale)
    if info is not None:
        info["rescale"] = plan_rs.to_dict() if plan_rs is not None else None

    def on_grid(img, **kw):
        nonlocal predictor
        plan = plan_prediction(img, model, tta=tta, **kw)
        if predictor is None:
            predictor = TilePredictor(model, device=device, batch_size=batch_size, tta=tta)
        return run_plan(img, plan, predictor, progress=progress, cancel=cancel)

    common = dict(out=out, tile_shape=tile_shape, halo=halo, dtype=dtype, roi=roi,
                  roi_only=roi_only, crop=crop, overwrite=overwrite, first_point=first_point)
    if plan_rs is None:
        return on_grid(image, voxel_size=validate_voxel_size(voxel_size), **common)
    return predict_rescaled(image, model, plan_rs, on_grid, tta=tta, progress=progress,
                            cancel=cancel, **common)


def run_plan(image, plan: PredictionPlan, predictor: TilePredictor, *,
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
    """Predict the blocks a plan still has to do, in this process, and finish it."""
    runner = BlockRunner(image, predictor, plan.grid, plan.norm, plan.offsets, plan.dtype,
                         plan.volume_box)
    reporter = ProgressReporter(len(plan.blocks), progress, "predicting affinities", "voxels/s")
    skipped = len(plan.blocks) - len(plan.todo)
    if skipped:
        reporter.advance(skipped, 0.0, skipped=skipped)
    todo = plan.todo
    # the next batch is read (and normalised) in a thread while the model runs on this one
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-reader") as reader:
        i = 0
        batch = todo[: predictor.batch_size]
        pending = reader.submit(runner.read, batch) if batch else None
        while i < len(todo):
            check_cancel(cancel)
            tiles = pending.result()
            i += len(batch)
            upcoming = todo[i : i + predictor.batch_size]
            pending = reader.submit(runner.read, upcoming) if upcoming else None
            for b, res in zip(batch, runner.run(batch, tiles), strict=True):
                plan.write(b, res)
            reporter.advance(len(batch), float(sum(b.n_core_voxels for b in batch)))
            batch = upcoming
    return plan.finish()


# ---- prediction at the model's voxel size (engine.resample) ---------------------------------
#: data-grid chunks of a rescaled output, before shrinking by the upsampling factor
MAP_BACK_CHUNK = (32, 128, 128)


def _map_back_chunks(region: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """Output chunks whose model-grid source stays near ``MAP_BACK_CHUNK`` voxels."""
    return tuple(max(1, min(int(r), int(c / max(f, 1.0))))
                 for r, c, f in zip(region, MAP_BACK_CHUNK, factors, strict=True))


def _bounding_box(boxes: Sequence[Box]) -> Box:
    return tuple((min(b[k][0] for b in boxes), max(b[k][1] for b in boxes)) for k in range(3))


def map_back_task(blocks: Sequence[Block], *, source, source_origin, factors, model_shape,
                  offsets, dtype, target, done, origin) -> int:
    """One task: map the model-grid affinities of ``blocks`` (data-grid chunks) back and write
    them (and their done records, when ``done`` is a store's) into ``target``."""
    for b in blocks:
        res = map_back_chunk(b.core, source=source, source_origin=source_origin,
                             plan_factors=factors, model_shape=model_shape, offsets=offsets)
        rel = tuple(slice(a - o, z - o) for (a, z), o in zip(b.core, origin, strict=True))
        target[(slice(None),) + rel] = _to_out_dtype(res, dtype)
        if done is not None:
            done[b.index] = 1
    return int(sum(b.n_core_voxels for b in blocks))


def predict_rescaled(
    image, model, plan_rs: Rescale, on_grid: Callable[..., Any], *, out=None, tile_shape=None,
    halo=None, dtype="float16", roi=None, roi_only=False, crop=None, overwrite=False,
    tta="none", progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
    client=None, first_point: Sequence[float] | None = None,
):
    """Predict ``image`` on the model's grid through ``on_grid(view, **plan_kwargs)`` (which plans
    and runs the model-grid prediction, here or on a cluster) and map the affinities back to the
    data's grid chunk by chunk (on ``client`` when given). With ``out`` the model-grid affinities
    are kept in ``out/model_grid`` until the end, so a cancelled run resumes both stages."""
    from .executor import run_tasks

    if dtype not in OUT_DTYPES:
        raise ValueError(f"dtype must be one of {OUT_DTYPES}, got {dtype!r}")
    shape = tuple(int(s) for s in image.shape)
    crop = check_box(crop, shape) if crop is not None else tuple((0, s) for s in shape)
    region = tuple(b - a for a, b in crop)
    roi = check_box(roi, shape) if roi is not None else None
    warnings.warn(plan_rs.message(), RescaleWarning, stacklevel=3)
    factors, m_shape = plan_rs.factors, plan_rs.model_shape
    offsets = model_offsets(model)
    n_ch = len(offsets)
    norm = intensity_range(image, getattr(model_card(model), "normalization", None))
    chunk = _map_back_chunks(region, factors)
    cgrid = tuple(-(-r // c) for r, c in zip(region, chunk, strict=True))
    index_ranges = [range(n) for n in cgrid]
    if roi is not None and roi_only:  # only the chunks in view are listed
        index_ranges = [range(max(0, (r0 - a) // c), min(n, -(-(r1 - a) // c)))
                        for (r0, r1), (a, _), c, n in zip(roi, crop, chunk, cgrid, strict=True)]
    chunks = [
        Block(ix, box, box)
        for ix in itertools.product(*index_ranges)
        for box in [tuple((a + i * c, min(a + (i + 1) * c, b))
                          for i, c, (a, b) in zip(ix, chunk, crop, strict=True))]
    ]
    chunks = order_blocks(chunks, roi, first_point)
    if roi is not None and roi_only:
        chunks = [b for b in chunks if boxes_intersect(b.core, roi)]
    crop_m = source_box(crop, factors, m_shape)
    roi_m = None
    if roi is not None:
        roi_m = source_box(_bounding_box([b.core for b in chunks]) if roi_only else roi,
                           factors, m_shape)
    grid_dtype = "float32" if dtype == "float32" else "float16"
    tile, halo_m = plan_tiles(model, tuple(b - a for a, b in crop_m), tile_shape, halo)
    store = None
    if out is not None:
        settings = prediction_settings(model, shape, tile, halo_m, crop, dtype, norm, tta)
        settings["rescale"] = plan_rs.to_dict()
        store = BlockStore.create(
            out, ARRAY_NAME, shape=(n_ch,) + region, chunks=(n_ch,) + chunk, dtype=dtype,
            grid_shape=cgrid, settings=settings, overwrite=overwrite,
            attrs=affinity_store_attrs(offsets, plan_rs.data_voxel_size, dtype, crop,
                                       rescale=plan_rs.to_dict()),
        )
        done = store.done_indices()
        target = store.array
    else:
        done = set()
        target = np.zeros((n_ch,) + region, dtype=dtype)
    todo = [b for b in chunks if b.index not in done]
    if todo:
        point_m = None
        if first_point is not None:  # the same point on the model's grid
            near = tuple((int(p), int(p) + 1) for p in first_point)
            point_m = tuple((a + b) / 2 for a, b in source_box(near, factors, m_shape))
        grid_kw = dict(tile_shape=tile_shape, halo=halo, dtype=grid_dtype, roi=roi_m,
                       roi_only=roi_only, crop=crop_m, voxel_size=plan_rs.model_voxel_size,
                       norm=norm, first_point=point_m)
        view = ResampledView(image, factors)
        if out is None:
            source = on_grid(view, out=None, overwrite=False, **grid_kw)
        else:
            grid_out = Path(out) / MODEL_GRID
            if is_store(grid_out, ARRAY_NAME) and BlockStore.open(grid_out, ARRAY_NAME, "r").complete:
                source = BlockStore.open(grid_out, ARRAY_NAME, "r").array
            else:
                source = on_grid(view, out=grid_out, overwrite=False, **grid_kw)
        n = 1 if client is None else 4
        run_tasks(
            map_back_task, [todo[i : i + n] for i in range(0, len(todo), n)], client=client,
            progress=progress, cancel=cancel, message="mapping affinities to the data's grid",
            rate_unit="voxels/s", amount=lambda bs: sum(b.n_core_voxels for b in bs),
            source=source, source_origin=tuple(a for a, _ in crop_m), factors=factors,
            model_shape=m_shape, offsets=offsets, dtype=dtype, target=target,
            done=store.done if store is not None else None, origin=tuple(a for a, _ in crop),
        )
    if store is None:
        return target
    if len(store.done_indices()) == int(np.prod(cgrid)):
        store.finish()
        shutil.rmtree(Path(out) / MODEL_GRID, ignore_errors=True)
    return store.array

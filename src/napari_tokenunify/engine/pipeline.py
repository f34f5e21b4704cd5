"""Predict + segment in one call, with the time spent in each stage."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import CancelToken, ProgressCallback, check_cancel
from .agglomerate import DEFAULT_THRESHOLD, Agglomerator, mutex_watershed
from .blockwise import segment_blockwise
from .cleanup import cleanup
from .fragments import as_float_affinities, check_affinities, fragments_from_affinities
from .predict import predict_affinities


@dataclass
class SegmentResult:
    """Labels plus the seconds spent per stage (``fragments``, ``agglomeration``, ...)."""

    labels: Any
    timings: dict[str, float] = field(default_factory=dict)
    agglomerator: Agglomerator | None = None


def segment(
    affinities,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "waterz",
    scoring: str | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
    blockwise: bool = False,
    block_shape: Sequence[int] = (64, 256, 256),
    context: Sequence[int] | int = (8, 32, 32),
    anisotropic: bool | None = None,
    voxel_size: Sequence[float] | None = None,
    min_size: int = 0,
    fill_holes: bool = False,
    keep_history: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
    client=None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SegmentResult:
    """Labels from affinities: in memory (waterz or mutex watershed) or ``blockwise`` (waterz;
    into the Zarr ``out`` when given). ``scoring``: waterz's merge score, "median" (the default),
    "mean" or an expression; a model card names the one its threshold was chosen with
    (``ModelCard.recommended_scoring``). Cleanup (``min_size``, ``fill_holes``) runs in memory.
    ``keep_history`` agglomerates up to threshold 1 so that ``result.agglomerator.segment(t)``
    answers any threshold (slower); otherwise only up to ``threshold``."""
    timings: dict[str, float] = {}
    check_affinities(affinities, offsets if method == "mutex" else None)
    if blockwise:
        if method != "waterz":
            raise ValueError("blockwise segmentation supports method='waterz' only")
        if min_size or fill_holes:
            raise ValueError("cleanup (min size, fill holes) is not available blockwise; run it "
                             "on the result in memory or leave it off")
        t0 = time.perf_counter()
        labels = segment_blockwise(
            affinities, out, block_shape=block_shape, context=context, threshold=threshold,
            scoring=scoring, anisotropic=anisotropic, voxel_size=voxel_size, overwrite=overwrite, client=client,
            progress=progress, cancel=cancel,
        )
        timings["blockwise"] = time.perf_counter() - t0
        return SegmentResult(labels, timings)
    check_cancel(cancel)
    affs = as_float_affinities(affinities)
    agg = None
    if method == "mutex":
        t0 = time.perf_counter()
        labels = mutex_watershed(affs, offsets)
        timings["mutex_watershed"] = time.perf_counter() - t0
    elif method == "waterz":
        t0 = time.perf_counter()
        frags = fragments_from_affinities(affs, anisotropic=anisotropic, voxel_size=voxel_size)
        timings["fragments"] = time.perf_counter() - t0
        check_cancel(cancel)
        t0 = time.perf_counter()
        agg = Agglomerator(affs, frags, scoring=scoring,
                           max_threshold=1.0 if keep_history else threshold)
        labels = agg.segment(threshold)
        timings["agglomeration"] = time.perf_counter() - t0
    else:
        raise ValueError(f"unknown segmentation method {method!r}; use 'waterz' or 'mutex'")
    if min_size or fill_holes:
        t0 = time.perf_counter()
        labels = cleanup(labels, min_size=min_size, fill=fill_holes)
        timings["cleanup"] = time.perf_counter() - t0
    return SegmentResult(labels, timings, agg)


@dataclass
class PipelineResult:
    labels: Any
    affinities: Any
    timings: dict[str, float]


def run_pipeline(
    image,
    model,
    *,
    affinities_out: str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    device: str = "auto",
    tile_shape: Sequence[int] | None = None,
    halo: Sequence[int] | int | None = None,
    dtype: str = "float16",
    voxel_size: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    tta: str = "none",
    rescale: bool = True,
    **segment_kwargs: Any,
) -> PipelineResult:
    """Predict affinities (into ``affinities_out`` when given, resumable; ``tta`` and
    ``rescale``, to the model's voxel size, as in ``predict_affinities``) and segment them."""
    t0 = time.perf_counter()
    affs = predict_affinities(
        image, model, out=affinities_out, tile_shape=tile_shape, halo=halo, device=device,
        dtype=dtype, voxel_size=voxel_size, overwrite=overwrite, progress=progress, cancel=cancel,
        tta=tta, rescale=rescale,
    )
    timings = {"prediction": time.perf_counter() - t0}
    result = segment(affs, threshold=threshold, voxel_size=voxel_size, progress=progress,
                     cancel=cancel, **segment_kwargs)
    timings.update(result.timings)
    return PipelineResult(result.labels, affs, timings)


"""Scale-out on dask.distributed: an existing scheduler or a LocalCluster.

Workers get only small task arguments: block boxes, the input file's path, the model's path
and zarr array handles (which pickle as a store path). Each worker process loads the model once
(cached per process) and reads its tiles from the input file and writes its cores and
completion records straight into the shared Zarr store.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..progress import CancelToken, ProgressCallback
from .executor import run_tasks
from .predict import BlockRunner, TilePredictor, as_3d, plan_prediction
from .tiling import Block

_CACHE: dict[Any, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class VolumeRef:
    """How a worker opens the input: a file path (+ dataset / channel) for ``io.open_volume``."""

    path: str
    dataset: str | None = None
    channel: int | None = None
    #: set for a prediction at the model's voxel size: the input is seen through a
    #: :class:`~napari_tokenunify.engine.resample.ResampledView` with these factors
    factors: tuple[float, float, float] | None = None

    def open(self):
        from ..io import open_volume

        data = as_3d(open_volume(self.path, dataset=self.dataset, channel=self.channel,
                                 allow_2d=True).data)
        if self.factors is not None:
            from .resample import ResampledView

            return ResampledView(data, self.factors)
        return data


def get_client(scheduler: str | None = None, workers: int | None = None, *,
               threads_per_worker: int = 1, processes: bool = True):
    """A dask.distributed ``Client``: connected to ``scheduler`` (an address such as
    ``tcp://host:8786`` or a scheduler file ending in .json), or a new LocalCluster of ``workers``
    processes. Returns ``None`` when neither is given (run in this process)."""
    if scheduler is None and not workers:
        return None
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if scheduler.endswith(".json"):
            return Client(scheduler_file=scheduler)
        return Client(scheduler)
    if int(workers) < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=threads_per_worker,
                           processes=processes, dashboard_address=None)
    return Client(cluster)


def close_client(client) -> None:
    """Close a client and, when it owns one, its LocalCluster."""
    if client is None:
        return
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _cached(key, make):
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def _worker_predictor(model_source: str, device: str, tile_batch: int | None,
                      tta: str = "none") -> TilePredictor:
    def make():
        from ..model import load_model

        return TilePredictor(load_model(model_source, device="cpu"), device=device,
                             batch_size=tile_batch, tta=tta)

    return _cached(("model", model_source, device, tile_batch, tta), make)


def predict_blocks_task(blocks: Sequence[Block], *, image: VolumeRef, model_source: str,
                        device: str, tile_batch: int | None, grid, norm, offsets, dtype,
                        volume_box, target, done, tta: str = "none") -> int:
    """One task: predict ``blocks`` and write their cores and done records into the store."""
    data = _cached(("image", image), image.open)
    predictor = _worker_predictor(model_source, device, tile_batch, tta)
    runner = BlockRunner(data, predictor, grid, norm, offsets, dtype, volume_box)
    for b, res in zip(blocks, runner.run(list(blocks)), strict=False):
        rel = tuple(slice(a - o, z - o) for (a, z), o in zip(b.core, grid.origin, strict=False))
        target[(slice(None),) + rel] = res
        done[b.index] = 1
    return int(sum(b.n_core_voxels for b in blocks))


def model_path_for_workers(model, model_source: str | Path | None, workdir: str | Path | None = None) -> str:
    """A path or bundled name workers can load: ``model_source`` or the model saved to a folder."""
    if model_source is not None:
        return str(model_source)
    from ..model import save_model

    folder = Path(workdir or tempfile.mkdtemp(prefix="tokenunify-model-"))
    return str(save_model(model, folder / "model"))


def predict_affinities_distributed(
    image: VolumeRef,
    model,
    out: str | Path,
    *,
    client,
    model_source: str | Path | None = None,
    tile_shape: Sequence[int] | None = None,
    halo: Sequence[int] | int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    dtype: str = "float16",
    roi=None,
    roi_only: bool = False,
    crop=None,
    voxel_size: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    tta: str = "none",
    rescale: bool = True,
    info: dict[str, Any] | None = None,
):
    """Like :func:`~napari_tokenunify.engine.predict.predict_affinities` into the Zarr ``out``,
    with the blocks predicted by the workers of ``client`` (resumable in the same way; with
    ``rescale`` the workers read the input resampled to the model's voxel size, and the mapping
    back to the data's grid runs on them too)."""
    from dataclasses import replace

    from .predict import card_voxel_size, model_offsets, predict_rescaled
    from .resample import plan_rescale, validate_voxel_size
    from .tta import check_tta

    check_tta(tta, model_offsets(model))  # here, not first on a worker
    data = image.open()
    if image.factors is not None:
        raise ValueError("give the VolumeRef of the data itself (factors=None); resampling is "
                         "decided from voxel_size and the model's card")
    plan_rs = plan_rescale(card_voxel_size(model), voxel_size, data.shape, rescale)
    if info is not None:
        info["rescale"] = plan_rs.to_dict() if plan_rs is not None else None
    sources: list[str] = []

    def on_grid(view, *, ref: VolumeRef, **kw):
        plan = plan_prediction(view, model, tta=tta, **kw)
        if not sources:
            sources.append(model_path_for_workers(model, model_source))
        n = max(1, int(batch_size or 1))
        batches = [plan.todo[i : i + n] for i in range(0, len(plan.todo), n)]
        run_tasks(
            predict_blocks_task, batches, client=client, progress=progress, cancel=cancel,
            message="predicting affinities", rate_unit="voxels/s",
            amount=lambda bs: sum(b.n_core_voxels for b in bs),
            image=ref, model_source=sources[0], device=device, tile_batch=batch_size,
            grid=plan.grid, norm=plan.norm, offsets=plan.offsets, dtype=plan.dtype,
            volume_box=plan.volume_box, target=plan.store.array, done=plan.store.done, tta=tta,
        )
        return plan.finish()

    common = dict(out=out, tile_shape=tile_shape, halo=halo, dtype=dtype, roi=roi,
                  roi_only=roi_only, crop=crop, overwrite=overwrite)
    if plan_rs is None:
        return on_grid(data, ref=image, voxel_size=validate_voxel_size(voxel_size), **common)
    ref = replace(image, factors=plan_rs.factors)

    def on_model_grid(view, **kw):
        return on_grid(view, ref=ref, **kw)

    return predict_rescaled(data, model, plan_rs, on_model_grid, tta=tta, progress=progress,
                            cancel=cancel, client=client, **common)

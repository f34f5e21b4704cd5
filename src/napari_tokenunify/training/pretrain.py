"""TokenUnify self-supervised pretraining of EMmamba on unlabeled EM volumes.

The network pretrained here is the very one that is finetuned: EMmamba built with
``out_channels=1`` (sigmoid reconstruction). Finetuning rebuilds it with one channel per affinity
offset and copies every weight whose name and shape match — everything except the final 1×1×1
output convolution (see :func:`napari_tokenunify.training.finetune.transfer_weights`). The small
:class:`~.objectives.NextTokenHead` used by the next-token objective is kept in the checkpoint but
not in the exported model.

Output folder layout: ``checkpoints/last.pt`` (resumable), ``model/`` (safetensors + card.json,
loadable with ``load_model``), ``loss.csv`` and ``loss.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import resolve_device
from ..progress import Cancelled, CancelToken, ProgressCallback, ProgressReporter, check_cancel
from .checkpoints import LAST, export_model, find_resume, save_checkpoint
from .logs import LossLog, plot_losses
from .objectives import MixtureSchedule, NextTokenHead, make_objective_batch, objective_loss
from .perturb import Perturbation
from .runtime import (
    Budget,
    check_input_divisor,
    hardware,
    lr_at,
    optimizer_step,
    resume_state,
    rng_state,
    seed_everything,
    set_lr,
)
from .sampling import DEFAULT_PATCH, PatchSampler
from .tokens import DEFAULT_TOKEN_SHAPE, TokenGrid


def _open_volumes(volumes: Sequence) -> list:
    """Paths → lazy arrays via the I/O layer; arrays pass through."""
    if isinstance(volumes, (str, Path)) or hasattr(volumes, "shape"):
        volumes = [volumes]
    out = []
    for v in volumes:
        if isinstance(v, (str, Path)):
            from ..io import open_volume

            out.append(open_volume(v).data)
        else:
            out.append(v)
    if not out:
        raise ValueError("pretraining needs at least one volume")
    return out


def _schedule(weights: Any) -> MixtureSchedule:
    if weights is None:
        return MixtureSchedule()
    if isinstance(weights, MixtureSchedule):
        return weights
    if isinstance(weights, str):
        return MixtureSchedule.parse(weights)
    return MixtureSchedule(weights=dict(weights))


def pretrain(
    volumes: Sequence,
    *,
    preset: str = "tiny",
    steps: int = 1000,
    out_dir: str | Path,
    weights: MixtureSchedule | dict | str | None = None,
    patch_shape: Sequence[int] = DEFAULT_PATCH,
    token_shape: Sequence[int] = DEFAULT_TOKEN_SHAPE,
    mask_ratio: float = 0.4,
    fill: str = "noise",
    perturbation: Perturbation | None = None,
    batch_size: int = 1,
    lr: float = 1e-3,
    device: str = "auto",
    seed: int = 0,
    time_budget_s: float | None = None,
    checkpoint_every: int = 50,
    resume: bool = True,
    model_overrides: dict | None = None,
    normalization: Any = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> torch.nn.Module:
    """Pretrain EMmamba with the TokenUnify objectives; returns the reconstruction network.

    ``weights``: the objective mixture (a :class:`MixtureSchedule`, ``{"random": 1, ...}`` or
    ``"random=1,next=1,next_all=1"``; ``"random"`` alone is the MAE-like baseline). Stops after
    ``steps`` or ``time_budget_s`` seconds, whichever comes first; a rerun with the same
    ``out_dir`` resumes from the last checkpoint. ``normalization``: how raw intensities become
    the input (default ``engine.normalize.ROBUST_NORMALIZATION``); recorded in the card, and what
    finetuning from this network then uses.
    """
    from ..engine.normalize import ROBUST_NORMALIZATION
    from ..model import build_model

    vols = _open_volumes(volumes)
    schedule = _schedule(weights)
    grid = TokenGrid(tuple(int(p) for p in patch_shape), tuple(int(t) for t in token_shape))
    perturbation = Perturbation() if perturbation is None else perturbation
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    rng, gen = seed_everything(seed)

    model = build_model(preset, out_channels=1, **(model_overrides or {})).to(dev)
    check_input_divisor(model, grid.patch_shape)
    head = NextTokenHead().to(dev)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    normalization = dict(ROBUST_NORMALIZATION) if normalization is None else normalization
    sampler = PatchSampler(vols, grid.patch_shape, seed=rng, normalization=normalization)
    log = LossLog(out_dir / "loss.csv", resume=resume)

    step, elapsed = 0, 0.0
    ckpt_path = find_resume(out_dir) if resume else None
    if ckpt_path is not None:
        state = resume_state(ckpt_path, dev, model, optimizer, rng, gen)
        head.load_state_dict(state["head"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log.truncate_after(step)

    config = {
        "objective": "tokenunify-pretrain",
        "mixture": schedule.weights,
        "schedule": schedule.schedule,
        "patch_shape": list(grid.patch_shape),
        "token_shape": list(grid.token_shape),
        "mask_ratio": mask_ratio,
        "fill": fill,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "preset": preset,
        "normalization": normalization,
    }

    def checkpoint() -> None:
        save_checkpoint(
            out_dir / "checkpoints" / LAST,
            {
                "model": model.state_dict(),
                "head": head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(rng, gen),
                "step": step,
                "elapsed": budget.elapsed,
                "config": config,
            },
        )

    budget = Budget(steps, time_budget_s, elapsed, start_step=step)
    reporter = ProgressReporter(steps, progress, "pretraining", "voxels/s")
    reporter.done = step
    model.train()
    head.train()
    voxels = batch_size * int(np.prod(grid.patch_shape))
    while not budget.done(step):
        try:
            check_cancel(cancel)
        except Cancelled:
            checkpoint()  # keep every finished step for the resume
            raise
        objective = schedule.choose(step, steps, rng)
        clean = torch.from_numpy(np.stack([sampler.sample().raw for _ in range(batch_size)]))[:, None]
        perturbed = torch.cat([perturbation(c[None], gen) for c in clean])
        batch = make_objective_batch(
            objective, clean, grid, mask_ratio=mask_ratio, fill=fill, generator=gen, perturbed=perturbed
        )
        lr_now = lr_at(step, steps, lr)
        set_lr(optimizer, lr_now)
        recon = model(batch.inputs.to(dev))
        loss = objective_loss(_to(batch, dev), recon, head)
        optimizer_step(optimizer, loss, params, step=step, lr=lr, what="pretraining")
        step += 1
        log.write(step, objective, loss.item(), lr_now, budget.elapsed)
        reporter.advance(1, voxels, loss=loss.item(), objective=objective)
        if step % checkpoint_every == 0:
            checkpoint()
    checkpoint()
    plot_losses(out_dir / "loss.csv", out_dir / "loss.png")
    card = _card(model, preset, grid, normalization, {**config, "steps": step, "seconds": round(budget.elapsed, 1),
                                         "hardware": hardware()})
    export_model(model, out_dir / "model", card)
    model.eval()
    return model


def _to(batch, dev):
    batch.inputs = batch.inputs.to(dev)
    batch.target = batch.target.to(dev)
    batch.loss_mask = batch.loss_mask.to(dev)
    return batch


def _card(model, preset: str, grid: TokenGrid, normalization, training: dict):
    """A ModelCard for the pretrained (reconstruction) network."""
    from dataclasses import replace

    from ..model import ModelCard

    base = getattr(model, "card", None)
    fields = {
        "preset": preset,
        "in_channels": 1,
        "out_channels": 1,
        "offsets": [],
        "patch_size": list(grid.patch_shape),
        "normalization": normalization,
        "training": training,
    }
    if base is not None:
        return replace(base, **{k: v for k, v in fields.items() if hasattr(base, k)})
    return ModelCard(**fields)

"""Pieces both training loops share: learning-rate schedule, RNG state for exact resume, the
budget (steps and optional wall-clock seconds), a description of the hardware for model cards,
the patch-shape check, resuming from a checkpoint and the clipped optimizer step."""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import numpy as np
import torch


def lr_at(step: int, total: int, base_lr: float, warmup: int = 50, floor: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to ``floor * base_lr`` at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def rng_state(rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
    return {"numpy": rng.bit_generator.state, "torch": gen.get_state()}


def restore_rng(state: dict[str, Any], rng: np.random.Generator, gen: torch.Generator) -> None:
    rng.bit_generator.state = state["numpy"]
    gen.set_state(state["torch"].cpu())  # a checkpoint mapped to CUDA holds it there


class Budget:
    """Stops training after ``steps`` steps or ``seconds`` of training time (across resumes).

    ``elapsed``: seconds already spent (earlier runs, or work before training that the budget
    counts); ``start_step``: the step this run starts at. The pace of the steps is measured on
    this run alone, so neither skews the expected number of steps."""

    def __init__(self, steps: int, seconds: float | None = None, elapsed: float = 0.0,
                 start_step: int = 0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if seconds is not None and seconds <= 0:
            raise ValueError(f"the time budget must be positive, got {seconds} s")
        self.steps = int(steps)
        self.seconds = seconds
        self._before = float(elapsed)
        self._start_step = int(start_step)
        self._t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self._before + time.perf_counter() - self._t0

    def done(self, step: int) -> bool:
        return step >= self.steps or (self.seconds is not None and self.elapsed >= self.seconds)

    def expected_steps(self, step: int) -> int:
        """The steps training will have made when it stops: ``steps``, or fewer when the time
        budget will end it first at this run's pace so far (for a progress bar that ends full
        and a learning-rate decay that ends with training)."""
        ran, took = step - self._start_step, time.perf_counter() - self._t0
        if self.seconds is None or ran < 1 or took <= 0:
            return self.steps
        left = max(0.0, self.seconds - self._before - took)
        return int(min(self.steps, max(step, round(step + left * ran / took))))

    def schedule_steps(self, step: int, to_budget: bool) -> int:
        """The step count a learning-rate schedule decays over: ``steps``, or with ``to_budget``
        the steps the time budget is expected to allow (so the decay ends when training does)."""
        return self.expected_steps(step) if to_budget else self.steps


def hardware() -> str:
    """E.g. ``cpu: x86_64, 2 cores, torch 2.13.0, 1 thread`` or the CUDA device name."""
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (
        f"cpu: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    return np.random.default_rng(seed), gen


def check_input_divisor(model: torch.nn.Module, patch_shape: tuple[int, ...]) -> None:
    """Refuse a patch shape that is not a multiple of the model's ``input_divisor`` on every axis."""
    div = getattr(model, "input_divisor", 1)
    div = div if isinstance(div, (tuple, list)) else (div,) * 3
    if any(p % d for p, d in zip(patch_shape, div, strict=False)):
        raise ValueError(f"patch shape {patch_shape} must be a multiple of the model's input divisor {div}")


def resume_state(
    path: Any, device: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    rng: np.random.Generator, gen: torch.Generator,
) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer`` and the RNGs; returns the
    whole state (for ``step``, ``elapsed`` and whatever else the loop saved)."""
    from .checkpoints import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    restore_rng(state["rng"], rng, gen)
    return state


def optimizer_step(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: Any, *, step: int, lr: float, what: str
) -> None:
    """Backpropagate ``loss``, clip the gradient norm of ``params`` to 1 and step; a loss that is
    not finite stops training (``what``: e.g. ``"pretraining"``, for the message)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{what} loss became {loss.item()} at step {step}; lower the learning rate "
            f"(now {lr}) and rerun (the last checkpoint is intact)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()

"""Shared pieces of the training sub-commands (pretrain, finetune): the run-time options they
both take, and running a resumable training loop under a tqdm bar with Ctrl-C → cancel."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def add_runtime_options(
    p: argparse.ArgumentParser, *, seed: int = 0, time_budget_s: float | None = None,
    checkpoint_every: int = 50,
) -> None:
    """--device, --seed, --time-budget, --checkpoint-every, --restart and --quiet (the defaults
    given: ``finetune`` passes its :class:`~napari_tokenunify.training.config.FinetuneConfig`'s)."""
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--time-budget", type=float, default=time_budget_s, metavar="SECONDS",
                   help="stop after this many seconds of training (the best model so far is kept; "
                   "0: no limit; default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=checkpoint_every)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The training-loop keywords that the options of :func:`add_runtime_options` set."""
    return {
        "device": args.device, "seed": args.seed, "time_budget_s": args.time_budget or None,
        "checkpoint_every": args.checkpoint_every, "resume": not args.restart,
    }


def run_resumable(args: argparse.Namespace, train: Callable[..., Any], *a: Any, **kw: Any) -> tuple[Any, int]:
    """Call ``train(*a, **kw, progress=bar, cancel=token)`` with a tqdm bar (unless --quiet) and
    Ctrl-C cancelling it. Returns ``(result, 0)``, ``(None, 130)`` after telling the user where
    the last checkpoint is when it was cancelled, or ``(None, 1)`` after saying why an output
    folder was refused."""
    from ..progress import Cancelled
    from ..training.checkpoints import CheckpointError
    from .engine_common import TqdmProgress, cancel_on_ctrl_c

    bar = TqdmProgress(not args.quiet)
    with cancel_on_ctrl_c() as token:
        try:
            result = train(*a, **kw, progress=bar, cancel=token)
        except CheckpointError as err:  # an --out that would overwrite a model: a sentence, no traceback
            bar.close()
            print(f"tokenunify {args.command}: error: {err}", file=sys.stderr)
            return None, 1
        except Cancelled:
            bar.close()
            print(f"cancelled: the last checkpoint is in {args.out}/checkpoints; run the same "
                  "command again to resume", file=sys.stderr)
            return None, 130
    bar.close()
    return result, 0

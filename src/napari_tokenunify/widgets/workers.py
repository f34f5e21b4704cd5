"""Run a library call in a background thread with a napari progress bar and a Cancel that works.

The library reports through ``progress(Progress)`` from the worker thread and stops at the next
``cancel.raise_if_cancelled()``. A :class:`Job` keeps only the latest report (no signal per tile)
and a timer in the GUI thread forwards it at most every ``interval_ms``, so a flood of small tiles
never floods the event loop, and layer refreshes driven by ``on_progress`` are throttled too.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import QObject, QTimer

from napari_tokenunify.progress import CancelToken, Progress, format_rate

from .notify import report_error, show_info

_RUNNING: set[Job] = set()


def gui_torch_threads() -> int:
    """Torch CPU threads for work started from the viewer: one core is left to the GUI thread.

    Measured on a busy 2-core machine: with 2 torch threads beside the Qt event loop, OpenMP's
    spinning barriers made a finetuning step up to 40x slower than with 1 (micro-sam issue 740
    describes the same trap). ``TOKENUNIFY_GUI_THREADS`` overrides.
    The library's own setting (``TOKENUNIFY_THREADS``, ``threads.set_threads``) wins when given;
    the cores counted are those this process may use (affinity mask, cgroup quota).
    """
    from ..threads import available_cores, explicit_threads, parse_threads

    env = os.environ.get("TOKENUNIFY_GUI_THREADS")
    if env:
        return parse_threads(env, "TOKENUNIFY_GUI_THREADS")
    chosen = explicit_threads()
    return chosen if chosen is not None else max(1, available_cores() - 1)


def limit_torch_threads() -> int:
    """Apply :func:`gui_torch_threads` (call inside a worker, after anything that resets it)."""
    import torch

    n = gui_torch_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def running_jobs() -> list[Job]:
    """Jobs started and not finished yet (all widgets)."""
    return list(_RUNNING)


def _format_rate(p: Progress) -> str:
    text = format_rate(p.rate, p.rate_unit)  # "voxels/s" once, not "kvoxels/s/s"
    return f", {text}" if text else ""


class Job(QObject):
    """One library call ``fn(progress=..., cancel=...)`` running in a napari thread worker.

    ``on_result(value)`` runs in the GUI thread when ``fn`` returns; ``on_progress(Progress)`` runs
    in the GUI thread at most every ``interval_ms``; ``on_done(job)`` always runs at the end.
    Errors and cancellation become napari notifications.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        *,
        on_result: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_done: Callable[[Job], None] | None = None,
        interval_ms: int = 100,
        show_progress: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.token = CancelToken()
        self.finished = False
        self.error: BaseException | None = None
        self.result: Any = None
        self._fn = fn
        self._on_result = on_result
        self._on_progress = on_progress
        self._on_done = on_done
        self._latest: Progress | None = None
        self._shown: Progress | None = None
        self._pbar = napari_progress(total=0, desc=name) if show_progress else None
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._poll)
        # errors are shown as notifications by _errored, not re-raised into the event loop
        self.worker = create_worker(self._run, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self.started_at = 0.0

    # -- worker thread ---------------------------------------------------------------------------
    def _run(self) -> Any:
        limit_torch_threads()
        return self._fn(progress=self._report, cancel=self.token)

    def _report(self, p: Progress) -> None:
        self._latest = p  # one reference assignment: atomic, read by the GUI timer

    # -- GUI thread ------------------------------------------------------------------------------
    def start(self) -> Job:
        # A full garbage collection walks every object napari, Qt and torch have made and holds
        # the GIL while it does (measured: a 250-500 ms GUI stall when one fell in a worker).
        # Freezing moves the objects alive now out of the collector's sight, so collections
        # during the job only walk what the job creates; they are unfrozen when the last job
        # ends, so garbage cycles among them (a deleted layer) are still freed afterwards.
        gc.freeze()
        self.started_at = time.perf_counter()
        _RUNNING.add(self)
        self._timer.start()
        self.worker.start()
        return self

    def cancel(self) -> bool:
        """Ask the work to stop; says so when it has already finished or is already stopping."""
        if self.finished:
            show_info(f"{self.name} has already finished; nothing to cancel")
            return False
        if self.token.cancelled:
            show_info(f"{self.name} is already stopping (it stops after the current step)")
            return False
        self.token.cancel()
        show_info(f"Cancelling {self.name}…")
        return True

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block (processing Qt events) until the job ends; True when it did."""
        from qtpy.QtWidgets import QApplication

        deadline = time.perf_counter() + timeout_s
        while not self.finished and time.perf_counter() < deadline:
            QApplication.processEvents()
            time.sleep(0.005)
        return self.finished

    def _poll(self) -> None:
        p = self._latest
        if p is None or p is self._shown:
            return
        self._shown = p
        pbar = self._pbar  # the bar's own events may let _finished run and clear self._pbar
        if pbar is not None:
            if pbar.total != p.total:
                pbar.total = p.total
            delta = p.done - pbar.n
            if delta:
                pbar.update(delta)
            msg = p.message or self.name
            pbar.set_description(f"{msg}{_format_rate(p)}")
        if self._on_progress is not None:
            try:
                self._on_progress(p)
            except Exception as exc:  # noqa: BLE001
                report_error(exc, f"{self.name} (display)")

    def _returned(self, value: Any) -> None:
        self.result = value
        self._poll()
        if self._on_result is not None:
            try:
                self._on_result(value)
            except Exception as exc:  # noqa: BLE001
                report_error(exc, self.name)

    def _errored(self, exc: BaseException) -> None:
        self.error = exc
        report_error(exc, self.name)

    def _finished(self) -> None:
        self.finished = True
        self._timer.stop()
        _RUNNING.discard(self)
        if not _RUNNING:
            gc.unfreeze()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._on_done is not None:
            self._on_done(self)


def start_job(fn: Callable[..., Any], name: str, **kwargs: Any) -> Job:
    """Create and start a :class:`Job`."""
    return Job(fn, name, **kwargs).start()


def cancel_all_and_wait(timeout_s: float = 30.0) -> bool:
    """Cancel every running job and wait for them to stop (used when the viewer closes)."""
    jobs = running_jobs()
    for job in jobs:
        if not job.token.cancelled:
            job.token.cancel()
    deadline = time.perf_counter() + timeout_s
    return all(job.wait(max(0.0, deadline - time.perf_counter())) for job in jobs)

"""Progress reporting and cooperative cancellation shared by all long-running library calls.

Library functions take ``progress: ProgressCallback | None`` and ``cancel: CancelToken | None``.
They call ``progress(Progress(...))`` after each unit of work and ``cancel.raise_if_cancelled()``
between units, so the napari widgets and the CLI can show a bar and stop work promptly without
the compute code knowing anything about Qt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Cancelled(Exception):
    """Raised inside a library call when its :class:`CancelToken` was set."""


class CancelToken:
    """A thread-safe flag that a caller sets to ask running work to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


@dataclass
class Progress:
    """One progress report: ``done`` of ``total`` units, with an optional rate and message."""

    done: int
    total: int
    message: str = ""
    rate: float | None = None  # units per second, e.g. voxels/s
    rate_unit: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


def format_rate(rate: float | None, unit: str = "") -> str:
    """``12.3 kvoxels/s``: a rate with a k/M/G/T prefix fitted to its size ("" for none). The
    unit is per second whether or not it says so (``voxels`` and ``voxels/s`` read the same)."""
    if not rate or rate <= 0:
        return ""
    unit = unit or "items"
    unit = unit if unit.endswith("/s") else f"{unit}/s"
    value, prefix = float(rate), ""
    for step in ("k", "M", "G", "T"):
        if value < 1000:
            break
        value, prefix = value / 1000, step
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {prefix}{unit}"


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set (``None`` means never)."""
    if cancel is not None:
        cancel.raise_if_cancelled()


class ProgressReporter:
    """Counts finished units, measures a rate and forwards reports to an optional callback."""

    def __init__(
        self,
        total: int,
        callback: ProgressCallback | None = None,
        message: str = "",
        rate_unit: str = "",
    ) -> None:
        self.total = total
        self.done = 0
        self.callback = callback
        self.message = message
        self.rate_unit = rate_unit
        self._amount = 0.0
        self._t0 = time.perf_counter()

    def advance(self, n: int = 1, amount: float = 0.0, **extra) -> Progress:
        """Record ``n`` finished units that processed ``amount`` (e.g. voxels) and report."""
        self.done += n
        self._amount += amount
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        rate = self._amount / elapsed if self._amount else None
        report = Progress(self.done, self.total, self.message, rate, self.rate_unit, extra)
        if self.callback is not None:
            self.callback(report)
        return report

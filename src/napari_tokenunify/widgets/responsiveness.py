"""Measure how responsive the GUI stays: a QTimer asks to fire every ``interval_ms``; the actual
spacing of its ticks shows how long the event loop was blocked (a stall of 300 ms appears as one
gap of ~300 ms). Used by the responsiveness benchmark and tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer


@dataclass
class GapStats:
    n: int
    max_ms: float
    p99_ms: float
    p50_ms: float
    over_100ms: int

    def __str__(self) -> str:
        return (
            f"{self.n} ticks: max {self.max_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"median {self.p50_ms:.1f} ms, {self.over_100ms} gaps > 100 ms"
        )


class GapMonitor(QObject):
    """Records the intervals between ticks of a precise timer while it runs."""

    def __init__(self, interval_ms: int = 10) -> None:
        super().__init__()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.gaps_ms: list[float] = []

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps_ms.append((now - self._last) * 1000.0)
        self._last = now

    def start(self) -> None:
        self.gaps_ms.clear()
        self._last = None
        self._timer.start()

    def stop(self) -> GapStats:
        self._timer.stop()
        return self.stats()

    def stats(self) -> GapStats:
        g = np.asarray(self.gaps_ms, dtype=float)
        if g.size == 0:
            return GapStats(0, 0.0, 0.0, 0.0, 0)
        return GapStats(
            int(g.size), float(g.max()), float(np.percentile(g, 99)), float(np.median(g)),
            int((g > 100).sum()),
        )

"""How many CPU threads the compute code uses, and how they wait (no Qt, no napari).

One setting for the whole process: ``--threads N`` (CLI), ``TOKENUNIFY_THREADS``, or
:func:`set_threads`; otherwise ``OMP_NUM_THREADS``; otherwise every core this process may use
(the CPU affinity mask and a cgroup CPU quota count, so containers and SLURM jobs are not
oversubscribed). torch's intra-op pool and the numba scan kernel both follow it.

Why the wait policy matters: OpenMP's worker threads *spin* for a while after each parallel
region by default. When another process keeps a core busy, the spinning threads fight it for
that core, and every small torch op or scan call waits on a thread that is not scheduled:
measured on 2 cores beside a busy training job, one forward pass of the default model on a
16 x 80 x 80 tile took 2.0-6.6 s with 2 threads and 0.11 s with one, and 0.12 s with 2 threads
and ``OMP_WAIT_POLICY=PASSIVE``. Sleeping at once costs an idle machine a little (thread
wake-ups), so on Linux the package sets a short ``GOMP_SPINCOUNT`` instead (``SPIN_COUNT``;
``benchmarks/bench_threads.py`` compares them end to end) when it is imported before torch,
unless the user set either variable; OpenMP reads them once, when torch's runtime loads.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "TOKENUNIFY_THREADS"
_requested: int | None = None  # set_threads(): the process-wide choice


#: libgomp's spin count before a waiting thread sleeps (its default is 300 000): short enough
#: that a busy neighbour costs about its share, long enough that an idle machine loses little
#: (benchmarks/bench_threads.py: 2 000 against PASSIVE and 20 000, docs/benchmarks.md)
SPIN_COUNT = "2000"


def short_openmp_waits() -> bool:
    """Make OpenMP threads wait briefly, then sleep, instead of spinning (module docstring).

    libgomp (torch's OpenMP on Linux) gets ``GOMP_SPINCOUNT``; other OpenMP runtimes
    ``OMP_WAIT_POLICY=PASSIVE``. Only works before torch's OpenMP runtime is loaded; returns
    whether short waits apply. A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return not spinning_waits()
    if "torch" in sys.modules:
        return False
    if sys.platform.startswith("linux"):
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def spinning_waits() -> bool:
    """Whether OpenMP threads in this process spin long while waiting: ``OMP_WAIT_POLICY`` is
    not PASSIVE and no short ``GOMP_SPINCOUNT`` (at most 10 000) is set."""
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().upper()
    if policy == "PASSIVE":
        return False
    if policy == "ACTIVE":
        return True
    try:
        return int(os.environ.get("GOMP_SPINCOUNT", "")) > 10_000
    except ValueError:
        return True


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), else None."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return float(text[0]) / float(text[1])
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: the affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    quota = _cgroup_cpus(cgroup_root)
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)


def parse_threads(value: object, source: str = "threads") -> int:
    """A thread count from the user: a positive integer, clamped to the available cores.

    Raises ``ValueError`` saying what to give for 0, negatives and non-numbers; more threads
    than cores are clamped with a warning (they would only make the cores take turns).
    """
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(
            f"{source} must be a whole number of CPU threads (1 or more), got {value!r}"
        ) from None
    if n < 1:
        raise ValueError(
            f"{source} must be 1 or more, got {n}; leave it unset to use every core "
            f"({available_cores()} here)"
        )
    cores = available_cores()
    if n > cores:
        log.warning("%s=%d is more than the %d cores this process may use; using %d",
                    source, n, cores, cores)
        n = cores
    return n


def explicit_threads() -> int | None:
    """The count the user chose (:func:`set_threads` or ``TOKENUNIFY_THREADS``), else None."""
    if _requested is not None:
        return _requested
    value = os.environ.get(ENV)
    return parse_threads(value, ENV) if value else None


def requested_threads() -> int:
    """The thread count to use now: :func:`set_threads`, ``TOKENUNIFY_THREADS``,
    ``OMP_NUM_THREADS``, else every available core."""
    if _requested is not None:
        return _requested
    for name in (ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name)
        if value:
            return parse_threads(value, name)
    return available_cores()


def apply_threads(n: int | None = None) -> int:
    """Give torch's intra-op pool ``n`` threads (default :func:`requested_threads`); the numba
    scan follows torch's count. Returns the count."""
    import torch

    n = requested_threads() if n is None else int(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def set_threads(value: object) -> int:
    """Set the process-wide thread count (``--threads``), validated; applies it now."""
    global _requested
    _requested = parse_threads(value, "--threads")
    return apply_threads(_requested)


def reset_threads() -> None:
    """Forget :func:`set_threads` (tests)."""
    global _requested
    _requested = None

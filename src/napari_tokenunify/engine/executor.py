"""Running per-block tasks here or on a dask.distributed cluster, with progress and cancel.

Tasks receive small arguments (block boxes, zarr array handles that pickle as a path, lookup
tables); they read and write the shared store themselves, so no volume passes through the
scheduler.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..progress import CancelToken, ProgressCallback, ProgressReporter, check_cancel


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise, and the peak RSS of a long
    blockwise run then creeps up with the number of blocks); a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def run_tasks(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    client=None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    message: str = "",
    amount: Callable[[Any], float] | None = None,
    rate_unit: str = "",
    on_result: Callable[[Any, Any], None] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """``[fn(item, **kwargs) for item in items]``, on ``client`` when given (results in order).

    ``on_result(item, result)`` runs here as each task finishes (e.g. to record a block as done).
    On cancel, pending tasks are cancelled and :class:`~napari_tokenunify.progress.Cancelled`
    is raised after the running ones were let go.
    """
    reporter = ProgressReporter(len(items), progress, message, rate_unit)
    results: list[Any] = [None] * len(items)
    if client is None:
        for i, item in enumerate(items):
            check_cancel(cancel)
            results[i] = fn(item, **kwargs)
            release_memory()
            if on_result is not None:
                on_result(item, results[i])
            reporter.advance(1, float(amount(item)) if amount else 0.0)
        return results

    from distributed import as_completed

    futures = client.map(fn, list(items), pure=False, **kwargs)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for future in as_completed(futures):
            check_cancel(cancel)
            i = index[future.key]
            results[i] = future.result()
            if on_result is not None:
                on_result(items[i], results[i])
            reporter.advance(1, float(amount(items[i])) if amount else 0.0)
    except BaseException:
        client.cancel(futures)
        raise
    return results

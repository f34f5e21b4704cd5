"""Turn errors from library calls into napari notifications (a message, never a traceback)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from napari.utils.notifications import show_error, show_info, show_warning

from napari_tokenunify.progress import Cancelled

log = logging.getLogger("napari_tokenunify")

__all__ = ["report_error", "reporting", "show_error", "show_info", "show_warning"]


def report_error(exc: BaseException, action: str) -> str:
    """Show ``exc`` as a one-line napari error notification and return the message shown.

    Bad input reaches us as ``ValueError``/``OSError`` subclasses whose message already names the
    problem and the fix; anything else is unexpected, so its type is named and the traceback goes
    to the log (not to the user's screen).
    """
    if isinstance(exc, Cancelled):
        message = f"{action}: cancelled"
        show_info(message)
        return message
    if isinstance(exc, (ValueError, OSError, KeyError, TypeError, RuntimeError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, (ValueError, OSError)):
        log.error("%s failed", action, exc_info=exc)
    message = f"{action} failed: {text}"
    show_error(message)
    return message


@contextmanager
def reporting(action: str) -> Iterator[None]:
    """Run a GUI action; any exception becomes a notification instead of propagating."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shown to the user, logged when unexpected
        report_error(exc, action)

"""Turn errors from library calls into napari notifications (a message, never a traceback)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from napari.utils.notifications import show_error, show_info, show_warning

from napari_tokenunify.progress import Cancelled

log = logging.getLogger("napari_tokenunify")

__all__ = ["report_error", "reporting", "show_error", "show_info", "show_warning"]


_OS_ADVICE = {
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "not permitted; choose a folder you can write to",
    errno.EROFS: "the disk is read-only; choose a folder on another disk",
    errno.ENOSPC: "the disk is full; free some space or choose another disk",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
}


def describe_os_error(exc: OSError) -> str:
    """An operating-system error as a sentence ("…: permission denied; choose a folder you can
    write to"), not Python's "[Errno 13] Permission denied: '…'"."""
    what = _OS_ADVICE.get(exc.errno or -1, str(exc.strerror).lower())
    name = exc.filename if exc.filename is not None else ""
    return f"{name}: {what}" if name else what


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
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        text = describe_os_error(exc)
    elif isinstance(exc, (ValueError, OSError, KeyError, TypeError, RuntimeError)):
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

"""Atomic outputs: write under a hidden temporary sibling name, rename into place when complete.

A crash or a cancel therefore never leaves a file or folder under the final name that looks
complete: at worst a hidden ``.NAME.partial-XXXX`` sibling remains (removed on clean failures).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse an existing target unless ``overwrite``; the parent folder must exist."""
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"{path}: already exists; choose another name or pass overwrite=True "
            "(CLI: --overwrite) to replace it."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"{path}: the folder {path.parent} does not exist; create it first."
        )


@contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces ``path``.

    On any exception (including :class:`~napari_tokenunify.progress.Cancelled` and
    ``KeyboardInterrupt``) the temporary output is deleted and ``path`` is left untouched.
    """
    path = Path(path)
    check_writable(path, overwrite)
    tmp = path.parent / f".{path.name}{PARTIAL}{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: the writer produced no output")
        if path.exists() or path.is_symlink():
            if not overwrite:  # appeared while we were writing
                raise FileExistsError(
                    f"{path}: was created by someone else while writing; kept it."
                )
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise

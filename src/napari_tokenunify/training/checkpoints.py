"""Resumable training checkpoints, written atomically.

A checkpoint is written under a temporary name in the same folder, flushed to disk and then
renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so a crash at any moment
leaves the previous checkpoint intact and loadable. Exported models (safetensors + card) are
written to a temporary folder and swapped in the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or would overwrite something it must not."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (model/optimizer state dicts, step, rng states, ...) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (our own files, so full unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({err}); delete it to start over") from err


def find_resume(out_dir: str | Path | None) -> Path | None:
    """The checkpoint to resume from in ``out_dir`` (``checkpoints/last.pt``), or None."""
    if out_dir is None:
        return None
    p = Path(out_dir) / "checkpoints" / LAST
    return p if p.is_file() else None


def same_location(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same place (after resolving), also when one does not exist yet."""
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _protected(init: Any) -> list[tuple[Path, str]]:
    """Folders a training output must stay out of: the starting model's and the bundled models'."""
    from ..model.bundled import BUNDLED_DIR

    places = [(BUNDLED_DIR.resolve(), "the bundled models")]
    source = getattr(init, "source_path", None) if not isinstance(init, (str, Path)) else init
    if source is None:
        return places
    path = Path(source).expanduser()
    text = str(source)
    if not path.exists() and "/" not in text and "\\" not in text and not path.suffix:
        path = BUNDLED_DIR / text  # a bundled model's name, e.g. "default"
    if path.exists():
        p = path.resolve()
        places.append((p if p.is_dir() else p.parent, f"the initial model {p}"))
    return places


def guard_output(out_dir: str | Path, init: Any, model_subdir: str | None = "model") -> None:
    """Refuse an output folder that is, holds or lies inside the model training starts from
    (a path, a bundled model's name, or a loaded model that remembers its ``source_path``) or the
    bundled models' folder. ``model_subdir``: where in ``out_dir`` the model is written
    (``None``: into ``out_dir`` itself, as ``save_model`` does)."""
    out = Path(out_dir).expanduser().resolve()
    written = out / model_subdir if model_subdir else out
    for place, what in _protected(init):
        replaced = model_subdir is not None and written in place.parents  # export swaps out/model
        if out == place or place in out.parents or written == place or replaced:
            raise CheckpointError(
                f"output folder {out} would overwrite or nest inside {what}; "
                "choose a different output folder"
            )


def export_model(model: torch.nn.Module, directory: str | Path, card: Any = None) -> Path:
    """Save ``model`` with :func:`napari_tokenunify.model.save_model` into ``directory`` atomically
    (written beside it under a temporary name, then swapped in)."""
    from ..model import save_model

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_model(model, tmp, card=card)
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory

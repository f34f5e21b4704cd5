"""Zarr output stores written block by block, with a record of the completed blocks.

A store is a Zarr group with the result array (``affinities`` or ``labels``) chunked like the
block cores, and a ``done`` array holding one byte per block (one chunk per block, so several
processes can mark their own blocks without locking). A run that was cancelled or crashed is
resumed by skipping the blocks marked done; the settings that shaped the grid are kept in the
group attributes and a resume with other settings is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

DONE = "done"
#: above this many voxels (~0.5 GB per float32 channel) the CLI and the widget segment blockwise
IN_MEMORY_MAX_VOXELS = 2**27
#: grids with more blocks than this find their finished blocks by listing files
LIST_DONE_ABOVE = 2**14


class StoreExists(FileExistsError):
    """The output path holds something a new run must not write over (see subclasses)."""


class StoreSettingsDiffer(StoreExists):
    """An existing store was made with other settings (another model, other test-time flips…)."""

    def __init__(self, message: str, old: Any = None, new: Any = None) -> None:
        super().__init__(message)
        self.old, self.new = old, new


class StoreComplete(StoreExists):
    """An existing store made with the same settings is complete: its result can be reused."""


T = TypeVar("T")
# set by reuse_complete(): the list that records the complete stores reused in this context
_REUSE: ContextVar[list[Path] | None] = ContextVar("tokenunify_reuse_complete", default=None)


@contextmanager
def reuse_complete() -> Iterator[list[Path]]:
    """Inside this context :meth:`BlockStore.create` reopens a complete store made with the same
    settings (the run then has nothing left to do and returns its result) instead of refusing
    it; yields the list of the stores so reused."""
    record: list[Path] = []
    token = _REUSE.set(record)
    try:
        yield record
    finally:
        _REUSE.reset(token)


def store_candidates(out: str | Path, n: int = 100) -> Iterator[Path]:
    """``out``, then ``<stem>-2.zarr``, ``<stem>-3.zarr``, … beside it."""
    out = Path(out)
    yield out
    stem = out.name.removesuffix(".zarr")
    for i in range(2, n + 1):
        yield out.with_name(f"{stem}-{i}.zarr")


def in_free_store(run: Callable[[Path], T], out: str | Path,
                  kept: list[tuple[Path, str]] | None = None) -> tuple[T, Path, bool]:
    """``run(path)`` into ``out`` or the first of :func:`store_candidates` that is free or holds
    a run with the same settings (resumed; reused when complete). Stores of other runs (another
    model, other test-time flips, …) are kept as they are and listed in ``kept`` as
    ``(path, what differs)``. Returns ``run``'s result, the path it used and whether that
    store was complete already (reused, nothing computed)."""
    for path in store_candidates(out):
        try:
            with reuse_complete() as reused:
                result = run(path)
            return result, path, bool(reused)
        except StoreSettingsDiffer as err:
            reason = _diff(err.old, err.new)
        except StoreExists:
            reason = "not a store of this kind of run"
        if kept is not None:
            kept.append((path, reason))
    raise StoreExists(f"{out} and the next 99 names beside it hold other runs; choose another store")


def _zarr():
    import zarr

    return zarr


def is_store(path: str | Path, name: str) -> bool:
    """Whether ``path`` is a group written by this module holding array ``name``."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        group = _zarr().open_group(str(path), mode="r")
        return name in group and DONE in group
    except Exception:
        return False


class BlockStore:
    """A result array plus per-block completion records (see the module docstring)."""

    def __init__(self, path: Path, group, name: str) -> None:
        self.path = Path(path)
        self.group = group
        self.name = name
        self.array = group[name]
        self.done = group[DONE]

    # ---- creation / opening -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        name: str,
        *,
        shape: Sequence[int],
        chunks: Sequence[int],
        dtype: str | np.dtype,
        grid_shape: Sequence[int],
        settings: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
        resume: bool = True,
    ) -> BlockStore:
        """Create the store, or reopen an unfinished one made with the same ``settings``.

        An existing path is refused unless it is an unfinished store with equal settings
        (``resume``) or ``overwrite`` is set (then it is deleted first).
        """
        zarr = _zarr()
        path = Path(path)
        if str(path).strip() in ("", "."):
            raise ValueError("the output path is empty; give a path ending in .zarr")
        settings = _jsonable(settings)
        if path.exists() and not overwrite:
            if resume and is_store(path, name):
                store = cls(path, zarr.open_group(str(path), mode="r+"), name)
                old = store.group.attrs.get("settings")
                if old != settings:
                    raise StoreSettingsDiffer(
                        f"{path} holds a run with other settings ({_diff(old, settings)}); "
                        "use --overwrite (overwrite=True) to replace it or choose another output",
                        old, settings,
                    )
                if store.complete:
                    reused = _REUSE.get()
                    if reused is not None:
                        reused.append(path)
                        return store
                    raise StoreComplete(
                        f"{path} already exists and is complete; use --overwrite "
                        "(overwrite=True) to replace it"
                    )
                return store
            raise StoreExists(
                f"{path} already exists; use --overwrite (overwrite=True) to replace it"
            )
        if path.exists():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w")
        group.create_array(
            name, shape=tuple(int(s) for s in shape), chunks=tuple(int(c) for c in chunks),
            dtype=dtype, fill_value=0,
        )
        group.create_array(
            DONE, shape=tuple(int(s) for s in grid_shape), chunks=(1,) * len(grid_shape),
            dtype="uint8", fill_value=0,
        )
        group.attrs.update({"settings": settings, "complete": False, **_jsonable(attrs or {})})
        return cls(path, group, name)

    @classmethod
    def open(cls, path: str | Path, name: str, mode: str = "r+") -> BlockStore:
        return cls(Path(path), _zarr().open_group(str(path), mode=mode), name)

    # ---- completion records -------------------------------------------------------------------
    def is_done(self, index: Sequence[int]) -> bool:
        return bool(self.done[tuple(index)])

    def mark_done(self, index: Sequence[int]) -> None:
        self.done[tuple(index)] = 1

    def done_indices(self) -> set[tuple[int, ...]]:
        """The finished blocks. Large grids are listed from the ``done`` folder (a byte per
        block read one chunk at a time costs minutes for the millions of blocks of a large
        volume); small ones, or a layout the listing does not know, are read."""
        if int(np.prod(self.done.shape)) > LIST_DONE_ABOVE:
            from ..io.store_view import stored_chunk_indices

            listed = stored_chunk_indices(self.done)
            if listed is not None:
                return listed
        return {tuple(int(i) for i in ix) for ix in np.argwhere(self.done[...] > 0)}

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    def finish(self, **attrs: Any) -> None:
        self.group.attrs.update({"complete": True, **_jsonable(attrs)})

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)


def unfinished_blockwise(path: str | Path | None) -> bool:
    """Whether ``path`` is a blockwise segmentation store that a cancelled run left unfinished."""
    if not path or not is_store(Path(path).expanduser(), "labels"):
        return False
    store = BlockStore.open(Path(path).expanduser(), "labels", mode="r")
    return not store.complete and bool((store.attrs.get("settings") or {}).get("blockwise"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(value: Any, limit: int = 40) -> str:
    """A setting as a person reads it: a model card (JSON) by its name, long values cut."""
    if isinstance(value, str) and value.startswith("{"):
        import json

        try:
            card = json.loads(value)
        except ValueError:
            card = None
        if isinstance(card, dict):
            name = card.get("name") or card.get("preset") or "model"
            return f"model {name!r}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _diff(old: Any, new: Any) -> str:
    """The settings that changed, one short item each (a model is named, not printed: its card
    is thousands of characters)."""
    if not isinstance(old, dict):
        return "no settings recorded"
    keys = sorted(set(old) | set(new))
    changed = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        sa, sb = _short(a), _short(b)
        if sa == sb:  # e.g. two cards of the same name: say only that they differ
            sa, sb = "one " + sa if k == "model" else sa, "another" if k == "model" else "other"
        changed.append(f"{k}: {sa} -> {sb}")
    return "; ".join(changed) or "unknown difference"

"""Read-only views of block stores (``engine.store``: a result array chunked like the blocks, and
a ``done`` array with one byte per block) that a worker may still be writing.

A view reads only the blocks marked done (found by listing the ``done`` chunk files, never by
reading one byte per block: a 20 000² section of a large volume has ~80 000 blocks), so blocks
not predicted yet, or caught mid-write, read as zeros without touching the disk, and a view of
any size costs only what is indexed. A view can stand for one level of a display pyramid
(``step``: every step-th voxel) and can show a *preview* (e.g. a quick tile without test-time
flips) where the store has nothing yet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from .pyramid import indexed_shape, is_large, level_steps, normalize_key

Box = tuple[tuple[int, int], ...]


def stored_chunk_indices(array: Any) -> set[tuple[int, ...]] | None:
    """Grid indices of the chunks of a local zarr array that exist on disk, found by listing
    its folder (no chunk is read); ``None`` when the layout is not one this knows."""
    try:
        store = array.store_path.store
        root = Path(store.root) / str(array.store_path.path)
        meta = array.metadata
        if getattr(meta, "zarr_format", 3) == 3:
            enc = meta.chunk_key_encoding
            sep = str(getattr(enc, "separator", "/"))
            prefix = "c" if getattr(enc, "name", "default") == "default" else ""
        else:
            sep, prefix = str(getattr(meta, "dimension_separator", None) or "."), ""
    except Exception:  # noqa: BLE001 - not a local zarr v2/v3 array
        return None
    ndim = int(array.ndim)
    top = root / prefix if prefix else root
    if not top.is_dir():
        return set() if root.is_dir() else None
    out: set[tuple[int, ...]] = set()
    if sep == "/":
        for dirpath, _dirs, files in os.walk(top):
            rel = os.path.relpath(dirpath, top)
            parts = [] if rel == "." else rel.split(os.sep)
            for f in files:
                key = [*parts, f]
                if len(key) == ndim and all(p.isdigit() for p in key):
                    out.add(tuple(int(p) for p in key))
    else:
        for entry in os.scandir(top):
            key = entry.name.split(sep)
            if entry.is_file() and len(key) == ndim and all(p.isdigit() for p in key):
                out.add(tuple(int(p) for p in key))
    return out


def _axis_chunks(p0: int, n: int, step: int, chunk: int) -> list[tuple[int, int, int]]:
    """Along one axis, the positions ``p0 + j * step`` (j < n) grouped by chunk: (chunk index,
    first j, end j) for each chunk they fall in."""
    if n <= 0:
        return []
    out = []
    i, last = p0 // chunk, (p0 + (n - 1) * step) // chunk
    while i <= last:
        lo = max(0, -(-(i * chunk - p0) // step))
        hi = min(n, -(-((i + 1) * chunk - p0) // step))
        if lo < hi:
            out.append((i, lo, hi))
            i = (p0 + hi * step) // chunk if hi < n else last + 1
        else:
            i += 1
    return out


class StoreView:
    """Read-only (channels, z, y, x) view of the result array ``name`` of the store at ``path``.

    Before the store exists (or while its array has another shape) every read gives zeros, so a
    napari layer can be added before a run starts. ``step`` (z, y, x) makes it one coarser level
    of a display pyramid. Call :meth:`update` to see blocks finished since the last call.
    """

    def __init__(self, path: str | Path, shape: Sequence[int], dtype: Any = "float16",
                 name: str = "affinities", step: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        self.name = name
        self.base_shape = tuple(int(s) for s in shape)
        step = tuple(int(s) for s in (step or ()))
        self.step = (1,) * (len(self.base_shape) - len(step)) + step
        self.shape = tuple(-(-s // k) for s, k in zip(self.base_shape, self.step, strict=True))
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.float64))
        self.array: Any = None
        self.preview: tuple[Box, np.ndarray] | None = None
        self._done_array: Any = None
        self._done: set[tuple[int, ...]] = set()
        self._complete = False
        self.try_open()

    # ---- the store --------------------------------------------------------------------------
    def try_open(self) -> bool:
        """Open the store's array once it exists with this view's shape; also refreshes the
        record of finished blocks. True when the array is open."""
        if self.array is None and (self.path / self.name).exists():
            try:
                import zarr

                group = zarr.open_group(str(self.path), mode="r")
                arr = group[self.name]
                done = group["done"] if "done" in group else None
            except Exception:  # noqa: BLE001 - not written yet
                return False
            if tuple(arr.shape) == self.base_shape:
                self.array, self.dtype, self._done_array = arr, np.dtype(arr.dtype), done
        if self.array is not None:
            self.update()
        return self.array is not None

    def update(self) -> None:
        """Re-read which blocks are finished (a listing of the ``done`` folder)."""
        if self.array is None or self._complete:
            return
        try:
            import zarr

            self._complete = bool(zarr.open_group(str(self.path), mode="r").attrs.get("complete"))
        except Exception:  # noqa: BLE001 - attributes mid-write: next time
            pass
        if self._complete:
            return
        done = self._done_array
        if done is None:  # a plain array, not a block store: everything written is shown
            self._complete = True
            return
        listed = stored_chunk_indices(done)
        if listed is None:
            listed = {tuple(int(i) for i in ix) for ix in np.argwhere(np.asarray(done[...]) > 0)}
        self._done = listed

    def set_preview(self, box: Sequence[Sequence[int]] | None, data: np.ndarray | None = None) -> None:
        """Show ``data`` (channels, z, y, x) in ``box`` (z, y, x, full-resolution voxels) where
        the store has no finished block; ``None`` removes the preview."""
        if box is None or data is None:
            self.preview = None
        else:
            self.preview = (tuple((int(a), int(b)) for a, b in box), np.asarray(data))

    def level(self, step: Sequence[int]) -> StoreView:
        """A view of the same store at every ``step``-th voxel (z, y, x), sharing nothing that
        changes (each level opens and updates itself)."""
        return type(self)(self.path, self.base_shape, self.dtype, self.name, step)

    # ---- reading ----------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        norm = normalize_key(key, self.shape)
        if norm is None:  # fancy indexing: only on views small enough to read whole
            if is_large(self.shape, self.dtype):
                raise IndexError(f"a large store view takes ints and slices, got {key!r}")
            return self[...][key]
        out_shape = [1 if isinstance(k, int) else len(range(k.start, k.stop, k.step)) for k in norm]
        out = np.zeros(out_shape, dtype=self.dtype)
        if out.size:
            lead = len(self.shape) - 3
            # per axis: first level position, count, step in full-resolution voxels
            axes = []
            for k, st in zip(norm, self.step, strict=True):
                if isinstance(k, int):
                    axes.append((k * st, 1, st))
                else:
                    axes.append((k.start * st, len(range(k.start, k.stop, k.step)), k.step * st))
            self._paste_preview(out, axes, lead)
            if self.array is not None or self.try_open():
                self._paste_store(out, axes, lead)
        squeeze = tuple(i for i, k in enumerate(norm) if isinstance(k, int))
        out = out.reshape([s for i, s in enumerate(out_shape) if i not in squeeze])
        assert out.shape == indexed_shape(self.shape, key)
        return out

    def _paste_store(self, out: np.ndarray, axes: list[tuple[int, int, int]], lead: int) -> None:
        arr = self.array
        chunks = tuple(int(c) for c in arr.chunks)
        lead_key = tuple(slice(p, p + (n - 1) * s + 1, s) for p, n, s in axes[:lead])
        per_axis = [_axis_chunks(p, n, s, c) for (p, n, s), c in
                    zip(axes[lead:], chunks[lead:], strict=True)]
        if self._complete:
            todo = product(*per_axis)
        else:
            by_index = [{c[0]: c for c in ax} for ax in per_axis]
            n_request = math.prod(len(ax) for ax in per_axis)
            if len(self._done) <= n_request:
                todo = (tuple(m[i] for m, i in zip(by_index, ix, strict=True))
                        for ix in self._done if all(i in m for m, i in zip(by_index, ix, strict=True)))
            else:
                todo = (c for c in product(*per_axis) if tuple(x[0] for x in c) in self._done)
        for parts in todo:
            src = lead_key + tuple(
                slice(p + lo * s, p + (hi - 1) * s + 1, s)
                for (p, _n, s), (_i, lo, hi) in zip(axes[lead:], parts, strict=True))
            dst = (slice(None),) * lead + tuple(slice(lo, hi) for _i, lo, hi in parts)
            try:
                out[dst] = np.asarray(arr[src])
            except Exception:  # noqa: BLE001 - a chunk caught mid-write: shown on the next refresh
                pass

    def _paste_preview(self, out: np.ndarray, axes: list[tuple[int, int, int]], lead: int) -> None:
        if self.preview is None:
            return
        box, data = self.preview
        lead_key = tuple(slice(p, p + (n - 1) * s + 1, s) for p, n, s in axes[:lead])
        src, dst = list(lead_key), [slice(None)] * lead
        for (p, n, s), (b0, b1) in zip(axes[lead:], box, strict=True):
            lo = max(0, -(-(b0 - p) // s))
            hi = min(n, -(-(b1 - p) // s))
            if lo >= hi:
                return
            src.append(slice(p + lo * s - b0, p + (hi - 1) * s + 1 - b0, s))
            dst.append(slice(lo, hi))
        out[tuple(dst)] = data[tuple(src)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self) -> int:
        return self.shape[0]


def store_pyramid(view: StoreView, voxel_size: Sequence[float] | None = None) -> list[StoreView]:
    """``view`` and coarser views of the same store (the steps of ``level_steps``): the levels
    of a napari multiscale layer of a large store (wrap each with ``pyramid.as_dask``)."""
    return [view] + [view.level(s) for s in level_steps(view.base_shape[-3:], voxel_size)]


def store_layer_data(levels: Sequence[StoreView]) -> list[Any]:
    """The levels as napari multiscale data (dask arrays that read the views when computed)."""
    from .pyramid import as_dask

    return [as_dask(v) for v in levels]

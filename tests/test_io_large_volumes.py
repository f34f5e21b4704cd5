"""Large volumes (issue 15, defect 6): lazy pyramids, store views and the reader never allocate
the whole volume; a view of a large volume lists only its own blocks."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from napari_tokenunify.io.pyramid import (
    StridedLevel,
    indexed_shape,
    is_large,
    lazy_pyramid,
    level_steps,
)
from napari_tokenunify.io.store_view import StoreView, stored_chunk_indices

HUGE = (2000, 20000, 20000)  # 745 GiB of uint8: only its metadata is ever written


def _peak_mb(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_large_threshold():
    assert not is_large((64, 1024, 1024), np.uint8)
    assert is_large((600, 2048, 2048), np.uint8)  # 2.3 GiB
    assert is_large((10, 512, 5000), np.uint8)  # an axis over 4096
    assert is_large((3, *HUGE), np.float16)


def test_indexed_shape_allocates_nothing():
    key = (0, 5, slice(100, 300), slice(None, None, 7))
    shape, peak = _peak_mb(lambda: indexed_shape((3, *HUGE), key))
    assert shape == (200, 2858)
    assert peak < 1
    assert indexed_shape((3, 4, 5), (Ellipsis, 1)) == (3, 4)
    assert indexed_shape((3, 4, 5), (np.array([0, 2]),)) == (2, 4, 5)


def _store(tmp_path, shape=(3, 10, 23, 17), chunks=(3, 4, 5, 6), seed=0):
    from napari_tokenunify.engine.store import BlockStore

    grid = tuple(-(-s // c) for s, c in zip(shape[1:], chunks[1:], strict=True))
    store = BlockStore.create(tmp_path / "a.zarr", "affinities", shape=shape, chunks=chunks,
                              dtype="float16", grid_shape=grid, settings={})
    full = np.random.default_rng(seed).random(shape).astype("float16")
    shown = np.zeros_like(full)
    rng = np.random.default_rng(seed + 1)
    undone = []
    for ix in np.ndindex(*grid):
        sl = (slice(None),) + tuple(slice(i * c, (i + 1) * c) for i, c in zip(ix, chunks[1:], strict=True))
        if rng.random() < 0.5:
            undone.append(sl)
            continue
        store.array[sl] = full[sl]
        store.mark_done(ix)
        shown[sl] = full[sl]
    store.array[undone[0]] = 1  # written, not marked done (mid-write): must read as zeros
    return store, shown


def test_store_view_reads_only_finished_blocks_at_any_level(tmp_path):
    store, shown = _store(tmp_path)
    assert stored_chunk_indices(store.done) == {tuple(int(i) for i in ix)
                                                for ix in np.argwhere(store.done[...] > 0)}
    view = StoreView(tmp_path / "a.zarr", shown.shape)
    for key in [(Ellipsis,), (1, 3), (slice(None), 2, slice(1, 20, 3)), (-1, -1, -1, -1),
                (0, slice(None), slice(None), 5), (slice(None), slice(2, 9, 2), slice(None, None, 4))]:
        np.testing.assert_array_equal(view[key], shown[key])
    for step in [(2, 2, 2), (1, 4, 3), (3, 5, 7)]:
        expect = shown[:, :: step[0], :: step[1], :: step[2]]
        level = view.level(step)
        assert level.shape == expect.shape
        np.testing.assert_array_equal(np.asarray(level), expect)
        np.testing.assert_array_equal(level[1, 1, 1:4], expect[1, 1, 1:4])
        np.testing.assert_array_equal(np.asarray(StridedLevel(shown, step)), expect)
    # a preview shows where no block is finished, never over a finished one
    box, preview = ((4, 8), (5, 10), (6, 12)), np.full((3, 4, 5, 6), 0.5, "float16")
    view.set_preview(box, preview)
    expect = shown.copy()
    if not store.is_done((1, 1, 1)):
        expect[:, 4:8, 5:10, 6:12] = 0.5
    np.testing.assert_array_equal(np.asarray(view), expect)


def test_live_array_of_a_huge_volume_indexes_without_allocating(tmp_path):
    """``LiveArray.__getitem__`` used to build ``np.empty(shape)[key]`` (2.18 TiB here)."""
    pytest.importorskip("qtpy")
    from napari_tokenunify.widgets.predict_panel import LiveArray

    live = LiveArray(tmp_path / "none-yet.zarr", (3, *HUGE))
    out, peak = _peak_mb(lambda: live[0, 1000, 100:300, 5000:5400])
    assert out.shape == (200, 400) and not out.any() and peak < 5
    out, peak = _peak_mb(lambda: live.level((8, 64, 64))[:, 3])
    assert out.shape == (3, 313, 313) and peak < 5


def test_store_view_of_a_huge_partial_store_is_fast(tmp_path):
    from napari_tokenunify.engine.store import BlockStore

    shape, chunks = (3, *HUGE), (3, 14, 70, 70)
    grid = tuple(-(-s // c) for s, c in zip(shape[1:], chunks[1:], strict=True))
    store = BlockStore.create(tmp_path / "big.zarr", "affinities", shape=shape, chunks=chunks,
                              dtype="float16", grid_shape=grid, settings={})
    store.array[:, 14:28, 70:140, 140:210] = 0.75
    store.mark_done((1, 1, 2))
    t0 = time.perf_counter()
    assert store.done_indices() == {(1, 1, 2)}  # listed, not read block by block
    view = StoreView(tmp_path / "big.zarr", shape)
    coarse = view.level((16, 64, 64))  # a whole section at a coarse level: ~82 000 blocks
    plane, peak = _peak_mb(lambda: coarse[0, 1])
    assert time.perf_counter() - t0 < 5 and peak < 10
    assert plane.shape == (313, 313) and plane[2, 3] == np.float16(0.75) and plane.sum() == plane[2, 3]
    np.testing.assert_array_equal(view[0, 20, 100, 150:212], [0.75] * 60 + [0, 0])


def test_blocks_in_view_are_listed_without_the_whole_grid():
    from napari_tokenunify.engine.tiling import TileGrid, order_blocks

    grid = TileGrid(HUGE, (16, 80, 80), (1, 5, 5))
    assert len(grid) > 10**7
    view = ((990, 1010), (5000, 5200), (7000, 7300))
    t0 = time.perf_counter()
    blocks = grid.blocks_meeting(view)
    assert time.perf_counter() - t0 < 1
    assert 0 < len(blocks) < 100
    point = (995.5, 5010.0, 7290.0)  # near an edge of the view, not at its centre
    first = order_blocks(blocks, view, point)[0]
    assert all(a <= p < b for p, (a, b) in zip(point, first.core, strict=True))
    assert first.index == grid.index_of(point)


def test_lazy_pyramid_levels_read_only_what_is_indexed():
    data = np.arange(4 * 40 * 50, dtype=np.uint16).reshape(4, 40, 50)
    levels = lazy_pyramid(data, None, min_size=8)
    assert levels[0] is data
    steps = level_steps(data.shape, None, min_size=8)
    assert [tuple(lv.shape) for lv in levels[1:]] == [
        tuple(-(-s // k) for s, k in zip(data.shape, st, strict=True)) for st in steps]
    np.testing.assert_array_equal(np.asarray(levels[1][1]), data[2, ::2, ::2])


def test_reader_opens_a_huge_zarr_as_a_lazy_pyramid(tmp_path):
    """Defect 6: the reader gave napari one full-resolution array of a 2000×20000×20000 Zarr."""
    import zarr

    from napari_tokenunify.plugin_io import get_reader

    path = tmp_path / "huge.zarr"
    zarr.create_array(str(path), shape=HUGE, chunks=(64, 512, 512), dtype="uint8", fill_value=0)
    t0 = time.perf_counter()
    layers, peak = _peak_mb(lambda: get_reader(str(path))(str(path)))
    assert time.perf_counter() - t0 < 10 and peak < 50
    (data, kwargs, kind), = layers
    assert kind == "image" and kwargs["multiscale"] is True
    assert tuple(data[0].shape) == HUGE and 5 <= len(data) <= 10
    assert max(data[-1].shape[-2:]) <= 1024
    assert all(hasattr(level, "dask") for level in data)  # napari slices levels lazily
    section, peak = _peak_mb(lambda: np.asarray(data[-1][7]))
    assert section.shape == data[-1].shape[1:] and peak < 20


def test_reader_opens_huge_labels_and_affinity_stores_as_pyramids(tmp_path):
    """Labels and affinities of large volumes open lazily too; a Predict store's levels read
    only its finished blocks."""
    import zarr

    from napari_tokenunify.engine.store import BlockStore
    from napari_tokenunify.plugin_io import get_reader

    labels = tmp_path / "huge-labels.zarr"
    zarr.create_array(str(labels), shape=HUGE, chunks=(64, 512, 512), dtype="uint32", fill_value=0)
    (data, kwargs, kind), = get_reader(str(labels))(str(labels))
    assert kind == "labels" and kwargs["multiscale"] and tuple(data[0].shape) == HUGE

    shape, chunks = (3, *HUGE), (3, 14, 70, 70)
    grid = tuple(-(-s // c) for s, c in zip(shape[1:], chunks[1:], strict=True))
    store = BlockStore.create(tmp_path / "huge-affinities.zarr", "affinities", shape=shape,
                              chunks=chunks, dtype="float16", grid_shape=grid, settings={},
                              attrs={"kind": "affinities", "tokenunify": {"kind": "affinities"}})
    store.array[:, 0:14, 0:70, 0:70] = 0.5
    store.mark_done((0, 0, 0))
    path = str(tmp_path / "huge-affinities.zarr")
    t0 = time.perf_counter()
    (data, kwargs, kind), = get_reader(path)(path)
    assert kind == "image" and kwargs["multiscale"] and tuple(data[0].shape) == shape
    coarse, peak = _peak_mb(lambda: np.asarray(data[-1][:, 0]))
    assert time.perf_counter() - t0 < 10 and peak < 20
    step = HUGE[1] // data[-1].shape[2] + 1  # 64: voxels 0 and 64 of the finished block
    assert step == 64 and (coarse[:, :2, :2] == 0.5).all() and coarse.sum() == 0.5 * 12

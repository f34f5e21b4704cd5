"""Tile grid, padding, ROI-first ordering and region parsing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tokenunify.engine.tiling import TileGrid, order_blocks, parse_box, read_padded


def test_cores_cover_the_region_exactly_once():
    grid = TileGrid((20, 45, 33), (16, 32, 32), (2, 4, 4), origin=(3, 0, 5))
    cover = np.zeros((23, 45, 38), dtype=int)
    for b in grid.blocks():
        cover[b.core_slices] += 1
        tile_shape = tuple(t1 - t0 for t0, t1 in b.tile)
        assert tile_shape == (16, 32, 32)
        # the core sits inside the tile with at least the halo on every side facing more data,
        # and tiles stay inside the volume (flush with its edges) when it is larger than a tile
        for (c0, c1), (t0, t1), h, (lo, hi) in zip(b.core, b.tile, grid.halo, grid.volume_box,
                                                   strict=True):
            assert c0 - t0 >= h or c0 == lo
            assert t1 - c1 >= h or c1 == hi
            assert lo <= t0 and t1 <= hi
    assert (cover[3:, :, 5:] == 1).all() and cover[:3].sum() == 0 and cover[:, :, :5].sum() == 0
    assert len(grid) == len(grid.blocks()) == int(np.prod(grid.grid_shape))


def test_no_tile_is_wasted_on_volume_edges():
    # a 25%-overlap sliding window needs 3 windows here; so do we (and not 3 x 2 x 2)
    grid = TileGrid((32, 160, 160), (16, 160, 160), (1, 10, 10))
    assert grid.grid_shape == (3, 1, 1)
    big = TileGrid((64, 416, 416), (16, 160, 160), (1, 10, 10))
    assert len(big) == 5 * 3 * 3
    # inside a larger volume (a crop), the region's sides facing more data keep their halo
    crop = TileGrid((16, 100, 100), (16, 64, 64), (2, 4, 4), origin=(8, 50, 50),
                    bounds=((0, 40), (0, 200), (0, 200)))
    for b in crop.blocks():
        for (c0, c1), (t0, t1), h in zip(b.core, b.tile, crop.halo, strict=True):
            assert c0 - t0 >= h and t1 - c1 >= h


def test_grid_refuses_a_halo_that_leaves_no_core():
    with pytest.raises(ValueError, match="no core"):
        TileGrid((10, 10, 10), (8, 8, 8), (4, 1, 1))


def test_read_padded_mirrors_outside_and_keeps_inside():
    image = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    tile = read_padded(image, ((-2, 7), (0, 6), (-3, 10)))
    assert tile.shape == (9, 6, 13)
    assert np.array_equal(tile[2:7, :, 3:10], image)
    assert np.array_equal(tile[0, :, 3:10], image[2])  # reflect: -2 mirrors to 2
    thin = read_padded(image[:1], ((-3, 4), (0, 6), (0, 7)))  # one section: edge padding
    assert thin.shape == (7, 6, 7) and (thin == image[0]).all()


def test_roi_blocks_come_first_nearest_centre_first():
    grid = TileGrid((16, 64, 64), (16, 16, 16), (0, 0, 0))
    roi = ((0, 16), (40, 56), (40, 56))
    ordered = order_blocks(grid.blocks(), roi)
    assert ordered[0].core == ((0, 16), (48, 64), (48, 64)) or ordered[0].core == ((0, 16), (32, 48), (32, 48))
    n_in = 4  # the roi touches a 2 x 2 block patch
    first = {b.index for b in ordered[:n_in]}
    assert first == {(0, 2, 2), (0, 2, 3), (0, 3, 2), (0, 3, 3)}
    assert sorted(b.index for b in ordered) == sorted(b.index for b in grid.blocks())


def test_parse_box_and_its_errors():
    assert parse_box("0:4,:10,5:", (8, 20, 30)) == ((0, 4), (0, 10), (5, 30))
    with pytest.raises(ValueError, match="z0:z1"):
        parse_box("0:4,0:4", (8, 8, 8))
    with pytest.raises(ValueError, match="outside the volume"):
        parse_box("0:9,0:4,0:4", (8, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        parse_box("4:4,0:4,0:4", (8, 8, 8))
    with pytest.raises(ValueError, match="integers"):
        parse_box("a:4,0:4,0:4", (8, 8, 8))

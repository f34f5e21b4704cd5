"""The block grid of tiled prediction: cores, halos, padding and the order of work.

The output is cut into disjoint *cores* (a regular grid, the last core along an axis may be
smaller). Each core is predicted from an input *tile* of a fixed shape accepted by the model
that holds the core plus at least ``halo`` voxels of context on every side facing more data;
only the core of the prediction is kept (valid-region stitching). Because cores are disjoint and
line up with the chunks of the output store, blocks can be written independently (resume,
several workers) and no blending weights are needed: the halo hides the tile border from the
kept region. Tiles at the volume's edges sit flush with it (no padding, no wasted halo), so a
volume needs about as many tiles as its size over the core size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import product

import numpy as np

Shape3 = tuple[int, int, int]
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Block:
    """One unit of work: ``index`` in the grid, its ``core`` box (output voxels it owns) and the
    ``tile`` box it reads (may reach outside the volume; the outside is padded)."""

    index: tuple[int, int, int]
    core: Box
    tile: Box

    @property
    def core_slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in self.core)

    @cached_property
    def core_shape(self) -> Shape3:
        return tuple(b - a for a, b in self.core)

    @property
    def n_core_voxels(self) -> int:
        return int(np.prod(self.core_shape))

    def core_in_tile(self) -> tuple[slice, slice, slice]:
        """Where the core lies inside the predicted tile."""
        return tuple(slice(c0 - t0, c1 - t0) for (c0, c1), (t0, _) in zip(self.core, self.tile, strict=False))


def _axis_plan(size: int, tile: int, halo: int, edge_lo: bool, edge_hi: bool) -> int:
    """Fewest cores (equal size, the last may be smaller) whose tiles keep ``halo`` voxels of
    context on every side that is not a volume edge (a volume edge has no context to keep)."""
    lo, hi = (0 if edge_lo else halo), (0 if edge_hi else halo)
    if size + lo + hi <= tile:
        return 1
    n = 2
    while True:
        c = -(-size // n)
        last = size - (n - 1) * c
        fits = c + lo + halo <= tile and last + hi + halo <= tile
        if n > 2:
            fits = fits and c + 2 * halo <= tile
        if fits and last > 0:
            return n
        n += 1


@dataclass(frozen=True)
class TileGrid:
    """A grid of equal cores (the last along an axis may be smaller) over a region ``origin`` +
    ``shape`` of a volume, each predicted from a ``tile_shape`` tile (the model's input shape).

    Tiles keep at least ``halo`` voxels of context around their core, except at the edges of the
    volume (``bounds``, default the region), where tiles are placed flush with the edge instead of
    padding it: there is no context to gain there. Only a volume smaller than a tile is padded.
    """

    shape: Shape3
    tile_shape: Shape3
    halo: Shape3
    origin: Shape3 = (0, 0, 0)
    bounds: Box | None = None

    def __post_init__(self) -> None:
        for name in ("shape", "tile_shape", "halo", "origin"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"{name} must have three sizes (z, y, x), got {value}")
        if min(self.shape) < 1:
            raise ValueError(f"the region to predict is empty: shape {self.shape}")
        if min(self.halo) < 0:
            raise ValueError(f"halo must be non-negative, got {self.halo}")
        if any(t - 2 * h < 1 for t, h in zip(self.tile_shape, self.halo, strict=False)):
            raise ValueError(
                f"tile shape {self.tile_shape} leaves no core with a halo of {self.halo} on each "
                "side; use a larger tile or a smaller halo"
            )

    @property
    def volume_box(self) -> Box:
        if self.bounds is not None:
            return tuple((int(a), int(b)) for a, b in self.bounds)
        return tuple((o, o + s) for o, s in zip(self.origin, self.shape, strict=False))

    @cached_property  # a frozen grid: computed once (a large volume's block() calls it often)
    def grid_shape(self) -> Shape3:
        return tuple(
            _axis_plan(s, t, h, o == lo, o + s == hi)
            for s, t, h, o, (lo, hi) in zip(
                self.shape, self.tile_shape, self.halo, self.origin, self.volume_box, strict=False
            )
        )

    @cached_property
    def core_shape(self) -> Shape3:
        return tuple(-(-s // n) for s, n in zip(self.shape, self.grid_shape, strict=False))

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    def block(self, index: Sequence[int]) -> Block:
        core, tile = [], []
        for i, o, s, c, t, (lo, hi) in zip(
            index, self.origin, self.shape, self.core_shape, self.tile_shape, self.volume_box,
            strict=False,
        ):
            a = o + i * c
            b = min(a + c, o + s)
            start = a - (t - (b - a)) // 2  # centred on the core ...
            if hi - lo >= t:  # ... and kept inside the volume when it is at least a tile wide
                start = min(max(start, lo), hi - t)
            else:
                start = lo - (t - (hi - lo)) // 2
            core.append((a, b))
            tile.append((start, start + t))
        return Block(tuple(int(i) for i in index), tuple(core), tuple(tile))

    def blocks(self) -> list[Block]:
        return [self.block(ix) for ix in product(*(range(n) for n in self.grid_shape))]

    def blocks_meeting(self, box: Box) -> list[Block]:
        """The blocks whose core meets ``box`` (volume coordinates), found from the grid's index
        ranges: a view of a large volume never lists the millions of blocks of the volume."""
        ranges = []
        for (a, b), o, c, n in zip(box, self.origin, self.core_shape, self.grid_shape, strict=False):
            lo = max(0, (int(a) - o) // c)
            hi = min(n, -(-(int(b) - o) // c))
            ranges.append(range(lo, hi))
        return [blk for blk in (self.block(ix) for ix in product(*ranges))
                if boxes_intersect(blk.core, box)]

    def index_of(self, point: Sequence[float]) -> tuple[int, int, int]:
        """The grid index of the block whose core holds ``point`` (clipped to the grid)."""
        return tuple(
            int(min(max((float(p) - o) // c, 0), n - 1))
            for p, o, c, n in zip(point, self.origin, self.core_shape, self.grid_shape, strict=False)
        )


def boxes_intersect(a: Box, b: Box) -> bool:
    return all(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in zip(a, b, strict=False))


def order_blocks(blocks: Sequence[Block], first: Box | None = None,
                 point: Sequence[float] | None = None) -> list[Block]:
    """Blocks that meet ``first`` (e.g. the region in view), nearest ``point`` (default: the
    centre of ``first``; e.g. the centre of the view) first, the block holding it before all,
    then the rest in grid order. Without ``first`` the grid order is kept."""
    if first is None:
        return list(blocks)
    centre = np.array([(a + b) / 2 for a, b in first] if point is None else point, dtype=float)
    inside = [b for b in blocks if boxes_intersect(b.core, first)]
    outside = [b for b in blocks if not boxes_intersect(b.core, first)]

    def dist(b: Block) -> tuple[bool, float]:
        holds = all(x0 <= p < x1 for p, (x0, x1) in zip(centre, b.core, strict=False))
        c = np.array([(x0 + x1) / 2 for x0, x1 in b.core])
        return (not holds, float(np.sum((c - centre) ** 2)))

    return sorted(inside, key=dist) + outside


def parse_box(text: str, shape: Sequence[int] | None = None) -> Box:
    """Parse ``"z0:z1,y0:y1,x0:x1"`` (empty ends mean the volume edge) into a box, checked
    against ``shape`` when given."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or any(":" not in p for p in parts):
        raise ValueError(f"region {text!r} must look like z0:z1,y0:y1,x0:x1 (e.g. 0:32,0:256,0:256)")
    box = []
    for axis, part in enumerate(parts):
        lo, hi = part.split(":", 1)
        try:
            a = int(lo) if lo.strip() else 0
            if hi.strip():
                b = int(hi)
            elif shape is not None:
                b = int(shape[axis])
            else:
                raise ValueError(f"region {text!r}: open end needs the volume shape")
        except ValueError as err:
            raise ValueError(f"region {text!r}: {err}; use integers like 0:32,0:256,0:256") from None
        box.append((a, b))
    return check_box(tuple(box), shape)


def check_box(box: Box, shape: Sequence[int] | None = None) -> Box:
    """Refuse empty or out-of-volume boxes with a message naming the volume shape."""
    box = tuple((int(a), int(b)) for a, b in box)
    if len(box) != 3:
        raise ValueError(f"a region needs three (start, stop) pairs, got {box}")
    for axis, (a, b) in enumerate(box):
        if a < 0 or b <= a:
            raise ValueError(f"region {box} is empty or negative along axis {'zyx'[axis]}")
        if shape is not None and b > shape[axis]:
            raise ValueError(
                f"region {box} reaches outside the volume of shape {tuple(shape)} along axis "
                f"{'zyx'[axis]}"
            )
    return box


def read_padded(image, box: Box) -> np.ndarray:
    """Read ``box`` from a (z, y, x) array (numpy, dask or zarr); parts outside are mirrored
    (reflect; edge when the volume is too thin to reflect), so every tile has the same shape."""
    shape = image.shape
    inner = tuple((max(a, 0), min(b, s)) for (a, b), s in zip(box, shape, strict=False))
    data = image[tuple(slice(a, b) for a, b in inner)]
    data = np.asarray(data.compute() if hasattr(data, "compute") else data)
    pad = [(ia - a, b - ib) for (a, b), (ia, ib) in zip(box, inner, strict=False)]
    if not any(p for pair in pad for p in pair):
        return data
    # reflect (numpy repeats it when the pad is wider than the data); edge on 1-voxel axes
    out = data
    for axis, widths_axis in enumerate(pad):
        if widths_axis == (0, 0):
            continue
        widths = [(0, 0)] * 3
        widths[axis] = widths_axis
        out = np.pad(out, widths, mode="edge" if out.shape[axis] == 1 else "reflect")
    return out

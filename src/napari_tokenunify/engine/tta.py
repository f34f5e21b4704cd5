"""Test-time augmentation: average a network's affinities over mirrored copies of each tile.

Mirroring the input along an axis mirrors an affinity too: in the flipped frame channel ``c``
links ``v`` to ``v + offset`` instead of ``v - offset``, so after flipping the output back the
channel is shifted by its offset along that axis (the first ``offset`` voxels, which the mirror
says nothing about, come from the other copies; the unflipped copy always counts). This is exact
only for offsets along a single axis (nearest-neighbour and axis-aligned long-range affinities);
other offsets are refused rather than averaged wrongly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it runs, so widgets can list the modes cheaply
    import torch

TTA_MODES: dict[str, tuple[int, ...]] = {"none": (), "yx": (1, 2), "zyx": (0, 1, 2)}
TTA_LABELS = {"none": "none", "yx": "in-plane flips (4×)", "zyx": "all flips (8×)"}


def check_tta(mode: str, offsets: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The spatial axes ``mode`` mirrors; a clear error for an unknown mode or an offset that a
    mirror cannot map back onto itself."""
    if mode not in TTA_MODES:
        raise ValueError(f"test-time augmentation must be one of {sorted(TTA_MODES)}, got {mode!r}")
    axes = TTA_MODES[mode]
    for o in offsets:
        moved = [a for a in axes if int(o[a]) != 0]
        if moved and sum(1 for v in o if int(v) != 0) > 1:
            raise ValueError(
                f"test-time flips need affinity offsets along one axis; {tuple(int(v) for v in o)} "
                "is diagonal. Use tta='none' for this model"
            )
    return axes


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the identity first): 2**len(axes) mirrored copies."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(tuple(axes), r)]


def unflip(y: torch.Tensor, flipped: tuple[int, ...], offsets) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of a mirrored input back in the original frame, and where it is defined (1/0)."""
    import torch

    y = torch.flip(y, [2 + a for a in flipped])
    out = torch.zeros_like(y)
    weight = torch.zeros_like(y[:1, :, ...])
    for c, o in enumerate(offsets):
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        for a in flipped:
            s = int(o[a])
            if s:
                src[a] = slice(0, y.shape[2 + a] - s)
                dst[a] = slice(s, None)
        out[(slice(None), c, *dst)] = y[(slice(None), c, *src)]
        weight[(0, c, *dst)] = 1.0
    return out, weight


def flip_average(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 offsets: Sequence[Sequence[int]], mode: str = "zyx") -> torch.Tensor:
    """Mean of ``forward`` over the mirrored copies of ``x`` (B, 1, Z, Y, X) that ``mode`` names,
    each mapped back to the original frame."""
    import torch

    axes = check_tta(mode, offsets)
    total: torch.Tensor | None = None
    count: torch.Tensor | None = None
    for flipped in flip_sets(axes):
        if not flipped:
            y = forward(x).float()
            w = torch.ones_like(y[:1])
        else:
            y, w = unflip(forward(torch.flip(x, [2 + a for a in flipped])).float(), flipped, offsets)
        total = y if total is None else total + y
        count = w if count is None else count + w
    return total / count

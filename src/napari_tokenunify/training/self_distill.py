"""Self-distillation: the starting model's own affinities as soft targets while it is finetuned.

A few corrections pull a model toward the corrected region and away from what it did well
elsewhere (docs/results.md, session 8: +37 % VOI on the never-corrected part of a volume). Half
the samples (``FinetuneConfig.distill_p``) then come from anywhere in the volume with the
*starting* model's prediction as targets: a pull toward what it knew, where the corrections
say nothing (rule 14: +0.8 % instead of +37 % on a corrected slab). The targets are the
affinities the user already has (the widget's affinities layer, ``tokenunify finetune
--teacher-affinities``), else the starting model predicts the volume once, a crop of at most
:data:`MAX_PREDICTED_VOXELS` around the corrected region when the volume is larger.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: a volume above this many voxels is distilled from a crop around the corrections when the
#: start's affinities must be predicted first (about half a minute on two CPU threads)
MAX_PREDICTED_VOXELS = 8_000_000

TEACHER_NAME = "the starting model (self-distillation)"


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The starting model as a teacher: a copy in eval mode whose weights never train."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def crop_around(shape: Sequence[int], centre: Sequence[float], max_voxels: int,
                minimum: Sequence[int]) -> tuple[slice, ...]:
    """A box of at most ~``max_voxels`` (the volume's proportions, at least ``minimum`` per
    axis where the volume allows) centred on ``centre`` and moved inside the volume."""
    shape = [int(s) for s in shape]
    n = math.prod(shape)
    f = min(1.0, (max_voxels / max(n, 1)) ** (1 / 3))
    out = []
    for s, c, m in zip(shape, centre, minimum, strict=True):
        size = min(s, max(int(m), int(s * f)))
        start = int(round(float(c) - size / 2))
        start = min(max(0, start), s - size)
        out.append(slice(start, start + size))
    return tuple(out)


def region_centre(shape: Sequence[int], mask: Any = None, box: Any = None) -> tuple[float, ...]:
    """The centre of the corrected region: the mask's bounding box, the box, else the volume."""
    if box is not None:
        return tuple((b[0] + b[1]) / 2 for b in box)
    if mask is not None:
        idx = np.nonzero(np.asarray(mask))
        if idx[0].size:
            return tuple((float(i.min()) + float(i.max()) + 1) / 2 for i in idx)
    return tuple(s / 2 for s in shape)


def distillation_volumes(raws: Sequence, masks: Sequence, box: Any, patch_shape: Sequence[int],
                         max_voxels: int = MAX_PREDICTED_VOXELS) -> list:
    """The volumes the starting model predicts for its own targets: each raw, or a crop of at
    most ``max_voxels`` around its corrected region when larger."""
    out = []
    for raw, mask in zip(raws, masks, strict=True):
        shape = tuple(int(s) for s in np.shape(raw))
        if math.prod(shape) <= max_voxels:
            out.append(raw)
            continue
        sl = crop_around(shape, region_centre(shape, mask, box), max_voxels, patch_shape)
        out.append(raw[sl])
    return out


__all__ = ["MAX_PREDICTED_VOXELS", "TEACHER_NAME", "crop_around", "distillation_volumes",
           "frozen_copy", "region_centre"]

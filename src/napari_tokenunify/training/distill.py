"""Knowledge distillation: a teacher network's soft affinities as finetuning targets.

A stronger model (e.g. the bundled U-Net) predicts affinities for unlabeled volumes once, with
the engine (tiled, with test-time flips), and those affinities, not a segmentation of them, are
the targets: an uncertain boundary stays a soft target instead of becoming a hard (and sometimes
wrong) cut or link, as pseudo-labels make it. Patches of raw and teacher affinities are moved
together by the symmetries of the voxel grid (flips and the y/x transpose, which together give
every in-plane rotation the labelled samples get), each affinity channel mapped exactly as in
:mod:`..engine.tta`; the intensity augmentations then degrade the raw the student sees only
("noisy student"). Elastic and misalignment moves are left to the labelled samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .augment import EMAugment
from .config import check_distill_margin
from .targets import balance_weights, mask_links


def teacher_offsets(teacher: torch.nn.Module) -> list[tuple[int, ...]]:
    """The affinity offsets the teacher predicts (from its card; nearest neighbour when it says none)."""
    from ..engine.predict import model_offsets

    return [tuple(int(v) for v in o) for o in model_offsets(teacher)]


def load_teacher(teacher: Any, offsets: Sequence[Sequence[int]]) -> torch.nn.Module:
    """The teacher network (a model, or a path/name for ``load_model``); refuses one whose
    offsets differ from the student's. It only predicts (through the engine), never trains."""
    if isinstance(teacher, torch.nn.Module):
        net = teacher
    else:
        from ..model import load_model

        net = load_model(str(teacher), device="cpu")
    got = teacher_offsets(net)
    want = [tuple(int(v) for v in o) for o in offsets]
    if got != want:
        raise ValueError(
            f"the teacher predicts affinities for offsets {got}, the student is trained for {want}; "
            "give a teacher with the same offsets (or train the student for the teacher's)"
        )
    return net


def flip_affinities(affs: np.ndarray, axis: int, offsets: Sequence[Sequence[int]]):
    """Mirror (C, Z, Y, X) affinities along spatial ``axis``: returns (affinities, defined) where
    a mirrored link is moved back onto the voxel it belongs to; the first ``offset`` voxels of a
    moved channel are not defined (0 in ``defined``). The mapping of test-time flips
    (``engine.tta``), on numpy arrays."""
    from ..engine.tta import unflip

    out, defined = unflip(torch.from_numpy(np.ascontiguousarray(affs))[None], (axis,), offsets)
    return out[0].numpy(), np.broadcast_to(defined[0].numpy(), affs.shape).astype(np.float32)


def transpose_yx(affs: np.ndarray, offsets: Sequence[Sequence[int]]) -> np.ndarray:
    """Swap the y and x axes of (C, Z, Y, X) affinities; channel order follows ``offsets``
    (each channel goes to the one whose offset is its own with y and x swapped)."""
    index = {tuple(int(v) for v in o): c for c, o in enumerate(offsets)}
    out = np.empty((affs.shape[0], affs.shape[1], affs.shape[3], affs.shape[2]), affs.dtype)
    for c, o in enumerate(offsets):
        swapped = (int(o[0]), int(o[2]), int(o[1]))
        if swapped not in index:
            raise ValueError(f"offset {tuple(o)} has no y/x-swapped partner among {list(offsets)}")
        out[index[swapped]] = affs[c].transpose(0, 2, 1)
    return out


class TeacherTargets:
    """Draws distillation samples: (augmented raw, teacher affinities, loss weights).

    ``volumes``: the raw volumes (z, y, x) to draw from; the teacher predicts each in full once
    (``tta``: its test-time flips), so give crops of very large ones, or pass its
    ``affinities`` (C, Z, Y, X) per volume, computed before (numpy, zarr or dask: only the
    sampled patches are read). ``margin``: only teacher affinities at least this far from 0.5
    are targets (where the teacher is unsure, the labelled samples alone teach; 0: all are).
    ``rng`` drives sampling and augmentation. ``normalization``: the
    student's card normalisation, applied to the raw patches exactly as the labelled samples
    (``sampling.PatchSampler``) and prediction apply it; without it integers are scaled by their
    dtype's range.
    """

    def __init__(
        self,
        teacher: torch.nn.Module,
        volumes: Sequence,
        patch_shape: Sequence[int],
        offsets: Sequence[Sequence[int]],
        rng: np.random.Generator,
        device: torch.device | str = "cpu",
        tta: str = "yx",
        progress=None,
        affinities: Sequence | None = None,
        normalization: Any = None,
        margin: float = 0.0,
    ) -> None:
        from ..engine.predict import predict_affinities
        from ..engine.tta import check_tta

        check_tta(tta, offsets)
        self.margin = check_distill_margin(margin)
        self.offsets = [tuple(int(v) for v in o) for o in offsets]
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.rng = rng
        self.volumes = list(volumes)
        for v in self.volumes:
            if len(v.shape) != 3:
                raise ValueError(f"distillation volumes must be 3D (z, y, x), got shape {tuple(v.shape)}")
        if affinities is None:
            affinities = [predict_affinities(v, teacher, device=device, tta=tta, dtype="float16",
                                             progress=progress) for v in self.volumes]
        elif len(affinities) != len(self.volumes):
            raise ValueError("give one teacher affinity volume per distillation volume")
        self.affinities = [a if hasattr(a, "shape") and hasattr(a, "__getitem__") else np.asarray(a)
                           for a in affinities]
        for v, a in zip(self.volumes, self.affinities, strict=True):
            if tuple(a.shape) != (len(self.offsets), *v.shape):
                raise ValueError(f"teacher affinities of shape {a.shape} do not fit a volume of shape "
                                 f"{tuple(v.shape)} with {len(self.offsets)} offsets")
        sizes = np.array([float(np.prod(v.shape)) for v in self.volumes])
        self._p = sizes / sizes.sum()
        self.ranges = None
        if normalization is not None:
            from ..engine.normalize import intensity_range

            self.ranges = [intensity_range(v, normalization) for v in self.volumes]

    def to_input(self, i: int, block: np.ndarray) -> np.ndarray:
        """A raw block of volume ``i`` as the network's [0, 1] input (as ``PatchSampler``)."""
        from .sampling import to_unit

        return to_unit(block) if self.ranges is None else self.ranges[i].apply(block)

    def sample(self, augment: EMAugment | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (raw, target, weight) sample of ``patch_shape`` (target and weight (C, Z, Y, X))."""
        from .sampling import _pad_to, _read

        i = int(self.rng.choice(len(self.volumes), p=self._p))
        vol, affs = self.volumes[i], self.affinities[i]
        start = tuple(int(self.rng.integers(0, max(0, s - p) + 1))
                      for s, p in zip(vol.shape, self.patch_shape, strict=True))
        shape = tuple(min(s, p) for s, p in zip(vol.shape, self.patch_shape, strict=True))
        sl = tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))
        raw = np.asarray(self.to_input(i, _read(vol, start, shape)), np.float32)
        target = affs[(slice(None), *sl)]
        target = np.asarray(target.compute() if hasattr(target, "compute") else target, np.float32)
        defined = np.ones(target.shape, np.float32)
        if augment is not None and augment.flip_rotate:
            if raw.shape[1] == raw.shape[2] and self.rng.random() < 0.5:
                raw, target, defined = raw.transpose(0, 2, 1), transpose_yx(target, self.offsets), \
                    transpose_yx(defined, self.offsets)
            for axis in (0, 1, 2):
                if self.rng.random() < 0.5:
                    raw = np.flip(raw, axis)
                    target, d = flip_affinities(target, axis, self.offsets)
                    defined = flip_affinities(defined, axis, self.offsets)[0] * d
        raw = np.ascontiguousarray(raw, np.float32)
        if augment is not None:
            raw = augment.photometric(raw, self.rng)
        # a volume smaller than the patch: mirrored raw, and padding never enters the loss
        mask = _pad_to(np.ones(shape, np.float32), self.patch_shape, "constant")
        raw = _pad_to(raw, self.patch_shape, "reflect")
        target = np.stack([_pad_to(t, self.patch_shape, "constant") for t in target])
        defined = np.stack([_pad_to(t, self.patch_shape, "constant") for t in defined])
        valid = mask_links(mask, self.offsets) * defined
        if self.margin > 0:
            valid = valid * (np.abs(target - 0.5) >= self.margin)
        return raw.astype(np.float32), target, balance_weights(target, valid)


def soft_bce(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy, averaged over the links that count (hard or soft targets)."""
    return F.binary_cross_entropy(
        pred.clamp(1e-6, 1 - 1e-6), target, weight=weight, reduction="sum"
    ) / weight.gt(0).sum().clamp_min(1)


__all__ = ["TeacherTargets", "flip_affinities", "load_teacher", "soft_bce", "teacher_offsets", "transpose_yx"]

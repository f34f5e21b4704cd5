"""The hyper-parameters of affinity finetuning in one typed object.

:class:`FinetuneConfig` is what ``tokenunify finetune``, the widget's Finetune section and the
scripts fill in, what :func:`~napari_tokenunify.training.finetune.finetune` trains with and what a
finetuned model's card records (``training.config``). Its defaults are *the* defaults: the CLI's
options and the widget's fields start from ``FinetuneConfig()``, so the two cannot drift apart.
No torch, no Qt: cheap to import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

#: agglomeration thresholds tried at validation; the best one is the card's recommendation
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TTA_MODES = ("none", "yx", "zyx")
MAX_HOLDOUT = 0.5


@dataclass(frozen=True)
class FinetuneConfig:
    """Training hyper-parameters of :func:`finetune` (data, model and device are arguments).

    ``patch_shape``: ``None`` takes the starting model's card patch (else 16 × 80 × 80).
    ``ema``: decay of an exponential moving average of the weights that is validated and kept
    (``None``: off). ``head_steps``: train only a re-initialised output layer first (LP-FT).
    ``val_every``: validate every so many steps (0: only at the end). ``thresholds``: the
    agglomeration thresholds tried at validation. ``holdout``: share of the corrected region
    held back (a slab at the end of its longest axis) to validate on when no validation volume
    is given (see ``keep_start_threshold`` for the threshold). ``time_budget_s``: stop after this
    many seconds of training (the best model so far is kept; ``None``: ``steps`` alone end it).
    ``distill_p``/``teacher_tta``:
    share of samples with a teacher's soft targets and the teacher's test-time flips (used only
    with a teacher). ``distill_margin``: only the teacher's affinities at least this far from
    0.5 are targets (0: all; 0.25: below 0.25 or above 0.75), so where the teacher is unsure the
    labels alone teach. ``self_distill``: with no teacher given, a trained starting model is its own
    teacher (``distill_p`` of the samples, anywhere in the volume, with the start's affinities
    as soft targets: :mod:`.self_distill`); off for a network started from scratch or with a
    new output layer. ``keep_start_threshold``: with held-back corrections (``holdout``) and a
    trained start, validation scores at the start's threshold and the card keeps it (the
    corrections choose the checkpoint, not the threshold); a validation volume still re-chooses.
    ``rechoose_margin``: with the start's threshold kept, the kept model then scores the
    held-back corrections (or, when none could be held back, the corrections themselves) at
    every threshold, and the card takes the best of them instead when its VOI there is at least
    this share below the start threshold's (strong evidence that the user's volume wants
    another threshold); ``None``: always keep the start's (rules 35-37 and 41, docs/results.md).
    ``start_margin``: with held-back corrections and a trained start (one whose card recommends
    a segmentation threshold), the starting model itself
    competes with the checkpoints: a checkpoint is kept only when its VOI on the held-back
    corrections is at least this share below the start's there, else the start's weights are
    returned unchanged (finetuning did not clearly help, so nothing is forgotten); ``None``:
    the best checkpoint is kept even when the start scored better (rule 38, docs/results.md).
    Where nothing could be held back it does not act.
    ``grow_boundaries``: give each training patch's labels this many one-voxel boundaries
    (label 0 where two ids touch, :func:`~.targets.grow_boundaries`) after augmentation; 0: the
    labels as they are. Validation always scores against the labels as given.
    ``lsd_sigma``: also train the network to predict the labels' local shape descriptors
    (:mod:`.lsd`, Sheridan et al. 2022) in a Gaussian window of this many voxels, as ten extra
    output channels after the affinities, with ``lsd_weight`` times their mean squared error
    added to the loss; 0: off. Prediction ignores those channels (``bundle`` cuts them off).
    ``permute_axes``: read training patches with their axes in a random order (z seen as y or
    x and the other way round): more views of the same labels, for isotropic data only (FIB-SEM
    at one voxel size along every axis). ``None`` ("auto", the default): on when the data's voxel
    size is known and the same along every axis to within 15 % (:func:`permute_for`), else off.
    ``anneal_to_budget``: with a time budget, the learning rate's cosine decay ends when the
    budget does (at the pace of the steps so far) instead of at ``steps``, which a budget of
    minutes never reaches (training would stop near the full rate). On by default (rule 53).
    """

    # steps and time_budget_s: rule 30 (docs/results.md, session 13): the budget, not a step
    # count, ends training. With 500 steps, 5 minutes stopped at half the budget and a tenth of a
    # volume the model never saw improved the rest by 0 % on average; trained for the whole
    # budget, by 27 % (and the default on its own kind of volume: slab +4.7 %, blocks -6.6 %)
    steps: int = 5000
    # ema and holdout: chosen by rule 11 (docs/results.md, session 7) with bench_adapt.py on a
    # validation volume (lr 1e-3 without EMA made the uncorrected part 21 % worse on average).
    # lr: rules 48-49 (session 18): on a volume the model never saw the never-corrected part fell
    # by 41 % on average at 5e-4 against 31 % at 2e-4; rule 52 (session 19): on the default's own
    # kind of volume four fresh seeds at 5e-4 gave 1.000-1.030 (one earlier run: 1.26, see
    # docs/results.md)
    lr: float = 5e-4
    batch_size: int = 1
    patch_shape: tuple[int, int, int] | None = None
    augment: bool = True
    ema: float | None = 0.99
    head_steps: int = 0
    val_every: int = 100
    thresholds: tuple[float, ...] = field(default=DEFAULT_THRESHOLDS)
    holdout: float = 0.2
    time_budget_s: float | None = 300.0
    seed: int = 0
    checkpoint_every: int = 50
    distill_p: float = 0.5
    teacher_tta: str = "yx"
    distill_margin: float = 0.0
    # rule 14 (docs/results.md, session 9): without it 5 minutes of finetuning on a tenth of a
    # held-out volume made the never-corrected part 33 % worse on average, with it 9 %
    self_distill: bool = True
    # rule 17 (session 9): re-choosing the threshold on the held-back fifth cost 7 % VOI on the
    # never-corrected part (blocks: 1.622 against 1.515 when the start's 0.6 is kept)
    keep_start_threshold: bool = True
    # rule 41 (session 15): on a volume the model never saw, re-choosing at a 20 % margin took
    # the never-corrected part to -11/-52 % (slab/blocks) against -11/-34 % with the start's
    # threshold kept; on the default's own kind of volume it never changed the threshold
    rechoose_margin: float | None = 0.2
    # rule 38 (session 15): the default PL on its own kind of volume got 12 % and 5 % worse
    # outside the corrections in two of four runs while its held-back corrections got 6 % and
    # 0.4 % better; below a tenth better there, the start is kept (all four runs then within 5 %)
    start_margin: float | None = 0.1
    grow_boundaries: int = 0
    lsd_sigma: float = 0.0
    lsd_weight: float = 1.0
    # rule 46 (docs/results.md, session 17): on a volume the model never saw, permuted views of
    # the corrections took the never-corrected part further (see there); None: for isotropic data
    permute_axes: bool | None = None
    # rule 53 (docs/results.md, session 19): on a volume the model never saw, ending the decay
    # with the budget took the never-corrected part further (see there)
    anneal_to_budget: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the types once, here
        set_(self, "steps", _int("steps", self.steps, 1))
        set_(self, "batch_size", _int("batch_size", self.batch_size, 1))
        set_(self, "head_steps", _int("head_steps", self.head_steps, 0))
        set_(self, "val_every", _int("val_every", self.val_every, 0))
        set_(self, "checkpoint_every", _int("checkpoint_every", self.checkpoint_every, 1))
        set_(self, "seed", int(self.seed))
        set_(self, "grow_boundaries", _int("grow_boundaries", self.grow_boundaries, 0))
        set_(self, "augment", bool(self.augment))
        set_(self, "permute_axes", _permute_setting(self.permute_axes))
        for name in ("lsd_sigma", "lsd_weight"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of 0 or more (0: no shape descriptors), "
                                 f"got {getattr(self, name)}")
            set_(self, name, value)
        set_(self, "self_distill", bool(self.self_distill))
        set_(self, "anneal_to_budget", bool(self.anneal_to_budget))
        set_(self, "keep_start_threshold", bool(self.keep_start_threshold))
        if self.rechoose_margin is not None:
            margin = float(self.rechoose_margin)
            if not 0.0 <= margin < 1.0:
                raise ValueError(f"rechoose_margin must be a share in [0, 1) (e.g. 0.1: re-choose the "
                                 f"threshold when that is 10 % better on the held-back corrections), "
                                 f"or None to keep the start's, got {self.rechoose_margin}")
            set_(self, "rechoose_margin", margin)
        if self.start_margin is not None:
            margin = float(self.start_margin)
            if not 0.0 <= margin < 1.0:
                raise ValueError(f"start_margin must be a share in [0, 1) (e.g. 0.05: keep a finetuned "
                                 f"checkpoint only when it is 5 % better than the starting model on the "
                                 f"held-back corrections), or None to always keep the best checkpoint, "
                                 f"got {self.start_margin}")
            set_(self, "start_margin", margin)
        lr = float(self.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the learning rate must be a positive number, got {self.lr}")
        set_(self, "lr", lr)
        if self.patch_shape is not None:
            patch = tuple(int(p) for p in self.patch_shape)
            if len(patch) != 3 or min(patch) < 1:
                raise ValueError(f"patch_shape must be three positive sizes (z, y, x), got {self.patch_shape}")
            set_(self, "patch_shape", patch)
        if self.ema is not None:
            ema = float(self.ema)
            if not 0.0 < ema < 1.0:
                raise ValueError(f"ema must be a decay between 0 and 1 (e.g. 0.999), got {self.ema}")
            set_(self, "ema", ema)
        ts = (self.thresholds,) if isinstance(self.thresholds, (int, float)) else self.thresholds
        ts = tuple(float(t) for t in ts)
        if not ts or not all(0.0 <= t <= 1.0 for t in ts):
            raise ValueError(f"thresholds must be one or more values in [0, 1], got {self.thresholds}")
        set_(self, "thresholds", ts)
        holdout = float(self.holdout)
        if not 0.0 <= holdout <= MAX_HOLDOUT:
            raise ValueError(f"holdout must be a share between 0 and {MAX_HOLDOUT} of the corrected "
                             f"region (e.g. 0.2), got {self.holdout}")
        set_(self, "holdout", holdout)
        if self.time_budget_s is not None:
            budget = float(self.time_budget_s)
            if not (math.isfinite(budget) and budget > 0):
                raise ValueError(f"the time budget must be positive, got {self.time_budget_s} s")
            set_(self, "time_budget_s", budget)
        p = float(self.distill_p)
        if not 0.0 <= p <= 1.0:  # finetune() asks for more than 0 when there is a teacher
            raise ValueError(f"distill_p must be a share in [0, 1], got {self.distill_p}")
        set_(self, "distill_p", p)
        set_(self, "distill_margin", check_distill_margin(self.distill_margin))
        if self.teacher_tta not in TTA_MODES:
            raise ValueError(f"teacher_tta must be one of {', '.join(TTA_MODES)}, got {self.teacher_tta!r}")

    def with_(self, **changes: Any) -> FinetuneConfig:
        """A copy with some fields changed; unknown names raise ``TypeError`` naming the fields."""
        unknown = set(changes) - config_fields()
        if unknown:
            raise TypeError(f"unknown finetune option(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(config_fields()))}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists), as recorded in a model card's ``training.config``."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Read back :meth:`to_dict` (keys of a newer version are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in config_fields()})


def config_fields() -> set[str]:
    """The names of :class:`FinetuneConfig`'s fields."""
    return {f.name for f in fields(FinetuneConfig)}


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value}")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return number




_PERMUTE_WORDS = {"auto": None, "none": None, "on": True, "true": True, "yes": True,
                  "off": False, "false": False, "no": False}


def check_distill_margin(value: Any) -> float:
    """``value`` as a distillation margin: a distance from 0.5 in [0, 0.5), else ``ValueError``."""
    margin = float(value)
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"distill_margin must be in [0, 0.5) (0: every teacher affinity is a target; "
                         f"0.25: only those below 0.25 or above 0.75), got {value}")
    return margin


def _permute_setting(value: Any) -> bool | None:
    """``permute_axes`` as True, False or None (auto); also "on", "off" and "auto"."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _PERMUTE_WORDS:
        return _PERMUTE_WORDS[value.strip().lower()]
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"permute_axes must be on, off or auto (True, False or None), got {value!r}")


#: how far apart the voxel size may be along the axes for permuted views (the same share as
#: ``engine.resample.RESCALE_TOLERANCE``; not imported, as this module must stay free of torch)
ISOTROPIC_TOLERANCE = 0.15


def permute_for(setting: bool | None, voxel_size_nm: Any) -> tuple[bool, str]:
    """Whether finetuning reads permuted views, and why: the setting when it is on or off; for
    ``None`` (auto), on when ``voxel_size_nm`` (z, y, x, as the card's data record holds it) is
    known and within :data:`ISOTROPIC_TOLERANCE` of its mean along every axis, else off."""
    if setting is not None:
        return bool(setting), "set"
    if voxel_size_nm is None:
        return False, "auto: the voxel size is unknown"
    sizes = [float(v) for v in voxel_size_nm]
    mean = sum(sizes) / len(sizes)
    iso = mean > 0 and all(abs(v / mean - 1.0) <= ISOTROPIC_TOLERANCE for v in sizes)
    shown = " × ".join(f"{v:g}" for v in sizes)
    return iso, f"auto: the voxel size {shown} nm is {'' if iso else 'not '}isotropic"


__all__ = ["DEFAULT_THRESHOLDS", "FinetuneConfig", "check_distill_margin", "config_fields", "permute_for"]

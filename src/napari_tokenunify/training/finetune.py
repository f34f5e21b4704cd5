"""Supervised finetuning of an affinity network on instance labels.

Takes in-memory (or lazy) arrays so the napari plugin can finetune on the labels a user corrected
(``mask``/``box`` restrict training to that region). Starts from a model, a model path (ours, a
TokenUnify ``.pth``, or a pretraining output folder) or from scratch. Periodically segments a
validation volume with the engine and keeps the model with the lowest VOI (split + merge).
Checkpoints are written atomically and runs resume; the initial model is never written to.

The starting model and what carries over are :mod:`.start`'s, the corrected region and its
held-back part :mod:`.regions`', validation and the card's threshold :mod:`.validation`'s; their
public functions are re-exported here.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..affinities import NEAREST_OFFSETS
from ..devices import resolve_device
from ..progress import Cancelled, CancelToken, ProgressCallback, ProgressReporter, check_cancel
from .augment import EMAugment
from .checkpoints import (
    LAST,
    export_model,
    find_resume,
    guard_output,
    save_checkpoint,
)
from .config import DEFAULT_THRESHOLDS, FinetuneConfig, config_fields, permute_for
from .distill import soft_bce
from .logs import LossLog, plot_losses
from .lsd import LSD_CHANNELS, LSD_DOWNSAMPLE, lsd_targets
from .regions import around_selection, box_bounds, check_region_size, crop_box, hold_back
from .runtime import (
    Budget,
    check_input_divisor,
    hardware,
    lr_at,
    optimizer_step,
    resume_state,
    rng_state,
    seed_everything,
    set_lr,
)
from .sampling import DEFAULT_PATCH, PatchSampler, to_unit
from .start import (
    card_normalization,
    default_name,
    ema_model,
    freeze_all_but,
    head_parameters,
    keep_output_channels,
    prepare_model,
    set_card_patch,
    start_name,
    start_record,
    transfer_weights,
)
from .targets import (
    TrainingDataError,
    affinity_targets,
    balance_weights,
    check_training_pair,
    grow_boundaries,
)
from .validation import (
    chosen_threshold,
    rechoose_threshold,
    score_thresholds,
    start_kept_note,
    start_table_record,
    table_record,
    threshold_table,
    validate,
    validate_set,
    validation_thresholds,
    write_history,
)


def _batch(sampler, augment, offsets, rng, batch_size, distill=None, distill_p=0.0, boundary=0,
           lsd_sigma=0.0):
    """``batch_size`` samples: with probability ``distill_p`` one of the teacher's
    (``distill``, a :class:`TeacherTargets`), else one with targets from the labels (given
    ``boundary`` one-voxel boundaries after augmentation).

    With ``lsd_sigma`` > 0, targets and weights get :data:`~.lsd.LSD_CHANNELS` more channels after
    the affinities: the local shape descriptors of the (augmented) labels, weighted 1 on labelled
    voxels inside the mask and 0 elsewhere (and on a teacher's samples, which have none)."""
    raws, targets, weights = [], [], []
    for _ in range(batch_size):
        if distill is not None and (distill_p >= 1.0 or rng.random() < distill_p):
            x, affs, w = distill.sample(augment)
            raws.append(x)
            targets.append(affs if not lsd_sigma else _with_lsd(affs, None))
            weights.append(w if not lsd_sigma else _with_lsd(w, None))
            continue
        p = sampler.sample()
        raw, labels, mask = p.raw, p.labels, p.mask
        if augment is not None:
            raw, labels, mask = augment(raw, labels, mask, rng)
        if boundary:
            labels = grow_boundaries(labels, boundary)
        affs, valid = affinity_targets(labels, offsets, mask)
        w = balance_weights(affs, valid)
        if lsd_sigma:
            lsd, lsd_valid = lsd_targets(labels, lsd_sigma, mask)
            affs, w = _with_lsd(affs, lsd), _with_lsd(w, lsd_valid)
        raws.append(raw)
        targets.append(affs)
        weights.append(w)
    t = [torch.from_numpy(np.stack(x)) for x in (raws, targets, weights)]
    return t[0][:, None], t[1], t[2]


def _with_lsd(affs: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """``affs`` followed by the descriptor channels ``extra`` (zeros when None)."""
    if extra is None:
        extra = np.zeros((LSD_CHANNELS,) + affs.shape[1:], dtype=np.float32)
    return np.concatenate([affs.astype(np.float32, copy=False), extra.astype(np.float32, copy=False)])


def training_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, n_affinities: int,
                  lsd_weight: float = 0.0) -> torch.Tensor:
    """The balanced BCE of the first ``n_affinities`` channels, plus ``lsd_weight`` times the
    weighted mean squared error of the descriptor channels after them (when there are any)."""
    loss = soft_bce(pred[:, :n_affinities], target[:, :n_affinities], weight[:, :n_affinities])
    if pred.shape[1] > n_affinities and lsd_weight > 0:
        w = weight[:, n_affinities:]
        err = (pred[:, n_affinities:] - target[:, n_affinities:]) ** 2
        loss = loss + lsd_weight * (err * w).sum() / w.gt(0).sum().clamp_min(1)
    return loss


def resolve_config(config: FinetuneConfig | None = None, **options: Any) -> tuple[FinetuneConfig, Any]:
    """``config`` (default ``FinetuneConfig()``) with the keyword ``options`` applied over it.

    The old keywords of :func:`finetune` still work: ``threshold`` sets ``thresholds``, and an
    ``augment`` that is an :class:`EMAugment` (not a bool) is used as given (the config then
    records ``augment=True``). Returns the config and that augmentation object (or None).
    """
    config = config if config is not None else FinetuneConfig()
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    options = dict(options)
    if "threshold" in options:
        if "thresholds" in options:
            raise TypeError("give threshold or thresholds, not both")
        options["thresholds"] = options.pop("threshold")
    custom_augment = None
    if "augment" in options and not isinstance(options["augment"], bool) and options["augment"] is not None:
        custom_augment = options["augment"]
        options["augment"] = True
    elif "augment" in options:
        options["augment"] = bool(options["augment"])
    unknown = set(options) - config_fields()
    if unknown:
        raise TypeError(f"finetune() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
    return config.with_(**options), custom_augment


def finetune(
    raw,
    labels,
    *,
    mask=None,
    box=None,
    init: Any = None,
    preset: str = "tiny",
    config: FinetuneConfig | None = None,
    out_dir: str | Path | None = None,
    offsets: Sequence[Sequence[int]] = NEAREST_OFFSETS,
    validation: tuple | list | None = None,
    teacher: Any = None,
    distill_volumes: Sequence | None = None,
    teacher_affinities: Sequence | None = None,
    normalization: Any = None,
    device: str = "auto",
    resume: bool = True,
    name: str | None = None,
    data: Mapping[str, Any] | None = None,
    voxel_size_nm: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> torch.nn.Module:
    """Finetune an affinity network on ``raw`` + instance ``labels``; returns the best model.

    The hyper-parameters come from ``config`` (a :class:`~.config.FinetuneConfig`, default
    ``FinetuneConfig()``); keyword ``options`` named like its fields (``steps=``, ``lr=``,
    ``patch_shape=``, ``ema=``, ``head_steps=``, ``val_every=``, ``threshold=``/``thresholds=``,
    ``batch_size=``, ``augment=``, ``seed=``, ``time_budget_s=``, ``checkpoint_every=``,
    ``holdout=``, ``distill_p=``, ``teacher_tta=``) override it (:func:`resolve_config`).

    ``raw``/``labels`` (and ``mask``) may be lists, one entry per training volume (no ``box``
    then); patches are drawn from each in proportion to its size.
    ``normalization``: how raw intensities become the network's input, in training and in
    prediction alike (recorded in the card); default: the starting model's, and for a new network
    ``engine.normalize.ROBUST_NORMALIZATION`` (per-volume percentiles).

    ``mask`` (1 = train here) and ``box`` (three slices) restrict where the loss counts: the
    corrected region. A region with fewer voxels than one training patch, an empty mask or a
    region whose labels are all 0 raise :class:`TrainingDataError` saying what to do.
    ``patch_shape`` defaults to the initial model's card patch size (else 16 × 80 × 80).
    ``validation`` = ``(raw, labels)`` or ``(raw, labels, mask)``, or a list of such volumes: scored
    every ``val_every`` steps and at the end (at the best of ``thresholds``, shared by all volumes);
    the model with the lowest (mean) VOI is returned (without validation, the last one). Without
    ``validation``, ``holdout`` > 0 holds back that share of the corrected region to validate on.
    With validation the starting model is scored first too (the card's "before", unless from
    scratch), and the threshold chosen at the best step becomes the card's recommendation.
    ``ema`` (e.g. 0.999): validate, keep and return an exponential moving average of the
    weights instead of the raw ones; it smooths the step-to-step noise of small-batch training.
    ``head_steps``: train only the layers that were re-initialised (the output layer of a
    pretrained network) for this many steps before training everything ("LP-FT": a fresh head
    on pretrained features first, so its early random gradients do not distort those features).
    ``teacher`` (a model or a model path/name, e.g. ``"unet"``): distillation. A share
    ``distill_p`` of the samples is drawn from ``distill_volumes`` (default: ``raw``; unlabeled
    volumes are the point) with the teacher's affinities (``teacher_tta`` flips) as soft targets,
    see :mod:`.distill`; the rest come from ``labels`` as usual. ``teacher_affinities``: the
    teacher's affinities of each distillation volume when already predicted.

    Provenance, in the returned model's card (and the exported one): ``name`` (default
    ``<start>-ft-<date>``), ``training.started_from`` (the start's name and weights hash),
    ``training.data`` (``data``, e.g. ``{"raw": path, "labels": path}`` or layer names, with the
    shapes and ``voxel_size_nm``), ``training.region``, steps, seconds, device, ``training.config``
    and ``metrics.validation``/``validation_before``. ``voxel_size_nm`` (z, y, x nm of the data)
    also becomes the card's voxel size: the network learnt at that size.
    With ``out_dir``: ``checkpoints/last.pt``, ``model/`` (the best), ``loss.csv``, ``loss.png``,
    ``validation.csv``. The initial model and the bundled models are never written to.
    """
    cfg, custom_augment = resolve_config(config, **options)
    several = isinstance(raw, (list, tuple))
    raws = list(raw) if several else [raw]
    labels_list = list(labels) if several else [labels]
    masks = (list(mask) if mask is not None else [None] * len(raws)) if several else [mask]
    if several and (len(labels_list) != len(raws) or len(masks) != len(raws)):
        raise TrainingDataError("give one labels volume (and one mask, or none) per raw volume")
    if several and box is not None:
        raise TrainingDataError("box restricts one volume; give one raw volume with a box, or masks")
    for r, lab, m in zip(raws, labels_list, masks, strict=True):
        check_training_pair(r, lab, m)
    data_record = _data_record(data, raws, voxel_size_nm)
    offsets = [tuple(int(v) for v in o) for o in offsets]
    if out_dir is not None:
        guard_output(out_dir, init)
    patch_shape = cfg.patch_shape
    if patch_shape is None:  # the patch the initial model was trained with, when it says
        card_patch = getattr(getattr(init, "card", None), "patch_size", None)
        patch_shape = card_patch if card_patch and len(card_patch) == 3 else DEFAULT_PATCH
    patch_shape = tuple(int(p) for p in patch_shape)
    region: dict[str, Any] = {"kind": "whole volume"}
    full_raws, full_masks = list(raws), list(masks)  # self-distillation draws from all of them
    if box is not None:
        region = {"kind": "box", "box": box_bounds(box, np.shape(raw))}
        (raw, labels, mask), box_mask = crop_box([raw, labels, mask], box, patch_shape)
        mask = box_mask if mask is None else box_mask * (np.asarray(mask) > 0)
        check_training_pair(raw, labels, mask)
        raws, labels_list, masks = [raw], [labels], [mask]
    elif not several and mask is not None:
        region = {"kind": "mask"}
    if region["kind"] != "whole volume":
        region["voxels"] = check_region_size(masks[0], patch_shape)
    # every correction, before a part is held back: the start's own scores there (below)
    all_corrections = (raws[0], labels_list[0], masks[0]) if region["kind"] != "whole volume" else None
    if cfg.holdout > 0 and validation is None and not several:
        masks[0], validation, region["holdout"] = hold_back(
            raws[0], labels_list[0], masks[0], cfg.holdout, patch_shape)
    dev = resolve_device(device)
    rng, gen = seed_everything(cfg.seed)
    n_lsd = LSD_CHANNELS if cfg.lsd_sigma > 0 else 0  # training-only outputs after the affinities
    model, init_note = prepare_model(init, len(offsets) + n_lsd, preset, offsets)
    started_from = init_note.pop("started_from")
    # the test-time flips the starting model recommends carry over: before and after finetuning
    # the same flips are used, so the two can be compared (a new output layer starts without)
    flips = getattr(getattr(model, "card", None), "recommended_tta", "none")
    # validation and the threshold re-chosen here use the start's agglomeration scoring
    scoring = getattr(getattr(model, "card", None), "recommended_scoring", "median")
    thresholds, kept = validation_thresholds(cfg, region, init_note, started_from)
    set_card_patch(model, patch_shape)
    normalization = card_normalization(model, normalization, init_note.get("init") == "scratch")
    model = model.to(dev)
    head = head_parameters(model, init_note, cfg.head_steps)
    check_input_divisor(model, patch_shape)
    augment = custom_augment if custom_augment is not None else (EMAugment() if cfg.augment else None)
    permute, permute_why = permute_for(cfg.permute_axes, data_record.get("voxel_size_nm"))
    sampler = PatchSampler(
        raws, patch_shape, labels=labels_list, masks=masks, seed=rng, min_labelled=0.05,
        normalization=normalization, permute_axes=permute,
    )
    distill, teacher_s, start_teacher = None, 0.0, None
    self_taught = (teacher is None and cfg.self_distill and cfg.distill_p > 0
                   and init_note.get("init") != "scratch" and init_note.get("copied") == "all")
    if teacher is not None or self_taught:
        if not 0.0 < cfg.distill_p <= 1.0:
            raise ValueError(f"distill_p must be in (0, 1] to distil from a teacher, got {cfg.distill_p}")
        from .distill import TeacherTargets, load_teacher
        from .self_distill import distillation_volumes, frozen_copy

        if self_taught:  # the start, before any step, labels the volume it is finetuned on
            teacher_model, tta = frozen_copy(model), flips
            start_teacher = teacher_model
            vols = list(distill_volumes) if distill_volumes is not None else (
                full_raws if teacher_affinities is not None else distillation_volumes(
                    full_raws, full_masks, region.get("box"), patch_shape))
        else:
            teacher_model, tta = load_teacher(teacher, offsets), cfg.teacher_tta
            vols = list(distill_volumes) if distill_volumes is not None else raws
        if not vols:
            raise TrainingDataError("distill_volumes is empty: give the volumes the teacher should label")
        t0 = time.perf_counter()
        distill = TeacherTargets(teacher_model, vols, patch_shape, offsets, rng, dev, tta=tta,
                                 progress=_teacher_progress(progress), affinities=teacher_affinities,
                                 normalization=normalization, margin=cfg.distill_margin)
        teacher_s = time.perf_counter() - t0  # the teacher's prediction counts in the time budget
    elif distill_volumes is not None:
        raise ValueError("distill_volumes needs a teacher (the model whose affinities are the targets)")
    elif teacher_affinities is not None:
        raise ValueError("teacher_affinities needs a teacher, or self-distillation from a trained "
                         "starting model (self_distill on, distill_p > 0)")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    averaged = ema_model(model, cfg.ema)
    scored = model if averaged is None else averaged.module  # the weights that are validated and kept
    out = Path(out_dir) if out_dir is not None else None
    log = LossLog(out / "loss.csv", resume=resume) if out is not None else None

    step, elapsed = 0, 0.0
    best: dict[str, Any] = {"voi": float("inf"), "state": None, "step": 0, "scores": None}
    history: list[dict] = []
    before: dict[str, Any] | None = None
    ckpt = find_resume(out) if (resume and out is not None) else None
    if ckpt is not None:
        state = resume_state(ckpt, dev, model, optimizer, rng, gen)
        if averaged is not None:
            if "ema" not in state:
                raise ValueError(
                    f"the checkpoint in {out} was written without ema; resume without ema, "
                    "or start a new run in another folder"
                )
            averaged.load_state_dict(state["ema"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        best = state["best"]
        history = state["history"]
        before = state.get("before")
        if log is not None:
            log.truncate_after(step)

    budget = Budget(cfg.steps, cfg.time_budget_s, elapsed + teacher_s, start_step=step)

    def checkpoint() -> None:
        if out is None:
            return
        save_checkpoint(
            out / "checkpoints" / LAST,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(rng, gen),
                "step": step,
                "elapsed": budget.elapsed,
                "best": best,
                "history": history,
                "before": before,
                **({"ema": averaged.state_dict()} if averaged is not None else {}),
            },
        )

    def score() -> dict[str, Any]:
        if isinstance(validation, list):
            scores = validate_set(scored, validation, device=str(dev), threshold=thresholds)
            return {k: v for k, v in scores.items() if k != "per_volume"} | {
                f"voi_{i}": p["voi"] for i, p in enumerate(scores["per_volume"])}
        v_raw, v_labels = validation[0], validation[1]
        v_mask = validation[2] if len(validation) > 2 else None
        return validate(scored, v_raw, v_labels, mask=v_mask, device=str(dev), threshold=thresholds)

    def run_validation() -> None:
        if validation is None:
            return
        scores = score()
        history.append({"step": step, **scores})
        if scores["voi"] < best["voi"]:
            best.update(
                voi=scores["voi"],
                state={k: v.detach().cpu().clone() for k, v in scored.state_dict().items()},
                step=step,
                scores=scores,
                start=False,
            )
        if out is not None:
            write_history(out / "validation.csv", history)

    if validation is not None and step == 0 and before is None and init_note.get("init") != "scratch":
        before = score()  # the starting model on the same data: the card's "before"
        trained = isinstance(started_from.get("segmentation_threshold"), (int, float))
        if cfg.start_margin is not None and init_note.get("copied") == "all" and trained:
            # a trained start (its card recommends a threshold) competes: a checkpoint is kept
            # only when it beats it by start_margin
            best.update(voi=before["voi"] * (1.0 - cfg.start_margin), step=0, scores=before, start=True,
                        state={k: v.detach().cpu().clone() for k, v in scored.state_dict().items()})

    start_t = started_from.get("segmentation_threshold")
    # the start as it was, scored after training (outside the time budget) on all the corrections
    start_copy = None
    if (step == 0 and all_corrections is not None and isinstance(start_t, (int, float))
            and init_note.get("copied") == "all"):
        from .self_distill import frozen_copy

        start_copy = start_teacher if start_teacher is not None else frozen_copy(model)
    reporter = ProgressReporter(cfg.steps, progress, "finetuning", "voxels/s")
    reporter.done = step
    voxels = cfg.batch_size * int(np.prod(patch_shape))
    model.train()
    while not budget.done(step):
        try:
            check_cancel(cancel)
        except Cancelled:
            checkpoint()  # keep every finished step for the resume
            raise
        x, target, weight = _batch(sampler, augment, offsets, rng, cfg.batch_size, distill, cfg.distill_p,
                                   cfg.grow_boundaries, cfg.lsd_sigma)
        lr_now = lr_at(step, budget.schedule_steps(step, cfg.anneal_to_budget), cfg.lr)
        set_lr(optimizer, lr_now)
        if head:
            freeze_all_but(model, head if step < cfg.head_steps else None)
        pred = model(x.to(dev))
        loss = training_loss(pred, target.to(dev), weight.to(dev), len(offsets), cfg.lsd_weight)
        optimizer_step(optimizer, loss, model.parameters(), step=step, lr=cfg.lr, what="finetuning")
        if averaged is not None:
            averaged.update_parameters(model)
        step += 1
        if log is not None:
            log.write(step, "affinity_bce", loss.item(), lr_now, budget.elapsed)
        reporter.total = budget.expected_steps(step)  # the time budget may end it before cfg.steps
        reporter.advance(1, voxels, loss=loss.item())
        if cfg.val_every and step % cfg.val_every == 0:
            run_validation()
        if step % cfg.checkpoint_every == 0:
            checkpoint()
    if validation is not None and (not history or history[-1]["step"] != step):
        run_validation()
    checkpoint()
    if head:
        freeze_all_but(model, None)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    elif averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    threshold, threshold_choice = chosen_threshold(best.get("scores"), started_from, region, kept)
    tables: dict[str, dict[float, float]] = {}
    trained_start = init_note.get("copied") == "all" and threshold is not None and not several
    if kept and validation is not None and not isinstance(validation, list):
        # the kept checkpoint at every threshold on the held-back corrections: recorded, and the
        # card's threshold when it is clearly better there (``rechoose_margin``)
        tables["held-back corrections"] = threshold_table(model, validation, (*cfg.thresholds, threshold),
                                                        device=str(dev))
    in_sample = trained_start and validation is None and all_corrections is not None
    crop = None
    if in_sample or start_copy is not None:  # all the corrections, with half a patch of context
        crop = around_selection(all_corrections[0], np.asarray(all_corrections[1]),
                                np.asarray(all_corrections[2]) > 0, patch_shape)
    if in_sample:
        # too few corrections to hold a part back: the corrections themselves (in-sample) score
        # the thresholds, with the same margin
        tables["corrections (in-sample)"] = threshold_table(model, crop, (*cfg.thresholds, threshold),
                                                          device=str(dev))
    on_corrections = None
    if start_copy is not None:
        on_corrections = start_table_record(threshold_table(start_copy, crop, (*cfg.thresholds, start_t),
                                                          device=str(dev)), float(start_t))
        del start_copy
    for source, table in tables.items():
        rechosen = rechoose_threshold(table, threshold, cfg.rechoose_margin)
        if rechosen != threshold:
            threshold, threshold_choice = rechosen, (
                f"best of the {source} (VOI {table[rechosen]:.3f} against {table[threshold]:.3f} at "
                f"the starting model's {threshold:g}, at least {cfg.rechoose_margin:.0%} lower)")
    training = {
        "objective": "affinity_bce_balanced" + ("+lsd_mse" if n_lsd else ""),
        **({"lsd": {"sigma_voxels": cfg.lsd_sigma, "weight": cfg.lsd_weight, "channels": n_lsd,
                    "downsample": LSD_DOWNSAMPLE,
                    "note": "training-only outputs after the affinities; prediction ignores them"}}
           if n_lsd else {}),
        **{k: v for k, v in init_note.items() if k != "reinitialised"},
        "started_from": started_from,
        "data": data_record,
        "region": region,
        "steps": step,
        "best_step": best["step"] if best["state"] is not None else step,
        **({"kept": start_kept_note(before, history, cfg.start_margin)} if best.get("start") else {}),
        "seconds": round(budget.elapsed, 1),
        "device": str(dev),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "config": cfg.with_(patch_shape=patch_shape).to_dict(),
        "patch_shape": list(patch_shape),
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "augment": augment is not None,
        "permuted_views": {"on": permute, "why": permute_why},
        **({"ema": cfg.ema} if averaged is not None else {}),
        **({"head_steps": cfg.head_steps} if head else {}),
        **({"test_time_flips": flips} if flips != "none" else {}),
        **({"segmentation_threshold": threshold, "threshold_choice": threshold_choice}
           if threshold is not None else {}),
        **({"threshold_tables": {source: table_record(table) for source, table in tables.items()}}
           if tables else {}),
        **({"start_on_corrections": on_corrections} if on_corrections else {}),
        "segmentation_scoring": scoring,
        **({"distillation": _distillation_record(teacher, self_taught, cfg, flips, distill,
                                                 teacher_affinities is not None)}
           if distill is not None else {}),
        "hardware": hardware(),
    }
    model.training_info = training
    model.validation_history = history
    model.validation_before = before
    model.card = _card(model, preset, offsets, patch_shape, training, best.get("scores"), before,
                       name or default_name(started_from["name"]), voxel_size_nm, len(offsets) + n_lsd)
    if out is not None:
        plot_losses(out / "loss.csv", out / "loss.png")
        export_model(model, out / "model", model.card)
    return model


def _data_record(data: Mapping[str, Any] | None, raws: list, voxel_size_nm: Sequence[float] | None) -> dict:
    """``training.data`` of the card: what the caller says the data is, plus shapes and voxel size."""
    record: dict[str, Any] = dict(data or {})
    shapes = [[int(v) for v in np.shape(r)] for r in raws]
    record["shape" if len(shapes) == 1 else "shapes"] = shapes[0] if len(shapes) == 1 else shapes
    if voxel_size_nm is not None:
        vs = [float(v) for v in np.atleast_1d(np.asarray(voxel_size_nm, dtype=float))]
        vs = vs * 3 if len(vs) == 1 else vs
        if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
            raise ValueError(f"voxel_size_nm must be three positive sizes (z, y, x nm), got {voxel_size_nm}")
        record["voxel_size_nm"] = vs
    return record


def _teacher_progress(progress: ProgressCallback | None) -> ProgressCallback | None:
    """Report the teacher's prediction of the distillation volumes through ``progress`` too."""
    if progress is None:
        return None

    from dataclasses import replace

    def report(p) -> None:
        progress(replace(p, message=f"teacher: {p.message}"))

    return report


def _distillation_record(teacher: Any, self_taught: bool, cfg: FinetuneConfig, flips: str,
                         distill: Any, given: bool) -> dict[str, Any]:
    """``training.distillation`` of the card: who taught, how often, on what (and, when set,
    how sure the teacher had to be for its affinity to count)."""
    margin = {"margin": cfg.distill_margin} if cfg.distill_margin > 0 else {}
    if self_taught:
        from .self_distill import TEACHER_NAME

        return {"teacher": TEACHER_NAME, "share": cfg.distill_p, "teacher_tta": flips, **margin,
                "affinities": "given" if given else "predicted",
                "volume_shapes": [[int(v) for v in np.shape(x)] for x in distill.volumes]}
    return {"teacher": _teacher_name(teacher), "share": cfg.distill_p, "teacher_tta": cfg.teacher_tta,
            **margin}


def _teacher_name(teacher: Any) -> str:
    if isinstance(teacher, torch.nn.Module):
        card = getattr(teacher, "card", None)
        return str(getattr(card, "description", None) or type(teacher).__name__)
    return str(teacher)


def _card(model, preset, offsets, patch_shape, training, scores, before, name, voxel_size_nm,
          out_channels=None):
    """The finetuned model's card: the start's architecture and normalisation, a new name, this
    run's training record and only this run's scores (never the start's old ones)."""
    from dataclasses import replace

    from ..model import ModelCard

    if isinstance(getattr(model, "config", None), dict):  # the residual U-Net
        from ..model.files import UNET_PRESET

        preset = UNET_PRESET
    elif getattr(model, "config", None) is not None:  # name what was trained, not what was asked
        from ..model.checkpoint import preset_for

        preset = preset_for(model.config) or "custom"
    metrics: dict[str, Any] = {}
    if scores:
        metrics["validation"] = scores
    if before:
        metrics["validation_before"] = before
    start = training.get("started_from", {}).get("name", "scratch")
    data = training.get("data", {})
    if data.get("raw"):
        what = str(data["raw"])
    elif data.get("image") and data.get("labels"):  # napari layers
        what = f"layer '{data['image']}' with labels '{data['labels']}'"
    else:
        what = "the given volume" if "shape" in data else "the given volumes"
    fields = {
        "preset": preset,
        "in_channels": 1,
        "out_channels": out_channels or len(offsets),
        "offsets": [list(o) for o in offsets],
        "patch_size": list(patch_shape),
        "training": training,
        "metrics": metrics,
        "name": name,
        "description": f"{start} finetuned on {what} ({training['steps']} steps, "
                       f"{training['seconds']:.0f} s on {training['device']})",
    }
    if voxel_size_nm is not None:
        fields["voxel_size_nm"] = list(data.get("voxel_size_nm") or voxel_size_nm)
    base = getattr(model, "card", None)
    if base is not None:
        return replace(base, **{k: v for k, v in fields.items() if hasattr(base, k)})
    return ModelCard(**fields)


__all__ = [
    "DEFAULT_THRESHOLDS", "FinetuneConfig", "default_name", "finetune", "keep_output_channels",
    "prepare_model", "rechoose_threshold", "resolve_config", "score_thresholds", "start_name",
    "start_record", "to_unit", "transfer_weights", "validate", "validate_set",
]

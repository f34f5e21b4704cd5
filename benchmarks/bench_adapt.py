#!/usr/bin/env python
"""Correct, finetune, predict again: how fast a few corrections adapt a model to a volume it
was not trained on (issue 14, item 1), and whether *Next place to check* points at errors
(item 4, ``--ranking``).

**The loop** (default mode). For each ``--volume`` (a crop of ``quality_sets``):

1. predict it with ``--model`` through the library (the card's normalisation and tiles; the
   card's test-time flips unless ``--tta``) and segment at the card's threshold: *before*;
2. "correct" a share of it (``--share``, default a tenth), the way a user's edits end up: the
   ground truth copied into a region of the labels, that region the finetuning mask. Two
   regions, each its own run: ``slab`` (a contiguous slab at the start of the volume's longest
   axis) and ``blocks`` (the top blocks of *Next place to check* on the *before* segmentation,
   as many as make the same share);
3. finetune from the model with ``finetune(...)`` and the defaults of ``FinetuneConfig()`` (what
   ``tokenunify finetune`` and the widget's Finetune start from), stopped by ``--budget``
   seconds of training (``time_budget_s``);
4. predict the whole volume again with the finetuned model (same flips) and segment it at the
   finetuned card's threshold: *after*;
5. score *before* and *after* only on the voxels that were never corrected (VOI split + merge,
   ARAND; ground-truth label 0 ignored, as ``bench_quality`` scores). Also printed: the score at
   the best of ``quality_sets.THRESHOLDS`` on that part (an oracle, for reference only).

Default volumes: ``medulla-dense z90-119`` (a ``quality_sets.VALIDATION`` crop; the bundled
default of sessions 1-6 never saw ``medulla-dense``; a default retrained on ``quality_sets.TRAIN``
has seen its sections 0-85, never these), and ``medulla-labeled/test`` (``quality_sets.TEST``:
the kind of volume the default was trained for, where finetuning must not make things worse).
"The other way round" (a model trained on ``medulla-dense`` adapted to ``medulla-labeled``) is
the same command with ``--model`` a ``medulla-dense`` model.

**The ranking** (``--ranking``). On each volume (the two ``VALIDATION`` crops; ``--test`` adds
the test volume, reported only), the full blocks of ``proofread.block_grid`` are ranked by
``proofread.uncertainty_ranking`` (with the *before* labels at the card's threshold and their
agglomerator, as the widget ranks after Segment; with the labels only; without labels) and the error density of the top ``--top`` blocks (10) is compared with that of
``--top`` random full blocks of the same grid, averaged over ``--draws`` draws (seeds 0, 1, ...).

*Error density* of a set of blocks = error voxels / counted voxels, summed over the blocks.
Counted voxels: ground truth not 0, and, where the ground truth is dense (under 1 % of voxels 0,
so membranes belong to bodies), not on a ground-truth boundary (a voxel with a 6-neighbour of
another id), so that a one-voxel shift of a correct boundary is no error. Two definitions:

- *in-block* (the criterion): the errors a proofreader sees in the block. Within the block, a
  counted voxel is a merge error when its segment's largest ground-truth body in the block is
  another body, and a split error when its body's largest segment in the block is another
  segment; error = merge or split.
- *whole-volume*: the same with the majorities taken over the whole volume: every voxel of a
  body merged into a larger one is an error, however far from where the two touch (so a block
  deep inside it counts as erroneous though nothing there can be seen or corrected).

  python benchmarks/bench_adapt.py --ranking [--test] [--tta none]
  python benchmarks/bench_adapt.py --budget 300 [--model default] [--volume NAME ...] [--tta none]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_sets as qs  # noqa: E402

Region = tuple[slice, slice, slice]
DEFAULT_VOLUMES = ("medulla-dense z90-119", "medulla-labeled/test")
BLOCK = (8, 32, 32)  # the widget's block (uncertainty_ranking's default)
VOXEL_NM = (10.0, 10.0, 10.0)  # every shared volume: 10 nm isotropic FIB-SEM (../shared/data/README.md)
#: the rankings compared: with labels and an agglomerator (what the widget ranks by after
#: Segment), with labels only, with neither
# "boundaries + merges" is the widget's (merge levels 0.15, 0.1, 0.05 below t: rule 20);
# "merges at t/3..2t/3" the same with the levels it had before rule 20
# "uncertainty + boundaries": affinity uncertainty and segment boundaries, each in units of its
# volume mean, summed (rule 44)
SIGNALS = ("boundaries + merges", "merges at t/3..2t/3", "segment boundaries", "affinity uncertainty",
           "uncertainty + boundaries")


# -- error densities ---------------------------------------------------------------------------
def counted_voxels(gt: np.ndarray) -> np.ndarray:
    """Voxels an error density counts: ground truth not 0 and, for dense ground truth (under 1 %
    zeros), not on a ground-truth boundary (a 6-neighbour with another id)."""
    keep = gt != 0
    if np.mean(~keep) >= 0.01:
        return keep
    for axis in range(gt.ndim):
        here = [slice(None)] * gt.ndim
        there = [slice(None)] * gt.ndim
        here[axis], there[axis] = slice(1, None), slice(None, -1)
        edge = gt[tuple(here)] != gt[tuple(there)]
        keep[tuple(here)] &= ~edge
        keep[tuple(there)] &= ~edge
    return keep


def error_voxels(seg: np.ndarray, gt: np.ndarray, counted: np.ndarray | None = None) -> np.ndarray:
    """Boolean map of merge or split error voxels among ``counted`` (default ``gt != 0``):
    merge: the voxel's segment has another ground-truth body as its largest one; split: the
    voxel's body has another segment as its largest one (majorities over the given arrays)."""
    counted = gt != 0 if counted is None else counted
    out = np.zeros(gt.shape, dtype=bool)
    if not counted.any():
        return out
    from napari_tokenunify.proofread import minority_mask

    # merge: the voxel's segment has another body as its largest; split: the reverse
    out[counted] = minority_mask(seg[counted], gt[counted])
    return out


def block_errors(seg: np.ndarray, gt: np.ndarray, blocks: Sequence[Region],
                 in_block: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(error voxels, counted voxels) per block, by the in-block or whole-volume definition."""
    counted = counted_voxels(gt)
    whole = None if in_block else error_voxels(seg, gt, counted)
    errors, totals = [], []
    for b in blocks:
        err = error_voxels(seg[b], gt[b], counted[b]) if in_block else whole[b]
        errors.append(int(err.sum()))
        totals.append(int(counted[b].sum()))
    return np.array(errors), np.array(totals)


def density(errors: np.ndarray, totals: np.ndarray, idx: Sequence[int]) -> float:
    """Error voxels per counted voxel over the blocks ``idx``."""
    idx = np.asarray(idx, dtype=int)
    return float(errors[idx].sum() / max(int(totals[idx].sum()), 1))


def random_density(errors: np.ndarray, totals: np.ndarray, k: int, draws: int) -> float:
    """Mean error density of ``k`` random blocks (without replacement), seeds 0 .. draws-1."""
    k = min(k, len(errors))
    return float(np.mean([density(errors, totals, np.random.default_rng(seed).choice(
        len(errors), k, replace=False)) for seed in range(draws)]))


# -- corrected regions -------------------------------------------------------------------------
def slab_region(shape: Sequence[int], share: float, axis: int | None = None,
                min_voxels: int = 0) -> Region:
    """A slab at the start of ``axis`` (default the longest) holding ``share`` of the volume,
    at least one section and at least ``min_voxels`` (finetuning refuses a corrected region
    smaller than one training patch)."""
    axis = int(np.argmax(shape)) if axis is None else int(axis)
    plane = int(np.prod(shape)) // int(shape[axis])
    n = max(1, int(round(share * shape[axis])), math.ceil(min_voxels / plane))
    n = min(int(shape[axis]), n)
    region = [slice(0, int(s)) for s in shape]
    region[axis] = slice(0, n)
    return tuple(region)  # type: ignore[return-value]


def n_blocks_for(shape: Sequence[int], share: float, block: Sequence[int] = BLOCK,
                 min_voxels: int = 0) -> int:
    """How many blocks of ``block`` voxels make ``share`` of a volume of ``shape`` (and at
    least ``min_voxels``)."""
    size = int(np.prod([min(b, s) for b, s in zip(block, shape, strict=True)]))
    return max(1, math.ceil(share * int(np.prod(shape)) / size), math.ceil(min_voxels / size))


def regions_mask(shape: Sequence[int], regions: Sequence[Region]) -> np.ndarray:
    """Boolean volume, True inside any of ``regions``."""
    mask = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    for r in regions:
        mask[r] = True
    return mask


def corrected_labels(seg: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The labels a user's corrections leave: the ground truth inside ``mask``, the model's
    segmentation (ids moved past the ground truth's) elsewhere."""
    out = seg.astype(np.uint64) + np.uint64(int(gt.max()) + 1)
    out[seg == 0] = 0
    out[mask] = gt[mask]
    return out


def score_uncorrected(seg: np.ndarray, gt: np.ndarray, corrected: np.ndarray) -> dict[str, float]:
    """VOI (split, merge, total) and ARAND on the voxels outside ``corrected`` (label 0 ignored)."""
    from napari_tokenunify.engine.evaluate import evaluate

    scores = {k: float(v) for k, v in evaluate(seg, gt, ignore_label=0, mask=~corrected).items()}
    scores["voi"] = scores["voi_split"] + scores["voi_merge"]
    return scores


# -- prediction --------------------------------------------------------------------------------
def find_crop(name: str) -> qs.Crop:
    """The ``quality_sets`` crop called ``name``."""
    crops = {c.name: c for c in (*qs.VALIDATION, *qs.TEST, *qs.TRAIN, *qs.ADAPT)}
    if name not in crops:
        raise SystemExit(f"unknown volume {name!r}; choose from: {', '.join(crops)}")
    return crops[name]


def weights_key(model: Any) -> str:
    """A short hash of the model's card and weights (cache key)."""
    from napari_tokenunify.engine.predict import model_id

    h = hashlib.sha256(model_id(model).encode())
    for value in model.state_dict().values():
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def predict(model: Any, raw: np.ndarray, tta: str, cache: Path | None = None,
            name: str = "") -> tuple[np.ndarray, float]:
    """Affinities (float32) of ``raw`` and the seconds taken (0 when read from ``cache``)."""
    from napari_tokenunify.engine.predict import predict_affinities

    path = None
    if cache is not None:
        tag = hashlib.sha256(f"{name}|{raw.shape}|{tta}".encode()).hexdigest()[:12]
        path = cache / f"affs-{weights_key(model)}-{tag}.npy"
        if path.exists():
            return np.load(path), 0.0
    t0 = time.perf_counter()
    affs = np.asarray(predict_affinities(raw, model, device="cpu", dtype="float32", tta=tta))
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, affs)
    return affs, seconds


def segment_at(affs: np.ndarray, threshold: float, scoring: str = "median") -> tuple[np.ndarray, Any]:
    """Labels at ``threshold`` and the agglomerator (for other thresholds), with the model card's
    ``scoring``, as `tokenunify run` segments."""
    from napari_tokenunify.engine.agglomerate import Agglomerator

    agg = Agglomerator(affs, scoring=scoring, max_threshold=max(max(sweep()), threshold))
    return agg.segment(threshold), agg


def sweep() -> list[float]:
    """Every threshold the bench scores: the validation set's and the ones finetuning tries."""
    from napari_tokenunify.training.config import DEFAULT_THRESHOLDS

    return sorted({*qs.THRESHOLDS, *DEFAULT_THRESHOLDS})


def threshold_table(agg: Any, gt: np.ndarray, corrected: np.ndarray,
                    extra: Sequence[float] = ()) -> dict[float, dict[str, float]]:
    """Scores of the uncorrected part at every threshold of :func:`sweep` (and ``extra``)."""
    return {t: score_uncorrected(agg.segment(t), gt, corrected) for t in sorted({*sweep(), *extra})}


def oracle(table: dict[float, dict[str, float]]) -> dict[str, float]:
    """The best VOI over ``quality_sets.THRESHOLDS`` on the uncorrected part (reference only)."""
    rows = [dict(table[t], threshold=t) for t in qs.THRESHOLDS]
    return min(rows, key=lambda r: r["voi"])


def margin_outcomes(row: dict, margins: Sequence[float | None]) -> list[dict]:
    """What ``FinetuneConfig.rechoose_margin`` would have given in this run: for each margin, the
    threshold the corrections' table chooses (``finetune.rechoose_threshold``) and the VOI of
    the uncorrected part there (same finetuned model; only the card's threshold differs)."""
    from napari_tokenunify.training.finetune import rechoose_threshold

    tables = list((row.get("threshold_tables") or {}).values())  # finetuning records at most one
    held = {float(t): v for t, v in tables[0].items()} if tables else {}
    after = {float(t): v for t, v in row["after_by_threshold"].items()}
    start = float(row["threshold_before"])
    out = []
    for m in margins:
        t = rechoose_threshold(held, start, m) if held else start
        out.append({"margin": m, "threshold": t, "voi": after[t]["voi"], "arand": after[t]["arand"],
                    "ratio": after[t]["voi"] / row["before"]["voi"]})
    return out


MARGINS: tuple[float | None, ...] = (None, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def held_back_record(tuned: Any) -> dict | None:
    """The starting model's and every checkpoint's VOI on the held-back corrections (``None``
    when nothing could be held back), as finetuning validated them."""
    before = getattr(tuned, "validation_before", None)
    if not before:
        return None
    history = getattr(tuned, "validation_history", []) or []
    return {"before": float(before["voi"]),
            "history": [[int(h["step"]), float(h["voi"])] for h in history],
            "kept": (getattr(tuned, "training_info", {}) or {}).get("kept")}


def best_checkpoint_voi(held: dict | None) -> float | None:
    """The lowest held-back VOI of a finetuned checkpoint (step > 0) in ``held_back``."""
    tried = [v for s, v in (held or {}).get("history", []) if s > 0]
    return min(tried) if tried else None


def start_outcomes(row: dict, margins: Sequence[float | None]) -> list[dict]:
    """What ``FinetuneConfig.start_margin`` would have given: for each margin, the finetuned
    model's after/before VOI when its best checkpoint beat the start by that share on the
    held-back corrections, else 1 (the start kept, so the volume segments as before). Training is
    the same whatever the margin: only which weights are returned differs. A run made with margin
    m answers every margin at least m exactly; a looser one only where the run kept a checkpoint
    (else ``ratio`` is ``None``: that checkpoint was never scored on the volume)."""
    held = row.get("held_back")
    ratio = row["after"]["voi"] / row["before"]["voi"]
    best = best_checkpoint_voi(held)

    def beats(m: float | None) -> bool:
        return m is None or best is None or best <= (1.0 - m) * held["before"]

    ran = beats(row["config"].get("start_margin"))  # the finetuned model was kept in the run
    gain = None if best is None or not held else 1.0 - best / held["before"]
    out = []
    for m in margins:
        beat = beats(m)
        # a start kept in the run hides what its best checkpoint would have done to the volume
        ratio_m = (ratio if ran else None) if beat else 1.0
        out.append({"margin": m, "kept": "finetuned" if beat else "start", "ratio": ratio_m,
                    "held_back_gain": gain})
    return out


def print_start_margins(rows: list[dict], margins: Sequence[float | None] = MARGINS) -> None:
    """After/before VOI of each run had the start competed with the checkpoints at each
    ``start_margin`` (``?``: a margin looser than the run's, where the run kept the start)."""
    rows = [r for r in rows if r.get("held_back")]
    if not rows:
        return
    print("start_margin (the starting model kept unless the best checkpoint is this much better on "
          "the held-back corrections; none: the best checkpoint always): after/before")
    print(f"{'volume':<30} {'region':<7} {'held-back start/best':>21} "
          + " ".join(f"{'none' if m is None else m:>14}" for m in margins))
    for r in rows:
        best = best_checkpoint_voi(r["held_back"])
        cells = [("?" if o["ratio"] is None else f"{o['ratio']:.3f} {o['kept'][:5]:<5}")
                 for o in start_outcomes(r, margins)]
        print(f"{r['volume'][-30:]:<30} {r['region']:<7} {r['held_back']['before']:10.3f}/"
              f"{float('nan') if best is None else best:<10.3f} " + " ".join(f"{c:>14}" for c in cells))


def print_reports(rows: list[dict]) -> None:
    """Every table of the loop's runs: the cases, then what other margins would have given."""
    print_adapt(rows)
    print()
    print_margins(rows)
    print()
    print_start_margins(rows)


def flips(model: Any, tta: str | None) -> str:
    card = getattr(model, "card", None)
    return tta or (card.recommended_tta if card is not None else "none")


# -- the two modes -----------------------------------------------------------------------------
def bench_ranking(model_name: str, volumes: Sequence[str], *, tta: str | None, top: int,
                  draws: int, cache: Path | None) -> dict:
    """Error density of the top ``top`` ranked blocks against random ones, per volume."""
    from napari_tokenunify import proofread as pr
    from napari_tokenunify.model import load_model

    model = load_model(model_name, device="cpu")
    mode = flips(model, tta)
    threshold = model.card.recommended_threshold
    results: dict[str, Any] = {}
    for name in volumes:
        raw, gt = find_crop(name).load()
        affs, seconds = predict(model, raw, mode, cache, name)
        seg, agg = segment_at(affs, threshold, model.card.recommended_scoring)
        grid = pr.block_grid(gt.shape, BLOCK)
        index = {tuple((r.start, r.stop) for r in b): i for i, b in enumerate(grid)}
        row: dict[str, Any] = {"shape": list(gt.shape), "blocks": len(grid), "predict_s": seconds}
        for definition in ("in-block", "whole-volume"):
            errors, totals = block_errors(seg, gt, grid, in_block=definition == "in-block")
            rnd = random_density(errors, totals, top, draws)
            row[definition] = {"all": density(errors, totals, range(len(grid))), "random": rnd}
            for signal in SIGNALS:
                labels = None if signal == "affinity uncertainty" else seg
                merges = signal in SIGNALS[:2]
                spots = pr.uncertainty_ranking(affs, BLOCK, top=top, labels=labels, threshold=threshold,
                                               agglomerator=agg if merges else None,
                                               merge_levels="shares" if signal == SIGNALS[1] else "steps",
                                               with_affinities=signal == "uncertainty + boundaries")
                idx = [index[tuple((r.start, r.stop) for r in s.region)] for s in spots]
                d = density(errors, totals, idx)
                row[definition][signal] = {"top": d, "ratio": d / rnd if rnd > 0 else float("inf")}
        results[name] = row
    return {"model": model_name, "model_key": weights_key(model), "tta": mode, "threshold": threshold,
            "top": top, "draws": draws, "volumes": results}


def print_ranking(res: dict) -> None:
    print(f"model {res['model']} [{res['model_key']}] (flips {res['tta']}, threshold {res['threshold']}); top {res['top']} "
          f"blocks of {'x'.join(map(str, BLOCK))} against {res['top']} random ones ({res['draws']} draws)")
    print(f"{'volume':<34} {'errors':<13} {'signal':<21} {'top':>6} {'random':>7} {'ratio':>6}")
    for name, row in res["volumes"].items():
        for definition in ("in-block", "whole-volume"):
            d = row[definition]
            for signal in SIGNALS:
                print(f"{name:<34} {definition:<13} {signal:<21} {d[signal]['top']:6.3f} "
                      f"{d['random']:7.3f} {d[signal]['ratio']:6.2f}")


def adapt_case(model_name: str, name: str, region_kind: str, *, share: float, budget: float,
               tta: str | None, cache: Path | None, before: dict | None = None,
               model: Any = None, overrides: dict | None = None) -> dict:
    """One correct → finetune → predict-again run; ``before`` reuses the first prediction and
    ``model`` the loaded starting model (never changed: finetuning trains a copy).
    With ``FinetuneConfig.self_distill`` (the default) the starting model's affinities of the
    whole volume, the "before" prediction, are its own soft targets, as the widget passes its
    affinities layer (``--set self_distill=false`` turns it off)."""
    import torch

    from napari_tokenunify import proofread as pr
    from napari_tokenunify.model import load_model
    from napari_tokenunify.training.config import FinetuneConfig
    from napari_tokenunify.training.finetune import finetune

    raw, gt = find_crop(name).load()
    model = load_model(model_name, device="cpu") if model is None else model
    mode = flips(model, tta)
    t_before = model.card.recommended_threshold
    if before is None:
        affs, seconds = predict(model, raw, mode, cache, name)
        seg, agg = segment_at(affs, t_before, model.card.recommended_scoring)
        before = {"affs": affs, "seg": seg, "agg": agg, "predict_s": seconds}
    config = FinetuneConfig().with_(**{**(overrides or {}), "time_budget_s": budget})
    patch = config.patch_shape or tuple(model.card.patch_size)
    need = int(np.prod(patch))  # finetuning refuses a corrected region under one patch
    if region_kind == "slab":
        regions = [slab_region(gt.shape, share, min_voxels=need)]
    elif region_kind == "blocks":
        k = n_blocks_for(gt.shape, share, BLOCK, min_voxels=need)
        # the blocks the widget's Next place to check visits first, with its default signal
        by_labels = ({"labels": before["seg"], "threshold": t_before, "agglomerator": before["agg"]}
                     if pr.DEFAULT_RANK_SIGNAL == "segment boundaries and merges" else {})
        spots = pr.uncertainty_ranking(before["affs"], BLOCK, top=k, **by_labels)
        regions = [s.region for s in spots]
    else:
        raise ValueError(f"unknown region kind {region_kind!r}: slab or blocks")
    corrected = regions_mask(gt.shape, regions)
    labels = corrected_labels(before["seg"], gt, corrected)
    t0 = time.perf_counter()
    teacher = {"teacher_affinities": [before["affs"]]} if config.self_distill else {}
    # the voxel size a user's file of these volumes carries (FinetuneConfig's automatic choices,
    # e.g. permuted views for isotropic data, follow it as they would for the user)
    tuned = finetune(raw, labels, mask=corrected.astype(np.float32), init=model, config=config,
                     device="cpu", name=f"bench-adapt-{region_kind}", voxel_size_nm=VOXEL_NM, **teacher)
    train_s = time.perf_counter() - t0
    t_after = tuned.card.recommended_threshold
    with torch.no_grad():
        affs_after, predict_after_s = predict(tuned, raw, mode)
    seg_after, agg_after = segment_at(affs_after, t_after, tuned.card.recommended_scoring)
    info = getattr(tuned, "training_info", {}) or {}
    before_table = threshold_table(before["agg"], gt, corrected, (t_before,))
    after_table = threshold_table(agg_after, gt, corrected, (t_before, t_after))
    return {
        "volume": name, "region": region_kind, "model": model_name, "model_key": weights_key(model),
        "tta": mode,
        "share_corrected": float(corrected.mean()), "n_regions": len(regions),
        "budget_s": budget, "config_overrides": dict(overrides or {}), "self_distill": config.self_distill, "train_s": train_s, "steps": info.get("steps"),
        "predict_before_s": before["predict_s"], "predict_after_s": predict_after_s,
        "threshold_before": t_before, "threshold_after": t_after,
        "before": score_uncorrected(before["seg"], gt, corrected),
        "after": score_uncorrected(seg_after, gt, corrected),
        "before_best": oracle(before_table),
        "after_best": oracle(after_table),
        "after_by_threshold": {f"{t:g}": v for t, v in after_table.items()},
        "threshold_tables": info.get("threshold_tables"),
        "start_on_corrections": info.get("start_on_corrections"),
        "held_back": held_back_record(tuned),
        "config": config.to_dict(),
        "_before": before,
    }


def print_adapt(rows: list[dict]) -> None:
    print(f"{'volume':<30} {'region':<7} {'share':>6} {'steps':>5} {'train s':>7} "
          f"{'VOI before':>10} {'after':>6} {'ARAND before':>12} {'after':>6} {'t':>9} "
          f"{'best-t VOI before/after':>24}")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"{r['volume'][-30:]:<30} {r['region']:<7} {r['share_corrected']:6.3f} {r['steps']!s:>5} "
              f"{r['train_s']:7.0f} {b['voi']:10.3f} {a['voi']:6.3f} {b['arand']:12.3f} {a['arand']:6.3f} "
              f"{r['threshold_before']:4g}/{r['threshold_after']:<4g} "
              f"{r['before_best']['voi']:11.3f} / {r['after_best']['voi']:.3f}")


def print_margins(rows: list[dict], margins: Sequence[float | None] = MARGINS) -> None:
    """After/before VOI of each run had the card's threshold been re-chosen with each margin."""
    print("rechoose_margin (the card's threshold re-chosen on held-back corrections, or on the "
          "corrections themselves when none could be held back, when this much better; none: kept): "
          "after VOI (t) and after/before")
    print(f"{'volume':<30} {'region':<7} " + " ".join(f"{'none' if m is None else m:>18}" for m in margins))
    for r in rows:
        if not r.get("threshold_tables"):
            continue
        cells = [f"{o['voi']:7.3f} ({o['threshold']:<4g}) {o['ratio']:5.3f}" for o in margin_outcomes(r, margins)]
        print(f"{r['volume'][-30:]:<30} {r['region']:<7} " + " ".join(f"{c:>18}" for c in cells))
    ratios = [[o["ratio"] for o in margin_outcomes(r, margins)] for r in rows if r.get("threshold_tables")]
    if ratios:
        print(f"{'mean after/before':<38} " + " ".join(f"{v:>18.3f}" for v in np.mean(ratios, axis=0)))


def parse_overrides(items: Sequence[str]) -> dict:
    """``["lr=2e-4", "ema=0.99", "self_distill=false"]`` → ``{"lr": 0.0002, "ema": 0.99,
    "self_distill": False}`` (numbers and true/false where they parse)."""
    out: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes NAME=VALUE, got {item!r}")
        if value.lower() in ("true", "false"):
            out[name] = value.lower() == "true"
            continue
        try:
            out[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            out[name] = None if value == "none" else value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="bundled name or model folder (default: default)")
    p.add_argument("--ranking", action="store_true", help="measure Next place to check instead")
    p.add_argument("--test", action="store_true", help="--ranking: add the test volume (reported only)")
    p.add_argument("--volume", nargs="+", default=None,
                   help=f"quality_sets crops (default: {', '.join(DEFAULT_VOLUMES)}; "
                   "--ranking: the validation crops)")
    p.add_argument("--regions", nargs="+", default=["slab", "blocks"], choices=["slab", "blocks"])
    p.add_argument("--share", type=float, default=0.1, help="share of the volume corrected")
    p.add_argument("--budget", type=float, default=300.0, help="seconds of finetuning (time_budget_s)")
    p.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                   help="FinetuneConfig fields instead of their defaults (to compare candidates), "
                        "e.g. --set lr=2e-4 ema=0.99 (self_distill=false: without the "
                        "session-9 default of distilling from the starting model)")
    p.add_argument("--tta", default=None, choices=["none", "yx", "zyx"], help="override the card's flips")
    p.add_argument("--top", type=int, default=10, help="--ranking: blocks compared")
    p.add_argument("--draws", type=int, default=100, help="--ranking: random draws averaged")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "tokenunify-bench-adapt",
                   help="where the first predictions are kept between runs ('' for none)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                   help="print the tables of earlier runs' --json files instead of running")
    args = p.parse_args(argv)
    if args.report:
        rows = [r for f in args.report for r in json.loads(f.read_text())["runs"]]
        print_reports(rows)
        return 0
    missing = [c.name for c in (*qs.VALIDATION, *qs.TEST) if not c.available()]
    if missing:
        sys.exit(f"shared data missing for {missing}: put it at {qs.DATA} or set TOKENUNIFY_SHARED_DATA")
    if args.threads:
        import torch

        os.environ["TOKENUNIFY_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    cache = args.cache if str(args.cache) else None
    print(f"threads {os.environ.get('TOKENUNIFY_THREADS') or os.environ.get('OMP_NUM_THREADS') or 'default'}, "
          f"model {args.model}")
    if args.ranking:
        volumes = args.volume or [c.name for c in qs.VALIDATION] + ([c.name for c in qs.TEST] if args.test else [])
        res = bench_ranking(args.model, volumes, tta=args.tta, top=args.top, draws=args.draws, cache=cache)
        print_ranking(res)
    else:
        from napari_tokenunify.model import load_model

        model = load_model(args.model, device="cpu")  # once: every case starts from the same
        print(f"model key {weights_key(model)} (card threshold {model.card.recommended_threshold}, "
              f"flips {flips(model, args.tta)})")
        rows = []
        for name in args.volume or DEFAULT_VOLUMES:
            before = None
            for kind in args.regions:
                row = adapt_case(args.model, name, kind, share=args.share, budget=args.budget,
                                 tta=args.tta, cache=cache, before=before, model=model,
                                 overrides=parse_overrides(args.set))
                before = row.pop("_before")
                rows.append(row)
                print_adapt([row])
        print()
        print_reports(rows)
        res = {"runs": rows}
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Validation during finetuning: predict and segment with the engine (as users do), score VOI
and ARAND at the agglomeration thresholds, and decide the card's threshold (the start's, or a
clearly better one of the corrections')."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DEFAULT_THRESHOLDS, FinetuneConfig


def validate_set(
    model, volumes: Sequence[tuple], *, device="cpu",
    threshold: float | Sequence[float] = DEFAULT_THRESHOLDS, tta: str = "none",
) -> dict[str, Any]:
    """Score several validation volumes (``(raw, labels)`` or ``(raw, labels, mask)`` each) at one
    shared agglomeration threshold: the one with the lowest mean VOI over the volumes (a model
    card recommends one threshold for every volume). Returns the means (``voi``, ``voi_split``,
    ``voi_merge``, ``arand``), ``threshold`` and ``per_volume`` (each volume's scores there)."""
    thresholds = [float(threshold)] if isinstance(threshold, (int, float)) else [float(t) for t in threshold]
    if not volumes:
        raise ValueError("give at least one validation volume")
    tables = []
    for vol in volumes:
        v_mask = vol[2] if len(vol) > 2 else None
        tables.append(score_thresholds(model, vol[0], vol[1], mask=v_mask, device=device,
                                       thresholds=thresholds, tta=tta))
    means = {t: float(np.mean([tab[t]["voi"] for tab in tables])) for t in thresholds}
    t_best = min(thresholds, key=lambda t: means[t])
    per = [tab[t_best] for tab in tables]
    out: dict[str, Any] = {k: float(np.mean([p[k] for p in per])) for k in ("voi", "voi_split", "voi_merge", "arand")}
    out["threshold"] = t_best
    out["per_volume"] = per
    return out



def score_thresholds(
    model, raw, labels, *, mask=None, device="cpu", thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    tta: str = "none",
) -> dict[float, dict[str, float]]:
    """Predict ``raw`` with the engine (as users do), agglomerate once and score every threshold:
    ``{threshold: {voi, voi_split, voi_merge, arand, ..., affinity_bce, affinity_error}}``."""
    from ..engine.agglomerate import Agglomerator
    from ..engine.evaluate import affinity_scores, evaluate
    from ..engine.predict import model_offsets, predict_affinities

    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("give at least one validation threshold")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            affs = predict_affinities(raw, model, device=device, dtype="float32", tta=tta)
    finally:
        model.train(was_training)
    card = getattr(model, "card", None)
    scoring = card.recommended_scoring if card is not None else "median"
    agg = Agglomerator(np.asarray(affs), scoring=scoring, max_threshold=max(thresholds))
    gt = np.asarray(labels)
    try:
        extra = affinity_scores(affs, gt, model_offsets(model), mask=mask)
    except ValueError:  # e.g. one label and no boundary: VOI alone
        extra = {}
    table = {}
    for t in thresholds:
        scores = {k: float(v) for k, v in evaluate(agg.segment(t), gt, ignore_label=0, mask=mask).items()}
        scores["voi"] = scores["voi_split"] + scores["voi_merge"]
        scores["threshold"] = t
        table[t] = {**scores, **extra}
    return table



def validate(
    model, raw, labels, *, mask=None, device="cpu", threshold: float | Sequence[float] = DEFAULT_THRESHOLDS,
    tta: str = "none",
) -> dict[str, float]:
    """Predict, segment and score one validation volume with the engine (VOI/ARAND).

    With several thresholds the agglomeration runs once and the threshold with the lowest VOI
    (split + merge) is reported (``threshold`` in the result): the merge threshold that suits a
    network changes as it trains, so a fixed one would rank checkpoints unfairly. ``tta``: the
    test-time flips of the prediction (``engine.tta``). The per-affinity ``affinity_bce`` and
    ``affinity_error`` (``engine.evaluate.affinity_scores``) are reported beside, not used to rank.
    """
    thresholds = [float(threshold)] if isinstance(threshold, (int, float)) else [float(t) for t in threshold]
    table = score_thresholds(model, raw, labels, mask=mask, device=device, thresholds=thresholds, tta=tta)
    return dict(min(table.values(), key=lambda sc: sc["voi"]))



def validation_thresholds(cfg: FinetuneConfig, region: dict, init_note: dict,
                           started_from: dict) -> tuple[tuple[float, ...], bool]:
    """The thresholds validation tries, and whether that is the start's alone: with
    ``keep_start_threshold``, held-back corrections of a trained start score at its threshold
    (a fifth of a few corrections chooses a threshold badly: rule 17, docs/results.md)."""
    held = region.get("holdout") and "skipped" not in region["holdout"]
    start = started_from.get("segmentation_threshold")
    if (cfg.keep_start_threshold and held and init_note.get("copied") == "all"
            and isinstance(start, (int, float))):
        return (float(start),), True
    return cfg.thresholds, False



def chosen_threshold(scores: dict | None, started_from: dict, region: dict,
                      kept: bool = False) -> tuple[float | None, str]:
    """The card's segmentation threshold: the one chosen at the best validation, else the start's."""
    if kept and scores and isinstance(scores.get("threshold"), (int, float)):
        return float(scores["threshold"]), ("the starting model's, kept (the held-back corrections "
                                            "chose the checkpoint at it)")
    if scores and isinstance(scores.get("threshold"), (int, float)):
        held = region.get("holdout") and "skipped" not in region["holdout"]
        return float(scores["threshold"]), ("best of the held-back corrections" if held
                                            else "best at validation")
    start = started_from.get("segmentation_threshold")
    if isinstance(start, (int, float)):
        return float(start), "the starting model's: no validation"
    return None, ""



def threshold_table(model, validation: tuple, thresholds: Sequence[float], device: str = "cpu") -> dict[float, float]:
    """VOI of ``model`` on corrections ``(raw, labels, mask)`` (held back or not) at each threshold."""
    v_mask = validation[2] if len(validation) > 2 else None
    table = score_thresholds(model, validation[0], validation[1], mask=v_mask, device=device,
                             thresholds=sorted({float(t) for t in thresholds}))
    return {t: float(sc["voi"]) for t, sc in table.items()}



def best_threshold(table: Mapping[float, float], start: float) -> float:
    """The threshold with the lowest VOI in ``table``; of equal ones, the nearest to ``start``."""
    return min(table, key=lambda t: (table[t], abs(t - start)))



def table_record(table: Mapping[float, float]) -> dict[str, float]:
    """A threshold → VOI table as the card stores it (keys ``"0.3"``, four decimals)."""
    return {f"{t:g}": round(v, 4) for t, v in table.items()}



def rechoose_threshold(table: Mapping[float, float], start: float, margin: float | None) -> float:
    """The start's threshold, or the best of ``table`` (threshold → VOI on the corrections)
    when its VOI is at least ``margin`` (a share) below the start's there; ``None``: the start's.
    A fifth of a few corrections chooses a threshold noisily (rule 17), so small gains keep it."""
    if margin is None or start not in table:
        return start
    best = best_threshold(table, start)
    return best if table[best] <= (1.0 - margin) * table[start] else start



def start_table_record(table: Mapping[float, float], start: float) -> dict[str, Any]:
    """The starting model's VOI at every threshold on all the corrections, none of which it was
    trained on, for the card: where its best threshold lies against its own says how far the
    user's volume is from the data the start was tuned on (recorded; it decides nothing)."""
    best = best_threshold(table, start)
    return {"table": table_record(dict(sorted(table.items()))),
            "threshold": start, "best": best,
            "best_gain": round(1.0 - table[best] / table[start], 4) if table[start] > 0 else 0.0}



def start_kept_note(before: dict, history: Sequence[dict], margin: float) -> str:
    """Why the card's weights are the starting model's (``FinetuneConfig.start_margin``)."""
    tried = [h for h in history if h.get("step", 0) > 0]
    best = min(tried, key=lambda h: h["voi"]) if tried else None
    seen = (f"the best checkpoint, step {best['step']}, scored {best['voi']:.3f}" if best
            else "no checkpoint was validated")
    return (f"the starting model, unchanged: it scored VOI {before['voi']:.3f} on the held-back "
            f"corrections and {seen}, not at least {margin:.0%} lower (start_margin)")



def write_history(path: Path, history: list[dict]) -> None:
    import csv

    keys = list(history[0].keys())
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)

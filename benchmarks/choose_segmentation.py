#!/usr/bin/env python
"""Choose a model's segmentation (agglomeration scoring and threshold) on the validation set.

Rule 13 (docs/results.md, session 8): each validation volume is predicted as `tokenunify run`
predicts it (the card's normalisation, tile and flips; affinities stored as float16), once as it
is and once with its contrast halved and its brightness shifted by 20 grey levels; the fragments
are agglomerated once per variant and input and scored at every threshold of
``quality_sets.THRESHOLDS``. A variant's score at a threshold is the validation mean VOI averaged
over the original and the perturbed input, so that a segmentation that holds only on one side
of a knife edge does not win. The lowest score chooses; the test volume is never read.

  python benchmarks/choose_segmentation.py default [MODEL...] [--variants all] [--write-card]

``--variants all`` adds rule 13's other candidates (Gaussian smoothing, 75th percentile);
``--variants rule15`` scores rule 15's (small-segment cleanup, seed spacing) with the mean;
``--variants rule22`` rule 22's (the fragments' boundary map: backward, symmetric, symmetric-min);
``--variants rule28`` rule 28's (fragments flooded over the boundary map or over the affinity links);
``--write-card`` records the choice (``training.segmentation_scoring``/``segmentation_threshold``)
in each model folder's card.json (not in a bundled model's: use a copy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_sets as qs  # noqa: E402
from bench_quality import perturb_contrast  # noqa: E402

Q75 = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 75, ScoreValue, 256>>"
VARIANTS = {
    "median": {"scoring": "median"},
    "mean": {"scoring": "mean"},
}
MORE_VARIANTS = {
    "median, smoothed σ1": {"scoring": "median", "smooth": 1.0},
    "q75": {"scoring": Q75},
    "q75, smoothed σ1": {"scoring": Q75, "smooth": 1.0},
    "median, fragments smoothed σ1": {"scoring": "median", "smooth_fragments": 1.0},
}
RULE15_VARIANTS = {  # rule 15 (docs/results.md, session 9): small segments and seed spacing
    "mean": {"scoring": "mean"},
    "mean, min size 100": {"scoring": "mean", "min_size": 100},
    "mean, min size 500": {"scoring": "mean", "min_size": 500},
    "mean, min size 2000": {"scoring": "mean", "min_size": 2000},
    "mean, seeds 2 apart": {"scoring": "mean", "seed_distance": 2.0},
    "mean, seeds 5 apart": {"scoring": "mean", "seed_distance": 5.0},
}
RULE22_VARIANTS = {  # rule 22 (docs/results.md, session 11): where fragments put a boundary
    "mean": {"scoring": "mean"},
    "mean, symmetric boundary": {"scoring": "mean", "boundary": "symmetric"},
    "mean, symmetric-min boundary": {"scoring": "mean", "boundary": "symmetric-min"},
}
RULE28_VARIANTS = {  # rule 28 (docs/results.md, session 13): fragments flooded over voxels or links
    "mean": {"scoring": "mean"},
    "mean, edge flood": {"scoring": "mean", "flood": "edges"},
}
RULE = ("the lowest validation mean VOI averaged over the original and the contrast/2 + 20 "
        "input, at one shared threshold of THRESHOLDS")


def predict_validation(model_name: str) -> dict:
    """{(volume, "original" | "perturbed"): (affinities float32, ground truth)}."""
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    model = load_model(model_name, device="cpu")
    tta = model.card.recommended_tta if getattr(model, "card", None) is not None else "none"
    out = {}
    for crop in qs.VALIDATION:
        raw, gt = crop.load()
        for kind, r in (("original", raw), ("perturbed", perturb_contrast(raw))):
            a = predict_affinities(r, model, device="cpu", dtype="float16", tta=tta)
            out[(crop.name, kind)] = (np.asarray(a).astype(np.float32), gt)
    return out


def score_variant(affs: dict, variant: dict, thresholds=qs.THRESHOLDS) -> dict:
    """{threshold: {"score", (volume, kind): VOI...}} for one variant."""
    from scipy import ndimage as ndi

    from napari_tokenunify.engine.agglomerate import Agglomerator
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.fragments import fragments_from_affinities

    table: dict = {t: {} for t in thresholds}
    for key, (a, gt) in affs.items():
        if variant.get("smooth"):
            a = np.stack([ndi.gaussian_filter(c, variant["smooth"]) for c in a])
        fa = a
        if variant.get("smooth_fragments"):
            fa = np.stack([ndi.gaussian_filter(c, variant["smooth_fragments"]) for c in a])
        seeds = {"min_seed_distance": variant["seed_distance"]} if "seed_distance" in variant else {}
        for option in ("boundary", "flood"):
            if option in variant:
                seeds[option] = variant[option]
        agg = Agglomerator(a, fragments_from_affinities(fa, voxel_size=(10, 10, 10), **seeds),
                           scoring=variant["scoring"], max_threshold=max(thresholds))
        for t in thresholds:
            seg = agg.segment(t)
            if variant.get("min_size"):
                from napari_tokenunify.engine.cleanup import cleanup

                seg = cleanup(seg, min_size=variant["min_size"])
            s = evaluate(seg, gt, ignore_label=0)
            table[t][key] = float(s["voi_split"] + s["voi_merge"])
    for row in table.values():
        row["score"] = float(np.mean(list(row.values())))  # 2 volumes × 2 inputs, equal weights
    return table


def choose(model_name: str, variants: dict, thresholds=qs.THRESHOLDS) -> tuple[dict, dict]:
    affs = predict_validation(model_name)
    tables = {}
    for name, v in variants.items():
        t0 = time.perf_counter()
        tables[name] = score_variant(affs, v, thresholds)
        print(f"  {model_name}: {name} scored in {time.perf_counter() - t0:.0f} s", flush=True)
    best = min((tables[n][t]["score"], n, t) for n in tables for t in thresholds)
    return tables, {"variant": best[1], "threshold": best[2], "score": best[0]}


def print_tables(model_name: str, tables: dict, best: dict) -> None:
    names = [c.name for c in qs.VALIDATION]
    for variant, table in tables.items():
        t = min(table, key=lambda k: table[k]["score"])
        row = table[t]
        per = "  ".join(f"{n}: {row[(n, 'original')]:.3f} / {row[(n, 'perturbed')]:.3f}" for n in names)
        print(f"{model_name} | {variant:<30} best t {t:<5} score {row['score']:.3f}  "
              f"(original / perturbed) {per}")
    print(f"{model_name}: chosen {best['variant']} at t {best['threshold']} (score {best['score']:.3f})")


def write_card(model_dir: Path, best: dict, variants: dict) -> None:
    card_path = model_dir / "card.json"
    if not card_path.exists():
        sys.exit(f"--write-card needs a model folder with card.json, not {model_dir}")
    variant = variants[best["variant"]]
    if variant.get("scoring") not in ("median", "mean") or len(variant) > 1:
        sys.exit(f"{best['variant']} is not a segmentation the product ships; not written")
    card = json.loads(card_path.read_text())
    training = card.setdefault("training", {})
    training["segmentation_scoring"] = variant["scoring"]
    training["segmentation_threshold"] = best["threshold"]
    training["threshold_choice"] = f"benchmarks/choose_segmentation.py: {RULE} (score {best['score']:.3f})"
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
    print(f"wrote {variant['scoring']} scoring, threshold {best['threshold']} into {card_path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="bundled names (default, unet) or model folders")
    p.add_argument("--variants", choices=["scorings", "all", "rule15", "rule22", "rule28"], default="scorings")
    p.add_argument("--write-card", action="store_true", help="record the choice in each model folder's card")
    p.add_argument("--json", type=Path, default=None, help="write the tables here")
    p.add_argument("--low-thresholds", action="store_true",
                   help="also 0.01, 0.02 and 0.03 (rule 24: a model whose best is THRESHOLDS' lowest)")
    args = p.parse_args(argv)
    missing = [c.name for c in qs.VALIDATION if not c.available()]
    if missing:
        sys.exit(f"shared data missing for {missing}: put it at {qs.DATA} or set TOKENUNIFY_SHARED_DATA")
    variants = {"rule15": RULE15_VARIANTS, "rule22": RULE22_VARIANTS, "rule28": RULE28_VARIANTS}.get(args.variants) or dict(
        VARIANTS, **(MORE_VARIANTS if args.variants == "all" else {}))
    print(f"rule: {RULE}")
    results = {}
    for model_name in args.models:
        thresholds = tuple(sorted({*qs.THRESHOLDS, *((0.01, 0.02, 0.03) if args.low_thresholds else ())}))
        tables, best = choose(model_name, variants, thresholds)
        print_tables(model_name, tables, best)
        results[model_name] = {"best": best, "tables": {
            v: {str(t): {("|".join(k) if isinstance(k, tuple) else k): x for k, x in row.items()}
                for t, row in table.items()} for v, table in tables.items()}}
        if args.write_card:
            write_card(Path(model_name), best, variants)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Test-time flips (``--tta``) on the real data: held-out and test scores of bundled models.

For each model and each mode (none, yx, zyx) the held-out part of the train cube (x >= 136) is
predicted and scored twice: per affinity (class-balanced cross-entropy and error rate against the
ground-truth affinities, a smooth measure) and after segmentation (VOI/ARAND at the best
threshold of the sweep). The test cube is then segmented at that held-out threshold and scored
once per mode. Nothing here chooses a model: the table only reports what the flips change.

  python scripts/evaluate_tta.py --models default unet --out /tmp/tta.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_model import THRESHOLDS, VAL_SPLIT_X, labeled  # noqa: E402

MODES = ("none", "yx", "zyx")


def score(model, raw, labels, tta: str, threshold=None) -> dict:
    from napari_tokenunify.engine.agglomerate import Agglomerator
    from napari_tokenunify.engine.evaluate import affinity_scores, evaluate
    from napari_tokenunify.engine.predict import model_offsets, predict_affinities

    t0 = time.perf_counter()
    affs = np.asarray(predict_affinities(raw, model, device="cpu", dtype="float32", tta=tta))
    seconds = time.perf_counter() - t0
    agg = Agglomerator(affs, max_threshold=max(THRESHOLDS))
    best = None
    for t in THRESHOLDS if threshold is None else (threshold,):
        s = {k: float(v) for k, v in evaluate(agg.segment(t), labels, ignore_label=0).items()}
        s["voi"], s["threshold"] = s["voi_split"] + s["voi_merge"], t
        if best is None or s["voi"] < best["voi"]:
            best = s
    return {**best, **affinity_scores(affs, labels, model_offsets(model)), "predict_seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["default", "unet"])
    p.add_argument("--out", type=Path, default=Path("/tmp/tta.json"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from napari_tokenunify.model import load_model

    torch.set_num_threads(args.threads)
    train_raw, train_gt = labeled("train")
    val_raw, val_gt = train_raw[:, :, VAL_SPLIT_X:], train_gt[:, :, VAL_SPLIT_X:]
    test_raw, test_gt = labeled("test")
    results = {}
    for name in args.models:
        model = load_model(name, device="cpu")
        for mode in MODES:
            held = score(model, val_raw, val_gt, mode)
            test = score(model, test_raw, test_gt, mode, threshold=held["threshold"])
            results[f"{name}/{mode}"] = {"held_out": held, "test": test}
            print(name, mode, json.dumps({k: round(v, 4) for k, v in test.items()}), flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| model | flips | held-out balanced BCE | held-out balanced error | held-out VOI | threshold "
          "| test VOI split | test VOI merge | test VOI | test ARAND | test balanced error | test predict s |")
    print("| --- " * 12 + "|")
    for key, r in results.items():
        h, t = r["held_out"], r["test"]
        name, mode = key.rsplit("/", 1)
        print(f"| {name} | {mode} | {h['affinity_bce']:.4f} | {h['affinity_error']:.4f} | {h['voi']:.3f} | "
              f"{h['threshold']} | {t['voi_split']:.3f} | {t['voi_merge']:.3f} | {t['voi']:.3f} | "
              f"{t['arand']:.3f} | {t['affinity_error']:.4f} | {t['predict_seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

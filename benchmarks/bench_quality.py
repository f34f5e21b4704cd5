#!/usr/bin/env python
"""Segmentation quality of models exactly as ``tokenunify run`` uses them: the quality benchmark
that models are chosen by (issue 13).

Each validation volume (``quality_sets.VALIDATION``: 2.2 M voxels from two volumes, never trained
on) is written to an HDF5 file with its voxel size and run through ``tokenunify run IN OUT
--model M`` in this process (the card's normalisation, tiles, test-time flips and threshold; no
other option), then scored against its labels (VOI split/merge, ARAND; label 0 ignored). Prints
one row per model and volume, the mean over the validation volumes (what ``SELECTION_RULE``
ranks) and the seconds per volume (prediction + segmentation + I/O, end to end).

  python benchmarks/bench_quality.py default unet runs/x/model [--perturb] [--test] [--json out.json]

``--perturb`` also scores each validation volume with its contrast halved and its brightness
shifted by 20 grey levels (uint8, around the volume mean), for the robustness target: VOI within
10 % of the original. ``--test`` adds the gala test volume, reported only (never a choice).
``--tta MODE`` overrides the card's flips (to measure what they pay for). ``--in-context`` also
predicts each validation crop's whole volume (the dense crop's 120 sections: the depth of issue
13's unseen cube) with the card's settings, cuts the crop's affinities out and segments them as
``tokenunify run`` would: the crop as part of a larger volume is predicted, with tile borders
inside it that the crop alone never has (rule 45, docs/results.md). Only the prediction sees the
rest of the volume: segmenting the whole volume and cutting the labels would let the
agglomeration lean on the sections the model was trained on. Reported, never chosen by.
The last column, VOI±1, leaves out the voxels within one voxel of a true boundary (CREMI-style tolerance): it
shows how much of a score is where boundaries fall to within a voxel; reported, never chosen by.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_sets as qs  # noqa: E402


def perturb_contrast(raw: np.ndarray, contrast: float = 0.5, shift: float = 20.0) -> np.ndarray:
    """``raw`` (uint8) with its contrast scaled around its mean and its brightness shifted."""
    mean = float(raw.mean())
    out = (raw.astype(np.float32) - mean) * contrast + mean + shift
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def run_volume(model: str, raw: np.ndarray, gt: np.ndarray, workdir: Path, tta: str | None,
               voxel_size=(10.0, 10.0, 10.0)) -> dict:
    from napari_tokenunify.cli import main as cli
    from napari_tokenunify.io import open_volume, write_volume

    src = workdir / "raw.h5"
    out = workdir / "labels.zarr"
    write_volume(src, raw, kind="image", voxel_size=voxel_size, overwrite=True)
    argv = ["run", str(src), str(out), "--model", model, "--quiet", "--overwrite"]
    if tta:
        argv += ["--tta", tta]
    t0 = time.perf_counter()
    rc = cli(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"tokenunify {' '.join(argv)} failed with exit code {rc}")
    return score_labels(np.asarray(open_volume(out).data), gt, seconds, raw.size)


def score_labels(labels: np.ndarray, gt: np.ndarray, seconds: float, n_voxels: int) -> dict:
    """VOI (split, merge, sum), ARAND, the same without the voxels beside a true boundary
    (reported, never chosen by), the seconds and the speed over ``n_voxels`` processed."""
    from napari_tokenunify.engine.evaluate import evaluate

    scores = {k: float(v) for k, v in evaluate(labels, gt, ignore_label=0).items()}
    scores["voi"] = scores["voi_split"] + scores["voi_merge"]
    tol = evaluate(labels, gt, ignore_label=0, boundary_tolerance=1)
    scores["voi_tol1"] = float(tol["voi_split"] + tol["voi_merge"])
    scores["arand_tol1"] = float(tol["arand"])
    scores["seconds"] = seconds
    scores["mvoxel_per_s"] = n_voxels / seconds / 1e6
    return scores


def run_in_context(model_name: str, volume: np.ndarray, gt: np.ndarray, region: tuple[slice, ...],
                   tta: str | None) -> dict:
    """Predict ``volume`` as ``tokenunify run`` does (the card's normalisation, tiles, flips), cut
    out ``region`` and segment only that at the card's threshold and scoring; scored on ``gt``."""
    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    model = load_model(model_name, device="cpu")
    card = model.card
    t0 = time.perf_counter()
    affs = predict_affinities(volume, model, device="cpu", dtype="float16", tta=tta or card.recommended_tta)
    affs = np.asarray(affs[(slice(None), *region)], dtype=np.float32)
    for axis in range(3):  # a link to a voxel outside the crop is 0, as for the crop alone
        if region[axis].start:
            index = [slice(None)] * 4
            index[0], index[axis + 1] = axis, 0  # channel c is the link along axis c
            affs[tuple(index)] = 0
    labels = segment(affs, threshold=card.recommended_threshold, scoring=card.recommended_scoring).labels
    return score_labels(labels, gt, time.perf_counter() - t0, volume.size)


def bench(models: list[str], *, perturb: bool = False, test: bool = False, tta: str | None = None,
          in_context: bool = False) -> dict:
    sets = [("validation", c) for c in qs.VALIDATION]
    if test:
        sets += [("test (reported only)", c) for c in qs.TEST]
    missing = [c.name for _, c in sets if not c.available()]
    if missing:
        sys.exit(f"shared data missing for {missing}: put it at {qs.DATA} or set TOKENUNIFY_SHARED_DATA")
    data = {c.name: c.load() for _, c in sets}
    context = {c.name: c.in_context().load()[0] for c in qs.VALIDATION} if in_context else {}
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            rows = {}
            for role, crop in sets:
                raw, gt = data[crop.name]
                rows[crop.name] = {"role": role, **run_volume(model, raw, gt, Path(tmp), tta)}
                if perturb and role == "validation":
                    rows[crop.name + " (contrast/2, +20)"] = {
                        "role": "perturbed", **run_volume(model, perturb_contrast(raw), gt, Path(tmp), tta)}
                if crop.name in context:
                    rows[crop.name + " (in its volume)"] = {
                        "role": "in context (reported only)",
                        **run_in_context(model, context[crop.name], gt, crop.region, tta)}
            val = [rows[c.name] for c in qs.VALIDATION]
            mean = {k: float(np.mean([r[k] for r in val]))
                    for k in ("voi", "voi_split", "voi_merge", "arand", "voi_tol1", "arand_tol1")}
            mean["mvoxel_per_s"] = float(sum(data[c.name][0].size for c in qs.VALIDATION)
                                         / sum(r["seconds"] for r in val) / 1e6)
            results[model] = {"volumes": rows, "validation_mean": mean}
    return results


def print_table(results: dict) -> None:
    print(f"{'model':<28} {'volume':<44} {'VOI':>6} {'split':>6} {'merge':>6} {'ARAND':>6} {'s':>6} {'Mvox/s':>6}"
          f" {'VOI±1':>6}")
    for model, res in results.items():
        for name, r in res["volumes"].items():
            print(f"{model[-28:]:<28} {name:<44} {r['voi']:6.3f} {r['voi_split']:6.3f} {r['voi_merge']:6.3f} "
                  f"{r['arand']:6.3f} {r['seconds']:6.1f} {r['mvoxel_per_s']:6.3f} {r.get('voi_tol1', float('nan')):6.3f}")
        m = res["validation_mean"]
        print(f"{model[-28:]:<28} {'VALIDATION MEAN (selection)':<44} {m['voi']:6.3f} {m['voi_split']:6.3f} "
              f"{m['voi_merge']:6.3f} {m['arand']:6.3f} {'':>6} {m['mvoxel_per_s']:6.3f} "
              f"{m.get('voi_tol1', float('nan')):6.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="bundled names (default, unet) or model folders")
    p.add_argument("--perturb", action="store_true", help="also contrast-halved, +20 brightness volumes")
    p.add_argument("--test", action="store_true", help="also the gala test volume (reported only)")
    p.add_argument("--tta", default=None, choices=["none", "yx", "zyx"], help="override the card's flips")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CLI's choice)")
    p.add_argument("--in-context", action="store_true",
                   help="also each validation crop predicted as part of its whole volume (reported only)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["TOKENUNIFY_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    print(f"selection rule: {qs.SELECTION_RULE}")
    results = bench(args.models, perturb=args.perturb, test=args.test, tta=args.tta, in_context=args.in_context)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

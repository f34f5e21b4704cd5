"""How well a model fits one kind of body: the mean affinity inside a ground-truth body.

Session 17 found the largest single error of the default on the dense validation crop to be one
body of `medulla-dense` (id 280: a thin mid-grey region between neurites, like extracellular
space) that the network reads as boundary even on the sections it was trained on. This script
measures that, as sessions 17, 20 and 21 did: it predicts the whole `medulla-dense` volume as
`tokenunify run` does (the card's normalisation and tiles, no flips) and prints the mean
affinity (over the three nearest-neighbour links) at the voxels of a body whose six neighbours
share its id, on the trained sections and on the validation sections, beside the same mean
inside every other body. It decides nothing (the validation set does).

``--oracle``: how much fitting that body would be worth. The dense validation crop is predicted
as ``bench_quality`` predicts it and segmented at the card's threshold and scoring three times:
as predicted; with every link inside the body set to 1; and with, besides, every link between
the body and another one set to 0 (the body fitted perfectly). VOI and ARAND of each.

    python benchmarks/body_fit.py default /path/to/model [--body 280] [--threads 2] [--json out.json]
    python benchmarks/body_fit.py default --oracle
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_sets as qs  # noqa: E402

#: sections of medulla-dense: trained on by every default since session 6, and validation
SECTIONS = {"trained z40-89": slice(40, 90), "validation z90-119": slice(90, 120)}


def interior(labels: np.ndarray) -> np.ndarray:
    """Voxels whose six face neighbours share their id (volume faces count as shared)."""
    inside = np.ones(labels.shape, bool)
    for axis in range(3):
        same = np.diff(labels, axis=axis) == 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        inside[tuple(lo)] &= same
        inside[tuple(hi)] &= same
    return inside


def body_fit(affinities: np.ndarray, labels: np.ndarray, body: int) -> dict[str, dict[str, float]]:
    """Mean affinity inside ``body`` and inside every other body, per section range."""
    mean_aff = affinities[:3].mean(axis=0)
    inside = interior(labels)
    out: dict[str, dict[str, float]] = {}
    for name, z in SECTIONS.items():
        lab, aff, ins = labels[z], mean_aff[z], inside[z]
        this, other = ins & (lab == body), ins & (lab != body)
        out[name] = {"body": float(aff[this].mean()) if this.any() else float("nan"),
                     "body_voxels": int(this.sum()),
                     "other_bodies": float(aff[other].mean()) if other.any() else float("nan")}
    return out


def fitted(affinities: np.ndarray, labels: np.ndarray, body: int, cut_edges: bool) -> np.ndarray:
    """Nearest-neighbour ``affinities`` (channel c: voxel v and v - 1 along axis c) with every link
    inside ``body`` set to 1 and, with ``cut_edges``, every link between it and another id to 0."""
    out = affinities.copy()
    inside = labels == body
    for c in range(3):
        here = [slice(None)] * 3
        there = [slice(None)] * 3
        here[c], there[c] = slice(1, None), slice(0, -1)
        both = inside[tuple(here)] & inside[tuple(there)]
        one = inside[tuple(here)] ^ inside[tuple(there)]
        out[c][tuple(here)][both] = 1.0
        if cut_edges:
            out[c][tuple(here)][one] = 0.0
    return out


def oracle(model_name: str, body: int) -> dict[str, dict[str, float]]:
    """VOI/ARAND of the dense validation crop as predicted, with ``body`` filled in, and with it
    fitted perfectly (see the module docstring)."""
    from bench_quality import score_labels

    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    model = load_model(model_name, device="cpu")
    raw, gt = qs.VALIDATION[0].load()
    affs = np.asarray(predict_affinities(raw, model, device="cpu", dtype="float16",
                                         tta=model.card.recommended_tta), np.float32)
    variants = {"as predicted": affs, "inside set to 1": fitted(affs, gt, body, False),
                "inside 1, edges 0": fitted(affs, gt, body, True)}
    out = {}
    for name, a in variants.items():
        labels = segment(a, threshold=model.card.recommended_threshold,
                         scoring=model.card.recommended_scoring).labels
        s = score_labels(labels, gt, 1.0, raw.size)
        out[name] = {k: s[k] for k in ("voi", "voi_split", "voi_merge", "arand")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--body", type=int, default=280)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--oracle", action="store_true", help="what fitting the body would be worth (see above)")
    args = p.parse_args(argv)
    import torch

    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import load_model

    torch.set_num_threads(args.threads)
    crop = qs.Crop("medulla-dense", qs.DENSE, "raw", qs.DENSE, "labels", (qs.ALL, qs.ALL, qs.ALL))
    if not crop.available():
        print(f"skipped: {qs.DATA / qs.DENSE} is missing (put the shared data at {qs.DATA} "
              "or set TOKENUNIFY_SHARED_DATA)")
        return 0
    if args.oracle:
        results = {name: oracle(name, args.body) for name in args.models}
        for name, rows in results.items():
            for variant, r in rows.items():
                print(f"{name}, {variant}: VOI {r['voi']:.3f} (split {r['voi_split']:.3f}, "
                      f"merge {r['voi_merge']:.3f}), ARAND {r['arand']:.3f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"body": args.body, "oracle": results}, indent=2))
        return 0
    raw, labels = crop.load()
    results = {}
    for name in args.models:
        model = load_model(name, device="cpu")
        affs = np.asarray(predict_affinities(raw, model, device="cpu", dtype="float16", tta="none"), np.float32)
        results[name] = body_fit(affs, labels, args.body)
        row = "  ".join(f"{k}: body {v['body']:.3f} ({v['body_voxels']} voxels), other bodies {v['other_bodies']:.3f}"
                        for k, v in results[name].items())
        print(f"{name}: {row}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"body": args.body, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

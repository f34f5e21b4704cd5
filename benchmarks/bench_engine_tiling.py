"""Tiling overhead: our tiled prediction (valid-region stitching, halo 1/16 of the tile) vs a
MONAI-style ``sliding_window_inference`` (25% overlap, Gaussian importance blending, as
TokenUnify uses), same model, same volume, one run each.

Accuracy is measured against the volume predicted in one piece (no tiles: what a tile-free
prediction of this global-context Mamba network gives) and, when the model is trained (the
bundled default, if installed), by VOI/ARAND of the segmentation against the ground truth.

    python benchmarks/bench_engine_tiling.py [--shape 48 300 300] [--preset tiny] [--threads 1]
                                             [--repeats 2]   # timed A B B A ... to cancel drift
    python benchmarks/bench_engine_tiling.py --count-only    # tiles vs windows over many shapes
    python benchmarks/bench_engine_tiling.py --per-pass      # one tile: bare model vs our loop
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def gaussian_importance(shape, sigma_scale=0.125) -> np.ndarray:
    """MONAI's Gaussian importance map: sigma = 0.125 × window size, peak 1, min clamped > 0."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) - (s - 1) / 2 for s in shape], indexing="ij")
    sq = sum((g / (sigma_scale * s)) ** 2 for g, s in zip(grids, shape, strict=True))
    w = np.exp(-0.5 * sq)
    w /= w.max()
    return np.maximum(w, w[w > 0].min()).astype(np.float32)


def sliding_window(image01: np.ndarray, model, roi, overlap=0.25, batch=1) -> tuple[np.ndarray, int]:
    """MONAI sliding_window_inference (constant padding to the roi, scan interval
    roi × (1 - overlap), Gaussian blending). Returns the output and the number of windows."""
    import torch

    shape = image01.shape
    pad = [max(r - s, 0) for r, s in zip(roi, shape, strict=True)]
    img = np.pad(image01, [(p // 2, p - p // 2) for p in pad])
    pshape = img.shape
    steps = [max(int(r * (1 - overlap)), 1) for r in roi]
    starts = []
    for s, r, st in zip(pshape, roi, steps, strict=True):
        n = int(np.ceil(max(s - r, 0) / st)) + 1
        starts.append(sorted({min(i * st, s - r) for i in range(n)}))
    weight = gaussian_importance(roi)
    out = None
    norm = np.zeros(pshape, dtype=np.float32)
    windows = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    for i in range(0, len(windows), batch):
        chunk = windows[i: i + batch]
        x = np.stack([img[z:z + roi[0], y:y + roi[1], x_:x_ + roi[2]] for z, y, x_ in chunk])
        with torch.inference_mode():
            pred = model(torch.from_numpy(x[:, None])).float().numpy()
        if out is None:
            out = np.zeros((pred.shape[1],) + pshape, dtype=np.float32)
        for (z, y, x_), p in zip(chunk, pred, strict=True):
            sl = (slice(z, z + roi[0]), slice(y, y + roi[1]), slice(x_, x_ + roi[2]))
            out[(slice(None),) + sl] += p * weight
            norm[sl] += weight
    out /= norm
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, shape, strict=True))
    return out[(slice(None),) + crop], len(windows)


def monai_windows(shape, roi, overlap=0.25) -> int:
    n = 1
    for s, r in zip(shape, roi, strict=True):
        st = max(int(r * (1 - overlap)), 1)
        n *= len({min(i * st, max(s - r, 0)) for i in range(int(np.ceil(max(s - r, 0) / st)) + 1)})
    return n


def count_table(roi=(16, 160, 160)) -> None:
    """Forward passes needed by each method for volumes of many shapes (no model run)."""
    from napari_tokenunify.engine.predict import default_halo
    from napari_tokenunify.engine.tiling import TileGrid

    halo = default_halo(roi)
    ratios = []
    for z in (32, 48, 64, 96, 128, 200, 256):
        for xy in (160, 200, 256, 300, 384, 416, 512, 768, 1024, 2048):
            ours = len(TileGrid((z, xy, xy), roi, halo))
            theirs = monai_windows((z, xy, xy), roi)
            ratios.append(theirs / ours)
    ratios = np.array(ratios)
    print(json.dumps({"tile": list(roi), "halo": list(halo), "shapes": len(ratios),
                      "windows_over_tiles_median": round(float(np.median(ratios)), 2),
                      "min": round(float(ratios.min()), 2), "max": round(float(ratios.max()), 2),
                      "mean": round(float(ratios.mean()), 2)}))


def per_pass(preset: str, repeats: int = 6) -> None:
    """Seconds per forward pass on one tile: the bare model vs our TilePredictor, interleaved."""
    import torch

    from napari_tokenunify.engine.predict import TilePredictor
    from napari_tokenunify.model import build_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    torch.manual_seed(0)
    model = build_model(preset).eval()
    roi = tuple(model.card.patch_size)
    tile = make_synthetic_volume(roi, seed=0).image.astype(np.float32)[None] / 255
    predictor = TilePredictor(model, device="cpu")

    def bare():
        with torch.inference_mode():
            model(torch.from_numpy(tile[:, None]))

    def ours():
        predictor.predict(tile)

    bare(), ours()
    times = {"bare": [], "ours": []}
    for r in range(repeats):
        for name, fn in ((("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare))):
            t0 = time.perf_counter()
            fn()
            times[name].append(round(time.perf_counter() - t0, 3))
    print(json.dumps({k: {"median_s": float(np.median(v)), "runs": v} for k, v in times.items()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shape", type=int, nargs=3, default=[48, 256, 256])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--model", default=None, help="a trained model (default: bundled, else random)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each, alternating")
    p.add_argument("--count-only", action="store_true")
    p.add_argument("--per-pass", action="store_true")
    args = p.parse_args()
    if args.per_pass:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
        per_pass(args.preset)
        return
    if args.count_only:
        count_table()
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import build_model, load_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    torch.set_num_threads(args.threads)
    trained = True
    try:
        model = load_model(args.model or "default", device="cpu")
    except (FileNotFoundError, ValueError):
        torch.manual_seed(0)
        model, trained = build_model(args.preset).eval(), False
    roi = tuple(model.card.patch_size)
    vol = make_synthetic_volume(tuple(args.shape), seed=0)
    img01 = vol.image.astype(np.float32) / 255.0

    with torch.inference_mode():  # warm-up, so neither method pays for first-call setup
        model(torch.zeros((1, 1) + roi))
    calls = {"n": 0}
    forward = model.forward

    def counting(x):
        calls["n"] += x.shape[0]
        return forward(x)

    model.forward = counting
    times = {"ours": [], "monai": []}
    for r in range(args.repeats):  # A B, then B A, ... so slow drifts of a shared machine cancel
        for name in (("ours", "monai") if r % 2 == 0 else ("monai", "ours")):
            calls["n"] = 0
            t0 = time.perf_counter()
            if name == "ours":
                ours = predict_affinities(vol.image, model, device="cpu", dtype="float32")
                n_ours = calls["n"]
            else:
                monai, n_monai = sliding_window(img01, model, roi)
            times[name].append(round(time.perf_counter() - t0, 2))
    model.forward = forward
    t_ours, t_monai = float(np.mean(times["ours"])), float(np.mean(times["monai"]))
    whole_shape = model.valid_shape(vol.image.shape)
    padded = np.pad(img01, [(0, w - s) for w, s in zip(whole_shape, vol.image.shape, strict=True)],
                    mode="reflect")
    with torch.inference_mode():
        whole = model(torch.from_numpy(padded[None, None])).float().numpy()[0]
    whole = whole[(slice(None),) + tuple(slice(0, s) for s in vol.image.shape)]
    inner = (slice(None), slice(1, None), slice(1, None), slice(1, None))
    row = {
        "shape": list(vol.image.shape), "tile": list(roi), "model": "trained" if trained else "random",
        "ours_s": times["ours"], "ours_tiles": n_ours,
        "monai_s": times["monai"], "monai_windows": n_monai,
        "speedup": round(t_monai / t_ours, 2),
        "ours_mae_vs_whole": float(np.abs(ours - whole)[inner].mean()),
        "monai_mae_vs_whole": float(np.abs(monai - whole)[inner].mean()),
    }
    if trained:
        for name, affs in (("ours", ours), ("monai", monai)):
            m = evaluate(segment(affs).labels, vol.labels)
            row[f"{name}_voi"], row[f"{name}_arand"] = round(m["voi"], 4), round(m["arand"], 4)
    print(json.dumps(row))


if __name__ == "__main__":
    main()

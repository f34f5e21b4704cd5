"""Throughput of predict + segment (the `run` pipeline) on a synthetic 128³ volume, CPU.

Prints voxels/s and the share of time in prediction, watershed (fragments) and agglomeration
for each preset. Usage:

    python benchmarks/bench_engine_throughput.py [--presets tiny base] [--size 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--presets", nargs="+", default=["tiny", "base"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import napari_tokenunify  # noqa: F401, I001  (before torch: short OpenMP waits, see threads.py)
    import torch  # noqa: I001
    from napari_tokenunify.engine.evaluate import evaluate
    from napari_tokenunify.engine.pipeline import segment
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import build_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    torch.set_num_threads(args.threads)
    vol = make_synthetic_volume((args.size,) * 3, seed=0)
    n = vol.image.size
    rows = []
    for preset in args.presets:
        torch.manual_seed(0)
        model = build_model(preset).eval()
        t0 = time.perf_counter()
        affs = predict_affinities(vol.image, model, device="cpu", dtype="float16")
        t_pred = time.perf_counter() - t0
        result = segment(affs, threshold=0.5, keep_history=True)
        t_frag = result.timings["fragments"]
        t_agg = result.timings["agglomeration"]
        total = t_pred + t_frag + t_agg
        t0 = time.perf_counter()
        result.agglomerator.segment(0.3)
        t_slider = time.perf_counter() - t0
        row = {
            "preset": preset, "voxels": n, "seconds": round(total, 2),
            "voxels_per_s": round(n / total), "prediction_s": round(t_pred, 2),
            "fragments_s": round(t_frag, 2), "agglomeration_s": round(t_agg, 2),
            "share_prediction": round(t_pred / total, 3), "share_fragments": round(t_frag / total, 3),
            "share_agglomeration": round(t_agg / total, 3), "new_threshold_s": round(t_slider, 3),
            "n_segments": int(result.labels.max()),
            "voi_vs_gt (untrained weights)": round(evaluate(result.labels, vol.labels)["voi"], 3),
        }
        rows.append(row)
        print(json.dumps(row))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {args.threads}")


if __name__ == "__main__":
    main()

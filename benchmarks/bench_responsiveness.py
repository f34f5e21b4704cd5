"""How responsive napari stays while the TokenUnify widget predicts and finetunes.

A 10 ms precise QTimer runs in the GUI thread; the gaps between its ticks are the event-loop
stalls a user would feel. Reports max / p99 / median gap for: idle, prediction (tiled, into a
Zarr store, layer refreshed every 0.5 s) and finetuning (loss plot redrawn every 0.25 s).

    xvfb-run -a python benchmarks/bench_responsiveness.py [--data ../shared/data/medulla-labeled/test-image.h5]
        [--model tiny|default] [--torch-threads N] [--steps 20]

Without --data a synthetic volume is used. Results are printed as a Markdown table row per phase.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _wait(app, job, timeout_s: float) -> None:
    t0 = time.perf_counter()
    while not job.finished and time.perf_counter() - t0 < timeout_s:
        app.processEvents()
        time.sleep(0.002)


def _idle(app, seconds: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="an EM volume (e.g. the medulla test-image.h5)")
    ap.add_argument("--model", default="tiny", choices=["tiny", "default"])
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads in the workers (default: cores - 1, see widgets.workers)")
    ap.add_argument("--steps", type=int, default=20, help="finetuning steps")
    ap.add_argument("--tile", default="32,64,64", help="prediction tile z,y,x")
    ap.add_argument("--crop", default=None, help="use only z0:z1,y0:y1,x0:x1 of the data")
    ap.add_argument("--no-refresh", action="store_true", help="diagnostic: no live layer updates")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--skip-predict", action="store_true")
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget
    from napari_tokenunify.widgets.responsiveness import GapMonitor

    tmp = Path(tempfile.mkdtemp(prefix="tokenunify-bench-"))
    os.environ.setdefault("TOKENUNIFY_AUTOSAVE_DIR", str(tmp / "autosave"))
    if args.data:
        from napari_tokenunify.io import open_volume

        vol = open_volume(args.data)
        image = np.asarray(vol.data)
        source = args.data
    else:
        from napari_tokenunify.synthetic import make_synthetic_volume

        image = make_synthetic_volume((48, 128, 128), seed=0).image
        source = "synthetic (48, 128, 128)"
    if args.crop:
        from napari_tokenunify.engine.tiling import parse_box

        box = parse_box(args.crop, image.shape)
        image = image[tuple(slice(a, b) for a, b in box)]
    labels = None
    if args.data and "test-image" in args.data:
        from napari_tokenunify.io import open_volume

        gt = Path(args.data).with_name("test-gt.lzf.h5")
        if gt.exists():
            labels = np.asarray(open_volume(gt).data).astype(np.uint32)
            if args.crop:
                labels = labels[tuple(slice(a, b) for a, b in box)]

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = TokenUnifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="TokenUnify")
    img_layer = viewer.add_image(image, name="em")
    if labels is None:
        from napari_tokenunify.synthetic import make_synthetic_volume

        labels = make_synthetic_volume(image.shape, seed=1).labels
    lab_layer = viewer.add_labels(labels, name="labels")
    _idle(app, 1.0)

    from napari_tokenunify.model import build_model, load_model

    model = build_model("tiny").eval() if args.model == "tiny" else load_model("default", device="cpu")
    widget.session.model = model
    if args.torch_threads:
        os.environ["TOKENUNIFY_GUI_THREADS"] = str(args.torch_threads)
    rows = []
    mon = GapMonitor(10)

    mon.start()
    _idle(app, 3.0)
    rows.append(("idle (3 s)", mon.stop(), 3.0))

    predict = widget.panel("Predict")
    predict.image.reset_choices()
    predict.image.value = img_layer
    predict.scope.value = "whole volume"
    predict.tile_shape = tuple(int(v) for v in args.tile.split(","))
    predict.store.value = tmp / "affs.zarr"
    if args.no_refresh:
        predict._on_progress = lambda p: None
    mon.start()
    t0 = time.perf_counter()
    job = predict.predict() if not args.skip_predict else None
    if job is not None:
        _wait(app, job, 1800)
    if job is not None:
        rows.append((f"predict {tuple(image.shape)}, tile {predict.tile_shape}", mon.stop(), time.perf_counter() - t0))
    if job is not None and job.error is not None:
        print("prediction failed:", job.error, file=sys.stderr)

    if args.skip_finetune:
        args.steps = 0
    ft = widget.panel("Finetune")
    ft.reset_choices()
    ft.image.value = img_layer
    ft.labels.value = lab_layer
    ft.region.value = "whole volume"
    ft.steps.value = max(1, args.steps)
    ft.patch_shape = (16, 64, 64)
    mon.start()
    t0 = time.perf_counter()
    job = ft.start() if args.steps else None
    if job is not None:
        _wait(app, job, 1800)
    if job is not None:
        rows.append((f"finetune {args.steps} steps, patch (16, 64, 64)", mon.stop(), time.perf_counter() - t0))
    if job is not None and job.error is not None:
        print("finetuning failed:", job.error, file=sys.stderr)


    from napari_tokenunify.widgets.workers import gui_torch_threads

    print(f"\ndata: {source}; model: {args.model}; worker torch threads: {gui_torch_threads()}; "
          f"CPU cores: {os.cpu_count()}")
    print("| phase | wall s | timer ticks | max gap ms | p99 gap ms | median ms | gaps > 100 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, st, wall in rows:
        print(f"| {name} | {wall:.1f} | {st.n} | {st.max_ms:.1f} | {st.p99_ms:.1f} | {st.p50_ms:.1f} | {st.over_100ms} |")
    widget.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How responsive napari stays while the TokenUnify widget predicts and finetunes.

A 10 ms precise QTimer runs in the GUI thread; the gaps between its ticks are the event-loop
stalls a user would feel. Reports max / p99 / median gap for: idle, prediction (tiled, into a
Zarr store, layer refreshed every 0.5 s) and finetuning (loss plot redrawn every 0.25 s).

First it measures the *time to the first tile on screen* (issue 16): Predict pressed with
*current view first*, the card's tile and test-time flips, the view zoomed to ~256 voxels
around the centre of the volume; the clock stops when the affinity layer has been refreshed
with the tile under the view centre and napari has drawn it (the next event-loop pass). With
``--model default`` no model is loaded before the press (the bundled default loads as on first
use). It is pressed ``--first-runs`` times (a new store each time): the first press is cold
(model and kernels load), the others warm (model loaded). ``--flips`` overrides the card's
test-time flips (with flips the tile is first shown as a preview without them).

    xvfb-run -a python benchmarks/bench_responsiveness.py [--data ../shared/data/medulla-labeled/test-image.h5]
        [--model tiny|default] [--torch-threads N] [--steps 20] [--first-runs 3] [--first-only]

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


def first_tile_on_screen(app, viewer, widget, image_layer, store: Path, flips: str | None = None) -> dict:
    """Press Predict (current view first, the card's tile and flips) on a view of ~256 voxels
    around the volume's centre; seconds until the tile under the view centre is on screen.
    The rest of the run is cancelled."""
    import numpy as np

    from napari_tokenunify.widgets.predict_panel import view_centre
    from napari_tokenunify.widgets.view import camera, canvas_size

    shape = image_layer.data.shape
    viewer.dims.set_point(0, shape[0] // 2)
    cam = camera(viewer)
    cam.center = (shape[1] / 2, shape[2] / 2)
    h, w = canvas_size(viewer) or (600, 800)
    cam.zoom = min(h, w) / 256
    _idle(app, 0.5)
    panel = widget.panel("Predict")
    panel.image.reset_choices()
    panel.image.value = image_layer
    panel.scope.value = "current view first"
    panel.tile_shape = None
    panel.store.value = store
    if flips is not None:
        panel.tta.value = flips
    cz, cy, cx = (int(c) for c in view_centre(viewer, image_layer))
    t0 = time.perf_counter()
    job = panel.predict()
    screen = None
    while job is not None and not job.finished and time.perf_counter() - t0 < 600:
        app.processEvents()
        if panel.first_tile_s is not None and screen is None:
            app.processEvents()  # the draw that follows the refresh
            if np.asarray(panel.live[:, cz, cy, cx]).any():
                screen = time.perf_counter() - t0
                break
        time.sleep(0.001)
    refreshed = panel.first_tile_s
    preview = panel.live.preview is not None
    if job is not None and not job.finished:
        job.cancel()
        _wait(app, job, 600)
    return {"screen_s": float("nan") if screen is None else screen,
            "refresh_s": float("nan") if refreshed is None else refreshed,
            "preview": preview, "tta": widget.session.tta,
            "tile": tuple(panel.live_levels[0].array.chunks[1:]) if panel.live.array is not None else None}


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
    ap.add_argument("--first-runs", type=int, default=3, help="presses for the first-tile time")
    ap.add_argument("--first-only", action="store_true", help="only the first-tile time")
    ap.add_argument("--flips", default=None, choices=["none", "yx", "zyx"],
                    help="test-time flips for the first-tile presses (default: the card's)")
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget
    from napari_tokenunify.widgets.responsiveness import GapMonitor

    load_before = os.getloadavg()
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

    if args.torch_threads:
        os.environ["TOKENUNIFY_GUI_THREADS"] = str(args.torch_threads)
    if args.model == "tiny":
        widget.session.model = build_model("tiny").eval()
    firsts = []
    for i in range(max(0, args.first_runs)):
        firsts.append(first_tile_on_screen(app, viewer, widget, img_layer, tmp / f"first-{i}.zarr",
                                           args.flips))
        if widget.session.model is None:  # the next presses find the model loaded (warm)
            widget.session.model = load_model("default", device="cpu")
    model = widget.session.model or load_model("default", device="cpu")
    widget.session.model = model
    rows = []
    mon = GapMonitor(10)

    if args.first_only:
        args.skip_predict = args.skip_finetune = True
    else:
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
          f"CPU cores: {os.cpu_count()}; load average before: {load_before}, after: {os.getloadavg()}")
    if firsts:
        print("\n| press | first tile on screen s | layer refreshed s | preview (no flips) | flips | tile |")
        print("|---|---|---|---|---|---|")
        for i, f in enumerate(firsts):
            print(f"| {'cold' if i == 0 else 'warm'} {i + 1} | {f['screen_s']:.2f} | {f['refresh_s']:.2f} "
                  f"| {f['preview']} | {f['tta']} | {f['tile']} |")
    print("| phase | wall s | timer ticks | max gap ms | p99 gap ms | median ms | gaps > 100 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, st, wall in rows:
        print(f"| {name} | {wall:.1f} | {st.n} | {st.max_ms:.1f} | {st.p99_ms:.1f} | {st.p50_ms:.1f} | {st.over_100ms} |")
    widget.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

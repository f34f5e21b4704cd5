"""Screenshot of the TokenUnify plugin at work on real FIB-SEM data (run under Xvfb).

    xvfb-run -a python scripts/screenshot.py [--model default|tiny|PATH] [--finetune-steps 150]
        [--out docs/screenshot.png]

Drives the dock widget like a user would: opens ../shared/data/medulla-labeled/test-image.h5 with
the plugin's reader, loads the model (the bundled default when installed; otherwise the tiny
network, first finetuned in the Finetune section on the train volume and its labels), predicts
affinities for the whole test volume, segments them, and saves a screenshot of the whole window.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TOKENUNIFY_SHARED_DATA", REPO.parent / "shared" / "data")) / "medulla-labeled"


def _wait(app, job, what: str, timeout_s: float = 3600) -> None:
    if job is None:
        sys.exit(f"{what} was refused; see the messages above")
    t0 = time.perf_counter()
    while not job.finished:
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() - t0 > timeout_s:
            sys.exit(f"{what} did not finish in {timeout_s} s")
    if job.error is not None:
        sys.exit(f"{what} failed: {job.error}")
    print(f"{what}: {time.perf_counter() - t0:.1f} s", flush=True)


def _settle(app, seconds: float = 1.0) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="auto", help="default, tiny, a model path, or auto")
    ap.add_argument("--finetune-steps", type=int, default=150,
                    help="steps on the train volume when the model is untrained (tiny)")
    ap.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    ap.add_argument("--threshold", type=float, default=None,
                    help="segmentation threshold (default: the model card's recommendation)")
    ap.add_argument("--save-model", default=None, help="also save the finetuned model to this folder")
    args = ap.parse_args(argv)
    test_image = DATA / "test-image.h5"
    if not test_image.exists():
        sys.exit(f"real EM data not found at {DATA} (set TOKENUNIFY_SHARED_DATA)")

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_tokenunify.model import build_model, load_model
    from napari_tokenunify.widgets.main_widget import DEFAULT_DOCK_WIDTH, TokenUnifyWidget

    tmp = Path(tempfile.mkdtemp(prefix="tokenunify-shot-"))
    os.environ.setdefault("TOKENUNIFY_AUTOSAVE_DIR", str(tmp / "autosave"))
    viewer = napari.Viewer(show=True, title="napari-tokenunify")
    viewer.window._qt_window.resize(1600, 900)
    app = QApplication.instance()
    widget = TokenUnifyWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="TokenUnify", area="right")
    # napari's default dock width, which the sections fit without a horizontal scrollbar
    viewer.window._qt_window.resizeDocks([dock], [DEFAULT_DOCK_WIDTH], Qt.Orientation.Horizontal)

    choice = args.model
    model = None
    if choice in ("auto", "default"):
        try:
            model = load_model("default", device="cpu")
            choice = "default"
        except FileNotFoundError as err:
            if args.model == "default":
                sys.exit(str(err))
            choice = "tiny"
    if choice == "tiny":
        model = build_model("tiny")
        widget.panels["Model"].source.value = "tiny (untrained, for trying things out)"
    elif model is None:
        model = load_model(choice, device="cpu")
    widget.panels["Model"].set_model(model)

    if choice == "tiny" and args.finetune_steps > 0:
        train = viewer.open(DATA / "train-image.h5", plugin="napari-tokenunify", name="train EM")[0]
        gt = viewer.open(DATA / "train-gt.lzf.h5", plugin="napari-tokenunify", name="train labels")[0]
        if type(gt).__name__ != "Labels":
            gt = viewer.add_labels(np.asarray(gt.data).astype(np.uint32), name="train labels (ids)")
        ft = widget.panel("Finetune")
        ft.reset_choices()
        ft.image.value, ft.labels.value = train, gt
        ft.region.value = "whole volume"
        ft.steps.value = args.finetune_steps
        ft.patch_shape = (32, 64, 64)
        _wait(app, ft.start(), f"finetune tiny on train volume ({args.finetune_steps} steps)")
        ft.use()
        if args.save_model:
            ft.save_dir.value = args.save_model
            _wait(app, ft.save(), "save finetuned model")
        viewer.layers.remove(train)
        viewer.layers.remove(gt)

    image = viewer.open(test_image, plugin="napari-tokenunify", name="medulla test (FIB-SEM)")[0]
    predict = widget.panel("Predict")
    predict.reset_choices()
    predict.image.value = image
    predict.scope.value = "whole volume"
    predict.tile_shape = (32, 64, 64)
    predict.store.value = tmp / "affinities.zarr"
    _wait(app, predict.predict(), "predict affinities")

    seg = widget.panel("Segment")
    seg.reset_choices()
    seg.affinities.value = predict.layer
    if args.threshold is not None:
        seg.threshold.value = args.threshold
    seg.min_size.value = 50
    _wait(app, seg.segment(), "segment")
    labels = seg.labels_layer
    labels.opacity = 0.45
    predict.layer.visible = False
    proof = widget.panel("Proofread")
    proof.reset_choices()
    proof.labels.value = labels
    viewer.dims.set_point(0, image.data.shape[0] // 2)
    viewer.reset_view()
    _settle(app, 1.5)
    print(f"dock width: {dock.width()} px; horizontal scrollbar: "
          f"{widget.scroll.horizontalScrollBar().isVisible()}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    n = len(np.unique(np.asarray(labels.data))) - 1
    print(f"model: {choice}; {n} segments; wrote {out}")
    widget.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

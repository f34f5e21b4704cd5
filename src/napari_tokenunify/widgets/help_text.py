"""Tooltips for the dock widget: what every field and button of every section does.

``HELP`` maps ``(section title, panel attribute)`` to the text; ``(section title, "")`` is the
section's own header. ``TokenUnifyWidget`` applies them once the panels are built
(``apply_help``), to the magicgui widget, its row label and its Qt parts; a tooltip a panel sets
itself is kept. A new field gets its text here (``tests/test_widgets_help_layout.py`` checks that
every input and button has one).
"""

from __future__ import annotations

from typing import Any

HELP: dict[tuple[str, str], str] = {
    # -- Model ---------------------------------------------------------------------------------
    ("Model", ""): "Which network predicts the affinities, and where it runs.",
    ("Model", "source"): (
        "The network that predicts affinities: the bundled default (trained on FIB-SEM), the "
        "other bundled models, an untrained tiny network for trying the workflow out, or a "
        "model file (chosen below)."),
    ("Model", "path"): (
        "Used when 'model file…' is chosen: a .safetensors file with its card.json beside it, "
        "a model folder, or a TokenUnify .pth checkpoint."),
    ("Model", "device"): (
        "Where the network runs: auto takes a GPU (CUDA, Apple MPS) when there is one, else "
        "the CPU."),
    ("Model", "found"): "The devices found on this machine, best first.",
    ("Model", "load_btn"): (
        "Load the chosen model now (without it, the bundled default loads on the first "
        "Predict). Its card sets the recommended threshold and test-time flips."),
    ("Model", "card"): (
        "The loaded model's card: what it is, its recommended threshold and flips, its scores "
        "and the voxel size it was trained at."),
    # -- Predict -------------------------------------------------------------------------------
    ("Predict", ""): "Affinities (how likely neighbouring voxels belong to the same neuron) for "
                     "an image, tile by tile, into a Zarr store.",
    ("Predict", "image"): "The EM image layer (3D: z, y, x) to predict affinities for.",
    ("Predict", "scope"): (
        "What to predict. current view first: the tile under the centre of the view first, "
        "then the rest of the volume. current view only: the visible region. region only: the "
        "box typed in 'region'. whole volume: all of it, tile by tile."),
    ("Predict", "region"): "z0:z1, y0:y1, x0:x1 in voxels (for 'region only').",
    ("Predict", "store"): (
        "The Zarr folder the affinities are written to, tile by tile, and read from by the "
        "layer. Empty: beside the image file, else in ~/.napari-tokenunify/predictions. A "
        "cancelled run resumes from its finished tiles; a finished store of the same model and "
        "settings is reused, one of another run is kept and a new name used."),
    ("Predict", "tta"): "Average each tile over its mirror images: a little more accurate, 4 or "
                        "8 times slower.",
    ("Predict", "voxel"): "z, y, x in nm, e.g. 40, 4, 4; empty: the layer's scale.",
    ("Predict", "rescale"): "When the data's voxel size differs from the model card's by more "
                            "than 15%, predict on the model's grid and map the affinities back.",
    ("Predict", "predict_btn"): (
        "Predict affinities with the loaded model (the bundled default when none is loaded). "
        "Tiles appear in the layer as they finish."),
    ("Predict", "cancel_btn"): (
        "Stop the prediction after the current tile; the finished tiles are kept and the next "
        "Predict resumes from them."),
    # -- Segment -------------------------------------------------------------------------------
    ("Segment", ""): "Affinities → neuron labels (fragments merged by waterz up to a threshold).",
    ("Segment", "affinities"): "The affinity layer (3 channels: z, y, x) to segment, from "
                               "Predict or opened from a file.",
    ("Segment", "threshold"): (
        "How far fragments are merged. Higher: more merging (fewer, larger segments; neurons "
        "may merge). Lower: more splitting (neurons may break into pieces). Starts at the "
        "model card's recommendation; once segmented, moving it re-segments in a moment from "
        "the kept fragments."),
    ("Segment", "min_size"): (
        "Minimum segment size in voxels (of the layer's grid, not nm³): smaller segments are "
        "merged into their main neighbour. 0: keep all. Not applied to volumes segmented "
        "blockwise."),
    ("Segment", "segment_btn"): (
        "Segment the chosen affinities at the threshold into the labels layer 'segmentation' "
        "(a new layer when that one has proofreading edits)."),
    # -- Proofread -----------------------------------------------------------------------------
    ("Proofread", ""): "Fix the labels: merge, split, delete and relabel segments (Ctrl+Z "
                       "undoes), and visit the places most worth checking.",
    ("Proofread", "labels"): "The labels layer to edit (edits are tracked for Finetune and "
                             "autosaved).",
    ("Proofread", "affinities"): (
        "The affinities of these labels: Split follows their boundaries between the seeds, "
        "and 'Next place to check' ranks places by them."),
    ("Proofread", "image"): "Used by Split (its dark membranes as boundaries) when no "
                            "affinities are chosen; optional.",
    ("Proofread", "ids"): "Ids to merge, e.g. '4, 9' (Alt+click on the labels adds one).",
    ("Proofread", "add_selected_btn"): "Add the labels layer's selected label to the ids to "
                                       "merge.",
    ("Proofread", "merge_btn"): "Merge the listed ids into the first one.",
    ("Proofread", "split_btn"): (
        "Split one label along the boundaries between seed points: the first press adds a "
        "'split seeds' points layer; click two or more points inside the label, press again."),
    ("Proofread", "delete_btn"): "Set the selected label to background (0).",
    ("Proofread", "relabel_btn"): "Give the selected label a new, unused id (e.g. to separate "
                                  "it from a piece with the same id).",
    ("Proofread", "jump_id"): "A label id to centre the view on.",
    ("Proofread", "jump_btn"): "Centre and zoom the view on the label 'jump to id' and select it.",
    ("Proofread", "rank_by"): (
        "What 'Next place to check' ranks blocks by: how undecided the affinities are (the "
        "default), or the labels' segment boundaries and merges close to the threshold."),
    ("Proofread", "next_btn"): (
        "Go to the next place most likely to hold an error: a full block, ranked as 'rank by' "
        "says."),
    # -- Finetune ------------------------------------------------------------------------------
    ("Finetune", ""): "Train the current model on your corrected labels, then save or use the "
                      "new model.",
    ("Finetune", "image"): "The image the corrected labels belong to.",
    ("Finetune", "labels"): "The corrected labels to train on.",
    ("Finetune", "region"): (
        "Where the labels are correct. edited regions: around your proofreading edits. box: "
        "the box typed below. whole volume: all of it (only if every label is right)."),
    ("Finetune", "box"): "z0:z1, y0:y1, x0:x1 in voxels (when training on a box).",
    ("Finetune", "steps"): "The most training steps (one patch each); the time budget usually "
                           "ends training first.",
    ("Finetune", "lr"): "Learning rate: how large each training step is. Higher learns faster "
                        "but can spoil what the model knew.",
    ("Finetune", "budget"): "Stop after this many seconds with the best model so far (0: no "
                            "limit). Five minutes of a tenth of a new volume corrected made the "
                            "rest 27 % better in our benchmark.",
    ("Finetune", "holdout"): "Share of the corrected region held back to check the new model on "
                             "and keep its best checkpoint, at the starting model's threshold "
                             "(0: train on all of it).",
    ("Finetune", "name"): "The name in the new model's card.",
    ("Finetune", "start_btn"): "Start finetuning (in the background; the plot shows the loss).",
    ("Finetune", "cancel_btn"): "Stop finetuning; the best model so far is kept.",
    ("Finetune", "plot"): "Training loss per step (lower is better).",
    ("Finetune", "save_dir"): "The folder to save the new model in (not the folder of the model "
                              "it started from).",
    ("Finetune", "save_btn"): "Save the finetuned model (weights and card) into 'save to'.",
    ("Finetune", "use_btn"): "Make the finetuned model the current one (Predict uses it; the "
                             "Model section shows its card).",
    ("Finetune", "again_btn"): (
        "Predict the whole image with the new model into a new store and segment it at the new "
        "card's threshold into a new labels layer; your edited labels stay as they are."),
    ("Finetune", "compare_btn"): "Predict the visible region with the new model into a new "
                                 "layer, to compare with the old affinities.",
    # -- Export --------------------------------------------------------------------------------
    ("Export", ""): "Write labels (and affinities) to a file, with the model card beside them.",
    ("Export", "labels"): "The labels layer to export.",
    ("Export", "affinities"): "Optional: also export this affinity layer, beside the labels "
                              "('<name>-affinities').",
    ("Export", "path"): "The file to write: a name ending in .zarr, .ome.zarr, .tif or .h5 "
                        "(the format follows the ending).",
    ("Export", "overwrite"): "Replace files that exist already.",
    ("Export", "export_btn"): "Write the labels (and affinities) and the model card "
                              "('<name>.model-card.json').",
}

#: Qt classes that take input: each of these in a section gets a tooltip.
def input_classes() -> tuple[type, ...]:
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractSlider,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
        QPlainTextEdit,
        QTextEdit,
    )

    return (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit, QTextEdit,
            QPlainTextEdit)


def _qt_of(value: Any) -> Any:
    """The Qt widget of a panel attribute: a magicgui widget's native, a QWidget, or an object
    with a Qt ``canvas`` (the loss plot)."""
    from qtpy.QtWidgets import QWidget

    if isinstance(value, QWidget):
        return value
    native = getattr(value, "native", None)
    if isinstance(native, QWidget):
        return native
    canvas = getattr(value, "canvas", None)
    return canvas if isinstance(canvas, QWidget) else None


def _set_if_empty(widget: Any, text: str) -> str:
    """Give a Qt widget ``text`` unless it has a tooltip; returns the tooltip it has then."""
    if not widget.toolTip():
        widget.setToolTip(text)
    return widget.toolTip()


def apply_help(title: str, panel: Any, header: Any = None) -> None:
    """Tooltips from ``HELP`` for a panel's fields (and its section ``header``): on the magicgui
    widget, on its Qt parts that have none, and on its row label."""
    from magicgui.widgets import Widget
    from qtpy.QtWidgets import QLabel

    if header is not None and HELP.get((title, "")):
        _set_if_empty(header, HELP[(title, "")])
    for attr, value in vars(panel).items():
        text = HELP.get((title, attr))
        qt = _qt_of(value)
        if not text or qt is None:
            continue
        if isinstance(value, Widget) and not value.tooltip:
            value.tooltip = text
        text = _set_if_empty(qt, text)  # a tooltip the panel set stays, and spreads to the parts
        for part in qt.findChildren(input_classes()):
            _set_if_empty(part, text)
        label = getattr(value, "label", "")
        row = qt.parentWidget()
        if isinstance(value, Widget) and label and row is not None:
            for lab in row.findChildren(QLabel):
                if lab.text() == label and lab.parentWidget() is row:
                    _set_if_empty(lab, text)

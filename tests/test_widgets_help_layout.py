"""The dock widget as a new user meets it (issue 15, friction): a tooltip on every field and
button, the sections fit napari's default dock width, and the loss plot is readable in napari's
dark and light themes."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import numpy as np
import pytest

from widget_support import docked  # noqa: F401

pytestmark = pytest.mark.gui

LONG_PATH = ("/home/someone/projects/connectomics/medulla/volumes/medulla-test-image.tokenunify/"
             "medulla_test_FIB-SEM_with_a_long_name-affinities-default-ft-2026-12-01.zarr")


def _inputs(panel):
    from napari_tokenunify.widgets.help_text import input_classes

    return panel.findChildren(input_classes())


def _owner_tip(widget, panel) -> str:
    """A widget's tooltip; for the parts Qt builds inside a spin box or combo box (their line
    edit, whose tooltip events go to the box), the box's."""
    from qtpy.QtWidgets import QAbstractSpinBox, QComboBox

    tip = widget.toolTip()
    parent = widget.parentWidget()
    while not tip and parent is not None and parent is not panel:
        if isinstance(parent, (QAbstractSpinBox, QComboBox)):
            tip = parent.toolTip()
        parent = parent.parentWidget()
    return tip


def test_every_field_and_button_has_a_tooltip(docked):
    from magicgui.widgets import Container, Label
    from qtpy.QtWidgets import QLabel

    _, widget = docked
    missing = []
    for title, panel in widget.panels.items():
        # the magicgui forms: every field and button but the text lines
        for form in [v for v in vars(panel).values() if isinstance(v, Container)]:
            for w in form:
                if not isinstance(w, Label) and not (w.tooltip or "").strip():
                    missing.append(f"{title}: {w.label or getattr(w, 'text', '')!r} ({type(w).__name__})")
        # and every Qt input inside the section (the parts of a file chooser, the slider…)
        for qt in _inputs(panel):
            if not _owner_tip(qt, panel).strip():
                text = qt.text() if hasattr(qt, "text") else ""
                missing.append(f"{title}: Qt {type(qt).__name__} {text!r}")
        assert widget.sections[title].toggleButton().toolTip(), f"section {title} has no tooltip"
    assert not missing, "no tooltip:\n" + "\n".join(missing)

    seg, predict = widget.panel("Segment"), widget.panel("Predict")
    threshold = seg.threshold.tooltip
    assert "Higher: more merging" in threshold and "splitting" in threshold
    assert "voxels" in seg.min_size.tooltip and "not nm" in seg.min_size.tooltip
    assert "current view first" in predict.scope.tooltip and "whole volume" in predict.scope.tooltip
    assert "Zarr" in predict.store.tooltip and "resumes" in predict.store.tooltip
    # the slider's parts and its row label say it too
    assert all(qt.toolTip() == threshold for qt in _inputs(seg.threshold.native))
    row_labels = [lab for lab in seg.threshold.native.parentWidget().findChildren(QLabel)
                  if lab.text() == "threshold"]
    assert row_labels and all(lab.toolTip() == threshold for lab in row_labels)
    # a tooltip the panel set itself is kept
    assert predict.region.tooltip == "z0:z1, y0:y1, x0:x1 in voxels"
    assert widget.panel("Finetune").plot.canvas.toolTip()


def test_help_texts_name_real_fields(docked):
    """No stale entries: each key of HELP names a section and one of its attributes."""
    from napari_tokenunify.widgets.help_text import HELP

    _, widget = docked
    for title, attr in HELP:
        assert title in widget.panels, title
        assert attr == "" or hasattr(widget.panel(title), attr), (title, attr)


def _right_edge(w, viewport) -> int:
    return w.mapTo(viewport, w.rect().topRight()).x()


def test_sections_fit_the_default_dock_width(docked, qtbot):
    """At napari's default dock width, with every section open, a long layer name and long
    status paths: no horizontal scrollbar, nothing right of the visible area, no button text
    cut, the wrapped status lines shown whole."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    from napari_tokenunify.widgets.main_widget import DEFAULT_DOCK_WIDTH

    viewer, widget = docked
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    window.show()
    qtbot.waitExposed(window)
    viewer.add_image(np.zeros((4, 8, 8), np.float32),
                     name="medulla test volume (FIB-SEM, 10 nm isotropic) with a long name.h5")
    widget.reset_choices()
    for section in widget.sections.values():
        section.expand(animate=False)
    for panel in widget.panels.values():
        if hasattr(panel, "status"):
            panel.status.value = f"writing to {LONG_PATH}"
    widget.panel("Predict").store.value = LONG_PATH
    dock = widget.parentWidget()
    while not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    qtbot.wait(100)
    _fits(widget, f"docked at {dock.width()} px")  # the width napari gave it
    window.resizeDocks([dock], [DEFAULT_DOCK_WIDTH], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: abs(dock.width() - DEFAULT_DOCK_WIDTH) <= 2, timeout=5000)
    qtbot.wait(100)
    _fits(widget, f"at {DEFAULT_DOCK_WIDTH} px")
    # the model chooser shows its long choices elided within the dock, not widening it
    model = widget.panel("Model")
    model.source.value = model.source.choices[-2]  # "tiny (untrained, for trying things out)"
    qtbot.wait(50)
    assert not widget.scroll.horizontalScrollBar().isVisible()


def _fits(widget, where: str) -> None:
    from qtpy.QtWidgets import QAbstractButton

    scroll, viewport = widget.scroll, widget.scroll.viewport()
    assert not scroll.horizontalScrollBar().isVisible(), where
    assert scroll.widget().minimumSizeHint().width() <= viewport.width(), where
    assert scroll.widget().width() <= viewport.width(), where
    for title, panel in widget.panels.items():
        for qt in _inputs(panel):
            if qt.isVisible():
                assert _right_edge(qt, viewport) <= viewport.width(), (where, title, type(qt).__name__)
            if isinstance(qt, QAbstractButton) and qt.isVisible():
                assert qt.width() >= qt.minimumSizeHint().width(), (where, title, qt.text())
        if hasattr(panel, "status"):
            label = panel.status.native
            assert _right_edge(label, viewport) <= viewport.width(), (where, title)
            assert label.height() >= label.heightForWidth(label.width()), f"{where}: {title} status cut"
            assert label.height() > 2 * label.fontMetrics().height(), f"{where}: {title} not wrapped"


def _text_height(label) -> int:
    """Pixel rows from the first to the last that hold text, inside a label's 1 px frame."""
    img = label.grab().toImage()
    bg = img.pixel(1, 1)
    rows = [y for y in range(1, img.height() - 1)
            if any(img.pixel(x, y) != bg for x in range(1, img.width() - 1))]
    return rows[-1] - rows[0] + 1 if rows else 0


def test_no_blank_status_lines_at_the_default_dock_width(docked, qtbot):
    """docs/screenshot.png showed a blank line under Predict: an empty status line took a row,
    and a status that just fits one line got a box two lines high (with Qt's automatic indent a
    framed label is sized narrower than it is painted). A status line shows only with text, in
    a box as high as the lines it paints."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget, QLabel

    from napari_tokenunify.widgets.main_widget import DEFAULT_DOCK_WIDTH

    viewer, widget = docked
    window = viewer.window._qt_window
    window.resize(1600, 900)  # as scripts/screenshot.py
    window.show()
    qtbot.waitExposed(window)
    for section in widget.sections.values():
        section.expand(animate=False)
    dock = widget.parentWidget()
    while not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window.resizeDocks([dock], [DEFAULT_DOCK_WIDTH], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: abs(dock.width() - DEFAULT_DOCK_WIDTH) <= 2, timeout=5000)
    qtbot.wait(50)
    blank = [f"{title}: {lab.objectName()}" for title, panel in widget.panels.items()
             for lab in panel.findChildren(QLabel)
             if lab.isVisible() and not lab.text().strip() and lab.pixmap().isNull()]
    assert not blank, f"visible empty labels: {blank}"

    status = widget.panel("Predict").status
    label = status.native
    line = label.fontMetrics().height()
    # paths around the width of one line, a narrow character at a time (the screenshot's was
    # "done: /tmp/tokenunify-shot-swz0zoik/affinities.zarr")
    for n in range(40):
        status.value = f"done: /tmp/tokenunify-shot-{'i' * n}/affinities.zarr"
        qtbot.waitUntil(lambda: label.height() == label.heightForWidth(label.width()), timeout=2000)
        assert label.isVisible()
        assert label.height() - _text_height(label) < line, (n, label.height(), status.value)
    status.value = ""
    assert not label.isVisible() and not label.parentWidget().isVisible()


def _lum(colour) -> float:
    from matplotlib.colors import to_rgb

    from napari_tokenunify.widgets.finetune_panel import _luminance

    return _luminance(to_rgb(colour))


@pytest.mark.parametrize("first", ["dark", "light"])
def test_loss_plot_takes_the_viewer_theme(docked, first):
    """The loss plot's figure, ticks, labels and curve follow napari's theme: light text on a
    dark figure in the dark theme, dark on light in the light one, also after a switch."""
    from napari_tokenunify.widgets.finetune_panel import contrast

    viewer, widget = docked
    plot = widget.panel("Finetune").plot
    plot.show([1.0, 0.6, 0.4, 0.35], force=True)
    for theme in (first, "light" if first == "dark" else "dark"):
        viewer.theme = theme
        plot.canvas.draw()
        face = plot.figure.get_facecolor()
        axes = plot.ax.get_facecolor()
        tick = plot.ax.xaxis.get_major_ticks()[0].label1.get_color()
        ylabel = plot.ax.yaxis.label.get_color()
        line = plot.line.get_color()
        if theme == "dark":
            assert _lum(face) < 0.1 and _lum(axes) < 0.1, face
            assert _lum(tick) > 0.6, tick
        else:
            assert _lum(face) > 0.6 and _lum(axes) > 0.6, face
            assert _lum(tick) < 0.1, tick
        assert contrast(tick, face) >= 7, (theme, tick, face)
        assert contrast(ylabel, face) >= 7, (theme, ylabel, face)
        assert contrast(line, face) >= 3, (theme, line, face)

"""The TokenUnify dock widget: Model, Predict, Segment, Proofread, Finetune and Export sections.

Besides holding the sections, it tracks which regions of each labels layer a person edited (for
finetuning and autosave) and, when the viewer closes, cancels running work, waits for it to stop
and saves changed labels.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QComboBox, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

from .autosave import Autosaver
from .help_text import apply_help
from .reader_preference import prefer_our_reader
from .state import Session, SessionEvents, edit_log_for
from .workers import cancel_all_and_wait


def _panel_classes() -> list[type]:
    from .export_panel import ExportPanel
    from .finetune_panel import FinetunePanel
    from .model_panel import ModelPanel
    from .predict_panel import PredictPanel
    from .proofread_panel import ProofreadPanel
    from .segment_panel import SegmentPanel

    return [ModelPanel, PredictPanel, SegmentPanel, ProofreadPanel, FinetunePanel, ExportPanel]


def painted_region(atoms: list) -> tuple[slice, ...] | None:
    """Bounding box of a napari Labels history item (the ``value`` of a ``paint`` event)."""
    lo: list[int] | None = None
    hi: list[int] | None = None
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            a = [s.start or 0 for s in key]
            b = [s.stop for s in key]
        else:
            indices = atom[0]
            if len(indices) == 0 or len(indices[0]) == 0:
                continue
            a = [int(i.min()) for i in indices]
            b = [int(i.max()) + 1 for i in indices]
        lo = a if lo is None else [min(x, y) for x, y in zip(lo, a, strict=True)]
        hi = b if hi is None else [max(x, y) for x, y in zip(hi, b, strict=True)]
    if lo is None or hi is None:
        return None
    return tuple(slice(x, y) for x, y in zip(lo, hi, strict=True))


#: napari's default width of a dock widget on the right (the sections fit it without scrolling)
DEFAULT_DOCK_WIDTH = 377
QWIDGETSIZE_MAX = (1 << 24) - 1


class Section(QCollapsible):
    """A collapsible section whose content, once expanded, takes the height it needs: a status
    line that wraps onto more lines is not cut off (``QCollapsible`` fixes the height it had
    when expanded)."""

    def _expand_collapse(self, direction: Any, animate: bool = True, emit: bool = True) -> None:
        super()._expand_collapse(direction, animate, emit)
        if not animate and self.isExpanded():
            self.content().setMaximumHeight(QWIDGETSIZE_MAX)

    def _on_animation_done(self) -> None:
        super()._on_animation_done()
        if self.isExpanded():
            self.content().setMaximumHeight(QWIDGETSIZE_MAX)


def fit_width(panel: QWidget) -> None:
    """Let a section shrink to a narrow dock: layer and choice boxes size to a few characters
    rather than their longest item (a long layer name would widen the dock), and text lines
    (status, paths) wrap, anywhere in a long path, instead of widening it."""
    from magicgui.widgets import Label

    for combo in panel.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)
    for value in vars(panel).values():
        if isinstance(value, Label) and isinstance(value.native, QLabel):
            wrap_label(value.native)
            row = value.native.parentWidget()
            if not value.label and row is not None:  # a status line: the whole row, no indent
                for lab in row.findChildren(QLabel):
                    if lab is not value.native and lab.parentWidget() is row and not lab.text():
                        lab.hide()


def wrap_label(label: QLabel) -> None:
    """A word-wrapped QLabel that grows in height, not width (magicgui makes labels Fixed)."""
    label.setWordWrap(True)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    policy.setHeightForWidth(True)
    label.setSizePolicy(policy)
    label.setMinimumWidth(40)
    # an explicit indent: with the automatic one (a framed label) Qt sizes the text 'x' / 2
    # narrower than it paints it, so a line that just fits got a box two lines high (a blank line)
    label.setIndent(label.fontMetrics().horizontalAdvance("x") // 2)


class TokenUnifyWidget(QWidget):
    """One dock widget with a collapsible section per step of the workflow."""

    def __init__(self, napari_viewer: Any, autosave_interval_s: float = 60.0) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy; the close hook needs the real viewer's window.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.session = Session()
        self.events = SessionEvents()
        self.autosaver = Autosaver(autosave_interval_s, image_for=self._image_for)
        self.panels: dict[str, Any] = {}
        self._closed = False
        prefer_our_reader()  # File > Open of .h5/.n5 uses our reader, not imageio's

        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(2, 2, 2, 2)
        self.sections: dict[str, Section] = {}
        for cls in _panel_classes():
            panel = cls(self.viewer, self.session, self.events)
            self.panels[cls.title] = panel
            section = Section(cls.title)
            section.layout().setContentsMargins(2, 2, 2, 2)
            self.sections[cls.title] = section
            fit_width(panel)
            apply_help(cls.title, panel, header=section.toggleButton())
            section.addWidget(panel)
            inner_layout.addWidget(section)
            if cls.title in ("Model", "Predict", "Segment"):
                section.expand(animate=False)
        inner_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        self.scroll = scroll
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

        self._tracked: set[int] = set()
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        for layer in self.viewer.layers:
            self._track(layer)
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is not None:
            window.installEventFilter(self)
        self.reset_choices()

    # -- panels ------------------------------------------------------------------------------
    def panel(self, title: str) -> Any:
        return self.panels[title]

    def reset_choices(self, *_: Any) -> None:
        for panel in self.panels.values():
            panel.reset_choices()

    def _image_for(self, labels: Any) -> Any:
        """The image layer a labels layer belongs to: the one chosen in Predict when it has the
        same shape, else an image layer of that shape (one read from a file first)."""
        from .checks import layer_array

        shape = tuple(layer_array(labels).shape[-3:])
        chosen = self.panels["Predict"].image.value if "Predict" in self.panels else None
        images = [chosen] + [ly for ly in self.viewer.layers if type(ly).__name__ == "Image"]
        images = [ly for ly in images if ly is not None and ly in self.viewer.layers
                  and tuple(layer_array(ly).shape[-3:]) == shape and layer_array(ly).ndim == 3]
        if chosen in images:
            return chosen
        from_file = [ly for ly in images if getattr(ly.source, "path", None)]
        return (from_file or images or [None])[0]

    # -- edit tracking -----------------------------------------------------------------------
    def _on_inserted(self, event: Any) -> None:
        self._track(event.value)

    def _track(self, layer: Any) -> None:
        if type(layer).__name__ != "Labels" or id(layer) in self._tracked:
            return
        self._tracked.add(id(layer))
        layer.events.paint.connect(partial(self._on_paint, layer))
        self._follow_undo(layer)

    def _on_paint(self, layer: Any, event: Any) -> None:
        region = painted_region(event.value)
        if region is None:
            return
        # the history item's first atom identifies the edit in napari's undo/redo stacks
        token = event.value[0] if len(event.value) else None
        edit_log_for(self.session, layer).mark(region, token)
        self.autosaver.mark_dirty(layer)
        self.events.labels_edited.emit(layer, region)

    def _follow_undo(self, layer: Any) -> None:
        """napari's undo and redo change the data without a ``paint`` event: wrap them, so an
        undone correction leaves the finetuning mask and the change is autosaved."""
        for name in ("undo", "redo"):
            original = getattr(layer, name, None)
            if original is None:
                continue

            def wrapped(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                result = _original(*args, **kwargs)
                self._after_history_step(layer)
                return result

            setattr(layer, name, wrapped)

    def _after_history_step(self, layer: Any) -> None:
        history = getattr(layer, "_undo_history", None)
        if history is not None:  # a napari without it: every recorded edit keeps counting
            applied = {id(atom) for item in history for atom in item}
            edit_log_for(self.session, layer).sync(lambda token: id(token) in applied)
        self.autosaver.mark_dirty(layer)

    # -- closing -----------------------------------------------------------------------------
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    def shutdown(self) -> None:
        """Stop running work (waiting for it, so nothing is left half-written) and autosave."""
        if self._closed:
            return
        self._closed = True
        cancel_all_and_wait(timeout_s=60.0)
        self.autosaver.flush()

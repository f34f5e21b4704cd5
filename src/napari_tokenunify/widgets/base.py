"""Common parts of the dock-widget sections: layer choosers, job tracking, reset_choices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtWidgets import QVBoxLayout, QWidget

from .state import Session, SessionEvents
from .workers import Job, start_job


def layer_choices(viewer: Any, kind: str, predicate: Callable[[Any], bool] | None = None):
    """A magicgui ``choices`` callable listing the viewer's layers of one kind (by class name)."""

    def _choices(_widget=None) -> list[tuple[str, Any]]:
        out = []
        for layer in viewer.layers:
            if type(layer).__name__ == kind and (predicate is None or predicate(layer)):
                out.append((layer.name, layer))
        return out

    return _choices


def is_affinity_layer(layer: Any) -> bool:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return getattr(data, "ndim", 0) == 4 and not getattr(layer, "rgb", False)


def is_volume_layer(layer: Any) -> bool:
    return not is_affinity_layer(layer)


def layer_combo(viewer: Any, kind: str, label: str, predicate=None, nullable: bool = True) -> ComboBox:
    return ComboBox(
        label=label, choices=layer_choices(viewer, kind, predicate), nullable=nullable
    )


class StatusLine(Label):
    """A section's status line, shown only while it says something: an empty one would still
    take a row of the dock (and show as a blank line)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(value="", visible=False, **kwargs)

    @property
    def value(self) -> str:
        return Label.value.fget(self)

    @value.setter
    def value(self, value: Any) -> None:
        Label.value.fset(self, value)
        if self.native.parentWidget() is not None:  # in its section: never a window of its own
            self.visible = bool(str(value).strip())


class Panel(QWidget):
    """One section: a magicgui form on top, extra Qt widgets below, and its running jobs."""

    title = ""

    def __init__(self, viewer: Any, session: Session, events: SessionEvents) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session
        self.events = events
        self.form = Container(labels=True)
        self.form.native.layout().setContentsMargins(0, 0, 0, 0)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.addWidget(self.form.native)
        self.jobs: list[Job] = []

    def reset_choices(self, *_: Any) -> None:
        self.form.reset_choices()

    @property
    def busy(self) -> bool:
        return any(not j.finished for j in self.jobs)

    def run(self, fn: Callable[..., Any], name: str, **kwargs: Any) -> Job:
        """Start ``fn(progress=, cancel=)`` in a worker and keep track of it."""
        self.jobs = [j for j in self.jobs if not j.finished]
        on_done = kwargs.pop("on_done", None)

        def done(job: Job) -> None:
            self._job_ended(job)
            if on_done is not None:
                on_done(job)

        job = start_job(fn, name, on_done=done, **kwargs)
        self.jobs.append(job)
        return job

    def _job_ended(self, job: Job) -> None:
        """A failed or cancelled job leaves no stale line ("writing to…", "20/24 tiles") in the
        section's status: it says how the job ended (the notification has the details)."""
        status = getattr(self, "status", None)
        if status is None or job.error is None:
            return
        from napari_tokenunify.progress import Cancelled

        p = job._latest
        where = f" after {p.done}/{p.total}" if p is not None and p.total else ""
        text = (f"{job.name}: cancelled{where}" if isinstance(job.error, Cancelled)
                else f"{job.name} failed{where} (see the notification)")
        try:
            status.value = text
        except RuntimeError:  # the section was closed (viewer closed) before the job ended
            pass

    def current_job(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None

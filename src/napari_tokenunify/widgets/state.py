"""What the sections of the dock widget share: the current model, edit logs, kept fragments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

from napari_tokenunify.proofread import EditLog


@dataclass
class Session:
    """Plain state (no compute); panels read it and listen to ``model_changed``."""

    model: Any = None
    model_source: str = "default"
    device: str = "auto"
    tta: str = "none"  # test-time flips of every prediction (engine.tta): none | yx | zyx
    finetuned: Any = None
    # id(labels layer) -> EditLog of the regions a person corrected in that layer
    edit_logs: dict[int, EditLog] = field(default_factory=dict)
    # layer name of an affinity map -> engine Agglomerator kept for fast re-thresholding
    agglomerators: dict[str, Any] = field(default_factory=dict)


class SessionEvents:
    model_changed = Signal(object)
    labels_edited = Signal(object, object)  # (labels layer, region)
    # an affinity layer got new data (Predict finished): its metadata names the model that made it
    affinities_changed = Signal(object)


def edit_log_for(session: Session, layer: Any) -> EditLog:
    """The edit log of a labels layer, created on first use."""
    log = session.edit_logs.get(id(layer))
    if log is None:
        arr = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        log = EditLog(tuple(arr.shape))
        session.edit_logs[id(layer)] = log
    return log

"""The napari plugin's widgets (Qt + magicgui); the compute lives in the library modules."""

from __future__ import annotations

from typing import Any

__all__ = ["make_main_widget"]


def make_main_widget(napari_viewer: Any):
    """npe2 widget factory: the TokenUnify dock widget with all sections."""
    from .main_widget import TokenUnifyWidget

    return TokenUnifyWidget(napari_viewer)

"""The widget as napari users reach it: npe2 contribution, Layers > Segment menu, sample data."""
# ruff: noqa: F811  (pytest fixtures imported from widget_support)

from __future__ import annotations

import pytest

from widget_support import notes  # noqa: F401

pytestmark = pytest.mark.gui

PLUGIN = "napari-tokenunify"
WIDGET = "TokenUnify segmentation"


def test_manifest_contributes_widget_and_segment_menu():
    from npe2 import PluginManifest

    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget

    mf = PluginManifest.from_distribution(PLUGIN)
    commands = {c.id: c.python_name for c in mf.contributions.commands}
    widget = mf.contributions.widgets[0]
    assert widget.display_name == WIDGET
    assert commands[widget.command] == "napari_tokenunify.widgets.main_widget:TokenUnifyWidget"
    assert TokenUnifyWidget.__name__ == "TokenUnifyWidget"
    assert [m.command for m in mf.contributions.menus["napari/layers/segment"]] == [widget.command]


def test_dock_widget_from_plugin_sees_sample_layers(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENUNIFY_AUTOSAVE_DIR", str(tmp_path))
    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(widget, TokenUnifyWidget)
    assert list(widget.panels) == ["Model", "Predict", "Segment", "Proofread", "Finetune", "Export"]
    viewer.open_sample(PLUGIN, "synthetic_em")
    image = next(layer for layer in viewer.layers if type(layer).__name__ == "Image")
    labels = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    predict = widget.panel("Predict")
    assert image in [c for c in predict.image.choices if c is not None]
    assert predict.image.value is image
    proof = widget.panel("Proofread")
    assert proof.labels.value is labels
    # Affinity-only choosers do not offer the 3D image.
    assert image not in widget.panel("Segment").affinities.choices
    widget.shutdown()


def test_segment_menu_lists_the_widget(make_napari_viewer):
    from napari._app_model import get_app_model

    make_napari_viewer()
    app = get_app_model()
    ids = [getattr(item, "command", None) for item in app.menus.get_menu("napari/layers/segment")]
    titles = [getattr(c, "title", "") for c in ids if c is not None]
    assert any("TokenUnify" in str(t) for t in titles), titles

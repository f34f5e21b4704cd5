"""napari opens HDF5 volumes with this plugin once its widget has been used (issue 15: napari's
builtin reader claimed .h5 and failed with "cannot find loader for this HDF5 file")."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from widget_support import docked  # noqa: F401 (fixture)

PLUGIN = "napari-tokenunify"


@pytest.fixture
def h5_volume(tmp_path):
    path = tmp_path / "em.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8)
    return path


def test_without_a_preference_napari_cannot_choose(make_napari_viewer, h5_volume):
    from napari.settings import get_settings

    get_settings().plugins.extension2reader = {}
    viewer = make_napari_viewer()
    from napari.errors import MultipleReaderError

    with pytest.raises(MultipleReaderError):  # File > Open would ask; plugin=None raises
        viewer.open(str(h5_volume), plugin=None)


def test_the_widget_makes_our_reader_the_h5_choice(docked, h5_volume):  # noqa: F811
    from napari.settings import get_settings

    viewer, _ = docked
    prefs = get_settings().plugins.extension2reader
    assert {prefs[p] for p in ("*.h5", "*.hdf5", "*.n5")} == {PLUGIN}
    (layer,) = viewer.open(str(h5_volume), plugin=None)  # what File > Open and drag-and-drop do
    assert layer.data.shape == (8, 32, 32) and layer.metadata["dataset"] == "raw"


def test_a_users_own_preference_is_kept(make_napari_viewer):
    from napari.settings import get_settings

    from napari_tokenunify.widgets.reader_preference import prefer_our_reader

    get_settings().plugins.extension2reader = {"*.h5": "some-other-plugin"}
    assert prefer_our_reader() == ["*.hdf5", "*.n5"]
    assert get_settings().plugins.extension2reader["*.h5"] == "some-other-plugin"

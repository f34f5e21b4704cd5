"""The real EM sample shipped inside the package: its data, provenance, napari's Open Sample, and
that it is exactly the stated crop of the gala test volume."""

from __future__ import annotations

import numpy as np

PLUGIN = "napari-tokenunify"


def test_shipped_sample_is_real_labelled_em_with_its_metadata():
    from importlib import resources

    from napari_tokenunify.samples import medulla_sample

    s = medulla_sample()
    assert s.image.shape == s.labels.shape == (32, 100, 128)
    assert s.image.dtype == np.uint8 and s.labels.dtype == np.uint32
    assert s.voxel_size == (10.0, 10.0, 10.0)
    assert 20 < s.image.std() < 100  # EM contrast, not a blank or synthetic-constant volume
    assert len(np.unique(s.labels)) > 30 and (s.labels == 0).any()  # neurons and boundary 0
    folder = resources.files("napari_tokenunify.samples")
    assert "HHMI" in folder.joinpath("LICENSE.txt").read_text()
    assert "gala" in folder.joinpath("CITATION.bib").read_text()
    assert sum(f.stat().st_size for f in __import__("pathlib").Path(str(folder)).iterdir()) < 3e6


def test_shipped_sample_is_the_stated_crop_of_the_test_volume(shared_data):
    import h5py

    from napari_tokenunify.samples import medulla_sample

    s = medulla_sample()
    folder = shared_data / "medulla-labeled"
    with h5py.File(folder / "test-image.h5", "r") as f:
        assert np.array_equal(f["stack"][:32, :100, :128], s.image)
    with h5py.File(folder / "test-gt.lzf.h5", "r") as f:
        assert np.array_equal(f["stack"][:32, :100, :128], s.labels)


def test_open_sample_offers_the_real_sample_first(make_napari_viewer):
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    samples = PluginManager.instance().get_manifest(PLUGIN).contributions.sample_data
    assert samples[0].key == "medulla"
    viewer.open_sample(PLUGIN, "medulla")
    img, lab = viewer.layers
    assert type(img).__name__ == "Image" and type(lab).__name__ == "Labels"
    assert img.data.shape == lab.data.shape == (32, 100, 128)
    assert tuple(img.scale) == tuple(lab.scale) == (10.0, 10.0, 10.0)
    assert img.metadata["voxel_size"] == [10.0, 10.0, 10.0] and "gala" in img.metadata["source"]

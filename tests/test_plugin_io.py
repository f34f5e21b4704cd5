"""The npe2 manifest and the napari reader/writer/sample contributions, through a real viewer."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest

import napari_tokenunify
from napari_tokenunify import plugin_io
from napari_tokenunify.io import open_volume, write_volume

MANIFEST = Path(napari_tokenunify.__file__).parent / "napari.yaml"
PLUGIN = "napari-tokenunify"


def test_manifest_validates_with_imports():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    pm.validate_imports()  # every python_name resolves to a callable
    by_name = PluginManifest._from_package_or_name(PLUGIN)  # the installed entry point
    assert by_name.name == PLUGIN
    patterns = pm.contributions.readers[0].filename_patterns
    assert {"*.tif", "*.tiff", "*.zarr", "*.h5", "*.hdf5", "*.n5"} <= set(patterns)
    assert pm.contributions.readers[0].accepts_directories
    exts = {e for w in pm.contributions.writers for e in w.filename_extensions}
    assert {".zarr", ".ome.zarr", ".tif", ".h5"} <= exts
    assert all(w.layer_types == ["labels"] for w in pm.contributions.writers)
    ids = [c.id for c in pm.contributions.commands]
    assert len(ids) == len(set(ids))


@pytest.fixture
def em(synthetic_small):
    return synthetic_small


@pytest.fixture
def image_and_labels_h5(tmp_path, em):
    path = tmp_path / "both.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=em.image, chunks=(16, 32, 32)).attrs["resolution"] = [10, 10, 10]
        f.create_dataset("seg/labels", data=em.labels, chunks=(16, 32, 32))
    return path


def test_reader_gives_image_and_labels_layers_lazily(image_and_labels_h5, em):
    reader = plugin_io.get_reader(str(image_and_labels_h5))
    layers = reader(str(image_and_labels_h5))
    assert [t for _, _, t in layers] == ["image", "labels"]
    (img, img_kw, _), (lab, lab_kw, _) = layers
    assert isinstance(img, da.Array) and isinstance(lab, da.Array)
    assert img_kw["scale"] == (10.0, 10.0, 10.0) and img_kw["contrast_limits"] == (0, 255)
    assert "scale" not in lab_kw  # that dataset says no voxel size
    assert np.array_equal(lab[5].compute(), em.labels[5])


def test_reader_returns_none_for_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert plugin_io.get_reader(str(tmp_path / "notes.txt")) is None
    import tifffile

    tifffile.imwrite(tmp_path / "photo.tif", np.zeros((32, 32, 3), np.uint8))  # RGB 2D
    assert plugin_io.get_reader(str(tmp_path / "photo.tif")) is None
    assert plugin_io.get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None
    (tmp_path / "bad.h5").write_bytes(b"nope" * 10)
    reader = plugin_io.get_reader(str(tmp_path / "bad.h5"))  # ours alone: the reason is raised
    with pytest.raises(ValueError, match="could not be read as HDF5"):
        reader(str(tmp_path / "bad.h5"))


@pytest.mark.gui
def test_napari_shows_the_reason_every_time(make_napari_viewer, tmp_path):
    """Corrupt, truncated, empty and 2D .h5 files: the plugin's reason reaches napari's message
    on every attempt (a warning is shown once only; napari then says just "refused the file")."""
    from napari.settings import get_settings

    full = tmp_path / "full.h5"
    with h5py.File(full, "w") as f:
        f.create_dataset("raw", data=np.zeros((8, 64, 64), np.uint8), chunks=(8, 64, 64))
    data = full.read_bytes()
    (tmp_path / "corrupt.h5").write_bytes(b"nope" * 10)
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["raw"] = np.zeros((32, 32), np.uint8)
    reasons = {"corrupt.h5": "could not be read as HDF5", "truncated.h5": "HDF5",
               "empty.h5": "no 3D dataset", "flat.h5": "2D image"}
    viewer = make_napari_viewer()
    for name, reason in reasons.items():
        for _ in range(2):  # the second attempt says why too
            with pytest.raises(ValueError) as err:
                viewer.open(str(tmp_path / name), plugin=PLUGIN)
            assert "napari-tokenunify cannot read" in str(err.value) and reason in str(err.value)
            assert "refused the file" not in str(err.value)
    # as File > Open with our reader as the preference: napari's error carries the reason
    get_settings().plugins.extension2reader = {"*.h5": PLUGIN}
    with pytest.raises(ValueError, match="no 3D dataset"):
        viewer.open(str(tmp_path / "empty.h5"), plugin=None)
    assert len(viewer.layers) == 0


def test_reader_ome_zarr_is_multiscale(tmp_path, em):
    path = write_volume(tmp_path / "seg.ome.zarr", em.labels, voxel_size=em.voxel_size,
                        chunks=(16, 32, 32), levels=2)
    [(data, kwargs, layer_type)] = plugin_io.get_reader(str(path))(str(path))
    assert layer_type == "labels" and kwargs["multiscale"] is True
    assert [d.shape for d in data] == [(32, 64, 64), (16, 32, 32)]


def test_napari_opens_each_format(make_napari_viewer, tmp_path, em):
    viewer = make_napari_viewer()
    paths = [
        write_volume(tmp_path / "img.tif", em.image, kind="image", voxel_size=em.voxel_size),
        write_volume(tmp_path / "img.zarr", em.image, kind="image", voxel_size=(20, 5, 5)),
        write_volume(tmp_path / "lab.n5", em.labels, voxel_size=em.voxel_size),
    ]
    for p in paths:
        viewer.open(str(p), plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["img", "img [1]", "lab/labels"]
    assert type(viewer.layers[2]).__name__ == "Labels"
    assert tuple(viewer.layers[1].scale) == (20.0, 5.0, 5.0)
    assert isinstance(viewer.layers[0].data, da.Array)


def test_napari_uses_reader_preference(make_napari_viewer, image_and_labels_h5):
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    # napari builtins (imageio) also claim *.h5; a user's reader preference picks this plugin.
    get_settings().plugins.extension2reader = {"*.h5": PLUGIN}
    viewer.open(str(image_and_labels_h5), plugin=None)  # None: as File > Open, use preferences
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]


def test_napari_slice_folder(make_napari_viewer, tmp_path, em):
    import imageio.v3 as iio

    folder = tmp_path / "sections"
    folder.mkdir()
    for i in range(5):
        iio.imwrite(folder / f"sec{i}.png", em.image[i])
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    assert viewer.layers[0].data.shape == (5, 64, 64)


@pytest.mark.parametrize("suffix", [".zarr", ".ome.zarr", ".tif", ".h5"])
def test_napari_saves_labels_layer(make_napari_viewer, tmp_path, em, suffix):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(em.labels, scale=(40, 10, 10), name="seg")
    out = tmp_path / f"seg{suffix}"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert [Path(p).name for p in written] == [out.name]
    v = open_volume(out)
    assert v.voxel_size == (40.0, 10.0, 10.0)
    assert np.array_equal(v.data.compute(), layer.data)
    with pytest.raises(Exception, match="already exists"):  # never silently overwrites
        viewer.layers.save(str(out), selected=False, plugin=PLUGIN)


def test_napari_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_em")
    img, lab = viewer.layers
    assert type(img).__name__ == "Image" and type(lab).__name__ == "Labels"
    assert img.data.shape == lab.data.shape == (64, 128, 128)
    assert tuple(img.scale) == (10.0, 10.0, 10.0)
    assert lab.data.max() > 5 and (lab.data == 0).any()


def test_reader_ome_zarr_image_with_labels_group(tmp_path, em):
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(tmp_path / "em.ome.zarr"), mode="w", zarr_format=2)
    write_image(em.image, root, axes="zyx", fmt=FormatV04(), scale_factors=[2],
                scale={"z": 10.0, "y": 10.0, "x": 10.0},
                axes_units={"z": "nanometer", "y": "nanometer", "x": "nanometer"})
    write_labels(em.labels, root, name="cells", axes="zyx", fmt=FormatV04(), scale_factors=[2],
                 scale={"z": 10.0, "y": 10.0, "x": 10.0},
                 axes_units={"z": "nanometer", "y": "nanometer", "x": "nanometer"})
    layers = plugin_io.get_reader(str(tmp_path / "em.ome.zarr"))(str(tmp_path / "em.ome.zarr"))
    assert [t for _, _, t in layers] == ["image", "labels"]
    assert layers[1][1]["name"].endswith("labels/cells") and layers[1][1]["multiscale"]
    assert layers[0][1]["scale"] == (10.0, 10.0, 10.0)
    assert np.array_equal(np.asarray(layers[1][0][0][3]), em.labels[3])


def test_reader_zarr_group_with_two_arrays(tmp_path, em):
    import zarr

    root = zarr.open_group(str(tmp_path / "pair.zarr"), mode="w")
    root.create_array("raw", data=em.image, chunks=(16, 32, 32))
    root.create_array("neuron_ids", data=em.labels, chunks=(16, 32, 32))
    layers = plugin_io.get_reader(str(tmp_path / "pair.zarr"))(str(tmp_path / "pair.zarr"))
    assert sorted((kw["name"], t) for _, kw, t in layers) == [
        ("pair/neuron_ids", "labels"), ("pair/raw", "image")]


def test_writer_functions_handle_2d_and_multiscale_labels(tmp_path, em):
    out = plugin_io.write_labels_tiff(str(tmp_path / "plane.tif"), em.labels[3], {"scale": (1, 1)})
    assert open_volume(out[0]).shape == (1, 64, 64)
    pyramid = [em.labels, em.labels[::2, ::2, ::2]]
    out = plugin_io.write_labels_hdf5(str(tmp_path / "ms.h5"), pyramid, {"scale": (30, 6, 6)})
    v = open_volume(out[0])
    assert v.shape == em.labels.shape and v.voxel_size == (30.0, 6.0, 6.0)


@pytest.mark.gui
@pytest.mark.usefixtures("single_torch_thread")
def test_napari_opens_what_the_plugin_writes_as_affinities(make_napari_viewer, tmp_path, em):
    """A Predict store and exported affinities (OME-Zarr with a czyx channel axis, HDF5) open as
    one 3-channel affinity image layer, which Segment picks up; never the ".../done" records."""
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import build_model
    from napari_tokenunify.widgets.base import is_affinity_layer

    image = em.image[:16, :32, :32]
    store = tmp_path / "em.tokenunify" / "em-affinities.zarr"
    affs = predict_affinities(image, build_model("tiny").eval(), out=store, tile_shape=(16, 32, 32),
                              device="cpu", voxel_size=(10.0, 10.0, 10.0))
    affs = np.asarray(affs, dtype=np.float32)
    exported = [
        write_volume(tmp_path / "seg-affinities.ome.zarr", affs, kind="affinities",
                     voxel_size=(10.0, 10.0, 10.0)),
        write_volume(tmp_path / "seg-affinities.h5", affs, kind="affinities"),
    ]
    viewer = make_napari_viewer()
    for path in [store, *exported]:
        added = viewer.open(str(path), plugin=PLUGIN)
        assert len(added) == 1, [layer.name for layer in added]
        layer = added[0]
        assert type(layer).__name__ == "Image" and "done" not in layer.name
        assert layer.data.shape == (3, 16, 32, 32) and is_affinity_layer(layer)
        assert layer.metadata["tokenunify"]["kind"] == "affinities"
        np.testing.assert_allclose(np.asarray(layer.data[:, 3], dtype=np.float32), affs[:, 3],
                                   atol=2e-3)
    assert tuple(viewer.layers[0].scale) == (1.0, 10.0, 10.0, 10.0)
    assert tuple(viewer.layers[1].scale) == (1.0, 10.0, 10.0, 10.0)

    from napari_tokenunify.widgets.main_widget import TokenUnifyWidget

    widget = TokenUnifyWidget(viewer)
    try:
        segment = widget.panel("Segment")
        segment.reset_choices()
        assert set(segment.affinities.choices) == set(viewer.layers)
    finally:
        widget.shutdown()


def test_reader_blockwise_labels_store_skips_the_bookkeeping(tmp_path, em):
    from napari_tokenunify.engine.store import BlockStore

    store = BlockStore.create(tmp_path / "seg.zarr", "labels", shape=em.labels.shape,
                              chunks=(16, 32, 32), dtype="uint64", grid_shape=(2, 2, 2),
                              settings={"blockwise": True})
    store.array[...] = em.labels
    store.finish()
    [(data, kwargs, layer_type)] = plugin_io.get_reader(str(store.path))(str(store.path))
    assert layer_type == "labels" and data.shape == em.labels.shape
    assert np.array_equal(np.asarray(data[4]), em.labels[4])

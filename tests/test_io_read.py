"""Lazy reading of every supported format: nothing is read to open, slicing reads only its chunks."""

from __future__ import annotations

import json

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_tokenunify.io import open_volume, write_volume
from napari_tokenunify.io import read_slices as read_slices_mod
from napari_tokenunify.io.sources import N5Source


@pytest.fixture(scope="module")
def vol():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(32, 48, 64), dtype=np.uint8)


def _counting(monkeypatch, cls, name="get"):
    """Wrap the async ``cls.get`` so every chunk key it is asked for is recorded."""
    keys: list[str] = []
    original = getattr(cls, name)

    async def get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(cls, name, get)
    return keys


def _chunk_keys(keys):
    meta = (".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata")
    return [k for k in keys if not k.endswith(meta)]


def test_zarr_v2_lazy_and_one_chunk_per_block(tmp_path, vol, monkeypatch):
    path = tmp_path / "v.zarr"
    z = zarr.create_array(str(path), shape=vol.shape, chunks=(8, 16, 16), dtype=vol.dtype,
                          zarr_format=2, attributes={"resolution": [30, 4, 4]})
    z[:] = vol
    keys = _counting(monkeypatch, zarr.storage.LocalStore)
    v = open_volume(path)
    assert _chunk_keys(keys) == []  # opening reads metadata only
    assert isinstance(v.data, da.Array) and v.voxel_size == (30.0, 4.0, 4.0)
    assert v.shape == vol.shape and v.metadata["format"] == "zarr"
    block = v.data[8:16, 16:32, 32:48].compute()
    assert np.array_equal(block, vol[8:16, 16:32, 32:48])
    assert len(_chunk_keys(keys)) == 1  # exactly the one storage chunk under the block


def test_zarr_v3_group_autopicks_only_3d_array(tmp_path, vol):
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    root.create_array("flat", shape=(10, 10), dtype="uint8")
    arr = root.create_array("sub/raw", shape=vol.shape, chunks=(16, 16, 16), dtype=vol.dtype)
    arr[:] = vol
    v = open_volume(tmp_path / "g.zarr")
    assert v.dataset == "sub/raw" and v.metadata["zarr_format"] == 3
    assert np.array_equal(v.data[3].compute(), vol[3])
    assert v.data.numblocks == (1, 1, 1) or v.data.npartitions >= 1


def test_ome_zarr_levels_and_voxel_size(tmp_path, vol):
    path = write_volume(tmp_path / "img.ome.zarr", vol, kind="image", voxel_size=(40, 8, 8),
                        chunks=(16, 16, 16), levels=3)
    v0 = open_volume(path)
    assert v0.voxel_size == (40.0, 8.0, 8.0) and v0.metadata["kind"] == "image"
    assert v0.metadata["levels"] == [(32, 48, 64), (32, 24, 32), (32, 12, 16)]
    v2 = open_volume(path, level=2)
    assert v2.shape == (32, 12, 16) and v2.voxel_size == (40.0, 32.0, 32.0)


def test_ome_zarr_written_by_ome_zarr_package(tmp_path, vol):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "ext.zarr"), mode="w", zarr_format=2)
    write_image(vol, root, axes="zyx", fmt=FormatV04(), scale_factors=[],
                scale={"z": 0.05, "y": 0.005, "x": 0.005},
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"})
    v = open_volume(tmp_path / "ext.zarr")
    assert v.shape == vol.shape and v.metadata["format"] == "ome-zarr"
    assert v.voxel_size == pytest.approx((50.0, 5.0, 5.0))
    assert np.array_equal(v.data.compute(), vol)


def test_tiff_lazy_reads_only_touched_strips(tmp_path, vol, monkeypatch):
    from tifffile.zarr import ZarrTiffStore

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, vol, compression="zlib", rowsperstrip=16,
                     metadata={"axes": "ZYX", "voxel_size_nm": [30, 4, 4]})
    keys = _counting(monkeypatch, ZarrTiffStore)
    v = open_volume(path)
    assert _chunk_keys(keys) == []
    assert v.voxel_size == (30.0, 4.0, 4.0) and v.metadata["storage_chunks"] == (1, 16, 64)
    block = v.data[4:6, 16:32, :].compute()
    assert np.array_equal(block, vol[4:6, 16:32])
    assert len(_chunk_keys(keys)) == 2  # one strip in each of two pages


def test_bigtiff_and_imagej_voxel_size(tmp_path, vol):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, vol, imagej=True, resolution=(1 / 0.004, 1 / 0.004),
                     metadata={"spacing": 0.03, "unit": "micron", "axes": "ZYX"})
    v = open_volume(path)
    assert v.voxel_size == pytest.approx((30.0, 4.0, 4.0))
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, vol, bigtiff=True)
    vb = open_volume(big)
    assert vb.metadata["bigtiff"] and vb.voxel_size is None
    assert np.array_equal(vb.data[7].compute(), vol[7])


def test_hdf5_lazy_named_and_autopicked(tmp_path, vol, monkeypatch):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("volumes/raw", data=vol, chunks=(8, 16, 16))
        d.attrs["element_size_um"] = [0.04, 0.004, 0.004]
        f.create_dataset("meta/table", data=np.arange(5))
    reads = []
    original = h5py.Dataset.__getitem__

    def counting(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    v = open_volume(path)
    assert reads == [] and v.dataset == "volumes/raw"
    assert v.voxel_size == pytest.approx((40.0, 4.0, 4.0))
    out = v.data[0:8, 0:16, 0:16].compute()
    assert np.array_equal(out, vol[:8, :16, :16])
    assert reads == [(slice(0, 8), slice(0, 16), slice(0, 16))]
    assert open_volume(path, dataset="/volumes/raw").shape == vol.shape


def test_hdf5_graph_is_picklable_for_distributed(tmp_path, vol):
    import pickle

    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=vol, chunks=(8, 16, 16))
    v = open_volume(path)
    clone = pickle.loads(pickle.dumps(v.data))
    assert np.array_equal(clone[5].compute(), vol[5])


def test_n5_written_by_tensorstore_reads_zyx(tmp_path, vol, monkeypatch):
    import tensorstore as ts

    ds = tmp_path / "c.n5" / "raw"
    (tmp_path / "c.n5").mkdir()
    (tmp_path / "c.n5" / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    # N5 lists dimensions x, y, z (fastest first), as Java tools (BigDataViewer, Fiji) write them.
    store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(ds)},
                     "metadata": {"dimensions": [64, 48, 32], "blockSize": [16, 16, 8],
                                  "dataType": "uint8", "compression": {"type": "gzip"}},
                     "create": True}).result()
    store.write(vol.T).result()
    attrs = json.loads((ds / "attributes.json").read_text())
    attrs["pixelResolution"] = {"dimensions": [4.0, 4.0, 30.0], "unit": "nm"}
    (ds / "attributes.json").write_text(json.dumps(attrs))
    asked = []
    original = N5Source.__getitem__
    monkeypatch.setattr(N5Source, "__getitem__", lambda self, k: asked.append(k) or original(self, k))
    v = open_volume(tmp_path / "c.n5")
    assert v.dataset == "raw" and v.shape == (32, 48, 64)
    assert v.voxel_size == (30.0, 4.0, 4.0)
    assert asked == []
    assert np.array_equal(v.data[8:16, 0:16, 16:32].compute(), vol[8:16, :16, 16:32])
    assert asked == [(slice(8, 16), slice(0, 16), slice(16, 32))]


def test_slice_folder_natural_order_and_lazy(tmp_path, vol, monkeypatch):
    import imageio.v3 as iio

    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(12):  # z2 must come before z10 (natural, not lexical, order)
        iio.imwrite(folder / f"z{i}.png", vol[i])
    (folder / "notes.txt").write_text("ignored")
    opened = []
    original = read_slices_mod._read_image
    monkeypatch.setattr(read_slices_mod, "_read_image",
                        lambda p: opened.append(p.name) or original(p))
    v = open_volume(folder, voxel_size=(40, 4, 4))
    assert opened == [] and v.shape == (12, 48, 64) and v.voxel_size == (40.0, 4.0, 4.0)
    assert v.data.numblocks[0] == 12
    assert np.array_equal(v.data[10].compute(), vol[10])
    assert opened == ["z10.png"]
    assert np.array_equal(v.data.compute(), vol[:12])


def test_tiff_slice_folder(tmp_path, vol):
    folder = tmp_path / "tifs"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"s_{i:03d}.tif", vol[i])
    v = open_volume(folder)
    assert np.array_equal(v.data.compute(), vol[:3])


def test_allow_2d_and_channel_choice(tmp_path, vol):
    tifffile.imwrite(tmp_path / "plane.tif", vol[0])
    v = open_volume(tmp_path / "plane.tif", allow_2d=True)
    assert v.shape == (1, 48, 64)
    rgb = np.stack([vol, vol // 2, vol // 3], axis=-1)  # (z, y, x, c)
    with h5py.File(tmp_path / "rgb.h5", "w") as f:
        f["rgb"] = rgb
    v = open_volume(tmp_path / "rgb.h5", channel=1)
    assert v.shape == vol.shape and np.array_equal(v.data.compute(), vol // 2)
    affs = np.stack([vol, vol])  # (c, z, y, x)
    tifffile.imwrite(tmp_path / "affs.tif", affs, metadata={"axes": "CZYX"})
    v = open_volume(tmp_path / "affs.tif", channel=0)
    assert v.shape == vol.shape and v.metadata["axes"] == "czyx"


def test_singleton_axes_are_dropped(tmp_path, vol):
    tifffile.imwrite(tmp_path / "t.tif", vol[None, :, None], metadata={"axes": "TZCYX"})
    v = open_volume(tmp_path / "t.tif")
    assert v.shape == vol.shape


def test_voxel_size_override_beats_file(tmp_path, vol):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("raw", data=vol).attrs["resolution"] = [8, 8, 8]
    assert open_volume(tmp_path / "v.h5").voxel_size == (8.0, 8.0, 8.0)
    assert open_volume(tmp_path / "v.h5", voxel_size=5).voxel_size == (5.0, 5.0, 5.0)


def test_ome_zarr_05_on_zarr_v3(tmp_path, vol):
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "v5.ome.zarr"), mode="w", zarr_format=3)
    nm = {"z": "nanometer", "y": "nanometer", "x": "nanometer"}
    write_image(vol, root, axes="zyx", scale_factors=[2], scale={"z": 30.0, "y": 4.0, "x": 4.0},
                axes_units=nm)
    v = open_volume(tmp_path / "v5.ome.zarr", level=1)
    assert v.metadata["zarr_format"] == 3 and v.metadata["format"] == "ome-zarr"
    assert v.shape == (32, 24, 32) and v.voxel_size == (30.0, 8.0, 8.0)
    inner = tmp_path / "v5.ome.zarr" / v.metadata["level_paths"][0]
    assert open_volume(inner).shape == vol.shape  # a path inside the container works

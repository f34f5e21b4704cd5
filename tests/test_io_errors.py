"""Bad input gets a VolumeError (a ValueError) naming the file, the problem and what to do."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_tokenunify.io import VolumeError, VolumeNotFoundError, open_volume


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(VolumeNotFoundError, match="nope.h5: no such file") as err:
        open_volume(path)
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileNotFoundError)


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(VolumeError, match=r"notes.txt: unsupported file format \(.txt\).*Supported"):
        open_volume(path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(VolumeError, match="not a Zarr/N5 container and holds no image slices"):
        open_volume(tmp_path / "empty_dir")


def test_2d_image_suggests_allow_2d(tmp_path):
    tifffile.imwrite(tmp_path / "plane.tif", np.zeros((40, 50), np.uint8))
    with pytest.raises(VolumeError, match=r"plane.tif: this is a 2D image \(shape \(40, 50\)\).*allow_2d=True"):
        open_volume(tmp_path / "plane.tif")


def test_rgb_names_the_axis_and_channel_picks(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "photo.png", np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(VolumeError, match=r"photo.png: array of shape \(40, 50, 3\) has a RGB\(A\) axis at position 2.*channel=0..2"):
        open_volume(tmp_path / "photo.png", allow_2d=True)
    v = open_volume(tmp_path / "photo.png", allow_2d=True, channel=2)
    assert v.shape == (1, 40, 50)
    with pytest.raises(VolumeError, match="channel=5 is out of range"):
        open_volume(tmp_path / "photo.png", allow_2d=True, channel=5)


def test_4d_without_channel(tmp_path):
    with h5py.File(tmp_path / "affs.h5", "w") as f:
        f["affs"] = np.zeros((3, 8, 20, 20), np.float32)
    with pytest.raises(VolumeError, match=r"affs.h5 \(dataset 'affs'\): .*channel axis at position 0 \(size 3"):
        open_volume(tmp_path / "affs.h5")
    with h5py.File(tmp_path / "five.h5", "w") as f:
        f["x"] = np.zeros((2, 3, 8, 20, 20), np.uint8)
    with pytest.raises(VolumeError, match="2 non-spatial axes"):
        open_volume(tmp_path / "five.h5", channel=0)


def test_non_numeric_dtype(tmp_path):
    with h5py.File(tmp_path / "text.h5", "w") as f:
        f["names"] = np.array([[[b"a"]]], dtype="S1")
    with pytest.raises(VolumeError, match=r"text.h5 \(dataset 'names'\): data type \|S1 is not numeric"):
        open_volume(tmp_path / "text.h5")
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=(2, 2, 2), dtype="complex64", zarr_format=2)
    z[:] = 1
    with pytest.raises(VolumeError, match="complex64 is not numeric"):
        open_volume(tmp_path / "c.zarr")


def test_empty_array(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("raw", shape=(0, 10, 10), dtype="uint8")
    with pytest.raises(VolumeError, match=r"empty.h5 \(dataset 'raw'\): the dataset is empty"):
        open_volume(tmp_path / "empty.h5")
    zarr.create_array(str(tmp_path / "e.zarr"), shape=(4, 0, 3), dtype="uint8", zarr_format=2)
    with pytest.raises(VolumeError, match="is empty"):
        open_volume(tmp_path / "e.zarr")


@pytest.mark.parametrize("name", ["broken.h5", "broken.tif"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(VolumeError, match=rf"{name}: could not be read as (HDF5|TIFF).*damaged"):
        open_volume(path)


def test_corrupt_zarr_metadata(tmp_path):
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / ".zarray").write_text("{not json")
    with pytest.raises(VolumeError, match="bad.zarr"):
        open_volume(bad)


def test_truncated_tiff_fails_when_read_with_clear_error(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((4, 64, 64), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:200])
    with pytest.raises(VolumeError, match="cut.tif"):
        open_volume(path).data.compute()


def test_hdf5_ambiguous_or_missing_dataset(tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((4, 4, 4), np.uint8)
        f["b"] = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(VolumeError, match=r"several 3D datasets; choose one with dataset=NAME.*'a' \(4, 4, 4\)"):
        open_volume(tmp_path / "two.h5")
    with pytest.raises(VolumeNotFoundError, match="has no dataset 'c'"):
        open_volume(tmp_path / "two.h5", dataset="c")


def test_bad_level_and_voxel_size(tmp_path):
    from napari_tokenunify.io import write_volume

    p = write_volume(tmp_path / "x.ome.zarr", np.ones((8, 16, 16), np.uint8), levels=2)
    with pytest.raises(VolumeError, match=r"has 2 resolution levels \(0..1\); got level=5"):
        open_volume(p, level=5)
    with pytest.raises(VolumeError, match="voxel_size .* must be three positive numbers"):
        open_volume(p, voxel_size=(1, 2))
    with pytest.raises(VolumeError, match="mixes slice formats"):
        d = tmp_path / "mixed"
        d.mkdir()
        tifffile.imwrite(d / "a.tif", np.zeros((4, 4), np.uint8))
        import imageio.v3 as iio

        iio.imwrite(d / "b.png", np.zeros((4, 4), np.uint8))
        open_volume(d)


def test_mismatched_slice_fails_with_name(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    tifffile.imwrite(d / "1.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(d / "2.tif", np.zeros((9, 8), np.uint8))
    v = open_volume(d)
    with pytest.raises(VolumeError, match=r"2.tif: slice has shape \(9, 8\)"):
        v.data.compute()


def test_damaged_chunk_names_the_file_when_read(tmp_path):
    from napari_tokenunify.io import write_volume

    p = write_volume(tmp_path / "d.zarr", np.ones((8, 16, 16), np.uint8), chunks=(4, 16, 16))
    (p / "0" / "0" / "0").write_bytes(b"not a blosc frame")
    v = open_volume(p)  # metadata is fine: opening works
    assert np.array_equal(v.data[4:].compute(), np.ones((4, 16, 16)))  # the intact chunk
    with pytest.raises(VolumeError, match=r"d.zarr: could not be read as Zarr.*damaged"):
        v.data[:4].compute()

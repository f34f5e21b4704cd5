"""Writers: round trips for every format, OME-Zarr metadata via ome-zarr, atomicity, cancel."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_tokenunify.io import VolumeError, open_volume, write_labels, write_volume
from napari_tokenunify.io.pyramid import downsample, pyramid_factors
from napari_tokenunify.progress import Cancelled, CancelToken

SUFFIXES = [".zarr", ".ome.zarr", ".tif", ".h5", ".n5"]


@pytest.fixture(scope="module")
def labels(request):
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((24, 40, 48), seed=1).labels


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_labels_round_trip(tmp_path, labels, suffix):
    seen = []
    path = write_labels(tmp_path / f"seg{suffix}", da.from_array(labels, chunks=(7, 20, 20)),
                        voxel_size=(40, 8, 8), chunks=(8, 16, 16), progress=seen.append)
    v = open_volume(path)
    assert v.dtype == labels.dtype and v.voxel_size == (40.0, 8.0, 8.0)
    assert v.metadata["kind"] == "labels"
    assert np.array_equal(v.data.compute(), labels)
    # one progress report per written chunk (or z-slab for TIFF), ending at the total
    assert seen and seen[-1].done == seen[-1].total and len(seen) == seen[-1].total
    assert seen[-1].rate_unit == "voxels/s"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


@pytest.mark.parametrize("suffix", [".zarr", ".h5", ".n5"])
def test_storage_is_chunked_and_compressed(tmp_path, labels, suffix):
    path = write_labels(tmp_path / f"seg{suffix}", labels, chunks=(8, 16, 16))
    v = open_volume(path)
    assert v.metadata["storage_chunks"] == (8, 16, 16)
    size = sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
    assert size < labels.nbytes / 4  # labels compress very well


def test_ome_zarr_pyramid_readable_by_ome_zarr(tmp_path, labels):
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = write_labels(tmp_path / "seg.ome.zarr", labels, voxel_size=(10, 10, 10),
                        chunks=(8, 16, 16), levels=3)
    nodes = list(Reader(parse_url(str(path), fmt=FormatV04()))())
    node = nodes[0]
    assert node.load(Label) is not None and node.load(Multiscales) is not None
    shapes = [tuple(d.shape) for d in node.data]
    assert shapes == [(24, 40, 48), (12, 20, 24), (6, 10, 12)]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[10.0, 10.0, 10.0], [20.0, 20.0, 20.0], [40.0, 40.0, 40.0]]
    assert [a["unit"] for a in node.metadata["axes"]] == ["nanometer"] * 3
    # nearest-neighbour: every label in a coarse level exists at full resolution (no blending)
    coarse = np.asarray(node.data[2])
    assert np.array_equal(coarse, labels[::4, ::4, ::4])
    assert set(np.unique(coarse)) <= set(np.unique(labels))


def test_image_pyramid_uses_mean_and_affinities_4d(tmp_path):
    img = np.zeros((4, 8, 8), np.uint8)
    img[:, :, ::2] = 200  # stripes average to 100 in x-pairs
    path = write_volume(tmp_path / "img.ome.zarr", img, kind="image", levels=2, chunks=(4, 8, 8))
    assert np.all(open_volume(path, level=1).data.compute() == 100)
    affs = np.random.default_rng(0).random((3, 8, 16, 16)).astype(np.float32)
    p = write_volume(tmp_path / "affs.zarr", affs, kind="affinities", chunks=(3, 4, 8, 8))
    assert np.array_equal(open_volume(p, channel=2).data.compute(), affs[2])
    p = write_volume(tmp_path / "affs.h5", affs, kind="affinities")
    assert open_volume(p, channel=1).dataset == "affinities"


def test_pyramid_factors_respect_anisotropy():
    assert pyramid_factors((100, 1024, 1024), (40, 4, 4), levels=5) == [
        (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert pyramid_factors((64, 512, 512), (8, 8, 8)) == [(2, 2, 2)] * 3
    lab = da.from_array(np.arange(27).reshape(3, 3, 3))
    assert downsample(lab, (2, 2, 2), "labels").compute().tolist() == [[[0, 2], [6, 8]], [[18, 20], [24, 26]]]


def test_refuses_to_overwrite_unless_asked(tmp_path, labels):
    path = write_labels(tmp_path / "seg.h5", labels)
    before = path.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        write_labels(path, labels + 1)
    assert path.stat().st_mtime_ns == before
    write_labels(path, labels + 1, overwrite=True)
    assert np.array_equal(open_volume(path).data.compute(), labels + 1)
    z = write_labels(tmp_path / "seg.zarr", labels)
    write_labels(z, labels * 2, overwrite=True)  # replacing a folder
    assert np.array_equal(open_volume(z).data.compute(), labels * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.h5", "seg.zarr"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_cancel_leaves_nothing(tmp_path, labels, suffix):
    token = CancelToken()
    calls = []

    def progress(p):
        calls.append(p)
        if p.done == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        write_labels(tmp_path / f"seg{suffix}", labels, chunks=(4, 16, 16), progress=progress,
                     cancel=token)
    assert calls and calls[-1].done < calls[-1].total
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path, labels):
    path = write_labels(tmp_path / "seg.zarr", labels)

    class Boom(Exception):
        pass

    def explode(p):
        if p.done == 2:
            raise Boom

    with pytest.raises(Boom):
        write_labels(path, labels * 0 + 7, overwrite=True, chunks=(4, 16, 16), progress=explode)
    assert np.array_equal(open_volume(path).data.compute(), labels)  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["seg.zarr"]


def test_partial_output_name_does_not_look_complete(tmp_path, labels):
    names = []

    def spy(p):
        names.extend(x.name for x in tmp_path.iterdir())

    write_labels(tmp_path / "seg.tif", labels, progress=spy)
    assert names and all(n.startswith(".seg.tif.partial-") for n in names)


def test_bigtiff_when_asked(tmp_path, labels):
    p = write_labels(tmp_path / "big.tif", labels, bigtiff=True)
    assert open_volume(p).metadata["bigtiff"] is True
    p = write_labels(tmp_path / "small.tif", labels)
    assert open_volume(p).metadata["bigtiff"] is False


@pytest.mark.parametrize("suffix", [".h5", ".ome.zarr", ".tif"])
def test_writer_computes_each_dask_chunk_once(tmp_path, suffix):
    """A lazy graph whose chunks (16, 32, 32) are bigger than the storage chunks (8, 16, 16):
    each chunk is computed exactly once (not once per storage chunk), block by block."""
    computed = []

    def make(block_id=None):
        computed.append(block_id)
        return np.full((16, 32, 32), block_id[0] + 1, np.uint16)

    arr = da.map_blocks(make, chunks=((16,) * 4, (32,) * 2, (32,) * 2), dtype=np.uint16,
                        meta=np.empty((0, 0, 0), np.uint16))
    write_labels(tmp_path / f"s{suffix}", arr, chunks=(8, 16, 16), levels=1)
    assert sorted(computed) == sorted({(z, y, x) for z in range(4) for y in range(2) for x in range(2)})
    v = open_volume(tmp_path / f"s{suffix}")
    assert v.metadata["storage_chunks"][0] in (1, 8)  # TIFF pages, or chunked storage
    assert v.data[63, 0, 0].compute() == 4 and v.data[0, 63, 63].compute() == 1


def test_bad_write_input(tmp_path):
    with pytest.raises(VolumeError, match="labels must be integers"):
        write_labels(tmp_path / "a.zarr", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(VolumeError, match=r"must be a 3D \(z, y, x\) array"):
        write_labels(tmp_path / "a.zarr", np.zeros((4, 4), np.uint8))
    with pytest.raises(VolumeError, match="cannot tell the output format"):
        write_labels(tmp_path / "a.png", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(VolumeError, match="kind must be one of"):
        write_volume(tmp_path / "a.zarr", np.zeros((4, 4, 4), np.uint8), kind="mask")
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        write_labels(tmp_path / "no" / "a.zarr", np.zeros((4, 4, 4), np.uint8))


def test_write_a_volume_keeps_its_voxel_size(tmp_path, labels):
    src = write_labels(tmp_path / "a.h5", labels, voxel_size=(30, 6, 6))
    out = write_labels(tmp_path / "b.tif", open_volume(src))
    assert open_volume(out).voxel_size == (30.0, 6.0, 6.0)


def test_overwritten_hdf5_is_read_fresh(tmp_path, labels):
    path = write_labels(tmp_path / "seg.h5", labels)
    first = open_volume(path)
    assert first.data[0, 0, 0].compute() == labels[0, 0, 0]  # the file is now open for reading
    write_labels(path, labels + 5, overwrite=True)
    assert np.array_equal(open_volume(path).data.compute(), labels + 5)


def test_bigtiff_chosen_automatically_when_large(tmp_path, labels, monkeypatch):
    from napari_tokenunify.io import write_tiff

    monkeypatch.setattr(write_tiff, "BIGTIFF_BYTES", labels.nbytes - 1)  # "large" = this volume
    p = write_labels(tmp_path / "auto.tif", labels)
    assert open_volume(p).metadata["bigtiff"] is True


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_opened_volumes_pickle_for_worker_processes(tmp_path, labels, suffix):
    import pickle

    p = write_labels(tmp_path / f"seg{suffix}", labels, chunks=(8, 16, 16))
    clone = pickle.loads(pickle.dumps(open_volume(p).data))
    assert np.array_equal(clone[3:9, 5:30].compute(), labels[3:9, 5:30])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_affinities_round_trip(tmp_path, suffix):
    affs = np.random.default_rng(0).random((3, 8, 32, 32)).astype(np.float32)
    p = write_volume(tmp_path / f"affs{suffix}", affs, kind="affinities", voxel_size=(10, 5, 5),
                     levels=2)
    v = open_volume(p, channel=2)
    assert v.metadata["axes"] == "czyx" and v.voxel_size == (10.0, 5.0, 5.0)
    assert np.array_equal(v.data.compute(), affs[2])

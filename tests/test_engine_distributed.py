"""dask.distributed: a 2-process LocalCluster gives the single-process results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tokenunify.engine.blockwise import segment_blockwise
from napari_tokenunify.engine.distributed import (
    VolumeRef,
    close_client,
    get_client,
    predict_affinities_distributed,
)
from napari_tokenunify.engine.predict import predict_affinities
from napari_tokenunify.progress import Cancelled, CancelToken


@pytest.fixture(scope="module")
def client():
    import os

    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the worker processes
    c = get_client(workers=2)
    yield c
    close_client(c)
    if old is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from napari_tokenunify.io import write_volume
    from napari_tokenunify.model import build_model, save_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    root = tmp_path_factory.mktemp("dist")
    vol = make_synthetic_volume((16, 48, 56), seed=2)
    image_path = write_volume(root / "image.zarr", vol.image, kind="image")
    torch.manual_seed(0)
    model = build_model("tiny")
    model_dir = save_model(model, root / "model")
    return root, vol, image_path, model, model_dir


def test_cluster_prediction_equals_single_process(client, inputs):
    root, vol, image_path, model, model_dir = inputs
    torch.set_num_threads(1)
    kw = dict(tile_shape=(16, 32, 32), halo=(2, 4, 4), device="cpu", dtype="float32")
    single = predict_affinities(vol.image, model, **kw)
    reports = []
    out = predict_affinities_distributed(VolumeRef(str(image_path)), model, root / "affs.zarr",
                                         client=client, model_source=model_dir,
                                         progress=reports.append, **kw)
    assert reports[-1].done == reports[-1].total
    assert np.allclose(np.asarray(out[...]), single, atol=1e-5)
    # finished: every block recorded as done in the shared store
    import zarr

    group = zarr.open_group(str(root / "affs.zarr"), mode="r")
    assert group.attrs["complete"] and np.asarray(group["done"][...]).all()


def test_cluster_prediction_with_flips_equals_single_process(client, inputs):
    root, vol, image_path, model, model_dir = inputs
    torch.set_num_threads(1)
    kw = dict(tile_shape=(16, 32, 32), halo=(2, 4, 4), device="cpu", dtype="float32", tta="yx")
    single = predict_affinities(vol.image, model, **kw)
    assert not np.allclose(single, predict_affinities(vol.image, model, **{**kw, "tta": "none"}), atol=1e-4)
    out = predict_affinities_distributed(VolumeRef(str(image_path)), model, root / "affs-tta.zarr",
                                         client=client, model_source=model_dir, **kw)
    assert np.allclose(np.asarray(out[...]), single, atol=1e-5)


def test_cluster_run_cancels_and_resumes(client, inputs):
    root, vol, image_path, model, model_dir = inputs
    kw = dict(tile_shape=(16, 32, 32), halo=(2, 4, 4), device="cpu", dtype="float32")
    token = CancelToken()

    def stop(p):
        if p.done >= 1:
            token.cancel()

    out = root / "resume.zarr"
    with pytest.raises(Cancelled):
        predict_affinities_distributed(VolumeRef(str(image_path)), model, out, client=client,
                                       model_source=model_dir, progress=stop, cancel=token, **kw)
    import zarr

    done_before = int(np.asarray(zarr.open_group(str(out), mode="r")["done"][...]).sum())
    assert done_before >= 1
    result = predict_affinities_distributed(VolumeRef(str(image_path)), model, out, client=client,
                                            model_source=model_dir, **kw)
    single = predict_affinities(vol.image, model, **kw)
    assert np.allclose(np.asarray(result[...]), single, atol=1e-5)


def test_cluster_blockwise_segmentation_equals_single_process(client, inputs):
    import zarr

    from napari_tokenunify.affinities import labels_to_affinities

    root, vol, *_ = inputs
    affs, _ = labels_to_affinities(vol.labels)
    affs = np.clip(affs + np.random.default_rng(0).normal(0, 0.1, affs.shape), 0, 1).astype(np.float32)
    store = zarr.open_array(str(root / "in_affs.zarr"), mode="w", shape=affs.shape,
                            chunks=(3, 8, 24, 24), dtype="float32")
    store[...] = affs
    kw = dict(block_shape=(8, 24, 28), context=(2, 6, 6))
    local = segment_blockwise(affs, **kw)
    remote = segment_blockwise(store, root / "labels.zarr", client=client, **kw)
    assert np.array_equal(np.asarray(remote[...]), local)
    with pytest.raises(ValueError, match="output path"):
        segment_blockwise(store, None, client=client, **kw)


def test_cluster_prediction_at_the_model_voxel_size_equals_single_process(client, inputs):
    """Data at 1.5x the card's in-plane voxel size: the workers read the input resampled to the
    model's grid and map the affinities back; same result as in one process, on the data's grid."""
    import zarr

    from napari_tokenunify.engine.predict import RescaleWarning
    from napari_tokenunify.model import build_model, save_model

    root, vol, image_path, _, _ = inputs
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    model.card.voxel_size_nm = [10.0, 10.0, 10.0]
    model_dir = save_model(model, root / "model-10nm")
    kw = dict(tile_shape=(16, 32, 32), halo=(2, 4, 4), device="cpu", dtype="float32",
              voxel_size=(10, 15, 15))
    with pytest.warns(RescaleWarning):
        single = predict_affinities(vol.image, model, **kw)
    info = {}
    with pytest.warns(RescaleWarning):
        out = predict_affinities_distributed(VolumeRef(str(image_path)), model, root / "affs-rs.zarr",
                                             client=client, model_source=model_dir, info=info, **kw)
    assert out.shape == single.shape == (3, *vol.image.shape)
    assert np.allclose(np.asarray(out[...]), single, atol=1e-5)
    assert info["rescale"]["model_shape"] == [16, 72, 84]
    group = zarr.open_group(str(root / "affs-rs.zarr"), mode="r")
    assert group.attrs["complete"] and group.attrs["rescale"] == info["rescale"]
    assert np.asarray(group["done"][...]).all()
    assert not (root / "affs-rs.zarr" / "model_grid").exists()

"""Prediction at the model's voxel size: lazy resampling, mapping affinities back, records,
the 15 % tolerance, rescale=False and bad voxel sizes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_tokenunify.engine.predict import RescaleWarning, predict_affinities
from napari_tokenunify.engine.resample import (
    ResampledView,
    interpolate_block,
    plan_rescale,
    resample,
    rescale_factors,
    source_box,
    validate_voxel_size,
)
from napari_tokenunify.model import ModelCard


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


class Identity(torch.nn.Module):
    """Returns its (normalised) input as three 'affinity' channels, so what prediction does to
    the grid is visible in the values; trained at 10 nm isotropic according to its card."""

    input_divisor = 16

    def __init__(self, voxel_size=(10.0, 10.0, 10.0)) -> None:
        super().__init__()
        self.card = ModelCard(voxel_size_nm=list(voxel_size), patch_size=[16, 32, 32],
                              normalization={"low": 0, "high": 255})
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[2:]))
        return x.repeat(1, 3, 1, 1, 1)


def ramp(shape=(12, 40, 48)) -> np.ndarray:
    """A uint8 volume linear in z, y and x: linear interpolation reproduces it exactly inside."""
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    return (40 + 6 * z + 2 * y + x).astype(np.uint8)


def smooth(shape=(12, 40, 48), seed=0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    v = gaussian_filter(rng.random(shape), 3)
    v = (v - v.min()) / (v.max() - v.min())
    return np.rint(255 * v).astype(np.uint8)


# ---- voxel sizes --------------------------------------------------------------------------
def test_voxel_sizes_are_validated_with_a_message_saying_what_to_pass():
    assert validate_voxel_size(None) is None
    assert validate_voxel_size((40, 4, 4)) == (40.0, 4.0, 4.0)
    assert validate_voxel_size(8) == (8.0, 8.0, 8.0)
    for bad, why in [((0, 4, 4), "zero or negative"), ((40, -4, 4), "zero or negative"),
                     ((float("nan"), 4, 4), "not finite"), ((40, float("inf"), 4), "not finite"),
                     ((40, 4, 20_000), "above 10000"), ((4, 4), "not 3"), ("a,b,c", "not numbers")]:
        with pytest.raises(ValueError, match=why) as err:
            validate_voxel_size(bad)
        assert "voxel_size=(40, 4, 4)" in str(err.value) and "--voxel-size 40,4,4" in str(err.value)


def test_rescale_only_beyond_15_percent():
    assert rescale_factors((11.4, 8.6, 10), (10, 10, 10)) is None
    assert rescale_factors((10, 10, 11.6), (10, 10, 10)) == pytest.approx((1.0, 1.0, 1.16))
    assert rescale_factors((20, 20, 20), (10, 10, 10)) == (2.0, 2.0, 2.0)
    assert rescale_factors(None, (10, 10, 10)) is None and rescale_factors((5, 5, 5), None) is None
    plan = plan_rescale((10, 10, 10), (40, 5, 5), (4, 20, 20))
    assert plan.factors == (4.0, 0.5, 0.5) and plan.model_shape == (16, 10, 10)
    assert plan_rescale((10, 10, 10), (40, 5, 5), (4, 20, 20), rescale=False) is None
    with pytest.raises(ValueError, match="zero or negative"):  # refused even when turned off
        plan_rescale((10, 10, 10), (0, 5, 5), (4, 20, 20), rescale=False)
    with pytest.raises(ValueError, match="at most 8x"):
        plan_rescale((10, 10, 10), (200, 10, 10), (4, 20, 20))


# ---- resampling ---------------------------------------------------------------------------
def test_upsample_then_back_reproduces_a_linear_volume():
    vol = ramp()
    up = ResampledView(vol, (2.0, 2.0, 2.0))
    assert up.shape == (24, 80, 96) and up.dtype == np.float32
    fine = up[...]
    # on the fine grid a linear volume stays linear: voxel u sits at data coordinate (u + .5)/2 - .5
    assert fine[5, 11, 17] == pytest.approx(40 + 6 * 2.25 + 2 * 5.25 + 8.25, abs=1e-4)
    box = tuple((0, s) for s in vol.shape)
    back = interpolate_block(fine, (0, 0, 0), box, (2.0, 2.0, 2.0), fine.shape)
    assert back.shape == vol.shape
    assert np.abs(back - vol)[1:-1, 1:-1, 1:-1].max() < 1e-3  # exact inside
    assert np.abs(back - vol).max() < 2.0  # the edge voxels are within a voxel's step


def test_downsample_then_back_keeps_shape_and_smooth_values():
    vol = smooth()
    factors = (1.0, 0.5, 0.5)
    down = ResampledView(vol, factors)[...]
    assert down.shape == (12, 20, 24)
    box = tuple((0, s) for s in vol.shape)
    back = interpolate_block(down, (0, 0, 0), box, factors, down.shape)
    assert back.shape == vol.shape
    err = np.abs(back - vol.astype(np.float32))
    assert err.mean() < 3.0 and err[:, 2:-2, 2:-2].max() < 12.0
    assert back.min() >= vol.min() and back.max() <= vol.max()  # linear: no overshoot


def test_blocks_of_the_lazy_view_equal_the_whole_and_read_only_their_source():
    import dask.array as da

    vol = smooth((10, 30, 34), seed=1)
    factors = (1.5, 2.0, 0.75)
    view = ResampledView(vol, factors)
    whole = view[...]
    part = view[3:9, 7:40, 2:19]
    assert np.array_equal(part, whole[3:9, 7:40, 2:19])
    src = source_box(((3, 9), (7, 40), (2, 19)), view.steps, vol.shape)
    assert all(0 <= a < b <= s for (a, b), s in zip(src, vol.shape, strict=True))
    assert src[1][1] - src[1][0] < vol.shape[1]  # a part, not the whole volume
    # the dask form (block by block), over a lazy input, gives the same
    lazy = resample(da.from_array(vol, chunks=(4, 8, 8)), factors, chunks=(4, 16, 8))
    assert lazy.shape == view.shape and lazy.numblocks[1] > 1
    assert np.allclose(lazy.compute(), whole)


# ---- prediction -----------------------------------------------------------------------------
def test_prediction_at_twice_the_card_voxel_size_gives_the_data_grid(tmp_path):
    vol = ramp()
    model = Identity()
    info = {}
    with pytest.warns(RescaleWarning, match=r"\(20.0, 20.0, 20.0\).*\(10.0, 10.0, 10.0\)"):
        affs = predict_affinities(vol, model, voxel_size=(20, 20, 20), device="cpu",
                                  dtype="float32", info=info, out=tmp_path / "affs.zarr")
    assert affs.shape == (3, *vol.shape)
    # the model ran on the model's grid: tiles are cut from the 2x finer volume (24, 80, 96)
    assert max(s[1] for s in model.seen) == 32 and len(model.seen) > 6
    rs = info["rescale"]
    assert rs["factors"] == [2.0, 2.0, 2.0] and rs["model_shape"] == [24, 80, 96]
    assert rs["data_voxel_size"] == [20.0, 20.0, 20.0] and rs["model_voxel_size"] == [10.0] * 3
    import zarr

    group = zarr.open_group(str(tmp_path / "affs.zarr"), mode="r")
    assert group.attrs["rescale"] == rs and group.attrs["settings"]["rescale"] == rs
    assert group.attrs["complete"] and group.attrs["voxel_size"] == [20.0, 20.0, 20.0]
    assert not (tmp_path / "affs.zarr" / "model_grid").exists()  # the fine copy is removed
    out = np.asarray(affs[...])
    assert out.min() >= 0 and out.max() <= 1
    # identity model: the round trip gives back the normalised input (exact inside)
    err = np.abs(out[1] - vol / 255.0)[:, 1:]  # channel 1 links y neighbours: y = 0 is 0
    assert err[1:-1, :-1, 1:-1].max() < 1e-3
    assert err.max() < 0.01
    # affinities to a neighbour outside the volume are 0 on the data's grid too
    assert (out[0, 0] == 0).all() and (out[1, :, 0] == 0).all() and (out[2, :, :, 0] == 0).all()
    assert out[0, 1:].min() > 0


def test_in_memory_crop_and_a_real_model(tmp_path):
    from napari_tokenunify.model import build_model

    vol = smooth((8, 40, 40))
    model = Identity()
    full = predict_affinities(vol, model, voxel_size=(10, 20, 20), device="cpu", dtype="float32")
    assert isinstance(full, np.ndarray) and full.shape == (3, 8, 40, 40)
    crop = ((2, 7), (5, 30), (11, 37))
    part = predict_affinities(vol, model, voxel_size=(10, 20, 20), device="cpu", dtype="float32",
                              crop=crop)
    assert part.shape == (3, 5, 25, 26)
    assert np.allclose(part, full[:, 2:7, 5:30, 11:37], atol=1e-6)
    # an untrained EMmamba: finite affinities in [0, 1] on the data's grid, uint8 storage
    torch.manual_seed(0)
    net = build_model("tiny").eval()
    net.card.voxel_size_nm = [10.0, 10.0, 10.0]
    info = {}
    affs = predict_affinities(vol, net, voxel_size=(10, 5, 5), tile_shape=(16, 32, 32),
                              device="cpu", dtype="uint8", info=info)
    assert affs.shape == (3, 8, 40, 40) and affs.dtype == np.uint8
    assert info["rescale"]["model_shape"] == [8, 20, 20]


def test_within_15_percent_nothing_is_resampled():
    vol = smooth((8, 32, 32))
    plain = predict_affinities(vol, Identity(), device="cpu", dtype="float32")
    model = Identity()
    info = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a RescaleWarning nor a mismatch warning
        near = predict_affinities(vol, model, voxel_size=(11, 9, 10.5), device="cpu",
                                  dtype="float32", info=info)
    assert info["rescale"] is None
    assert np.array_equal(near, plain)
    assert all(s[1:] == (32, 32) for s in model.seen)


def test_rescale_false_predicts_on_the_data_grid_and_warns_as_before(tmp_path):
    vol = smooth((8, 32, 32))
    model = Identity()
    info = {}
    with pytest.warns(UserWarning, match="differs from the model's") as record:
        affs = predict_affinities(vol, model, voxel_size=(20, 20, 20), device="cpu",
                                  dtype="float32", rescale=False, info=info,
                                  out=tmp_path / "a.zarr")
    assert not any(issubclass(w.category, RescaleWarning) for w in record)
    assert info["rescale"] is None
    import zarr

    assert "rescale" not in zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs
    assert np.allclose(np.asarray(affs[1, :, 1:]), vol[:, 1:] / 255.0, atol=1e-3)


def test_bad_voxel_sizes_are_refused_before_any_work():
    model = Identity()
    vol = smooth((8, 32, 32))
    for bad in [(0, 10, 10), (-5, 10, 10), (float("nan"), 10, 10), (10, 10, 1e6)]:
        for rescale in (True, False):
            with pytest.raises(ValueError, match="pass the data's voxel size"):
                predict_affinities(vol, model, voxel_size=bad, device="cpu", rescale=rescale)
    assert model.seen == []


def test_a_rescaled_store_resumes_both_stages(tmp_path):
    """Region first (roi_only), then the rest: the same as one run, no tile predicted twice."""
    vol = smooth((8, 96, 96), seed=3)
    kw = dict(voxel_size=(10, 20, 20), device="cpu", dtype="float32", tile_shape=(16, 32, 32))
    once = predict_affinities(vol, Identity(), **kw)
    model = Identity()
    out = tmp_path / "affs.zarr"
    first = predict_affinities(vol, model, out=out, roi=((0, 8), (0, 12), (0, 12)), roi_only=True, **kw)
    import zarr

    group = zarr.open_group(str(out), mode="r")
    assert not group.attrs["complete"] and (out / "model_grid").exists()
    n_done = int(np.asarray(group["done"][...]).sum())
    assert 0 < n_done < group["done"].size
    assert np.allclose(np.asarray(first[:, :, :12, :12]), once[:, :, :12, :12], atol=1e-6)
    tiles_first = len(model.seen)
    resumed = predict_affinities(vol, model, out=out, **kw)
    assert zarr.open_group(str(out), mode="r").attrs["complete"]
    assert np.allclose(np.asarray(resumed[...]), once, atol=1e-6)
    fresh = Identity()
    predict_affinities(vol, fresh, **kw)
    assert len(model.seen) == len(fresh.seen)  # tiles of the first run were not predicted again
    assert tiles_first < len(fresh.seen)
    # a resume with another voxel size is refused (the settings record the resampling)
    with pytest.raises(FileExistsError):
        predict_affinities(vol, model, out=out, **{**kw, "voxel_size": (10, 30, 30)})


def test_pipeline_passes_rescale_through():
    from napari_tokenunify.engine.pipeline import run_pipeline

    vol = smooth((8, 32, 32))
    with pytest.warns(RescaleWarning):
        res = run_pipeline(vol, Identity(), device="cpu", voxel_size=(10, 20, 20))
    assert res.affinities.shape == (3, 8, 32, 32) and res.labels.shape == vol.shape
    with pytest.warns(UserWarning, match="differs"):
        run_pipeline(vol, Identity(), device="cpu", voxel_size=(10, 20, 20), rescale=False)

"""Tiled affinity prediction: seams, normalisation, bad input, devices/OOM, ROI order,
progress, cancel and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tokenunify.engine.predict import TilePredictor, plan_tiles, predict_affinities
from napari_tokenunify.progress import Cancelled, CancelToken


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """2 shared cores: one torch thread is much faster than two fighting for them."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


class ConvNet(torch.nn.Module):
    """A small local network (receptive field 7) standing in for EMmamba where a known,
    finite context matters; records the tiles it sees."""

    input_divisor = 16

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(4, 3, 3, padding=1),
        )
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.sigmoid(self.net(x))


class OOMOnBigBatches(ConvNet):
    """Raises the CUDA out-of-memory error for batches above ``limit`` (a fake OOM on CPU)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


@pytest.fixture(scope="module")
def volume():
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((24, 56, 72), seed=3)


def test_many_tiles_agree_with_one_piece(volume):
    model = ConvNet()
    one = predict_affinities(volume.image, model, tile_shape=(32, 64, 80), halo=3,
                             dtype="float32", device="cpu")
    many = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), halo=3,
                              dtype="float32", device="cpu")
    assert len(model.seen) > 1 + 8  # one tile, then many
    inner = (slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
    assert np.abs(one[inner] - many[inner]).max() < 1e-3
    assert one.shape == (3,) + volume.image.shape


def test_batches_give_the_same_result(volume):
    model = ConvNet()
    a = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), halo=2, dtype="float32",
                           device="cpu", batch_size=1)
    b = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), halo=2, dtype="float32",
                           device="cpu", batch_size=4)
    assert np.allclose(a, b, atol=1e-5)


def test_uint8_output_is_affinity_times_255(volume):
    model = ConvNet()
    f = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), dtype="float32", device="cpu")
    q = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), dtype="uint8", device="cpu")
    assert q.dtype == np.uint8
    assert np.abs(q / 255.0 - f).max() <= 0.5 / 255 + 1e-6


def test_border_affinities_pointing_outside_are_zero(volume):
    out = predict_affinities(volume.image, ConvNet(), tile_shape=(16, 32, 32), device="cpu")
    assert (out[0, 0] == 0).all() and (out[1, :, 0] == 0).all() and (out[2, :, :, 0] == 0).all()
    assert out[0, 1:].any()


def test_integer_input_of_any_range_is_normalised(volume):
    model = ConvNet()
    a = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), dtype="float32", device="cpu")
    wide = volume.image.astype(np.uint16) * 16 + 1000  # a 12-bit-like stack with an offset
    b = predict_affinities(wide, model, tile_shape=(16, 32, 32), dtype="float32", device="cpu")
    x = model.seen[-1]
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # percentiles of the wide stack instead of the uint8 range: close, not identical
    assert np.mean(np.abs(a - b)) < 0.05
    signed = volume.image.astype(np.int32) - 300
    c = predict_affinities(signed, model, tile_shape=(16, 32, 32), dtype="float32", device="cpu")
    assert np.isfinite(c).all()


def test_nan_and_inf_are_refused_with_a_clear_message(volume):
    image = volume.image.astype(np.float32)
    image[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict_affinities(image, ConvNet(), tile_shape=(16, 32, 32), device="cpu")
    image[3, 4, 5] = np.inf
    with pytest.raises(ValueError, match="nan_to_num"):
        predict_affinities(image, ConvNet(), tile_shape=(16, 32, 32), device="cpu")


def test_volume_smaller_than_a_tile_is_padded():
    image = np.random.default_rng(0).integers(0, 255, (5, 9, 11), dtype=np.uint8)
    model = ConvNet()
    out = predict_affinities(image, model, tile_shape=(16, 64, 64), dtype="float32", device="cpu")
    assert out.shape == (3, 5, 9, 11)
    # shrunk to the volume plus halo, rounded up to what the model accepts (multiples of 16)
    assert tuple(model.seen[-1].shape[2:]) == (16, 32, 32)


def test_2d_input_is_one_section():
    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    out = predict_affinities(image, ConvNet(), tile_shape=(16, 32, 32), dtype="float32", device="cpu")
    assert out.shape == (3, 1, 40, 50)
    assert (out[0] == 0).all() and out[1].any()
    with pytest.raises(ValueError, match="3D"):
        predict_affinities(np.zeros((2, 3, 4, 5)), ConvNet(), device="cpu")


def test_out_of_memory_halves_the_batch_and_retries(volume):
    model = OOMOnBigBatches(limit=2)
    ref = predict_affinities(volume.image, ConvNet(), tile_shape=(16, 32, 32), dtype="float32",
                             device="cpu", batch_size=1)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        out = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), dtype="float32",
                                 device="cpu", batch_size=8)
    assert model.batches[0] == 8 and 4 in model.batches and max(model.batches[3:]) <= 2
    assert np.allclose(out, ref, atol=1e-5)
    stubborn = OOMOnBigBatches(limit=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        TilePredictor(stubborn, device="cpu", batch_size=2).predict(np.zeros((2, 16, 16, 16), np.float32))


def test_other_errors_are_not_mistaken_for_oom():
    class Broken(ConvNet):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        TilePredictor(Broken(), device="cpu", batch_size=4).predict(np.zeros((4, 16, 16, 16), np.float32))


def test_roi_first_progress_and_rate(volume):
    reports = []
    model = ConvNet()
    roi = ((0, 8), (40, 56), (50, 72))
    out = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), halo=2, device="cpu",
                             roi=roi, progress=reports.append, dtype="float32")
    total = reports[-1].total
    assert [r.done for r in reports] == list(range(1, total + 1))
    assert all(r.rate and r.rate > 0 and r.rate_unit == "voxels/s" for r in reports)
    # the first tile predicted is the one whose core holds the roi's centre (4, 48, 61)
    from napari_tokenunify.engine.tiling import TileGrid, read_padded

    grid = TileGrid(volume.image.shape, (16, 32, 32), (2, 2, 2))
    centre_block = next(b for b in grid.blocks()
                        if all(a <= c < z for (a, z), c in zip(b.core, (4, 48, 61), strict=True)))
    expected = read_padded(volume.image, centre_block.tile).astype(np.float32) / 255
    assert np.allclose(model.seen[0][0, 0].numpy(), expected, atol=1e-6)
    assert len(model.seen) == total
    only = predict_affinities(volume.image, ConvNet(), tile_shape=(16, 32, 32), halo=2,
                              device="cpu", roi=roi, roi_only=True, dtype="float32")
    assert np.allclose(only[(slice(None),) + tuple(slice(a, b) for a, b in roi)],
                       out[(slice(None),) + tuple(slice(a, b) for a, b in roi)])
    assert not only[:, 12:, :20, :20].any()  # far from the roi: not predicted


def test_crop_predicts_only_the_region_with_outside_context(volume):
    model = ConvNet()
    full = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), halo=3, device="cpu",
                              dtype="float32")
    crop = ((4, 20), (10, 40), (8, 60))
    part = predict_affinities(volume.image, model, tile_shape=(16, 32, 32), halo=3, device="cpu",
                              dtype="float32", crop=crop)
    assert part.shape == (3, 16, 30, 52)
    assert np.abs(part - full[:, 4:20, 10:40, 8:60]).max() < 1e-5


def test_cancel_stops_within_one_tile(volume):
    token = CancelToken()
    model = ConvNet()

    def progress(p):
        if p.done == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        predict_affinities(volume.image, model, tile_shape=(16, 32, 32), device="cpu",
                           progress=progress, cancel=token, batch_size=1)
    assert len(model.seen) == 2


def test_cancelled_run_resumes_and_equals_an_uninterrupted_one(volume, tmp_path):
    model = ConvNet()
    kw = dict(tile_shape=(16, 32, 32), halo=2, device="cpu", dtype="float32")
    ref = predict_affinities(volume.image, model, **kw)
    n_tiles = len(model.seen)
    token = CancelToken()

    def stop_after_three(p):
        if p.done == 3:
            token.cancel()

    out = tmp_path / "affs.zarr"
    with pytest.raises(Cancelled):
        predict_affinities(volume.image, model, out=out, progress=stop_after_three, cancel=token, **kw)
    model.seen.clear()
    reports = []
    result = predict_affinities(volume.image, model, out=out, progress=reports.append, **kw)
    assert len(model.seen) == n_tiles - 3  # the three finished blocks were skipped
    assert reports[0].extra.get("skipped") == 3 and reports[-1].done == n_tiles
    assert np.array_equal(np.asarray(result[...]), ref)
    # complete now: a third run is refused unless overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        predict_affinities(volume.image, model, out=out, **kw)
    again = predict_affinities(volume.image, model, out=out, overwrite=True, **kw)
    assert np.array_equal(np.asarray(again[...]), ref)


def test_resume_with_other_settings_is_refused(volume, tmp_path):
    token = CancelToken()
    token.cancel()
    out = tmp_path / "affs.zarr"
    with pytest.raises(Cancelled):
        predict_affinities(volume.image, ConvNet(), out=out, tile_shape=(16, 32, 32), device="cpu",
                           cancel=token)
    with pytest.raises(FileExistsError, match="tile_shape"):
        predict_affinities(volume.image, ConvNet(), out=out, tile_shape=(16, 48, 48), device="cpu")
    with pytest.raises(ValueError, match="output path is empty"):
        predict_affinities(volume.image, ConvNet(), out="", device="cpu")


def test_unknown_device_and_dtype_are_refused(volume):
    with pytest.raises(ValueError, match="device"):
        predict_affinities(volume.image, ConvNet(), device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        predict_affinities(volume.image, ConvNet(), device="cpu", dtype="int8")


def test_voxel_size_mismatch_warns_with_the_numbers(volume):
    from napari_tokenunify.model import build_model

    model = build_model("tiny")
    model.card.voxel_size_nm = [40.0, 4.0, 4.0]
    with pytest.warns(UserWarning, match=r"\(10.0, 10.0, 10.0\).*\(40.0, 4.0, 4.0\)"):
        predict_affinities(volume.image[:8, :32, :32], model, tile_shape=(16, 32, 32),
                           voxel_size=(10, 10, 10), device="cpu")


def test_real_tiny_model_end_to_end(volume):
    from napari_tokenunify.model import build_model

    model = build_model("tiny")
    tile, halo = plan_tiles(model, volume.image.shape)
    assert all(t % model.input_divisor == 0 for t in tile)
    assert tuple(tile) == tuple(model.valid_shape(tile))
    out = predict_affinities(volume.image[:16, :40, :48], model, tile_shape=(16, 32, 32),
                             device="auto")
    assert out.shape == (3, 16, 40, 48) and out.dtype == np.float16
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


def test_intensity_sample_of_a_large_lazy_volume_reads_only_some_chunks():
    import dask.array as da

    from napari_tokenunify.engine.normalize import intensity_range, sample

    reads = []

    def record(block, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return block

    big = da.from_array(np.full((256, 512, 512), 7, np.uint16), chunks=(64, 128, 128))
    watched = big.map_blocks(record, dtype=big.dtype)
    values = sample(watched, max_voxels=1_000_000)
    assert 500_000 <= values.size <= 2_500_000
    assert len(set(reads)) < 0.25 * big.numblocks[0] * big.numblocks[1] * big.numblocks[2]
    flat = intensity_range(np.full((8, 8, 8), 300, np.uint16))
    assert flat.high > flat.low  # a flat image still maps to a valid range


def test_tile_reading_overlaps_the_model():
    import time

    class SlowArray:
        """A lazy volume whose every read takes 0.25 s (slow storage)."""

        def __init__(self, data):
            self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim

        def __getitem__(self, key):
            time.sleep(0.25)
            return self.data[key]

    class SlowNet(ConvNet):
        def forward(self, x):
            time.sleep(0.25)
            return super().forward(x)

    data = np.random.default_rng(0).integers(0, 255, (16, 32, 192), dtype=np.uint8)
    t0 = time.perf_counter()
    out = predict_affinities(SlowArray(data), SlowNet(), tile_shape=(16, 32, 32), halo=0,
                             device="cpu", dtype="float32")
    elapsed = time.perf_counter() - t0
    n = 6  # tiles; reading and predicting one after the other would take >= 6 x 0.5 s
    assert len(out[0, 0, 0]) == 192
    assert elapsed < n * 0.5 - 0.3
    ref = predict_affinities(data, ConvNet(), tile_shape=(16, 32, 32), halo=0, device="cpu",
                             dtype="float32")
    assert np.allclose(out, ref, atol=1e-6)

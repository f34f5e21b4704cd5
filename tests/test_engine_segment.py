"""Fragments, waterz agglomeration (threshold slider), mutex watershed, blockwise, cleanup."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_tokenunify.affinities import labels_to_affinities
from napari_tokenunify.engine.agglomerate import (
    TOKENUNIFY_SCORING,
    Agglomerator,
    mutex_watershed,
    quiet_stdout,
    segment_affinities,
)
from napari_tokenunify.engine.blockwise import segment_blockwise
from napari_tokenunify.engine.cleanup import cleanup, fill_holes, remove_small
from napari_tokenunify.engine.evaluate import evaluate
from napari_tokenunify.engine.fragments import fragments_from_affinities
from napari_tokenunify.synthetic import make_synthetic_volume


def noisy_affinities(labels, offsets=((1, 0, 0), (0, 1, 0), (0, 0, 1)), noise=0.15, seed=0):
    affs, _ = labels_to_affinities(labels, offsets)
    rng = np.random.default_rng(seed)
    affs = np.clip(affs + rng.normal(0, noise, affs.shape), 0, 1).astype(np.float32)
    return ndi.gaussian_filter(affs, (0, 1, 1, 1))


@pytest.fixture(scope="module")
def sample():
    vol = make_synthetic_volume((24, 80, 80), seed=1)
    return vol, noisy_affinities(vol.labels)


def test_fragments_label_every_voxel_and_do_not_cross_membranes(sample):
    vol, affs = sample
    frags = fragments_from_affinities(affs)
    assert frags.dtype == np.uint64 and frags.min() >= 1
    # an over-segmentation: (almost) no fragment spans two ground-truth neurons
    m = evaluate(frags, vol.labels)
    assert m["voi_merge"] < 0.1
    assert frags.max() > len(np.unique(vol.labels)) - 1


def test_anisotropic_fragments_are_per_section(sample):
    _, affs = sample
    frags = fragments_from_affinities(affs, voxel_size=(40, 10, 10))
    ids_per_z = [set(np.unique(frags[z]).tolist()) for z in range(frags.shape[0])]
    for a, b in zip(ids_per_z[:-1], ids_per_z[1:], strict=True):
        assert not a & b  # 2D: no fragment continues into the next section
    assert fragments_from_affinities(affs[:, :1]).max() >= 1  # single section works


def test_segmentation_recovers_the_neurons(sample):
    vol, affs = sample
    labels = segment_affinities(affs, 0.5)
    assert labels.dtype == np.uint32
    m = evaluate(labels, vol.labels)
    assert m["voi"] < 0.3 and m["arand"] < 0.05


def test_agglomerator_equals_waterz_at_every_threshold_and_is_fast(sample):
    import waterz

    _, affs = sample
    agg = Agglomerator(affs)
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.9):
        t0 = time.perf_counter()
        ours = agg.segment(threshold)
        slider_time = time.perf_counter() - t0
        with quiet_stdout():
            ref = next(iter(waterz.agglomerate(
                np.ascontiguousarray(affs), [threshold], fragments=agg.fragments.copy(),
                scoring_function=TOKENUNIFY_SCORING, discretize_queue=256)))
        # the same partition (ids may differ): a 1:1 mapping between the two labellings
        pairs = np.unique(np.stack([ours.ravel(), ref.ravel()]), axis=1)
        assert len(pairs[0]) == len(np.unique(ours)) == len(np.unique(ref))
        assert slider_time < 0.5
    # higher threshold → fewer segments
    assert agg.segment(0.9).max() <= agg.segment(0.5).max() <= agg.segment(0.1).max()
    with pytest.raises(ValueError, match="max_threshold"):
        Agglomerator(affs, max_threshold=0.5).segment(0.8)


def test_a_threshold_segments_alike_however_far_the_history_was_built(sample):
    """``tokenunify run`` builds the history up to its threshold, validation sweeps build it
    higher: waterz's discretised queue made the two differ by the merges in the threshold's
    last bin (0.301 against 0.360 VOI on a validation crop); now they are the same."""
    _, affs = sample
    full = Agglomerator(affs, scoring="mean")
    for t in np.linspace(0.05, 0.95, 61):
        assert np.array_equal(Agglomerator(affs, full.fragments, scoring="mean", max_threshold=t).lookup(t),
                              full.lookup(t)), t


def test_mutex_watershed_with_long_range_affinities(sample):
    vol, _ = sample
    offsets = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 4, 0), (0, 0, 4), (2, 0, 0))
    affs, _ = labels_to_affinities(vol.labels, offsets)
    labels = segment_affinities(affs, method="mutex", offsets=offsets)
    m = evaluate(labels, vol.labels)
    assert m["voi"] < 0.05
    with pytest.raises(ValueError, match="6 are expected"):
        mutex_watershed(affs[:5], offsets)


def test_bad_affinities_are_refused(sample):
    vol, affs = sample
    with pytest.raises(ValueError, match="4D"):
        segment_affinities(vol.labels)
    with pytest.raises(ValueError, match="channels"):
        segment_affinities(affs[:2])
    with pytest.raises(ValueError, match="fragments have shape"):
        Agglomerator(affs, fragments=np.ones((3, 3, 3), np.uint64))
    bad = affs.copy()
    bad[0, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segment_affinities(bad)
    with pytest.raises(ValueError, match="method"):
        segment_affinities(affs, method="magic")


def test_uint8_affinities_segment_like_float(sample):
    vol, affs = sample
    q = np.rint(affs * 255).astype(np.uint8)
    a, b = segment_affinities(affs), segment_affinities(q)
    assert evaluate(a, b, ignore_label=None)["voi"] < 0.05


def test_blockwise_agrees_with_in_memory(sample, tmp_path):
    vol, affs = sample
    mem = segment_affinities(affs, 0.5)
    blocks = segment_blockwise(affs, block_shape=(12, 40, 40), context=(4, 10, 10))
    assert blocks.dtype == np.uint32
    assert evaluate(blocks, mem, ignore_label=None)["voi"] <= 0.05
    # ids are consecutive and unique over the volume: each id is one object across blocks
    ids = np.unique(blocks)
    assert ids[0] >= 1 and ids[-1] == len(ids)
    z = segment_blockwise(affs, tmp_path / "seg.zarr", block_shape=(12, 40, 40), context=(4, 10, 10))
    assert np.array_equal(np.asarray(z[...]), blocks)
    with pytest.raises(FileExistsError):
        segment_blockwise(affs, tmp_path / "seg.zarr", block_shape=(12, 40, 40))


@pytest.mark.parametrize("step", ["fragments", "agglomerating", "relabelling"])
def test_blockwise_resumes_after_a_cancel_in_each_step(sample, tmp_path, step):
    """A cancelled blockwise run keeps its finished block tasks; the same call resumes it, runs
    only what is left and gives exactly the uninterrupted result."""
    from napari_tokenunify.progress import Cancelled, CancelToken

    vol, affs = sample
    kw = {"block_shape": (12, 40, 40), "context": (4, 10, 10)}
    full = np.asarray(segment_blockwise(affs, tmp_path / "full.zarr", **kw)[...])
    out = tmp_path / "seg.zarr"
    token = CancelToken()

    def stop_after_two(p):
        if p.message == step and p.done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        segment_blockwise(affs, out, progress=stop_after_two, cancel=token, **kw)
    with pytest.raises(FileExistsError, match="other settings"):
        segment_blockwise(affs, out, threshold=0.3, **kw)
    totals: dict[str, int] = {}
    resumed = segment_blockwise(affs, out, progress=lambda p: totals.__setitem__(p.message, p.total), **kw)
    n_blocks = int(np.prod([-(-s // b) for s, b in zip(affs.shape[1:], kw["block_shape"], strict=True)]))
    assert totals[step] == n_blocks - 2  # the two finished tasks of that step were not run again
    assert np.array_equal(np.asarray(resumed[...]), full)
    with pytest.raises(FileExistsError, match="complete"):
        segment_blockwise(affs, out, **kw)


def test_blockwise_joins_a_neuron_cut_by_block_faces():
    labels = np.zeros((8, 40, 40), dtype=np.uint32)
    labels[:, 5:35, 5:35] = 1  # one object crossing every block face
    labels[:, 18:22, :] = 0
    labels[:, 22:35, 5:35] = 2
    affs = noisy_affinities(labels, noise=0.05)
    out = segment_blockwise(affs, block_shape=(4, 16, 16), context=(2, 6, 6))
    assert len(np.unique(out[:, 6:17, 6:34])) == 1
    assert len(np.unique(out[:, 24:34, 6:34])) == 1
    assert out[4, 10, 10] != out[4, 30, 30]


def test_cleanup_fills_holes_and_removes_small():
    labels = np.ones((6, 20, 20), np.uint32)
    labels[:, 10:] = 2
    labels[2:4, 3:6, 3:6] = 5  # a hole inside 1
    labels[0, 0, 19] = 7  # a single voxel at the border, next to 1
    filled = fill_holes(labels)
    assert (filled[2:4, 3:6, 3:6] == 1).all() and filled[0, 0, 19] == 7
    small = remove_small(labels, 10)
    assert small[0, 0, 19] == 1 and (small[2:4, 3:6, 3:6] == 5).all()
    both = cleanup(labels, min_size=10, fill=True)
    assert both.dtype == np.uint32 and sorted(np.unique(both).tolist()) == [1, 2]

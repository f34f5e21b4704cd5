"""VOI and adapted Rand error: against skimage, chunked = in-memory, masks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_tokenunify.engine.evaluate import evaluate


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 7, (12, 30, 30)).astype(np.uint32)
    seg = (gt * 3 + (rng.random(gt.shape) < 0.1)).astype(np.uint64)  # splits, few merges
    seg[:, :5] = 99  # and one merge
    return seg, gt


def test_matches_skimage_with_label_0_ignored(pair):
    seg, gt = pair
    m = evaluate(seg, gt)
    keep = gt != 0
    split, merge = variation_of_information(gt[keep], seg[keep])
    err, prec, rec = adapted_rand_error(gt[keep], seg[keep])
    assert m["voi_split"] == pytest.approx(split) and m["voi_merge"] == pytest.approx(merge)
    assert m["arand"] == pytest.approx(err)
    assert m["arand_precision"] == pytest.approx(prec) and m["arand_recall"] == pytest.approx(rec)
    assert m["n_voxels"] == int(keep.sum())
    assert m["voi_split"] > 0 and m["voi_merge"] > 0


def test_chunked_equals_in_memory_and_reads_dask_and_zarr(pair, tmp_path):
    import dask.array as da
    import zarr

    seg, gt = pair
    whole = evaluate(seg, gt)
    chunked = evaluate(seg, gt, chunk_voxels=1000)
    z = zarr.open_array(str(tmp_path / "seg.zarr"), mode="w", shape=seg.shape, chunks=(4, 16, 16),
                        dtype=seg.dtype)
    z[...] = seg
    lazy = evaluate(z, da.from_array(gt, chunks=(5, 10, 10)), chunk_voxels=2000)
    for key in ("voi_split", "voi_merge", "arand"):
        assert chunked[key] == pytest.approx(whole[key])
        assert lazy[key] == pytest.approx(whole[key])


def test_perfect_segmentation_scores_zero_up_to_relabelling(pair):
    _, gt = pair
    relabelled = (gt.astype(np.uint64) * 7 + 1000)
    m = evaluate(relabelled, gt)
    assert m["voi"] == pytest.approx(0, abs=1e-12) and m["arand"] == pytest.approx(0, abs=1e-12)


def test_mask_and_no_ignore(pair):
    seg, gt = pair
    mask = np.zeros(gt.shape, bool)
    mask[:, 10:] = True
    masked = evaluate(seg, gt, mask=mask)
    keep = mask & (gt != 0)
    split, merge = variation_of_information(gt[keep], seg[keep])
    assert masked["voi_split"] == pytest.approx(split) and masked["voi_merge"] == pytest.approx(merge)
    everything = evaluate(seg, gt, ignore_label=None)
    assert everything["n_voxels"] == gt.size


def test_bad_input_is_refused(pair):
    seg, gt = pair
    with pytest.raises(ValueError, match="differs from ground-truth shape"):
        evaluate(seg[:3], gt)
    with pytest.raises(ValueError, match="no voxel to evaluate"):
        evaluate(seg, np.zeros_like(gt))
    with pytest.raises(ValueError, match="mask shape"):
        evaluate(seg, gt, mask=np.ones((2, 2, 2), bool))


def test_affinity_scores_rank_perfect_constant_and_inverted_predictions():
    from napari_tokenunify.affinities import NEAREST_OFFSETS, labels_to_affinities
    from napari_tokenunify.engine.evaluate import affinity_scores

    labels = np.zeros((4, 12, 12), dtype=np.uint32)
    labels[:, :, :6], labels[:, :, 7:] = 1, 2
    target, _ = labels_to_affinities(labels)
    perfect = affinity_scores(target, labels, NEAREST_OFFSETS)
    assert perfect["affinity_error"] == 0 and perfect["affinity_bce"] < 1e-4
    constant = affinity_scores(np.full_like(target, 0.4), labels, NEAREST_OFFSETS)
    assert constant["affinity_error"] == pytest.approx(0.5)  # every connected pair called cut
    inverted = affinity_scores(1 - target, labels, NEAREST_OFFSETS)
    assert inverted["affinity_error"] == 1 and inverted["affinity_bce"] > constant["affinity_bce"]
    # a mask that leaves out the second object: its pairs no longer count
    mask = labels != 2
    masked = affinity_scores(np.where(labels == 2, 1 - target, target), labels, NEAREST_OFFSETS, mask=mask)
    assert masked["affinity_error"] == 0
    with pytest.raises(ValueError, match="boundaries"):
        affinity_scores(target, np.ones_like(labels), NEAREST_OFFSETS)


def test_boundary_tolerance_leaves_out_voxels_beside_a_true_boundary(tmp_path):
    from napari_tokenunify.cli import main
    from napari_tokenunify.engine.evaluate import boundary_band

    gt = np.ones((10, 12, 20), np.uint32)
    gt[:, :, 10:] = 2  # dense labels: no boundary label, bodies touch between x 9 and 10
    seg = np.ones_like(gt)
    seg[:, :, 11:] = 2  # the same two bodies, the boundary one voxel off
    band = boundary_band(gt, 1)
    assert band[:, :, 9:11].all() and not band[:, :, :9].any() and not band[:, :, 11:].any()
    plain = evaluate(seg, gt, ignore_label=None)
    assert plain["voi_split"] + plain["voi_merge"] > 0.05 and plain["n_voxels"] == gt.size
    tol = evaluate(seg, gt, ignore_label=None, boundary_tolerance=1)
    assert tol["voi_split"] + tol["voi_merge"] == pytest.approx(0.0, abs=1e-9) and tol["arand"] < 1e-9
    assert tol["n_voxels"] == gt.size - band.sum()
    # read in chunks of two sections, the band is the same (it sees the next chunk's sections)
    gt[5:] += 10  # a boundary along z, between two chunks
    small = evaluate(seg, gt, ignore_label=None, boundary_tolerance=1, chunk_voxels=2 * 12 * 20)
    whole = evaluate(seg, gt, ignore_label=None, boundary_tolerance=1)
    assert small == pytest.approx(whole) and whole["n_voxels"] == gt.size - boundary_band(gt, 1).sum()
    with pytest.raises(ValueError, match="boundary_tolerance"):
        evaluate(seg, gt, boundary_tolerance=-1)
    import tifffile

    tifffile.imwrite(tmp_path / "seg.tif", seg)
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    assert main(["evaluate", str(tmp_path / "seg.tif"), str(tmp_path / "gt.tif"), "--ignore-label", "-1",
                 "--boundary-tolerance", "1"]) == 0

"""benchmarks/bench_adapt.py's core on tiny synthetic volumes: the corrected regions, the
labels a correction leaves, scoring only the never-corrected part and the error densities."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_adapt as ba  # noqa: E402


def test_slab_region_takes_the_share_at_the_start_of_the_longest_axis():
    region = ba.slab_region((10, 20, 40), 0.1)
    assert region == (slice(0, 10), slice(0, 20), slice(0, 4))
    assert ba.regions_mask((10, 20, 40), [region]).mean() == pytest.approx(0.1)
    assert ba.slab_region((10, 20, 40), 0.1, axis=0) == (slice(0, 1), slice(0, 20), slice(0, 40))
    # never under min_voxels (finetuning refuses a region smaller than one patch)
    big = ba.slab_region((10, 20, 40), 0.1, min_voxels=1000)
    assert ba.regions_mask((10, 20, 40), [big]).sum() >= 1000
    assert big[2] == slice(0, 5)
    assert ba.slab_region((4, 4, 4), 0.01) == (slice(0, 1), slice(0, 4), slice(0, 4))  # one section


def test_n_blocks_for_makes_the_share_and_the_minimum():
    assert ba.n_blocks_for((16, 64, 64), 0.25, (8, 32, 32)) == 2
    assert ba.n_blocks_for((16, 64, 64), 0.01, (8, 32, 32)) == 1
    assert ba.n_blocks_for((16, 64, 64), 0.01, (8, 32, 32), min_voxels=3 * 8192) == 3


def test_corrected_labels_copy_the_truth_inside_and_keep_the_segmentation_outside():
    gt = np.array([[[1, 1, 2, 2]]], dtype=np.uint32)
    seg = np.array([[[5, 5, 5, 0]]], dtype=np.uint32)
    mask = np.array([[[True, True, False, False]]])
    out = ba.corrected_labels(seg, gt, mask)
    assert list(out[0, 0, :2]) == [1, 1]
    assert out[0, 0, 2] not in (1, 2) and out[0, 0, 2] != 0  # never collides with a true id
    assert out[0, 0, 3] == 0  # unlabelled stays unlabelled


def test_score_uncorrected_ignores_the_corrected_part():
    gt = np.zeros((2, 8, 8), dtype=np.uint32)
    gt[:, :, :4], gt[:, :, 4:] = 1, 2
    seg = gt.copy()
    seg[:, :4, :] = 9  # a merge of both bodies in the upper half only
    corrected = np.zeros(gt.shape, dtype=bool)
    corrected[:, :4, :] = True
    clean = ba.score_uncorrected(seg, gt, corrected)
    assert clean["voi"] == pytest.approx(0.0, abs=1e-9) and clean["arand"] == pytest.approx(0.0, abs=1e-9)
    whole = ba.score_uncorrected(seg, gt, np.zeros(gt.shape, dtype=bool))
    assert whole["voi"] > 0.5 and whole["voi_merge"] > 0


def test_error_voxels_mark_the_minority_of_merges_and_splits():
    gt = np.zeros((1, 4, 10), dtype=np.uint32)
    gt[..., :6], gt[..., 6:] = 1, 2
    seg = np.ones_like(gt)  # body 2 merged into body 1's segment
    err = ba.error_voxels(seg, gt)
    assert err[..., 6:].all() and not err[..., :6].any()
    seg = gt.copy()
    seg[..., :2] = 3  # body 1 split: its smaller piece
    err = ba.error_voxels(seg, gt)
    assert err[..., :2].all() and not err[..., 2:].any()
    gt[..., 0] = 0  # unlabelled voxels never count
    assert not ba.error_voxels(seg, gt)[..., 0].any()


def test_counted_voxels_drop_dense_truth_boundaries_only():
    dense = np.ones((2, 4, 6), dtype=np.uint32)
    dense[..., 3:] = 2
    counted = ba.counted_voxels(dense)
    assert not counted[..., 2:4].any() and counted[..., :2].all() and counted[..., 4:].all()
    sparse = dense.copy()
    sparse[..., 2:4] = 0  # a boundary label: those are the voxels left out, nothing more
    assert (ba.counted_voxels(sparse) == (sparse != 0)).all()


def test_in_block_errors_count_what_the_block_shows():
    """A body merged into another: the whole-volume definition marks all of the smaller body,
    the in-block one only the blocks where both bodies are seen together."""
    gt = np.zeros((1, 8, 32), dtype=np.uint32)
    gt[..., :20], gt[..., 20:] = 1, 2
    gt[..., 0] = 0  # a few unlabelled voxels: sparse truth, no boundary dropped
    seg = np.ones_like(gt)
    blocks = [(slice(0, 1), slice(0, 8), slice(x, x + 8)) for x in range(0, 32, 8)]
    err_in, n_in = ba.block_errors(seg, gt, blocks, in_block=True)
    err_whole, n_whole = ba.block_errors(seg, gt, blocks, in_block=False)
    assert list(n_in) == list(n_whole) == [56, 64, 64, 64]
    assert list(err_whole) == [0, 0, 32, 64]  # every voxel of body 2 is a merge error
    assert list(err_in) == [0, 0, 32, 0]  # the last block shows body 2 alone: nothing to see
    assert ba.density(err_in, n_in, [2, 3]) == pytest.approx(32 / 128)


def test_random_density_is_the_mean_over_fixed_draws():
    errors = np.array([10, 0, 0, 0])
    totals = np.array([10, 10, 10, 10])
    assert ba.random_density(errors, totals, k=4, draws=3) == pytest.approx(0.25)
    one = ba.random_density(errors, totals, k=1, draws=400)
    assert one == pytest.approx(0.25, abs=0.08)
    assert one == ba.random_density(errors, totals, k=1, draws=400)  # seeded: the same again


def test_margin_outcomes_follow_the_held_back_choice():
    """Each margin's threshold is finetuning's own choice; its VOI is the after table's there."""
    row = {"threshold_before": 0.6, "before": {"voi": 2.0},
           "threshold_tables": {"held-back corrections": {"0.3": 0.8, "0.6": 0.95, "0.9": 1.2}},
           "after_by_threshold": {"0.3": {"voi": 1.0, "arand": 0.1}, "0.6": {"voi": 1.5, "arand": 0.2},
                                  "0.9": {"voi": 1.9, "arand": 0.3}}}
    out = ba.margin_outcomes(row, [None, 0.1, 0.2])
    assert [o["threshold"] for o in out] == [0.6, 0.3, 0.6]
    assert [o["ratio"] for o in out] == [0.75, 0.5, 0.75]
    assert out[1]["arand"] == 0.1


def test_start_outcomes_keep_the_start_unless_a_checkpoint_beats_it_by_the_margin():
    """A margin keeps the finetuned model only when its best held-back VOI is that share below
    the start's; otherwise the volume segments as before (after/before 1)."""
    row = {"before": {"voi": 2.0}, "after": {"voi": 1.6}, "config": {"start_margin": None},
           "held_back": {"before": 1.0, "history": [[100, 0.97], [200, 0.92], [300, 0.99]]}}
    out = ba.start_outcomes(row, [None, 0.0, 0.05, 0.1])
    assert [o["kept"] for o in out] == ["finetuned", "finetuned", "finetuned", "start"]
    assert [o["ratio"] for o in out] == [0.8, 0.8, 0.8, 1.0]
    # nothing held back: the margin cannot act, the finetuned model is what a user gets
    alone = ba.start_outcomes({**row, "held_back": None}, [0.1])
    assert alone[0]["kept"] == "finetuned" and alone[0]["ratio"] == 0.8
    # a run made with margin 0.05 (its checkpoint, 8 % better, kept) answers stricter margins
    # exactly and looser ones too, since its checkpoint was scored on the volume
    at5 = ba.start_outcomes({**row, "config": {"start_margin": 0.05}}, [None, 0.05, 0.1, 0.15])
    assert [o["ratio"] for o in at5] == [0.8, 0.8, 1.0, 1.0]
    assert at5[0]["held_back_gain"] == pytest.approx(0.08)
    # a run that kept the start at 0.1 cannot say what a looser margin would have given
    kept = ba.start_outcomes({**row, "after": {"voi": 2.0}, "config": {"start_margin": 0.1}},
                             [0.0, 0.1, 0.2])
    assert [o["ratio"] for o in kept] == [None, 1.0, 1.0]
    assert [o["kept"] for o in kept] == ["finetuned", "start", "start"]


def test_report_prints_the_tables_of_saved_runs(tmp_path, capsys):
    """--report re-reads --json files: a rule's outcome is a command, not hand arithmetic."""
    row = {"volume": "medulla-dense z90-119", "region": "blocks", "share_corrected": 0.1,
           "steps": 900, "train_s": 300.0, "threshold_before": 0.6, "threshold_after": 0.6,
           "before": {"voi": 1.37, "arand": 0.115}, "after": {"voi": 1.727, "arand": 0.13},
           "before_best": {"voi": 1.37, "threshold": 0.6}, "after_best": {"voi": 1.7, "threshold": 0.6},
           "config": {"start_margin": 0.1},
           "held_back": {"before": 1.908, "history": [[100, 1.98], [900, 1.713]]}}
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"runs": [row]}))
    assert ba.main(["--report", str(f)]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("medulla-dense") and "1.908" in ln]
    assert len(line) == 1
    # held-back gain 10.2 %: kept at margins up to 0.1 (after/before 1.261), the start at 0.15
    cells = line[0].split("1.908/1.713")[1].split()
    by_margin = [" ".join(cells[i:i + 2]) for i in range(0, len(cells), 2)]
    assert by_margin == ["1.261 finet"] * 4 + ["1.000 start"] * 3  # none, 0, 0.05, 0.1 | 0.15, 0.2, 0.3

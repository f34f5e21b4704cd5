"""Affinity targets, class-balancing weights, patch sampling (with padding), augmentations and the
checks of bad training input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tokenunify.training.augment import EMAugment, elastic, flip_rotate, misalign
from napari_tokenunify.training.sampling import PatchSampler, to_unit
from napari_tokenunify.training.targets import (
    TrainingDataError,
    affinity_targets,
    balance_weights,
    check_training_pair,
    grow_boundaries,
)


def two_objects():
    labels = np.zeros((2, 4, 6), np.uint32)
    labels[:, :, :3] = 1
    labels[:, :, 3:] = 2
    return labels


def test_affinity_targets_boundary_between_ids():
    affs, valid = affinity_targets(two_objects())
    x = affs[2]  # x-affinity at v links v and v - (0, 0, 1)
    assert x[0, 0].tolist() == [0, 1, 1, 0, 1, 1]  # 0 at the 1|2 boundary and at the border
    assert valid[2][0, 0].tolist() == [0, 1, 1, 1, 1, 1]  # border voxel has no neighbour
    assert affs[0][1].min() == 1 and valid[0][0].max() == 0  # z: same ids; z=0 has no neighbour


def test_affinity_targets_mask_and_label_zero():
    labels = two_objects()
    labels[:, 0, :] = 0  # an unlabelled row
    mask = np.ones_like(labels)
    mask[:, :, 5] = 0
    affs, valid = affinity_targets(labels, mask=mask)
    assert valid[2][:, :, 5].max() == 0  # masked voxel
    # Two label-0 voxels say nothing; object next to 0 says "not connected".
    assert valid[2][0, 0, 1] == 0
    assert valid[1][0, 1, 1] == 1 and affs[1][0, 1, 1] == 0


def test_long_range_offsets():
    affs, valid = affinity_targets(two_objects(), offsets=[(0, 0, 3)])
    assert affs.shape == (1, 2, 4, 6)
    assert affs[0][0, 0].tolist() == [0, 0, 0, 0, 0, 0]  # v and v-3 always differ here
    assert valid[0][0, 0].tolist() == [0, 0, 0, 1, 1, 1]


def test_grow_boundaries_gives_dense_labels_a_one_voxel_band():
    dense = two_objects()  # ids 1 | 2 touch between x = 2 and x = 3, no boundary label
    grown = grow_boundaries(dense)
    assert grown[0, 0].tolist() == [1, 1, 0, 2, 2, 2]  # the voxel before the id change
    assert (grown[:, :, 2] == 0).all() and grown.dtype == dense.dtype
    assert dense[0, 0].tolist() == [1, 1, 1, 2, 2, 2]  # the caller's labels are not touched
    # both links into the band now say "not connected", as with a boundary label 0
    affs, valid = affinity_targets(grown)
    assert affs[2][0, 0, 2:4].tolist() == [0, 0] and valid[2][0, 0, 2:4].tolist() == [1, 1]
    assert grow_boundaries(dense, 2)[0, 0].tolist() == [1, 0, 0, 0, 2, 2]  # grown to both sides
    assert np.array_equal(grow_boundaries(dense, 0), dense)


def test_grow_boundaries_leaves_a_boundary_label_alone():
    gala = two_objects()
    gala[:, :, 3] = 0  # objects already separated by label 0
    assert np.array_equal(grow_boundaries(gala), gala)
    with pytest.raises(ValueError, match="0 or more"):
        grow_boundaries(gala, -1)


def test_finetune_config_records_grown_boundaries():
    from napari_tokenunify.training.config import FinetuneConfig

    assert FinetuneConfig().grow_boundaries == 0
    assert FinetuneConfig(grow_boundaries=1).to_dict()["grow_boundaries"] == 1
    with pytest.raises(ValueError, match="grow_boundaries"):
        FinetuneConfig(grow_boundaries=-1)


def test_balance_weights_halves_each_class():
    affs, valid = affinity_targets(two_objects())
    w = balance_weights(affs, valid)
    for c in range(3):
        v = valid[c] > 0
        pos, neg = (affs[c] > 0.5) & v, (affs[c] < 0.5) & v
        if pos.any() and neg.any():
            assert np.isclose(w[c][pos].sum(), w[c][neg].sum())
    assert w[valid == 0].max() == 0
    # x channel: 16 valid negatives... weights are 0.5/fraction per class.
    v = valid[2] > 0
    frac_neg = ((affs[2] < 0.5) & v).sum() / v.sum()
    assert np.isclose(w[2][(affs[2] < 0.5) & v][0], 0.5 / frac_neg)


@pytest.mark.parametrize(
    "raw_shape, labels, mask, match",
    [
        ((2, 4, 5), two_objects(), None, "differs from raw shape"),
        ((2, 4, 6), np.zeros((2, 4, 6), np.uint32), None, "all zero"),
        ((2, 4, 6), np.ones((2, 4, 6), np.uint32), None, "single object"),
        ((2, 4, 6), two_objects().astype(np.float32), None, "integer instance ids"),
        ((2, 4, 6), two_objects(), np.zeros((2, 4, 6)), "mask is empty"),
        ((2, 4, 6), two_objects(), np.ones((2, 4, 5)), "mask shape"),
    ],
)
def test_bad_training_input(raw_shape, labels, mask, match):
    with pytest.raises(TrainingDataError, match=match):
        check_training_pair(np.zeros(raw_shape, np.uint8), labels, mask)


def test_single_object_inside_mask_is_rejected():
    mask = np.zeros((2, 4, 6))
    mask[:, :, :2] = 1
    with pytest.raises(TrainingDataError, match="single object inside the mask"):
        check_training_pair(np.zeros((2, 4, 6)), two_objects(), mask)


def test_to_unit():
    assert to_unit(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
    assert to_unit(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    assert to_unit(np.array([-1.0, 0.5, 2.0])).tolist() == [0.0, 0.5, 1.0]


def test_sampler_reads_lazy_volumes_in_bounds():
    da = pytest.importorskip("dask.array")
    raw = np.arange(10 * 20 * 30, dtype=np.uint16).reshape(10, 20, 30)
    labels = (raw % 7 + 1).astype(np.uint32)
    s = PatchSampler([da.from_array(raw, chunks=5)], (4, 8, 8), labels=[labels], seed=3)
    for _ in range(10):
        p = s.sample()
        z, y, x = p.origin
        expect = raw[z : z + 4, y : y + 8, x : x + 8]
        assert np.allclose(p.raw, to_unit(expect))
        assert np.array_equal(p.labels, labels[z : z + 4, y : y + 8, x : x + 8])
        assert p.mask.min() == 1


def test_sampler_permutes_axes_of_isotropic_patches_that_fit():
    raw = np.arange(20 * 24 * 28, dtype=np.uint16).reshape(20, 24, 28)
    labels = (raw % 11 + 1).astype(np.uint32)
    s = PatchSampler([raw], (6, 10, 22), labels=[labels], seed=1, permute_axes=True)
    seen = set()
    for _ in range(60):
        p = s.sample()
        assert p.raw.shape == p.labels.shape == p.mask.shape == (6, 10, 22)
        # the patch is the block the sampler read, transposed by its axes
        read = [0, 0, 0]
        for a, src in enumerate(p.axes):
            read[src] = (6, 10, 22)[a]
        block = tuple(slice(o, o + n) for o, n in zip(p.origin, read, strict=True))
        assert np.allclose(p.raw, to_unit(raw[block]).transpose(p.axes))
        assert np.array_equal(p.labels, labels[block].transpose(p.axes))
        assert p.mask.min() == 1
        seen.add(p.axes)
    # 22 voxels fit along y and x but not z (20): only orders that keep x's 22 off z
    assert seen == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1)}
    # off by default: the volume's own order
    plain = PatchSampler([raw], (6, 10, 22), labels=[labels], seed=1)
    assert {plain.sample().axes for _ in range(10)} == {(0, 1, 2)}


def test_finetune_config_records_permuted_axes():
    from napari_tokenunify.training.config import FinetuneConfig

    cfg = FinetuneConfig(permute_axes=True)
    assert cfg.to_dict()["permute_axes"] is True
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg
    # rule 46 (docs/results.md): automatic, i.e. for isotropic data; "on"/"off"/"auto" read too
    assert FinetuneConfig().permute_axes is None
    assert FinetuneConfig.from_dict(FinetuneConfig().to_dict()) == FinetuneConfig()
    assert [FinetuneConfig(permute_axes=v).permute_axes for v in ("on", "off", "auto", "Auto")] == [
        True, False, None, None]
    with pytest.raises(ValueError, match="on, off or auto"):
        FinetuneConfig(permute_axes="sometimes")


def test_permuted_views_follow_the_voxel_size_when_automatic():
    from napari_tokenunify.training.config import permute_for

    assert permute_for(None, (10, 10, 10)) == (True, "auto: the voxel size 10 × 10 × 10 nm is isotropic")
    assert permute_for(None, (8, 8, 9))[0] is True  # within 15 %
    on, why = permute_for(None, (40, 4, 4))  # serial sections: z is not like y and x
    assert on is False and "not isotropic" in why
    assert permute_for(None, None) == (False, "auto: the voxel size is unknown")
    assert permute_for(True, (40, 4, 4)) == (True, "set") and permute_for(False, (10, 10, 10)) == (False, "set")


@pytest.mark.parametrize("voxel, on", [((10.0, 10.0, 10.0), True), ((40.0, 4.0, 4.0), False), (None, False)])
def test_finetune_reads_permuted_views_of_isotropic_data_and_says_so(voxel, on, monkeypatch):
    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.training import finetune as ft

    seen = []
    real = ft.PatchSampler

    def spy(*args, **kwargs):
        seen.append(kwargs.get("permute_axes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ft, "PatchSampler", spy)
    vol = make_synthetic_volume((16, 48, 48), seed=1)
    model = ft.finetune(vol.image, vol.labels, steps=1, patch_shape=(16, 32, 32), augment=False,
                        holdout=0.0, voxel_size_nm=voxel)
    assert seen == [on]
    record = model.card.training["permuted_views"]
    assert record["on"] is on and record["why"].startswith("auto")
    assert model.card.training["config"]["permute_axes"] is None


def test_sampler_pads_patch_larger_than_volume():
    raw = np.random.default_rng(0).integers(0, 255, (3, 5, 40), dtype=np.uint8)
    labels = np.ones((3, 5, 40), np.uint32)
    s = PatchSampler([raw], (8, 16, 16), labels=[labels], seed=0)
    assert s.padded()
    p = s.sample()
    assert p.raw.shape == p.labels.shape == p.mask.shape == (8, 16, 16)
    assert p.mask[:3, :5].min() == 1 and p.mask[3:].max() == 0 and p.mask[:, 5:].max() == 0
    assert p.labels[3:].max() == 0
    # Raw is mirrored (not zero) in the padding.
    assert p.raw[3:].std() > 0
    with pytest.raises(ValueError, match="differs from raw"):
        PatchSampler([raw], (4, 4, 4), labels=[labels[:2]])


def test_flip_rotate_moves_raw_and_labels_together():
    rng = np.random.default_rng(0)
    labels = np.arange(4 * 8 * 8, dtype=np.uint32).reshape(4, 8, 8)
    raw = labels.astype(np.float32)
    for _ in range(10):
        r, lab, m = flip_rotate(raw, labels, np.ones_like(raw), rng)
        assert np.array_equal(r, lab.astype(np.float32))
        assert sorted(lab.ravel()) == sorted(labels.ravel())


def test_misalign_masks_wrapped_voxels():
    rng = np.random.default_rng(1)
    labels = np.arange(6 * 10 * 10, dtype=np.uint32).reshape(6, 10, 10)
    r, lab, m = misalign(labels.astype(np.float32), labels, np.ones((6, 10, 10), np.float32), rng, 3)
    assert np.array_equal(r, lab.astype(np.float32))
    assert m.min() == 0 and m.max() == 1


def test_elastic_keeps_label_values_and_alignment():
    rng = np.random.default_rng(2)
    labels = np.zeros((4, 32, 32), np.uint32)
    labels[:, :, 16:] = 5
    raw = (labels > 0).astype(np.float32)
    r, lab, _ = elastic(raw, labels, np.ones_like(raw), rng, alpha=3.0)
    assert set(np.unique(lab)) <= {0, 5}
    assert not np.array_equal(lab, labels)  # it moved
    assert np.mean((r > 0.5) == (lab > 0)) > 0.95  # raw moved with the labels


def test_em_augment_output_ranges():
    rng = np.random.default_rng(0)
    aug = EMAugment(intensity_p=1, noise_p=1, blur_p=1, missing_p=1, misalign_p=1, elastic_p=1)
    raw = rng.random((8, 16, 16)).astype(np.float32)
    labels = rng.integers(1, 4, (8, 16, 16)).astype(np.uint32)
    r, lab, m = aug(raw, labels, np.ones_like(raw), rng)
    assert r.shape == lab.shape == m.shape == (8, 16, 16)
    assert r.dtype == np.float32 and 0 <= r.min() and r.max() <= 1
    assert lab.dtype == np.uint32


def test_training_batch_uses_grown_boundaries():
    """finetune's batches apply ``grow_boundaries`` to every patch's labels (after augmentation)."""
    from napari_tokenunify.affinities import NEAREST_OFFSETS
    from napari_tokenunify.training.finetune import _batch

    labels = two_objects()
    raw = np.zeros(labels.shape, np.uint8)
    rng = np.random.default_rng(0)
    plain = _batch(PatchSampler([raw], labels.shape, labels=[labels]), None, NEAREST_OFFSETS, rng, 1)
    grown = _batch(PatchSampler([raw], labels.shape, labels=[labels]), None, NEAREST_OFFSETS, rng, 1,
                   boundary=1)
    x_plain, x_grown = plain[1][0, 2, 0, 0], grown[1][0, 2, 0, 0]
    assert x_plain.tolist() == [0, 1, 1, 0, 1, 1]  # one negative link across the id change
    assert x_grown.tolist() == [0, 1, 0, 0, 1, 1]  # both links into the band
    assert (grown[2][0, 2, 0, 0, 2:4] > 0).all()  # and both are in the loss

"""Local shape descriptors as auxiliary training targets: the descriptor matches lsd's formula,
has the values its definition gives on simple shapes, and a finetuning run that learns it keeps
the affinity contract (prediction, bundling and the card)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from napari_tokenunify.training.config import FinetuneConfig
from napari_tokenunify.training.finetune import finetune, training_loss
from napari_tokenunify.training.lsd import LSD_CHANNELS, local_shape_descriptors, lsd_targets

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _reference(labels: np.ndarray, sigma: float) -> np.ndarray:
    """lsd.train.local_shape_descriptor's computation (mode gaussian, downsample 1, voxel size 1),
    written out on the whole volume per label, as the reference for the cropped implementation."""
    coords = np.array(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in labels.shape), indexing="ij"))
    out = np.zeros((10,) + labels.shape)
    sig = (sigma,) * 3

    def agg(a):
        return gaussian_filter(a, sigma=sig, mode="constant", cval=0.0, truncate=3.0)

    for label in np.unique(labels):
        if label == 0:
            continue
        m = (labels == label).astype(np.float64)
        mc = coords * m
        count = agg(m)
        count[count == 0] = 1
        mean = np.array([agg(mc[d]) for d in range(3)]) / count
        offset = mean - coords
        outer = np.einsum("i...,j...->ij...", mc, mc).reshape((9,) + labels.shape)
        cov = np.array([agg(outer[d]) for d in (0, 4, 8, 1, 2, 5)]) / count
        cov -= np.einsum("i...,j...->ij...", mean, mean).reshape((9,) + labels.shape)[[0, 4, 8, 1, 2, 5]]
        var = cov[:3].copy()
        var[var < 1e-3] = 1e-3
        pearson = cov[3:].copy()
        pearson[0] /= np.sqrt(var[0] * var[1])
        pearson[1] /= np.sqrt(var[0] * var[2])
        pearson[2] /= np.sqrt(var[1] * var[2])
        variance = var / sigma**2  # lsd normalises the clipped variance
        desc = np.concatenate([offset, variance, pearson, count[None]])
        out += desc * m
    out[[0, 1, 2]] = out[[0, 1, 2]] / sigma * 0.5 + 0.5
    out[[6, 7, 8]] = out[[6, 7, 8]] * 0.5 + 0.5
    out[[0, 1, 2, 6, 7, 8]] *= labels != 0
    return np.clip(out, 0.0, 1.0)


def _blobs(shape=(20, 24, 28), seed=0) -> np.ndarray:
    from skimage.segmentation import watershed

    rng = np.random.default_rng(seed)
    markers = np.zeros(shape, dtype=np.int32)
    for k in range(1, 9):
        markers[tuple(rng.integers(0, s) for s in shape)] = k
    labels = watershed(np.zeros(shape), markers).astype(np.uint32)
    labels[:, :, 5] = 0  # a boundary plane of label 0
    return labels


def test_descriptor_matches_lsds_formula():
    labels = _blobs()
    ours = local_shape_descriptors(labels, 3.0, downsample=1)
    ref = _reference(labels, 3.0)
    assert ours.shape == (LSD_CHANNELS,) + labels.shape and ours.dtype == np.float32
    # the variances lsd clips to 1e-3 before normalising; where it differs is below that
    np.testing.assert_allclose(ours[[0, 1, 2, 6, 7, 8, 9]], ref[[0, 1, 2, 6, 7, 8, 9]], atol=1e-4)
    np.testing.assert_allclose(ours[3:6], ref[3:6], atol=1e-3 / 9 + 1e-4)
    assert (ours[:, labels == 0] == 0).all()  # label 0 gets no descriptor


def test_descriptor_values_on_simple_shapes():
    """A flat slab: at its centre the mean offset is zero (0.5), the in-plane variance large and
    the variance across it small; a diagonal rod is correlated along its direction."""
    labels = np.zeros((24, 40, 40), dtype=np.uint8)
    labels[11:13] = 1
    d = local_shape_descriptors(labels, 4.0, downsample=1)
    c = (11, 20, 20)
    assert d[0:3, 11, 20, 20] == pytest.approx([0.5 + 0.5 * 0.5 / 4, 0.5, 0.5], abs=1e-3)
    assert d[3, c[0], c[1], c[2]] < 0.05 < 0.5 < d[4, c[0], c[1], c[2]]
    assert d[4, c[0], c[1], c[2]] == pytest.approx(d[5, c[0], c[1], c[2]], abs=1e-4)
    rod = np.zeros((30, 30, 30), dtype=np.uint8)
    for i in range(30):
        rod[i, max(0, i - 1):i + 2, 14:17] = 1  # along z and y together
    r = local_shape_descriptors(rod, 4.0, downsample=1)
    assert r[6, 15, 15, 15] > 0.9  # zy correlated
    assert abs(r[7, 15, 15, 15] - 0.5) < 0.05  # zx not
    assert r[9].max() <= 1.0 and r[9, 15, 15, 15] < d[9, c[0], c[1], c[2]]  # a rod fills less


def test_downsampled_descriptor_is_close_and_targets_masked():
    labels = _blobs((24, 32, 32), seed=2)
    full = local_shape_descriptors(labels, 4.0, downsample=1)
    half = local_shape_descriptors(labels, 4.0, downsample=2)
    inside = labels != 0
    assert np.abs(full - half)[:, inside].mean() < 0.03
    assert (half[:, ~inside] == 0).all()
    mask = np.zeros(labels.shape, dtype=np.uint8)
    mask[:12] = 1
    desc, weight = lsd_targets(labels, 4.0, mask)
    assert weight.shape == desc.shape
    assert set(np.unique(weight)) <= {0.0, 1.0}
    assert (weight[:, 12:] == 0).all() and (weight[:, ~inside] == 0).all()
    assert weight[:, :12][:, inside[:12]].all()


def test_bad_descriptor_arguments_are_refused():
    with pytest.raises(ValueError, match="3D"):
        local_shape_descriptors(np.zeros((4, 4), dtype=np.uint8), 2.0)
    with pytest.raises(ValueError, match="positive"):
        local_shape_descriptors(np.zeros((4, 4, 4), dtype=np.uint8), 0.0)
    with pytest.raises(ValueError, match="lsd_sigma"):
        FinetuneConfig(lsd_sigma=-1)
    with pytest.raises(ValueError, match="lsd_weight"):
        FinetuneConfig(lsd_weight=float("nan"))


def test_training_loss_adds_the_weighted_descriptor_error():
    torch.manual_seed(0)
    pred = torch.rand(1, 13, 4, 5, 6)
    target = torch.rand(1, 13, 4, 5, 6)
    weight = torch.ones(1, 13, 4, 5, 6)
    affs_only = training_loss(pred[:, :3], target[:, :3], weight[:, :3], 3)
    assert training_loss(pred, target, weight, 3, lsd_weight=0.0) == pytest.approx(affs_only.item())
    mse = ((pred[:, 3:] - target[:, 3:]) ** 2).mean().item()
    assert training_loss(pred, target, weight, 3, lsd_weight=2.0).item() == pytest.approx(
        affs_only.item() + 2.0 * mse, rel=1e-5)
    weight[:, 3:] = 0  # a teacher's sample: no descriptor targets
    assert training_loss(pred, target, weight, 3, lsd_weight=2.0).item() == pytest.approx(affs_only.item())


def test_finetuning_with_descriptors_keeps_the_affinity_contract(tmp_path):
    """The network grows ten descriptor outputs after the start's three affinities (which carry
    over), learns them, records them in its card, and predicts and ships only affinities."""
    from napari_tokenunify.engine.predict import predict_affinities
    from napari_tokenunify.model import build_model, load_model
    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.training.finetune import keep_output_channels

    vol = make_synthetic_volume((16, 48, 48), seed=3)
    torch.manual_seed(0)
    start = build_model("tiny", out_channels=3)
    model = finetune(vol.image, vol.labels, init=start, steps=3, patch_shape=(16, 32, 32),
                     lsd_sigma=3.0, lsd_weight=1.0, self_distill=False, holdout=0.0,
                     out_dir=tmp_path / "run")
    assert model.out_channels == 3 + LSD_CHANNELS
    card = model.card
    assert card.out_channels == 13 and len(card.offsets) == 3
    assert card.training["objective"] == "affinity_bce_balanced+lsd_mse"
    assert card.training["lsd"]["sigma_voxels"] == 3.0 and card.training["config"]["lsd_sigma"] == 3.0
    saved = load_model(tmp_path / "run" / "model", device="cpu")
    assert saved.out_channels == 13
    from napari_tokenunify.model.card import describe_card

    assert any(line.startswith("  lsd: ") and "sigma_voxels" in line for line in describe_card(saved.card))
    affs = predict_affinities(vol.image, saved, device="cpu", dtype="float32")
    assert affs.shape == (3,) + vol.image.shape  # the descriptors never reach prediction
    cut = keep_output_channels(saved, 3)
    np.testing.assert_allclose(predict_affinities(vol.image, cut, device="cpu", dtype="float32"),
                               affs, atol=1e-5)


def test_cli_passes_the_descriptor_options():
    from napari_tokenunify.cli import build_parser
    from napari_tokenunify.cli.cmd_finetune import finetune_config

    args = build_parser().parse_args(["finetune", "--raw", "r.tif", "--labels", "l.tif", "--out", "o",
                              "--lsd-sigma", "5", "--lsd-weight", "2"])
    cfg = finetune_config(args)
    assert cfg.lsd_sigma == 5.0 and cfg.lsd_weight == 2.0
    assert FinetuneConfig().lsd_sigma == 0.0  # off by default


def test_extra_outputs_for_a_unet_are_refused_not_swapped_for_another_network():
    """Growing outputs is for EMmamba: a U-Net start must not silently become a fresh EMmamba."""
    from napari_tokenunify.affinities import NEAREST_OFFSETS
    from napari_tokenunify.model.unet import ResidualUNet3D
    from napari_tokenunify.training.finetune import prepare_model

    net = ResidualUNet3D(out_channels=3)
    with pytest.raises(ValueError, match="EMmamba models only"):
        prepare_model(net, 3 + LSD_CHANNELS, "tiny", [tuple(o) for o in NEAREST_OFFSETS])
    same, note = prepare_model(net, 3, "tiny", [tuple(o) for o in NEAREST_OFFSETS])
    assert type(same).__name__ == "ResidualUNet3D" and note["copied"] == "all"

"""Widening a trained EMmamba (Net2WiderNet) and storing weights in 16 bits."""

from __future__ import annotations

import pytest
import torch

from napari_tokenunify.model import build_model, load_model, save_model, weights_sha256
from napari_tokenunify.model.widen import widen

pytestmark = pytest.mark.usefixtures("single_torch_thread")
WIDE = ((8, 32, 64, 128), 256)  # every stage but the full-resolution one doubled


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():  # a trained network's weights are not the initial ones: perturb them
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def x():
    return torch.rand(1, 1, 16, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("widths", [WIDE, ((16, 32, 64, 128), 256), ((8, 16, 32, 128), 256)])
def test_widening_keeps_the_function(net, x, widths):
    wide = widen(net, *widths, noise=0.0).eval()
    assert wide.config.feature_sizes == widths[0] and wide.config.hidden_size == widths[1]
    assert wide.num_parameters() > 2 * net.num_parameters()
    assert wide.card.preset == "custom" and wide.card.config["feature_sizes"] == list(widths[0])
    assert wide.card.normalization == net.card.normalization
    with torch.no_grad():
        y, yw = net(x), wide(x)
    assert yw.shape == y.shape
    assert torch.allclose(yw, y, atol=2e-5), float((yw - y).abs().max())


def test_noise_tells_the_copies_apart_and_stays_close(net, x):
    wide = widen(net, *WIDE, noise=0.01, seed=3).eval()
    w = wide.state_dict()["encoder2.layer.conv1.conv.weight"]  # (32, 8, 1, 5, 5): copies in halves
    assert not torch.equal(w[:16], w[16:])
    with torch.no_grad():
        diff = (wide(x) - net(x)).abs()
    assert 0 < float(diff.mean()) < 0.01
    again = widen(net, *WIDE, noise=0.01, seed=3)
    assert weights_sha256(again) == weights_sha256(wide)  # the same seed gives the same start


@pytest.mark.parametrize(
    "widths, match",
    [
        (((8, 16, 48, 64), 128), "stay or double"),
        (((8, 16, 64, 64), 128), "projection"),  # 32 -> 64 would become 64 -> 64: the skip changes
    ],
)
def test_widths_that_cannot_keep_the_function_are_refused(net, widths, match):
    with pytest.raises(ValueError, match=match):
        widen(net, *widths)


def test_half_precision_files_load_as_float32_with_the_same_hash(net, x, tmp_path):
    from safetensors.torch import load_file

    save_model(net, tmp_path / "full")
    save_model(net, tmp_path / "half", half=True)
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.55 * full
    stored = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    loaded = load_model(tmp_path / "half", device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert weights_sha256(loaded) == weights_sha256(stored)  # `tokenunify info` hashes the file
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=5e-3)


def test_a_finetuned_wide_model_says_it_is_no_preset_and_loads(net, tmp_path):
    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.training.finetune import finetune

    vol = make_synthetic_volume((16, 48, 48), seed=1)
    wide = widen(net, *WIDE)
    out = finetune(vol.image, vol.labels, init=wide, steps=1, patch_shape=(16, 32, 32), augment=False,
                   out_dir=tmp_path / "ft")
    assert out.card.preset == "custom"  # not "tiny", the preset finetune() was asked for
    again = load_model(tmp_path / "ft" / "model", device="cpu")
    assert again.config.feature_sizes == WIDE[0]
    tiny = finetune(vol.image, vol.labels, init=net, steps=1, patch_shape=(16, 32, 32), augment=False)
    assert tiny.card.preset == "tiny"

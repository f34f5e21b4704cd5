"""EMMamba network: presets, forward contract, shapes, parameter counts."""

from __future__ import annotations

import pytest
import torch

from conftest import seeded_tiny
from napari_tokenunify.model import PRESETS, EMMamba, build_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _n_params_meta(preset: str) -> int:
    with torch.device("meta"):
        model = build_model(preset)
    return sum(p.numel() for p in model.parameters())


def test_base_has_28_3m_parameters():
    assert abs(_n_params_meta("base") - 28.3e6) <= 0.1e6


@pytest.mark.parametrize(
    "preset,target,tol",
    [("100m", 100e6, 0.15), ("200m", 200e6, 0.15), ("500m", 500e6, 0.15), ("1b", 1e9, 0.15)],
)
def test_scale_presets_have_their_size(preset, target, tol):
    n = _n_params_meta(preset)
    assert abs(n - target) / target < tol, n


def test_tiny_is_small():
    n = _n_params_meta("tiny")
    assert n < 5e6  # < 20 MB of float32 on disk


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_forward_shape_range_and_finite(preset):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    x = torch.rand(1, 1, 16, 32, 48)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 16, 32, 48)
    assert torch.isfinite(y).all()
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize("preset", ["100m", "200m", "500m", "1b"])
def test_scale_presets_build_and_trace_shapes(preset):
    # meta tensors: runs every layer's shape logic without allocating memory
    with torch.device("meta"):
        model = build_model(preset, out_channels=2)
        y = model(torch.empty(1, 1, 16, 32, 32))
    assert tuple(y.shape) == (1, 2, 16, 32, 32)


def test_out_channels_configurable():
    model = build_model("tiny", out_channels=12).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 1, 16, 16, 32))
    assert y.shape == (2, 12, 16, 16, 32)
    assert model.card.out_channels == 12


def test_valid_shape_and_divisor():
    assert EMMamba.input_divisor == 16
    model = build_model("tiny")
    assert model.valid_shape((1, 17, 160)) == (16, 32, 160)
    assert model.valid_shape((32, 33, 64)) == (32, 48, 64)
    assert model.valid_shape((5, 16, 16)) == (16, 16, 32)  # deepest stage needs > 1 voxel


def test_bad_input_is_refused_with_advice():
    model = build_model("tiny")
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.rand(1, 1, 16, 30, 32))
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.rand(1, 2, 16, 32, 32))


def test_unknown_preset_and_option():
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("huge")
    with pytest.raises(ValueError, match="unknown model option"):
        build_model("tiny", widths=3)


def test_backward_gives_finite_grads_everywhere():
    torch.manual_seed(0)
    model = build_model("tiny")
    y = model(torch.rand(1, 1, 16, 32, 32))
    y.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_presets_listed():
    assert set(PRESETS) >= {"tiny", "base", "100m", "200m", "500m", "1b"}


def test_torch_scan_and_reference_scan_give_the_same_network_output(monkeypatch):
    # In float64 the two scans are the same computation: any difference is an algorithm error.
    torch.manual_seed(0)
    model = build_model("tiny").eval().double()
    x = torch.rand(1, 1, 16, 16, 32, dtype=torch.float64)  # stage tokens 1024, 128, 16, 2: not multiples of 5
    with torch.no_grad():
        monkeypatch.setenv("TOKENUNIFY_SCAN", "ref")
        ref = model(x)
        monkeypatch.setenv("TOKENUNIFY_SCAN", "torch")
        fast = model(x)
    assert float((fast - ref).abs().max()) < 1e-12


def test_torch_scan_network_output_in_float32_is_as_accurate_as_the_reference_scan(monkeypatch):
    # float32 rounding through the tiny network alone is up to ~7e-5 (and depends on the thread
    # count), so the chunked scan is judged against the float64 answer, next to the reference.
    model, x = seeded_tiny((1, 1, 16, 16, 32))
    with torch.no_grad():
        monkeypatch.setenv("TOKENUNIFY_SCAN", "ref")
        truth = build_model("tiny").eval().double()
        truth.load_state_dict(model.state_dict())
        truth = truth(x.double())
        ref_err = float((model(x).double() - truth).abs().max())
        monkeypatch.setenv("TOKENUNIFY_SCAN", "torch")
        fast_err = float((model(x).double() - truth).abs().max())
    assert fast_err < 2e-4
    assert fast_err < 5 * ref_err + 1e-5


def test_autocast_bfloat16_forward_is_close_to_float32():
    # what the engine does on GPUs (there with float16/bfloat16); the scan itself runs in float32
    model, x = seeded_tiny()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    assert float((low.float() - ref).abs().max()) < 0.05

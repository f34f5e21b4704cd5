"""TokenUnify .pth compatibility: key layout, safe loading, wrappings, mismatch reports."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from napari_tokenunify.model import (
    ModelFileError,
    build_model,
    compare_state,
    infer_config,
    load_model,
    read_pth,
    save_model,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FIXTURE = Path(__file__).parent / "data" / "segmamba_base_keys.json"


def _reference_layout() -> dict[str, list[int]]:
    return json.loads(FIXTURE.read_text())["keys"]


def test_base_state_dict_matches_reference_layout_exactly():
    with torch.device("meta"):
        model = build_model("base")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = _reference_layout()
    assert sorted(set(ref) - set(ours)) == []
    assert sorted(set(ours) - set(ref)) == []
    wrong = {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]}
    assert wrong == {}
    assert json.loads(FIXTURE.read_text())["n_parameters"] == sum(math.prod(s) for s in ref.values())


def _random_reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g) * 0.02 for k, s in _reference_layout().items()}


def test_reference_base_checkpoint_loads_strictly_and_is_recognised(tmp_path):
    state = _random_reference_state()
    ckpt = {
        "model": {f"module.{k}": v for k, v in state.items()},
        "epoch": 7,
        "args": argparse.Namespace(lr=1e-4, model_type="segmamba", crop=[16, 160, 160]),
    }
    torch.save(ckpt, tmp_path / "segmamba.pth")
    model = load_model(tmp_path / "segmamba.pth", device="cpu")
    assert model.card.preset == "base"
    assert model.card.training["epoch"] == 7
    assert model.card.training["args"]["model_type"] == "segmamba"
    sd = model.state_dict()
    assert all(torch.equal(sd[k], state[k]) for k in state)


def _tiny_checkpoint_variants(sd):
    opt_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0}
    args = argparse.Namespace(lr=1e-4, name="tiny", path=Path("/data/x"))
    return {
        "bare": sd,
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "full": {"model": sd, "optimizer": opt_state, "epoch": 3, "scaler": scaler, "args": args},
        "full_module": {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": opt_state, "epoch": 1, "args": args},
        "state_dict_key": {"state_dict": sd, "epoch": 2},
    }


@pytest.mark.parametrize("variant", ["bare", "module_prefix", "full", "full_module", "state_dict_key"])
def test_pth_to_model_to_safetensors_round_trip(tmp_path, variant):
    torch.manual_seed(1)
    source = build_model("tiny").eval()
    obj = _tiny_checkpoint_variants(source.state_dict())[variant]
    torch.save(obj, tmp_path / "ckpt.pth")
    from_pth = load_model(tmp_path / "ckpt.pth", device="cpu")
    assert from_pth.card.preset == "tiny"
    save_model(from_pth, tmp_path / "converted")
    again = load_model(tmp_path / "converted", device="cpu")
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        ref = source(x)
        assert torch.equal(ref, from_pth(x))
        assert torch.equal(ref, again(x))


class Payload:
    """Any class that is not on the allow-list."""

    def __init__(self):
        self.value = 1


def test_pickle_with_unexpected_object_is_refused(tmp_path):
    sd = build_model("tiny").state_dict()
    torch.save({"model": sd, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ModelFileError, match="not safe to load"):
        load_model(tmp_path / "evil.pth")


def test_pickle_with_code_execution_is_refused(tmp_path):
    import os
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / "exploit.pth", "wb") as fh:
        pickle.dump({"model": Exploit()}, fh)
    with pytest.raises(ModelFileError):
        read_pth(tmp_path / "exploit.pth")
    assert not (tmp_path / "pwned").exists()


def test_corrupt_pth_is_refused(tmp_path):
    sd = build_model("tiny").state_dict()
    torch.save(sd, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(tmp_path / "cut.pth")
    (tmp_path / "noise.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "noise.pth")


def test_no_state_dict_inside_is_explained(tmp_path):
    torch.save({"epoch": 3, "notes": "nothing"}, tmp_path / "empty.pth")
    with pytest.raises(ModelFileError, match="has no state_dict"):
        load_model(tmp_path / "empty.pth")


def test_wrong_shape_reports_keys_and_fitting_preset(tmp_path):
    base_state = _random_reference_state()
    torch.save(base_state, tmp_path / "base.pth")
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "base.pth", preset="tiny")
    msg = str(err.value)
    assert "wrong shapes (" in msg and "in file vs" in msg
    assert "unexpected keys (" in msg  # base has two Mamba layers per stage, tiny one
    assert "fits preset 'base'" in msg
    report = compare_state(base_state, build_model("tiny"))
    shapes = {k: (a, b) for k, a, b in report.wrong_shape}
    assert shapes["vit.downsample_layers.0.0.weight"] == ((32, 1, 1, 7, 7), (8, 1, 1, 7, 7))
    assert "vit.stages.0.1.mamba.A_s_log" in report.unexpected


def test_missing_and_unexpected_keys_are_listed():
    model = build_model("tiny")
    sd = dict(model.state_dict())
    sd.pop("out.conv.conv.bias")
    sd["decoder9.weight"] = torch.zeros(1)
    report = compare_state(sd, model)
    assert report.missing == ["out.conv.conv.bias"]
    assert report.unexpected == ["decoder9.weight"]
    assert report.fitting_preset == "tiny"
    assert "missing keys (1): out.conv.conv.bias" in report.describe()


def test_infer_config_from_long_range_checkpoint():
    model = build_model("tiny", out_channels=12)
    cfg = infer_config(model.state_dict())
    assert cfg.out_channels == 12 and cfg.feature_sizes == model.config.feature_sizes
    assert cfg.depths == model.config.depths and cfg.hidden_size == model.config.hidden_size


def test_not_an_emmamba_state_dict(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match="not an EMmamba"):
        load_model(tmp_path / "other.pth")

"""Our model files: safetensors + card.json round trips, bundled lookup, errors."""

from __future__ import annotations

import json

import pytest
import torch

from napari_tokenunify.model import ModelCard, ModelFileError, build_model, load_model, save_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_save_load_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", out_channels=4).eval()
    model.card.voxel_size_nm = [40.0, 8.0, 8.0]
    model.card.training = {"steps": 3}
    save_model(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["preset"] == "tiny" and card["out_channels"] == 4
    loaded = load_model(tmp_path / "m", device="cpu")
    assert not loaded.training
    assert loaded.card.voxel_size_nm == [40.0, 8.0, 8.0]
    assert loaded.card.training == {"steps": 3}
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_safetensors_file_with_card_beside(tmp_path):
    model = build_model("tiny").eval()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path / "model.safetensors", device="cpu")
    assert loaded.card.preset == "tiny"


def test_card_json_round_trip():
    card = ModelCard(preset="base", offsets=[(1, 0, 0)], out_channels=1, metrics={"voi": 1.2})
    again = ModelCard.from_json(card.to_json())
    assert again == card
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelCard.from_json("{oops")


def test_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    import napari_tokenunify.model.bundled as bundled

    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="bundled model 'default' is not installed"):
        load_model("default")


def test_bundled_model_found_by_name(monkeypatch, tmp_path):
    import napari_tokenunify.model.bundled as bundled

    save_model(build_model("tiny"), tmp_path / "default")
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path)
    assert bundled.bundled_names() == ["default"]
    assert load_model("default", device="cpu").card.preset == "tiny"


def test_corrupt_safetensors_refused(tmp_path):
    save_model(build_model("tiny"), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_model(tmp_path)


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope")
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(ModelFileError, match="not a model"):
        load_model(bad)

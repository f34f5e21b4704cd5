"""``tokenunify convert`` and the model line of ``tokenunify info``."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from napari_tokenunify.cli import main
from napari_tokenunify.model import build_model, load_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_convert_pth_to_model_folder(tmp_path, capsys):
    torch.manual_seed(0)
    source = build_model("tiny").eval()
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 5,
                "args": argparse.Namespace(lr=1e-3)}, tmp_path / "in.pth")
    rc = main(["convert", str(tmp_path / "in.pth"), str(tmp_path / "out"), "--voxel-size", "40", "8", "8"])
    assert rc == 0
    assert "preset tiny" in capsys.readouterr().out
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["voxel_size_nm"] == [40.0, 8.0, 8.0] and card["training"]["epoch"] == 5
    model = load_model(tmp_path / "out", device="cpu")
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    # refuses to overwrite without --overwrite
    rc = main(["convert", str(tmp_path / "in.pth"), str(tmp_path / "out")])
    assert rc == 1
    assert "--overwrite" in capsys.readouterr().err


def test_convert_reports_mismatch(tmp_path, capsys):
    torch.save(build_model("tiny").state_dict(), tmp_path / "tiny.pth")
    rc = main(["convert", str(tmp_path / "tiny.pth"), str(tmp_path / "out"), "--preset", "base"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "wrong shapes" in err and "fits preset 'tiny'" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_info_reports_kernel_status(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "mamba-ssm kernels: not available" in out or "mamba-ssm kernels: available" in out
    assert "model package not built yet" not in out

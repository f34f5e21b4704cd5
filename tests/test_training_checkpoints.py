"""Atomic checkpoints, the loss log/plot and the output-folder guard."""

from __future__ import annotations

import pytest
import torch

from napari_tokenunify.training import checkpoints as ck
from napari_tokenunify.training.logs import LossLog, plot_losses, read_log


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "c" / "last.pt"
    ck.save_checkpoint(path, {"step": 3, "w": torch.ones(2)})
    state = ck.load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, {"step": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="delete it to start over"):
        ck.load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        ck.load_checkpoint(tmp_path / "missing.pt")


def test_guard_refuses_output_at_init_model(tmp_path):
    init = tmp_path / "init_model"
    init.mkdir()
    (init / "model.safetensors").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="overwrite"):
        ck.guard_output(init, init)
    with pytest.raises(ck.CheckpointError, match="overwrite"):
        ck.guard_output(init, init / "model.safetensors")
    (tmp_path / "run" / "model").mkdir(parents=True)
    with pytest.raises(ck.CheckpointError):
        ck.guard_output(tmp_path / "run", tmp_path / "run" / "model")  # out/model would be the init model
    ck.guard_output(tmp_path / "elsewhere", init)  # fine


def test_loss_log_and_plot(tmp_path):
    log = LossLog(tmp_path / "loss.csv")
    for step in range(1, 31):
        log.write(step, "random" if step % 2 else "next", 1.0 / step, 1e-3, step * 0.1)
    log.truncate_after(20)
    rows = read_log(tmp_path / "loss.csv")
    assert len(rows) == 20 and rows[-1]["step"] == "20"
    LossLog(tmp_path / "loss.csv", resume=True).write(21, "random", 0.05, 1e-3, 2.1)
    assert len(read_log(tmp_path / "loss.csv")) == 21
    png = plot_losses(tmp_path / "loss.csv", tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

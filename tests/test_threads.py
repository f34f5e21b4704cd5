"""The process's CPU thread setting: cores counted from the affinity mask and cgroup quota,
``--threads`` / ``TOKENUNIFY_THREADS`` validated and followed by prediction, passive OpenMP waits."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from napari_tokenunify import threads


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("TOKENUNIFY_THREADS", raising=False)
    yield
    threads.reset_threads()
    torch.set_num_threads(before)


def test_available_cores_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    empty = tmp_path / "none"
    empty.mkdir()
    assert threads.available_cores(empty) == 4
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: one whole core
    assert threads.available_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no quota
    assert threads.available_cores(tmp_path) == 4
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.available_cores(v1) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert threads.available_cores(empty) == 1


@pytest.mark.parametrize("bad, says", [("0", "1 or more"), ("-2", "1 or more"),
                                       ("two", "whole number"), ("1.5", "whole number")])
def test_bad_thread_counts_say_what_to_give(bad, says):
    with pytest.raises(ValueError, match=says):
        threads.parse_threads(bad, "--threads")


def test_more_threads_than_cores_are_clamped_with_a_warning(caplog):
    cores = threads.available_cores()
    with caplog.at_level(logging.WARNING, logger="napari_tokenunify.threads"):
        assert threads.parse_threads(cores + 5) == cores
    assert f"more than the {cores} cores" in caplog.text


def test_precedence_set_threads_then_env_then_omp_then_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.requested_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.requested_threads() == threads.available_cores()
    monkeypatch.setenv("TOKENUNIFY_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.requested_threads() == 1 and threads.explicit_threads() == 1
    monkeypatch.delenv("TOKENUNIFY_THREADS")
    assert threads.explicit_threads() is None
    assert threads.set_threads("1") == 1 and torch.get_num_threads() == 1
    assert threads.requested_threads() == 1  # over OMP_NUM_THREADS=2


def test_prediction_keeps_the_chosen_thread_count(monkeypatch):
    """The tile predictor used to reset torch to every core, overriding ``--threads``."""
    from napari_tokenunify.engine.predict import TilePredictor
    from napari_tokenunify.model import build_model

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    threads.set_threads(1)
    TilePredictor(build_model("tiny", out_channels=3), device="cpu")
    assert torch.get_num_threads() == 1


def test_cli_threads_option(capsys):
    from napari_tokenunify.cli import main

    assert main(["info", "--threads", "1"]) == 0
    assert "torch threads: 1" in capsys.readouterr().out
    assert main(["info", "--threads", "0"]) == 1
    err = capsys.readouterr().err
    assert "--threads must be 1 or more" in err and "Traceback" not in err
    assert main(["predict", "in.h5", "out.zarr", "--threads", "x"]) == 1
    assert "whole number" in capsys.readouterr().err


def _policy_after_import(env: dict) -> str:
    code = ("import os, napari_tokenunify, torch; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_openmp_threads_wait_briefly_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    expected = f"None {threads.SPIN_COUNT}" if sys.platform.startswith("linux") else "PASSIVE None"
    assert _policy_after_import(env) == expected
    assert _policy_after_import({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE None"
    assert _policy_after_import({**env, "GOMP_SPINCOUNT": "50"}) == "None 50"


def test_spinning_waits(monkeypatch):
    for policy, count, spins in (("PASSIVE", None, False), ("ACTIVE", "10", True), (None, "2000", False),
                                 (None, "300000", True), (None, None, True)):
        for name, value in (("OMP_WAIT_POLICY", policy), ("GOMP_SPINCOUNT", count)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert threads.spinning_waits() is spins, (policy, count)

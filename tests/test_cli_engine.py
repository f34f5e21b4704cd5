"""The engine sub-commands: predict, segment, evaluate, run, demo — outputs, bad input, Ctrl-C."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from napari_tokenunify.cli import main


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from napari_tokenunify.io import write_volume
    from napari_tokenunify.model import build_model, save_model
    from napari_tokenunify.synthetic import make_synthetic_volume

    root = tmp_path_factory.mktemp("cli")
    vol = make_synthetic_volume((16, 40, 48), seed=4)
    write_volume(root / "image.tif", vol.image, kind="image", voxel_size=vol.voxel_size)
    write_volume(root / "gt.h5", vol.labels, kind="labels")
    torch.manual_seed(0)
    save_model(build_model("tiny"), root / "model")
    return root, vol


def _predict(root, out, *extra):
    return main(["predict", str(root / "image.tif"), str(out), "--model", str(root / "model"),
                 "--tile", "16,32,32", "--device", "cpu", "--quiet", *extra])


def test_predict_segment_evaluate(files, tmp_path, capsys):
    from napari_tokenunify.io import open_volume

    root, vol = files
    assert _predict(root, tmp_path / "affs.zarr") == 0
    assert "written to" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "affs.zarr"), str(tmp_path / "seg.tif"), "--quiet"]) == 0
    assert "fragments" in capsys.readouterr().out
    seg = open_volume(tmp_path / "seg.tif").data.compute()
    assert seg.shape == vol.image.shape and seg.max() >= 1
    assert main(["evaluate", str(tmp_path / "seg.tif"), str(root / "gt.h5"), "--json"]) == 0
    import json

    metrics = json.loads(capsys.readouterr().out)
    from napari_tokenunify.engine.evaluate import evaluate

    assert metrics["voi_split"] == pytest.approx(evaluate(seg, vol.labels)["voi_split"])
    # the image plus --affinities, blockwise, into zarr
    assert main(["segment", str(root / "image.tif"), str(tmp_path / "seg.zarr"), "--affinities",
                 str(tmp_path / "affs.zarr"), "--blockwise", "--block", "8,24,24", "--context",
                 "2,6,6", "--quiet"]) == 0
    assert main(["evaluate", str(tmp_path / "seg.zarr"), str(root / "gt.h5")]) == 0
    assert "VOI split" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "affs.zarr"), str(tmp_path / "mutex.tif"), "--method",
                 "mutex", "--quiet"]) == 0
    assert "mutex_watershed" in capsys.readouterr().out
    assert open_volume(tmp_path / "mutex.tif").data.max().compute() >= 1


def test_predict_to_other_formats_and_roi(files, tmp_path):
    from napari_tokenunify.io import open_volume

    root, vol = files
    assert _predict(root, tmp_path / "affs.h5", "--roi", "0:8,0:32,8:40", "--dtype", "uint8") == 0
    sub = open_volume(tmp_path / "affs.h5", channel=1)
    assert sub.shape == (8, 32, 32) and sub.dtype == np.uint8
    assert not (tmp_path / "affs.h5.partial.zarr").exists()


def test_run_and_demo(files, tmp_path, capsys):
    root, vol = files
    out = tmp_path / "labels.tif"
    assert main(["run", str(root / "image.tif"), str(out), "--model", str(root / "model"),
                 "--tile", "16,32,32", "--quiet", "--min-size", "5"]) == 0
    text = capsys.readouterr().out
    assert out.exists() and (tmp_path / "labels_affinities.zarr").exists() and "labels" in text
    # a second run reuses the affinities only when they come from the same model and flips
    again = ["run", str(root / "image.tif"), str(out), "--model", str(root / "model"), "--tile",
             "16,32,32", "--quiet", "--overwrite"]
    assert main(again[:-1] + ["--affinities-out", str(tmp_path / "labels_affinities.zarr")]) == 1
    assert "--overwrite" in capsys.readouterr().err  # the labels exist: refused as before
    out2 = tmp_path / "labels2.tif"
    same = ["run", str(root / "image.tif"), str(out2), "--model", str(root / "model"), "--tile",
            "16,32,32", "--quiet", "--affinities-out", str(tmp_path / "labels_affinities.zarr")]
    assert main(same) == 0 and "reusing the affinities" in capsys.readouterr().err
    assert main(same[:2] + [str(tmp_path / "labels3.tif")] + same[3:] + ["--tta", "yx"]) == 1
    assert "test-time flip setting (none, not yx)" in capsys.readouterr().err
    assert main(same[:2] + [str(tmp_path / "labels4.tif"), "--model", "unet"] + same[5:]) == 1
    assert "another model" in capsys.readouterr().err
    assert not (tmp_path / "labels3.tif").exists() and not (tmp_path / "labels4.tif").exists()
    assert main(["demo", str(tmp_path / "demo"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "VOI split" in captured.out and str(tmp_path / "demo" / "labels.zarr") in captured.out
    assert "random weights" in captured.err or "model: default" in captured.out
    assert main(["demo", str(tmp_path / "demo"), "--quiet"]) == 1  # exists: refused
    assert "--overwrite" in capsys.readouterr().err


def test_bad_inputs_get_clear_messages(files, tmp_path, capsys):
    root, _ = files
    (tmp_path / "taken.zarr").mkdir()
    assert _predict(root, tmp_path / "taken.zarr") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _predict(root, "") == 1
    assert "output path is empty" in capsys.readouterr().err
    assert main(["segment", str(root / "image.tif"), str(tmp_path / "s.tif")]) == 1
    assert "--affinities" in capsys.readouterr().err
    assert _predict(root, tmp_path / "a.zarr", "--roi", "0:99,0:4,0:4") == 1
    assert "outside the volume" in capsys.readouterr().err
    # affinities of another shape than the image
    import zarr

    wrong = zarr.open_array(str(tmp_path / "wrong.zarr"), mode="w", shape=(3, 4, 4, 4), dtype="f4")
    wrong[...] = 0.5
    assert main(["segment", str(root / "image.tif"), str(tmp_path / "s.tif"), "--affinities",
                 str(tmp_path / "wrong.zarr")]) == 1
    assert "cover (4, 4, 4)" in capsys.readouterr().err
    two = zarr.open_array(str(tmp_path / "two.zarr"), mode="w", shape=(2, 4, 4, 4), dtype="f4")
    two[...] = 0.5
    assert main(["segment", str(tmp_path / "two.zarr"), str(tmp_path / "s.tif")]) == 1
    assert "channels" in capsys.readouterr().err
    assert main(["evaluate", str(root / "image.tif"), str(tmp_path / "two.zarr")]) == 1


def _ctrl_c_after(monkeypatch, n: int):
    """Make the CLI's progress bar press Ctrl-C (a real SIGINT to this process) at its n-th
    report; returns the original ``__call__`` to put back."""
    from napari_tokenunify.cli import engine_common

    calls = {"n": 0}
    original = engine_common.TqdmProgress.__call__

    def interrupt(self, p):
        original(self, p)
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(engine_common.TqdmProgress, "__call__", interrupt)
    return original


def test_ctrl_c_cancels_cleanly_and_the_next_run_resumes(files, tmp_path, monkeypatch, capsys):
    from napari_tokenunify.cli import engine_common

    root, _ = files
    assert _predict(root, tmp_path / "ref.zarr") == 0
    original = _ctrl_c_after(monkeypatch, 2)
    assert _predict(root, tmp_path / "affs.zarr") == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    import zarr

    done = np.asarray(zarr.open_group(str(tmp_path / "affs.zarr"), mode="r")["done"][...])
    assert 0 < done.sum() < done.size
    monkeypatch.setattr(engine_common.TqdmProgress, "__call__", original)
    assert _predict(root, tmp_path / "affs.zarr") == 0
    a = zarr.open_group(str(tmp_path / "affs.zarr"), mode="r")["affinities"][...]
    b = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["affinities"][...]
    assert np.array_equal(a, b)


def test_ctrl_c_in_blockwise_segment_keeps_blocks_and_the_next_run_resumes(files, tmp_path, monkeypatch,
                                                                           capsys):
    import zarr

    from napari_tokenunify.cli import engine_common

    root, _ = files
    assert _predict(root, tmp_path / "affs.zarr", "--dtype", "float32") == 0
    seg = ["segment", str(tmp_path / "affs.zarr"), "--blockwise", "--block", "8,24,24",
           "--context", "2,6,6", "--threshold", "0.5"]
    assert main([*seg[:2], str(tmp_path / "ref.zarr"), *seg[2:]]) == 0
    original = _ctrl_c_after(monkeypatch, 3)
    out = str(tmp_path / "seg.zarr")
    assert main([*seg[:2], out, *seg[2:]]) == 130
    assert "finished blocks are kept in" in capsys.readouterr().err
    counts = np.asarray(zarr.open_group(out, mode="r")["fragment_counts"][...])
    assert 0 < (counts >= 0).sum() < counts.size
    monkeypatch.setattr(engine_common.TqdmProgress, "__call__", original)
    # another threshold does not silently mix with the kept blocks
    assert main([*seg[:2], out, *seg[2:-1], "0.3"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert main([*seg[:2], out, *seg[2:]]) == 0
    a = zarr.open_group(out, mode="r")["labels"][...]
    b = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["labels"][...]
    assert np.array_equal(a, b)
    assert main([*seg[:2], out, *seg[2:]]) == 1  # complete now: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_predict_and_segment_on_a_local_cluster(files, tmp_path, capsys):
    import zarr

    root, _ = files
    assert _predict(root, tmp_path / "ref.zarr", "--dtype", "float32") == 0
    assert _predict(root, tmp_path / "dist.zarr", "--dtype", "float32", "--workers", "1") == 0
    a = zarr.open_group(str(tmp_path / "dist.zarr"), mode="r")["affinities"][...]
    b = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["affinities"][...]
    assert np.allclose(a, b, atol=1e-5)
    assert main(["segment", str(tmp_path / "dist.zarr"), str(tmp_path / "seg.zarr"), "--workers",
                 "1", "--block", "8,24,24", "--context", "2,6,6", "--quiet"]) == 0
    assert "blockwise" in capsys.readouterr().out


def test_large_volumes_are_segmented_blockwise_by_themselves(files, tmp_path, monkeypatch, capsys):
    from napari_tokenunify.cli import cmd_segment

    root, _ = files
    assert _predict(root, tmp_path / "affs.zarr") == 0
    monkeypatch.setattr(cmd_segment, "AUTO_BLOCKWISE_VOXELS", 1000)
    assert main(["segment", str(tmp_path / "affs.zarr"), str(tmp_path / "s.tif"), "--quiet",
                 "--block", "8,24,24", "--context", "2,6,6"]) == 0
    captured = capsys.readouterr()
    assert "segmenting blockwise" in captured.err and "blockwise" in captured.out
    assert main(["segment", str(tmp_path / "affs.zarr"), str(tmp_path / "s2.tif"),
                 "--min-size", "5"]) == 1
    assert "too many to segment in memory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_10nm(files):
    """The tiny model of ``files`` with a card saying it was trained at 10 nm isotropic."""
    from napari_tokenunify.model import load_model, save_model

    root, _ = files
    model = load_model(str(root / "model"))
    model.card.voxel_size_nm = [10.0, 10.0, 10.0]
    return save_model(model, root / "model-10nm")


def test_predict_and_run_resample_to_the_model_voxel_size(files, model_10nm, tmp_path, capsys):
    import zarr

    root, vol = files
    base = ["--model", str(model_10nm), "--tile", "16,32,32", "--device", "cpu", "--quiet"]
    image = str(root / "image.tif")
    assert main(["predict", image, str(tmp_path / "a.zarr"), "--voxel-size", "20,20,20", *base]) == 0
    captured = capsys.readouterr()
    assert "voxel size: the data's voxel size (20.0, 20.0, 20.0) nm differs" in captured.err
    assert "--no-rescale" in captured.err and f"affinities (3, {vol.image.shape[0]}" in captured.out
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert group["affinities"].shape == (3, *vol.image.shape)
    assert group.attrs["rescale"]["factors"] == [2.0, 2.0, 2.0]
    assert group.attrs["rescale"]["model_shape"] == [32, 80, 96]
    # --no-rescale: the data's grid, no record, the mismatch warning as before
    with pytest.warns(UserWarning, match="differs from the model's"):
        assert main(["predict", image, str(tmp_path / "b.zarr"), "--voxel-size", "20,20,20",
                     "--no-rescale", *base]) == 0
    assert "voxel size:" not in capsys.readouterr().err
    assert "rescale" not in zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs
    # the file's own voxel size (10 nm) matches the card: nothing said, nothing resampled
    assert main(["predict", image, str(tmp_path / "c.zarr"), *base]) == 0
    assert "voxel size:" not in capsys.readouterr().err
    assert "rescale" not in zarr.open_group(str(tmp_path / "c.zarr"), mode="r").attrs
    # run: segments on the data's grid; reusing the affinities with --no-rescale is refused
    out = tmp_path / "labels.tif"
    assert main(["run", image, str(out), "--voxel-size", "10,15,15", *base]) == 0
    captured = capsys.readouterr()
    assert "voxel size:" in captured.err and "labels (16, 40, 48)" in captured.out
    from napari_tokenunify.io import open_volume

    assert open_volume(out).shape == vol.image.shape
    assert main(["run", image, str(tmp_path / "l2.tif"), "--affinities-out",
                 str(tmp_path / "labels_affinities.zarr"), "--voxel-size", "10,15,15",
                 "--no-rescale", *base]) == 1
    assert ("voxel size handling (they were resampled by (1.0, 1.5, 1.5), this run's would be "
            "not resampled)") in capsys.readouterr().err


def test_bad_voxel_sizes_are_refused_with_what_to_pass(files, model_10nm, tmp_path, capsys):
    from napari_tokenunify.io import write_volume

    root, vol = files
    for bad in ("0,4,4", "-40,4,4", "nan,4,4", "40,inf,4", "20000,4,4"):
        with pytest.raises(SystemExit) as exit_:
            _predict(root, tmp_path / "x.zarr", f"--voxel-size={bad}")
        assert exit_.value.code != 0
        err = capsys.readouterr().err
        assert "--voxel-size" in err and "pass the data's voxel size" in err
    assert not (tmp_path / "x.zarr").exists()
    # an absurd voxel size in the file (here 40 µm written as nm): refused, with what to pass
    write_volume(tmp_path / "odd.tif", vol.image, kind="image", voxel_size=(40_000, 10, 10))
    assert main(["predict", str(tmp_path / "odd.tif"), str(tmp_path / "y.zarr"), "--model",
                 str(model_10nm), "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "above 10000 nm" in err and "--voxel-size 40,4,4" in err

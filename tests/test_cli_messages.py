"""What the command line says while it works and about odd input (issue 15, defect 10)."""

from __future__ import annotations

import numpy as np

from napari_tokenunify.cli import main
from napari_tokenunify.progress import Progress, format_rate


def test_rates_read_once_per_second_with_a_fitting_prefix():
    assert format_rate(850, "voxels/s") == "850 voxels/s"
    assert format_rate(12345, "voxels/s") == "12.3 kvoxels/s"  # not "kvoxels/s/s"
    assert format_rate(2.5e6, "voxels") == "2.50 Mvoxels/s"
    assert format_rate(None, "voxels/s") == format_rate(0, "voxels/s") == ""


def test_cli_bar_shows_no_block_rate_and_no_zero_megavoxels(capsys):
    from napari_tokenunify.cli.engine_common import TqdmProgress

    bar = TqdmProgress()
    bar(Progress(18, 24, "predicting affinities", None, "voxels/s"))  # resumed: 18 skipped at once
    bar(Progress(19, 24, "predicting affinities", 850.0, "voxels/s"))
    bar.close()
    err = capsys.readouterr().err
    assert "block/s" not in err and "it/s" not in err
    assert "0.00 M" not in err and "850 voxels/s" in err and "/s/s" not in err


def test_evaluate_warns_when_the_ground_truth_is_an_image(tmp_path, capsys):
    from napari_tokenunify.io import write_volume
    from napari_tokenunify.synthetic import make_synthetic_volume

    vol = make_synthetic_volume((16, 48, 48), seed=1)
    seg = write_volume(tmp_path / "seg.tif", vol.labels.astype(np.uint32), kind="labels")
    img = write_volume(tmp_path / "em.tif", vol.image, kind="image")  # uint8 EM, not labels
    gt = write_volume(tmp_path / "gt.tif", vol.labels.astype(np.uint32), kind="labels")
    assert main(["evaluate", str(seg), str(gt)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["evaluate", str(seg), str(img)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "uint8" in err and "image" in err

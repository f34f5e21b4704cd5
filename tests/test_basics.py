import numpy as np
import pytest

from napari_tokenunify.cli import main
from napari_tokenunify.devices import resolve_device
from napari_tokenunify.progress import Cancelled, CancelToken, ProgressReporter
from napari_tokenunify.synthetic import make_synthetic_volume


def test_info_prints_versions_and_device(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "napari-tokenunify" in out
    assert "torch:" in out
    assert "device used (auto): cpu" in out
    assert "mamba-ssm kernels: not available" in out


def test_cancel_token_and_reporter():
    token = CancelToken()
    token.raise_if_cancelled()
    token.cancel()
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()
    seen = []
    rep = ProgressReporter(3, seen.append, rate_unit="voxels/s")
    rep.advance(amount=1000)
    rep.advance(amount=1000)
    assert [p.done for p in seen] == [1, 2]
    assert seen[-1].total == 3 and seen[-1].rate > 0


def test_resolve_device_refuses_missing_cuda():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_synthetic_volume_is_reproducible_and_em_like():
    a = make_synthetic_volume((16, 48, 48), seed=3)
    b = make_synthetic_volume((16, 48, 48), seed=3)
    c = make_synthetic_volume((16, 48, 48), seed=4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.labels.dtype == np.uint32
    membrane = a.labels == 0
    assert 0.05 < membrane.mean() < 0.5
    # membranes are dark, cell interiors bright
    assert a.image[membrane].mean() < a.image[~membrane].mean() - 40
    assert a.labels.max() > 5


def test_synthetic_anisotropic_voxel_size():
    v = make_synthetic_volume((8, 32, 32), anisotropy=4, seed=0)
    assert v.voxel_size == (40.0, 10.0, 10.0)


def test_labels_to_affinities_convention():
    from napari_tokenunify.affinities import labels_to_affinities

    lab = np.zeros((2, 3, 3), dtype=np.uint32)
    lab[:, :, :2] = 1
    lab[:, :, 2] = 2
    lab[0, 0, 0] = 0
    affs, mask = labels_to_affinities(lab)
    assert affs.shape == (3, 2, 3, 3)
    # x affinity at (z, y, 1) links to (z, y, 0): same id 1 -> 1, except where label 0 is involved
    assert affs[2, 1, 1, 1] == 1 and affs[2, 0, 0, 1] == 0
    # across the 1|2 border in x there is no connection
    assert affs[2, 1, 1, 2] == 0
    # z affinity of the first section has no neighbour: masked out
    assert mask[0, 0].sum() == 0 and mask[0, 1].all()

"""Distillation: teacher affinities follow every grid symmetry exactly, samples carry the
teacher's targets, a student moves toward its teacher, and bad input is refused clearly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_tokenunify.affinities import NEAREST_OFFSETS, labels_to_affinities
from napari_tokenunify.training.augment import EMAugment
from napari_tokenunify.training.config import FinetuneConfig
from napari_tokenunify.training.distill import TeacherTargets, flip_affinities, transpose_yx
from napari_tokenunify.training.finetune import finetune

OFFSETS = [tuple(o) for o in NEAREST_OFFSETS]
PATCH = (16, 32, 32)
GEOMETRY_ONLY = EMAugment(intensity_p=0.0, noise_p=0.0, blur_p=0.0, missing_p=0.0)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _blobs(shape, seed=0, n=40) -> np.ndarray:
    """Labels with no 0: each voxel takes the id of its nearest of ``n`` random seeds."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.uint8)
    for i in range(1, n + 1):
        seeds[tuple(int(rng.integers(s)) for s in shape)] = i
    _, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    return seeds[tuple(idx)].astype(np.uint8)


def test_flips_and_transpose_map_affinities_exactly():
    labels = _blobs((8, 20, 20))
    affs, _ = labels_to_affinities(labels, OFFSETS)
    for axis in (0, 1, 2):
        moved, defined = flip_affinities(affs, axis, OFFSETS)
        want, _ = labels_to_affinities(np.flip(labels, axis), OFFSETS)
        np.testing.assert_array_equal(moved[defined > 0], want[defined > 0])
        # only the channel along the flipped axis loses its first voxel
        assert (defined == 0).sum() == int(np.prod(labels.shape) / labels.shape[axis])
        assert (defined[axis].take(0, axis=axis) == 0).all()
    want, _ = labels_to_affinities(labels.transpose(0, 2, 1), OFFSETS)
    np.testing.assert_array_equal(transpose_yx(affs, OFFSETS), want)


def test_samples_carry_the_teacher_targets_of_what_the_student_sees():
    """A 'teacher' whose affinities are the ground truth of labels that the raw encodes: after
    random flips and transposes, every weighted target equals the affinity of the raw it comes
    with, so targets and input moved together."""
    labels = _blobs((20, 40, 40), seed=1, n=60)
    raw = labels  # uint8 ids: the raw voxel value names its object
    affs, _ = labels_to_affinities(labels, OFFSETS)
    rng = np.random.default_rng(0)
    tt = TeacherTargets(None, [raw], PATCH, OFFSETS, rng, affinities=[affs], tta="none")
    plain = 0
    for _ in range(12):
        x, target, weight = tt.sample(GEOMETRY_ONLY)
        assert x.shape == PATCH and target.shape == weight.shape == (3, *PATCH)
        seen = np.rint(x * 255).astype(np.uint8)
        want, valid = labels_to_affinities(seen, OFFSETS)
        use = (weight > 0) & (valid > 0)
        assert use.mean() > 0.9
        np.testing.assert_array_equal(target[use], want[use])
        plain += int(any(np.array_equal(seen, labels[z:z + 16, y:y + 32, x_:x_ + 32])
                         for z in range(5) for y in range(9) for x_ in range(9)))
    assert plain < 12  # some samples were moved (a plain crop matches one of the windows)


def test_samples_pad_a_volume_smaller_than_the_patch():
    labels = _blobs((10, 20, 20), seed=2)
    affs, _ = labels_to_affinities(labels, OFFSETS)
    tt = TeacherTargets(None, [labels], PATCH, OFFSETS, np.random.default_rng(1), affinities=[affs], tta="none")
    x, target, weight = tt.sample(None)
    assert x.shape == PATCH and (weight[:, 10:] == 0).all() and (weight[:, :10, :20, :20] > 0).mean() > 0.9


def test_a_margin_drops_the_targets_the_teacher_is_unsure_of():
    """With ``margin`` only teacher affinities at least that far from 0.5 carry weight; the
    others are left to the labelled samples. A teacher that says 0.1, 0.45, 0.6 and 0.9 in
    four bands keeps only the 0.1 and 0.9 bands at margin 0.25."""
    affs = np.empty((3, 16, 32, 32), np.float32)
    for i, v in enumerate((0.1, 0.45, 0.6, 0.9)):
        affs[:, :, :, 8 * i:8 * (i + 1)] = v
    raw = np.zeros((16, 32, 32), np.uint8)
    _, target, weight = TeacherTargets(None, [raw], PATCH, OFFSETS, np.random.default_rng(0), affinities=[affs],
                                       tta="none", margin=0.25).sample(None)
    unsure = (target > 0.25) & (target < 0.75)
    assert unsure.any() and (weight[unsure] == 0).all()
    assert (weight[~unsure][1:] > 0).mean() > 0.9  # the first offset's first section is undefined
    _, _, every = TeacherTargets(None, [raw], PATCH, OFFSETS, np.random.default_rng(0), affinities=[affs],
                                 tta="none").sample(None)
    assert (every[unsure] > 0).mean() > 0.9
    with pytest.raises(ValueError, match="margin"):
        TeacherTargets(None, [raw], PATCH, OFFSETS, np.random.default_rng(0), affinities=[affs], margin=0.5)
    with pytest.raises(ValueError, match="distill_margin"):
        FinetuneConfig(distill_margin=-0.1)
    assert FinetuneConfig(distill_margin=0.25).to_dict()["distill_margin"] == 0.25


def test_the_card_records_the_distillation_margin(tmp_path):
    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.training.unet import ResidualUNet3D

    vol = make_synthetic_volume((16, 32, 32), seed=5)
    finetune(vol.image, vol.labels, init=ResidualUNet3D(out_channels=3, widths=(4, 8, 16)), teacher=_Constant(),
             distill_p=1.0, distill_margin=0.25, teacher_tta="none", steps=2, ema=None, patch_shape=PATCH,
             augment=False, out_dir=tmp_path / "run")
    training = json.loads((tmp_path / "run" / "model" / "card.json").read_text())["training"]
    assert training["distillation"]["margin"] == 0.25 and training["config"]["distill_margin"] == 0.25


class _Constant(torch.nn.Module):
    """A 'teacher' that says 0.8 for every link."""

    def __init__(self, offsets=OFFSETS) -> None:
        super().__init__()
        self.card = SimpleNamespace(offsets=[list(o) for o in offsets], patch_size=list(PATCH),
                                    normalization=None, description="constant 0.8")
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], len(self.card.offsets), *x.shape[2:]), 0.8) + 0 * self.bias


def test_a_student_moves_toward_its_teacher(tmp_path):
    from napari_tokenunify.synthetic import make_synthetic_volume
    from napari_tokenunify.training.unet import ResidualUNet3D

    vol = make_synthetic_volume((16, 48, 48), seed=3)
    torch.manual_seed(0)
    init = ResidualUNet3D(out_channels=3, widths=(4, 8, 16))
    x = torch.from_numpy(vol.image[:, :32, :32].astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        before = init.eval()(x).mean().item()
    student = finetune(vol.image, vol.labels, init=init, teacher=_Constant(), distill_p=1.0,
                       teacher_tta="none", steps=80, lr=2e-2, ema=None, patch_shape=PATCH, augment=False,
                       out_dir=tmp_path / "run")
    with torch.no_grad():
        after = student.eval()(x).mean().item()
    assert abs(after - 0.8) < 0.3 * abs(before - 0.8)
    training = json.loads((tmp_path / "run" / "model" / "card.json").read_text())["training"]
    assert training["distillation"] == {"teacher": "constant 0.8", "share": 1.0, "teacher_tta": "none"}


def test_distillation_bad_input():
    from napari_tokenunify.synthetic import make_synthetic_volume

    vol = make_synthetic_volume((16, 32, 32), seed=4)
    kw = {"steps": 1, "patch_shape": PATCH}
    with pytest.raises(ValueError, match="needs a teacher"):
        finetune(vol.image, vol.labels, distill_volumes=[vol.image], **kw)
    with pytest.raises(ValueError, match="distill_p"):
        finetune(vol.image, vol.labels, teacher=_Constant(), distill_p=0.0, **kw)
    with pytest.raises(ValueError, match="offsets"):
        finetune(vol.image, vol.labels, teacher=_Constant([(1, 0, 0), (0, 1, 0)]), **kw)
    with pytest.raises(ValueError, match="3D"):
        finetune(vol.image, vol.labels, teacher=_Constant(), distill_volumes=[vol.image[0]], **kw)
    with pytest.raises(ValueError, match="do not fit"):
        TeacherTargets(None, [vol.image], PATCH, OFFSETS, np.random.default_rng(0),
                       affinities=[np.zeros((3, 4, 4, 4), np.float16)], tta="none")


def test_cli_finetune_with_a_teacher(tmp_path):
    import tifffile

    from napari_tokenunify.cli import main
    from napari_tokenunify.synthetic import make_synthetic_volume

    vol = make_synthetic_volume((16, 32, 32), seed=5)
    tifffile.imwrite(tmp_path / "raw.tif", vol.image)
    tifffile.imwrite(tmp_path / "labels.tif", vol.labels)
    tifffile.imwrite(tmp_path / "unlabeled.tif", vol.image[:, ::-1].copy())
    rc = main(["finetune", "--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "labels.tif"),
               "--init", "unet", "--out", str(tmp_path / "ft"), "--steps", "2", "--patch", "16", "32", "32",
               "--teacher", "unet", "--distill-data", str(tmp_path / "unlabeled.tif"), "--distill-p", "0.5",
               "--teacher-tta", "none", "--quiet"])
    assert rc == 0
    training = json.loads((tmp_path / "ft" / "model" / "card.json").read_text())["training"]
    assert training["distillation"] == {"teacher": "unet", "share": 0.5, "teacher_tta": "none"}
    rc = main(["finetune", "--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "labels.tif"),
               "--out", str(tmp_path / "bad"), "--steps", "1", "--distill-data", str(tmp_path / "raw.tif"),
               "--quiet"])
    assert rc == 1 and not (tmp_path / "bad").exists()

"""Test-time flips: mirrored affinities mapped back exactly, bad modes and offsets refused, and
the option carried through prediction, resume, the distributed path and the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_tokenunify.affinities import NEAREST_OFFSETS, labels_to_affinities
from napari_tokenunify.engine.predict import TilePredictor, predict_affinities
from napari_tokenunify.engine.tta import check_tta, flip_average, flip_sets


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


class Similarity(torch.nn.Module):
    """An exactly mirror-equivariant 'network': affinity = 1 - |x(v) - x(v - offset)| (0 where
    the neighbour is outside the tile), so averaging over mirrors must change nothing."""

    input_divisor = 1

    def __init__(self, offsets=NEAREST_OFFSETS) -> None:
        super().__init__()
        self.card = SimpleNamespace(offsets=[list(o) for o in offsets], patch_size=[8, 16, 16],
                                    normalization={"mode": "auto"})
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = torch.zeros((x.shape[0], len(self.card.offsets), *x.shape[2:]), dtype=x.dtype)
        for c, o in enumerate(self.card.offsets):
            here = tuple(slice(int(v), None) for v in o)
            there = tuple(slice(0, s - int(v)) for s, v in zip(x.shape[2:], o, strict=True))
            out[(slice(None), c, *here)] = 1 - (x[(slice(None), 0, *here)] - x[(slice(None), 0, *there)]).abs()
        return out


@pytest.mark.parametrize("mode", ["yx", "zyx"])
@pytest.mark.parametrize("offsets", [NEAREST_OFFSETS, ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 3), (0, 4, 0), (2, 0, 0))])
def test_flip_average_of_an_equivariant_model_is_the_model(mode, offsets):
    torch.manual_seed(0)
    x = torch.rand(2, 1, 6, 10, 12)
    model = Similarity(offsets)
    plain = model(x)
    averaged = flip_average(model, x, offsets, mode)
    assert model.calls == 1 + len(flip_sets(check_tta(mode, offsets)))
    assert torch.allclose(averaged, plain, atol=1e-6)


def test_mirrored_label_affinities_map_back_onto_the_originals():
    # the same mapping on ground truth: affinities of the mirrored labels, un-mirrored, are the
    # affinities of the labels wherever the mirror defines them
    from napari_tokenunify.engine.tta import unflip

    labels = np.random.default_rng(1).integers(1, 4, (5, 7, 9))
    ref = torch.from_numpy(labels_to_affinities(labels)[0])[None]
    for flipped in flip_sets((0, 1, 2))[1:]:
        aff = torch.from_numpy(labels_to_affinities(np.flip(labels, flipped).copy())[0])[None]
        back, defined = unflip(aff, flipped, NEAREST_OFFSETS)  # output in the mirrored frame
        defined = defined.expand_as(back).bool()
        assert torch.equal(back[defined], ref[defined]), flipped
        assert defined.float().mean() > 0.7


def test_flip_average_differs_from_one_pass_for_a_real_network():
    from conftest import seeded_tiny

    net, x = seeded_tiny()
    with torch.no_grad():
        plain = net(x)
        averaged = flip_average(net, x, NEAREST_OFFSETS, "yx")
    assert averaged.shape == plain.shape
    assert 0 <= float(averaged.min()) and float(averaged.max()) <= 1
    assert float((averaged - plain).abs().mean()) > 1e-4


def test_bad_modes_and_diagonal_offsets_are_refused():
    with pytest.raises(ValueError, match="one of"):
        check_tta("rotations", NEAREST_OFFSETS)
    with pytest.raises(ValueError, match="diagonal.*tta='none'"):
        check_tta("yx", ((1, 0, 0), (0, 2, 2)))
    # a diagonal offset in an axis the mode does not mirror... still moves in y and x: refused;
    # one the mode leaves alone is fine
    check_tta("none", ((0, 2, 2),))
    with pytest.raises(ValueError, match="diagonal"):
        TilePredictor(Similarity(((1, 0, 0), (0, 3, 3))), device="cpu", tta="zyx")


def test_predict_affinities_with_flips_matches_per_tile_average(synthetic_small):
    image = synthetic_small.image[:16, :48, :48]
    model = Similarity()
    plain = predict_affinities(image, model, device="cpu", dtype="float32", tile_shape=(8, 24, 24))
    flipped = predict_affinities(image, model, device="cpu", dtype="float32", tile_shape=(8, 24, 24), tta="zyx")
    assert np.allclose(flipped, plain, atol=1e-5)


def test_a_store_predicted_without_flips_is_not_resumed_with_them(tmp_path, synthetic_small):
    image = synthetic_small.image[:16, :48, :48]
    model = Similarity()
    out = tmp_path / "affs.zarr"
    from napari_tokenunify.progress import Cancelled, CancelToken

    token = CancelToken()

    def stop_after_first(p):
        if p.done >= 1:
            token.cancel()

    with pytest.raises(Cancelled):
        predict_affinities(image, model, out=out, device="cpu", tile_shape=(8, 24, 24),
                           progress=stop_after_first, cancel=token)
    with pytest.raises(FileExistsError, match="other settings.*tta"):
        predict_affinities(image, model, out=out, device="cpu", tile_shape=(8, 24, 24), tta="yx")
    # the same settings still resume (the store of a run without flips records no tta)
    done = predict_affinities(image, model, out=out, device="cpu", tile_shape=(8, 24, 24))
    assert done.shape == (3, 16, 48, 48)


def test_a_predictor_and_a_different_tta_conflict(synthetic_small):
    model = Similarity()
    predictor = TilePredictor(model, device="cpu", tta="yx")
    with pytest.raises(ValueError, match="differs"):
        predict_affinities(synthetic_small.image[:8, :16, :16], model, predictor=predictor, tta="zyx")


def test_cli_predict_with_tta(tmp_path, synthetic_small):
    from napari_tokenunify.cli import main
    from napari_tokenunify.io import write_volume

    src = tmp_path / "em.zarr"
    write_volume(src, synthetic_small.image[:16, :32, :32], kind="image")
    out = tmp_path / "affs.zarr"
    assert main(["predict", str(src), str(out), "--tta", "yx", "--tile", "16,32,32", "--quiet",
                 "--dtype", "float32"]) == 0
    import zarr

    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["settings"]["tta"] == "yx"
    assert group["affinities"].shape == (3, 16, 32, 32) and group.attrs["complete"]
    with pytest.raises(SystemExit):
        main(["predict", str(src), str(tmp_path / "b.zarr"), "--tta", "rotate"])


def test_jobs_use_the_flips_the_model_card_recommends(tmp_path, synthetic_small, capsys):
    """``tokenunify predict`` without --tta follows the card's ``test_time_flips``; --tta wins."""
    import zarr

    from napari_tokenunify.cli import main
    from napari_tokenunify.io import write_volume
    from napari_tokenunify.model import ModelCard, build_model, save_model

    assert ModelCard().recommended_tta == "none"
    assert ModelCard(training={"test_time_flips": "sideways"}).recommended_tta == "none"
    net = build_model("tiny")
    net.card.training = {"test_time_flips": "yx"}
    save_model(net, tmp_path / "model")
    src = tmp_path / "em.zarr"
    write_volume(src, synthetic_small.image[:16, :32, :32], kind="image")
    common = ["--model", str(tmp_path / "model"), "--tile", "16,32,32", "--quiet"]
    assert main(["predict", str(src), str(tmp_path / "a.zarr"), *common]) == 0
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["settings"]["tta"] == "yx"
    assert "as the model card recommends" in capsys.readouterr().err  # the user is told, and how to skip
    assert main(["predict", str(src), str(tmp_path / "b.zarr"), *common, "--tta", "none"]) == 0
    assert zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs["settings"].get("tta", "none") == "none"

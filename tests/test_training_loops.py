"""Pretraining and finetuning loops on tiny synthetic volumes: losses fall, weights carry over,
crashes resume, the initial model is never overwritten, bad input fails before training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tokenunify.model import ModelFileError
from napari_tokenunify.training.finetune import finetune, prepare_model, transfer_weights
from napari_tokenunify.training.logs import read_log
from napari_tokenunify.training.pretrain import pretrain
from napari_tokenunify.training.targets import TrainingDataError

PATCH = (16, 32, 32)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def volume():
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((16, 48, 48), seed=1)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


class Crash(RuntimeError):
    pass


def crash_at(step: int):
    def cb(p):
        if p.done == step:
            raise Crash(f"simulated crash at step {step}")

    return cb


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, volume):
    out = tmp_path_factory.mktemp("pre")
    torch.set_num_threads(1)
    pretrain([volume.image], steps=30, out_dir=out, weights="random", patch_shape=PATCH, lr=3e-3,
             seed=0, checkpoint_every=15)
    return out


def test_pretrain_loss_falls_and_writes_outputs(pretrained):
    rows = read_log(pretrained / "loss.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    loss = np.array([float(r["loss"]) for r in rows])
    assert loss[-8:].mean() < 0.7 * loss[:4].mean()
    assert (pretrained / "loss.png").read_bytes()[:4] == b"\x89PNG"
    from napari_tokenunify.model import load_model

    model = load_model(pretrained / "model", device="cpu")
    assert model.card.out_channels == 1
    assert model.card.training["steps"] == 30
    y = model(torch.rand(1, 1, *PATCH))
    assert y.shape == (1, 1, *PATCH) and 0 <= float(y.min()) and float(y.max()) <= 1


def test_pretrain_mixture_uses_every_objective(tmp_path, volume):
    pretrain([volume.image], steps=9, out_dir=tmp_path, weights={"random": 1, "next": 1, "next_all": 1},
             patch_shape=PATCH, seed=3)
    seen = {r["objective"] for r in read_log(tmp_path / "loss.csv")}
    assert seen == {"random", "next", "next_all"}


def test_pretrain_resumes_after_crash_exactly(tmp_path, volume):
    kw = dict(steps=6, weights="random=1,next=1", patch_shape=PATCH, seed=5, checkpoint_every=2)
    ref = pretrain([volume.image], out_dir=tmp_path / "ref", **kw)
    with pytest.raises(Crash):
        pretrain([volume.image], out_dir=tmp_path / "run", progress=crash_at(5), **kw)
    from napari_tokenunify.training.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4
    resumed = pretrain([volume.image], out_dir=tmp_path / "run", **kw)
    steps = [int(r["step"]) for r in read_log(tmp_path / "run" / "loss.csv")]
    assert steps == [1, 2, 3, 4, 5, 6]
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_transfer_weights_carries_all_but_output(pretrained):
    from napari_tokenunify.model import load_model

    source = load_model(pretrained / "model", device="cpu")
    model, note = prepare_model(str(pretrained / "model"), 3)
    assert model.out_channels == 3
    src, dst = source.state_dict(), model.state_dict()
    differing = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
    assert differing and all(k.startswith("out.") for k in differing)
    for k in dst:
        if k not in differing:
            assert torch.equal(src[k], dst[k]), k
    assert note["copied"] == len(dst) - len(differing)
    report = transfer_weights(source, model)
    assert set(report["skipped"]) == set(differing)


def test_finetune_from_pretrained_learns_and_keeps_init(tmp_path, pretrained, volume):
    before = _digest(pretrained / "model")
    model = finetune(volume.image, volume.labels, init=pretrained / "model", steps=20, out_dir=tmp_path / "ft",
                     patch_shape=PATCH, lr=3e-3, augment=False, seed=0, checkpoint_every=10)
    assert _digest(pretrained / "model") == before  # the initial model is untouched
    loss = np.array([float(r["loss"]) for r in read_log(tmp_path / "ft" / "loss.csv")])
    assert len(loss) == 20 and loss[-5:].mean() < 0.8 * loss[:3].mean()
    assert model.card.out_channels == 3 and model.card.training["steps"] == 20
    assert (tmp_path / "ft" / "model" / "model.safetensors").exists()
    with pytest.raises(Exception, match="overwrite"):
        finetune(volume.image, volume.labels, init=pretrained / "model", steps=1, out_dir=pretrained,
                 patch_shape=PATCH)


def test_finetune_validation_keeps_best_and_resumes(tmp_path, volume):
    kw = dict(init=None, steps=4, out_dir=tmp_path, patch_shape=PATCH, seed=2, checkpoint_every=2,
              validation=(volume.image[:, :, :32], volume.labels[:, :, :32]), val_every=2)
    with pytest.raises(Crash):
        finetune(volume.image, volume.labels, progress=crash_at(3), **kw)
    model = finetune(volume.image, volume.labels, **kw)
    hist = model.validation_history
    assert [h["step"] for h in hist] == [2, 4]
    best = min(hist, key=lambda h: h["voi"])
    assert model.card.training["best_step"] == best["step"]
    assert model.card.metrics["validation"]["voi"] == pytest.approx(best["voi"])
    assert {"voi_split", "voi_merge", "arand", "affinity_error", "affinity_bce"} <= set(best)
    assert 0 <= best["affinity_error"] <= 1
    assert "affinity_error" in (tmp_path / "validation.csv").read_text().splitlines()[0]


def test_finetune_ema_returns_the_average_and_resumes_exactly(tmp_path, volume):
    kw = dict(init=None, steps=4, patch_shape=PATCH, seed=3, augment=False, lr=3e-3, checkpoint_every=1,
              holdout=0.0)
    raw_model = finetune(volume.image, volume.labels, out_dir=tmp_path / "raw", ema=None, **kw)
    ema_model = finetune(volume.image, volume.labels, out_dir=tmp_path / "ema", ema=0.5, **kw)
    # the same seed gives the same raw weights; the EMA ones lag behind them
    last = torch.load(tmp_path / "ema" / "checkpoints" / "last.pt", weights_only=False)
    for k, v in raw_model.state_dict().items():
        assert torch.equal(last["model"][k], v)
    diffs = [(ema_model.state_dict()[k] - v).abs().max().item() for k, v in raw_model.state_dict().items()
             if v.is_floating_point()]
    assert max(diffs) > 0
    assert ema_model.card.training["ema"] == 0.5
    # exact resume: a crash after step 2 and a rerun give the same averaged weights
    with pytest.raises(Crash):
        finetune(volume.image, volume.labels, out_dir=tmp_path / "ema2", ema=0.5, progress=crash_at(2), **kw)
    resumed = finetune(volume.image, volume.labels, out_dir=tmp_path / "ema2", ema=0.5, **kw)
    for k, v in ema_model.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k], v, atol=1e-6)
    with pytest.raises(ValueError, match="without ema"):  # a run without ema cannot resume with it
        finetune(volume.image, volume.labels, out_dir=tmp_path / "raw", ema=0.5, **{**kw, "steps": 6})
    with pytest.raises(ValueError, match="between 0 and 1"):
        finetune(volume.image, volume.labels, ema=1.5, **kw)


def test_finetune_head_steps_train_the_new_output_layer_first(pretrained, volume):
    from napari_tokenunify.model import load_model

    init = load_model(pretrained / "model", device="cpu")  # one output channel: the head is new
    kw = dict(init=init, patch_shape=PATCH, seed=0, augment=False, lr=3e-3)
    probed = finetune(volume.image, volume.labels, steps=3, head_steps=3, **kw)
    start = init.state_dict()
    new = {k for k in probed.state_dict() if k not in start or start[k].shape != probed.state_dict()[k].shape}
    changed = {k for k, v in probed.state_dict().items() if k not in new and not torch.equal(v, start[k])}
    assert new and not changed  # only the re-initialised output layer moved
    assert all(p.requires_grad for p in probed.parameters())  # returned trainable
    assert probed.training_info["head_steps"] == 3
    full = finetune(volume.image, volume.labels, steps=5, head_steps=3, **kw)
    assert any(not torch.equal(v, start[k]) for k, v in full.state_dict().items() if k in start and k not in new)
    with pytest.raises(ValueError, match="re-initialises nothing"):
        finetune(volume.image, volume.labels, steps=1, head_steps=1, patch_shape=PATCH)


def test_validation_predicts_with_the_tiles_of_the_exported_model(tmp_path, volume, monkeypatch):
    """EMmamba's output depends on the tile it is predicted in, so validation during training must
    tile like the exported model (its card's patch), not like the preset's default patch."""
    import napari_tokenunify.training.finetune as ft

    seen = []
    real = ft.validate
    monkeypatch.setattr(ft, "validate", lambda model, *a, **k: seen.append(list(model.card.patch_size))
                        or real(model, *a, **k))
    model = finetune(volume.image, volume.labels, init=None, steps=1, patch_shape=PATCH, out_dir=tmp_path,
                     validation=(volume.image[:, :, :32], volume.labels[:, :, :32]), val_every=1)
    assert seen == [list(PATCH)] and model.card.patch_size == list(PATCH)


def test_finetune_in_memory_with_box_and_unet(volume):
    from napari_tokenunify.training.unet import ResidualUNet3D

    init = ResidualUNet3D(out_channels=3, widths=(4, 8, 16))
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    box = (slice(0, 16), slice(4, 40), slice(4, 40))  # more voxels than one 16 x 32 x 32 patch
    model = finetune(volume.image, volume.labels, init=init, box=box, steps=2, patch_shape=PATCH)
    assert isinstance(model, ResidualUNet3D) and model is not init
    for k, v in init.state_dict().items():  # the caller's model is not trained in place
        assert torch.equal(v, init_state[k])
    with pytest.raises(TrainingDataError, match="selects no voxel"):
        finetune(volume.image, volume.labels, box=(slice(0, 16), slice(5, 5), slice(0, 8)), steps=1,
                 patch_shape=PATCH)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda r, lab, m: (r, lab[:, :-1], m), "differs from raw shape"),
        (lambda r, lab, m: (r, np.zeros_like(lab), m), "all zero"),
        (lambda r, lab, m: (r, np.ones_like(lab), m), "single object"),
        (lambda r, lab, m: (r, lab.astype(np.float32), m), "integer"),
        (lambda r, lab, m: (r, lab, np.zeros_like(lab)), "mask is empty"),
    ],
)
def test_finetune_bad_input(volume, tmp_path, change, match):
    raw, labels, mask = change(volume.image, volume.labels, None)
    with pytest.raises(TrainingDataError, match=match):
        finetune(raw, labels, mask=mask, steps=1, out_dir=tmp_path / "x", patch_shape=PATCH)
    assert not (tmp_path / "x").exists()  # nothing written


def test_patch_larger_than_volume_is_padded(volume):
    small_raw, small_labels = volume.image[:5, :20, :20], volume.labels[:5, :20, :20]
    model = finetune(small_raw, small_labels, steps=2, patch_shape=PATCH, augment=False)
    assert model.training_info["steps"] == 2


def test_cli_pretrain_and_finetune(tmp_path, volume):
    import tifffile

    from napari_tokenunify.cli import main

    tifffile.imwrite(tmp_path / "raw.tif", volume.image)
    tifffile.imwrite(tmp_path / "labels.tif", volume.labels)
    rc = main(["pretrain", str(tmp_path / "raw.tif"), "--out", str(tmp_path / "pre"), "--steps", "2",
               "--patch", "16", "32", "32", "--quiet"])
    assert rc == 0 and (tmp_path / "pre" / "model" / "card.json").exists()
    rc = main(["finetune", "--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "labels.tif"),
               "--init", str(tmp_path / "pre" / "model"), "--out", str(tmp_path / "ft"), "--steps", "2",
               "--patch", "16", "32", "32", "--head-steps", "1", "--ema", "0.9", "--quiet"])
    assert rc == 0 and (tmp_path / "ft" / "model" / "card.json").exists()
    training = json.loads((tmp_path / "ft" / "model" / "card.json").read_text())["training"]
    assert training["head_steps"] == 1 and training["ema"] == 0.9
    tifffile.imwrite(tmp_path / "short.tif", volume.labels[:, :-1])
    rc = main(["finetune", "--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "short.tif"),
               "--init", "scratch", "--out", str(tmp_path / "bad"), "--steps", "1", "--quiet"])
    assert rc == 1 and not (tmp_path / "bad").exists()


def test_unet_saves_and_loads_as_a_model_card(volume, tmp_path):
    """A finetuned U-Net is written like EMmamba (safetensors + card with preset "unet") and
    ``load_model`` rebuilds it with identical outputs."""
    from napari_tokenunify.model import load_model
    from napari_tokenunify.model.unet import ResidualUNet3D

    init = ResidualUNet3D(out_channels=3, widths=(4, 8, 16))
    trained = finetune(volume.image, volume.labels, init=init, steps=2, patch_shape=PATCH,
                       out_dir=tmp_path / "run")
    folder = tmp_path / "run" / "model"
    card = json.loads((folder / "card.json").read_text())
    assert card["preset"] == "unet" and card["config"]["widths"] == [4, 8, 16]
    loaded = load_model(folder, device="cpu")
    assert isinstance(loaded, ResidualUNet3D) and not loaded.training
    x = torch.rand(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained.eval()(x))
    # a card that does not describe the weights is refused with the reason
    card["config"]["widths"] = [4, 8, 32]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="does not match the U-Net"):
        load_model(folder, device="cpu")


def test_finetuning_keeps_the_test_time_flips_its_start_recommends(volume):
    from napari_tokenunify.model import build_model

    init = build_model("tiny", out_channels=3)
    init.card.training = {"test_time_flips": "yx"}
    model = finetune(volume.image, volume.labels, init=init, steps=1, patch_shape=PATCH)
    assert model.training_info["test_time_flips"] == "yx"
    fresh = finetune(volume.image, volume.labels, init=None, steps=1, patch_shape=PATCH)
    assert "test_time_flips" not in fresh.training_info


def test_auxiliary_offsets_carry_over_and_cut_back_exactly():
    """A 3-channel affinity model grows long-range outputs for training (its own three channels
    carry over) and is cut back to exactly its three nearest-neighbour channels for shipping."""
    from napari_tokenunify.affinities import NEAREST_OFFSETS
    from napari_tokenunify.model import build_model
    from napari_tokenunify.training.finetune import keep_output_channels

    torch.manual_seed(0)
    start = build_model("tiny", out_channels=3)
    start.card.training = {"segmentation_scoring": "mean", "segmentation_threshold": 0.6}
    offsets = [tuple(o) for o in NEAREST_OFFSETS] + [(3, 0, 0), (0, 3, 0), (0, 0, 3)]
    grown, note = prepare_model(start, len(offsets), "tiny", offsets)
    assert grown.out_channels == 6 and note["reinitialised"] == []
    assert grown.card.recommended_scoring == "mean"  # validated as the start segments
    assert [tuple(o) for o in grown.card.offsets] == offsets  # prediction writes all six
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        ref = start(x)
        out = grown(x)
    assert torch.allclose(out[:, :3], ref, atol=1e-5)  # the start's affinities, unchanged
    assert not torch.allclose(out[:, 3:], out[:, :3])  # new channels start fresh
    grown.card.offsets = [list(o) for o in offsets]
    cut = keep_output_channels(grown, 3)
    assert cut.out_channels == 3 and cut.card.offsets == [list(o) for o in NEAREST_OFFSETS]
    assert cut.card.config["out_channels"] == 3  # the card alone rebuilds the cut network
    with torch.no_grad():
        assert torch.allclose(cut(x), out[:, :3], atol=1e-6)
    with pytest.raises(ValueError, match="cannot keep"):
        keep_output_channels(cut, 4)


def test_a_time_budget_ends_training_and_the_progress_bar_with_it(volume, monkeypatch):
    from napari_tokenunify.training import runtime

    # a clock that moves a quarter second each time it is read: the budget ends training after a
    # few steps, whatever the machine (no sleeping in the test)
    now = [0.0]

    def tick():
        now[0] += 0.25
        return now[0]

    monkeypatch.setattr(runtime.time, "perf_counter", tick)
    budget = runtime.Budget(5000, seconds=10.0)
    assert budget.expected_steps(0) == 5000
    reports = []
    model = finetune(volume.image, volume.labels, steps=5000, time_budget_s=3.0, patch_shape=PATCH,
                     augment=False, progress=reports.append)
    steps = model.training_info["steps"]
    assert 1 <= steps < 50  # the budget, not the 5000 steps, ended it
    train = [r for r in reports if r.message == "finetuning"]
    assert train[-1].done == steps and train[-1].total == steps  # the bar ends full
    assert all(r.total <= 5000 for r in train)


def test_expected_steps_follow_the_pace_and_never_pass_the_step_count():
    from napari_tokenunify.training.runtime import Budget

    unlimited = Budget(100)
    assert unlimited.expected_steps(10) == 100
    budget = Budget(100, seconds=60.0)
    budget._t0 -= 6.0  # 6 s for 10 steps: 100 steps would take 60 s
    assert budget.expected_steps(10) == 100
    budget._t0 -= 6.0  # 12 s for 10 steps: 50 steps in the budget
    assert 49 <= budget.expected_steps(10) <= 50
    assert budget.expected_steps(0) == 100


def test_expected_steps_take_the_pace_of_this_run_alone():
    """Seconds the budget counts before training (the start predicting its own targets) or from
    an earlier run do not slow the pace: it is this run's steps over this run's seconds."""
    from napari_tokenunify.training.runtime import Budget

    before = Budget(1000, seconds=60.0, elapsed=30.0)  # 30 s of predicting first
    before._t0 -= 10.0  # 100 steps in 10 s; 20 s left: 200 more
    assert before.expected_steps(100) == 300
    resumed = Budget(1000, seconds=60.0, elapsed=30.0, start_step=500)
    resumed._t0 -= 10.0  # steps 500-600 in 10 s; 20 s left
    assert resumed.expected_steps(600) == 800
    assert resumed.expected_steps(500) == 1000  # no step yet in this run: the step count


def test_anneal_to_budget_ends_the_learning_rate_decay_with_the_time_budget(monkeypatch):
    """With ``anneal_to_budget`` the cosine decays over the steps the time budget allows, so the
    last steps run near the floor; without it, over ``steps``, which minutes never reach."""
    from napari_tokenunify.training.runtime import Budget, lr_at

    budget = Budget(5000, seconds=60.0)
    budget._t0 -= 54.0  # 900 steps in 54 s: 1000 steps in the budget
    assert budget.schedule_steps(900, to_budget=False) == 5000
    assert budget.schedule_steps(900, to_budget=True) == 1000
    budget._t0 -= 5.4  # 990 steps in 59.4 s: the budget's last steps
    near_end = lr_at(990, budget.schedule_steps(990, to_budget=True), 5e-4)
    assert near_end < 0.06 * 5e-4  # the floor (5 %) at the budget's end
    assert lr_at(990, budget.schedule_steps(990, to_budget=False), 5e-4) > 0.9 * 5e-4
    assert Budget(200).schedule_steps(50, to_budget=True) == 200  # no time budget: the steps


def test_finetune_with_anneal_to_budget_ends_near_the_floor_rate(volume, monkeypatch, tmp_path):
    """finetune() itself decays to the time budget: its last logged learning rate is near the
    floor, while without the option it is still near the full rate when the budget ends."""
    from napari_tokenunify.training import runtime
    from napari_tokenunify.training.config import FinetuneConfig

    now = [0.0]

    def tick() -> float:
        now[0] += 0.002  # every clock read: 2 ms, whatever the machine
        return now[0]

    monkeypatch.setattr(runtime.time, "perf_counter", tick)
    last = {}
    for anneal in (False, True):
        cfg = FinetuneConfig(steps=5000, time_budget_s=1.0, anneal_to_budget=anneal, val_every=0,
                             holdout=0.0, augment=False, patch_shape=PATCH, self_distill=False)
        model = finetune(volume.image, volume.labels, config=cfg, out_dir=tmp_path / str(anneal))
        assert model.training_info["steps"] < 5000  # the budget ended it
        rows = read_log(tmp_path / str(anneal) / "loss.csv")
        last[anneal] = float(rows[-1]["lr"]) / cfg.lr
    assert last[False] > 0.9
    assert last[True] < 0.2

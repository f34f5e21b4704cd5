"""Token grid, pretraining objectives (masks, prefixes), mixture schedule and perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tokenunify.training.objectives import (
    MixtureSchedule,
    NextTokenHead,
    make_objective_batch,
    masked_mse,
    objective_loss,
    prefix_mask,
    random_token_mask,
)
from napari_tokenunify.training.perturb import Perturbation, cutout, gaussian_blur
from napari_tokenunify.training.tokens import TokenGrid


def test_token_grid_round_trip_and_raster_order():
    grid = TokenGrid((8, 32, 48), (4, 16, 16))
    assert grid.grid_shape == (2, 2, 3)
    assert grid.n_tokens == 12
    x = torch.arange(8 * 32 * 48, dtype=torch.float32).reshape(1, 1, 8, 32, 48)
    tokens = grid.to_tokens(x)
    assert tokens.shape == (1, 12, 4 * 16 * 16)
    assert torch.equal(grid.from_tokens(tokens), x)
    # Token 4 is z-block 0, y-block 1, x-block 1 (raster z, y, x).
    sl = grid.token_slices(4)
    assert sl == (slice(0, 4), slice(16, 32), slice(16, 32))
    assert torch.equal(tokens[0, 4], x[0, 0][sl].reshape(-1))


def test_token_grid_rejects_non_multiple():
    with pytest.raises(ValueError, match="multiple of the token size"):
        TokenGrid((10, 32, 32), (4, 16, 16))


def test_random_token_mask_counts():
    g = torch.Generator().manual_seed(0)
    m = random_token_mask(5, 100, 0.4, g)
    assert m.shape == (5, 100)
    assert (m.sum(1) == 40).all()
    assert not torch.equal(m[0], m[1])  # different tokens per sample
    with pytest.raises(ValueError, match="between 0 and 1"):
        random_token_mask(1, 10, 1.0)


def test_prefix_mask_keeps_exactly_k():
    k = torch.tensor([1, 5, 9])
    m = prefix_mask(k, 10)
    assert m.tolist()[1] == [False] * 5 + [True] * 5
    assert ((~m).sum(1) == k).all()


@pytest.mark.parametrize("objective", ["random", "next", "next_all"])
def test_objective_batches(objective):
    grid = TokenGrid((8, 32, 32), (4, 16, 16))  # 8 tokens
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(3, 1, 8, 32, 32, generator=g) * 0.5 + 0.25
    b = make_objective_batch(objective, clean, grid, mask_ratio=0.5, fill="zeros", generator=g)
    voxel_mask = grid.expand(b.token_mask)
    # Blanked voxels are zero, kept voxels untouched.
    assert torch.all(b.inputs[voxel_mask.bool()] == 0)
    assert torch.equal(b.inputs[~voxel_mask.bool()], clean[~voxel_mask.bool()])
    if objective == "random":
        assert (b.token_mask.sum(1) == 4).all()
        assert torch.all(b.loss_mask == 1)  # whole patch reconstructed
    else:
        kept = (~b.token_mask).int()
        # The kept tokens are a prefix: once blanked, blanked to the end.
        assert torch.all(kept[:, 1:] <= kept[:, :-1])
        k = kept.sum(1)
        assert torch.all((k >= 1) & (k <= grid.n_tokens - 1))
        loss_tokens = grid.to_tokens(b.loss_mask).amax(-1)
        if objective == "next":
            assert torch.equal(b.next_index, k)
            assert torch.all(loss_tokens.sum(1) == 1)
            assert torch.all(loss_tokens[torch.arange(3), k] == 1)
        else:
            assert torch.equal(loss_tokens.bool(), b.token_mask)


def test_next_token_head_learns_token():
    torch.manual_seed(0)
    grid = TokenGrid((4, 16, 32), (4, 16, 16))
    clean = torch.full((1, 1, 4, 16, 32), 0.2)
    clean[..., 16:] = 0.8  # the second token is bright
    b = make_objective_batch("next", clean, grid, fill="zeros", generator=torch.Generator().manual_seed(0))
    head = NextTokenHead()
    recon = torch.full_like(clean, 0.5)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = objective_loss(b, recon, head).item()
    for _ in range(60):
        loss = objective_loss(b, recon, head)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * first
    with pytest.raises(ValueError, match="NextTokenHead"):
        objective_loss(b, recon, None)


def test_masked_mse_counts_only_mask():
    pred = torch.zeros(1, 1, 2, 2, 2)
    target = torch.ones(1, 1, 2, 2, 2)
    mask = torch.zeros_like(pred)
    mask[..., 0, 0, 0] = 1
    assert float(masked_mse(pred, target, mask)) == 1.0
    target[..., 0, 0, 0] = 0
    assert float(masked_mse(pred, target, mask)) == 0.0


def test_mixture_schedule_weights_and_choice():
    s = MixtureSchedule.parse("random=2,next=1,next_all=1")
    assert s.weights_at(0, 10) == {"random": 0.5, "next": 0.25, "next_all": 0.25}
    rng = np.random.default_rng(0)
    picks = [s.choose(i, 1000, rng) for i in range(2000)]
    frac = picks.count("random") / len(picks)
    assert 0.45 < frac < 0.55
    only = MixtureSchedule.parse("random")
    assert {only.choose(i, 10, rng) for i in range(20)} == {"random"}
    lin = MixtureSchedule({"next": 1.0}, "linear", start_weights={"random": 1.0})
    assert lin.weights_at(0, 11)["random"] == 1.0
    assert lin.weights_at(10, 11)["next"] == 1.0
    assert abs(lin.weights_at(5, 11)["random"] - 0.5) < 1e-9
    with pytest.raises(ValueError, match="unknown objective"):
        MixtureSchedule.parse("random=1,bogus=1")
    with pytest.raises(ValueError, match="positive"):
        MixtureSchedule({"random": 0.0})


def test_perturbations():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 8, 16, 16)
    x[..., 8] = 1.0
    blurred = gaussian_blur(x, 1.0)
    assert blurred.shape == x.shape
    assert abs(float(blurred.sum()) - float(x.sum())) < 1e-3 * float(x.sum())  # mass kept
    assert float(blurred.max()) < 1.0
    cut = cutout(torch.rand(2, 1, 8, 16, 16, generator=g), 1, 0.5, g)
    assert cut.shape == (2, 1, 8, 16, 16)
    p = Perturbation(noise_p=1.0, blur_p=1.0, cutout_p=1.0)
    y = p(torch.full((1, 1, 8, 16, 16), 0.5), g)
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, torch.full_like(y, 0.5))

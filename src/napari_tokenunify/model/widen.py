"""Widen a trained EMmamba without changing what it computes (Net2WiderNet, Chen et al. 2016).

A stage whose width doubles gets every channel twice: the weights that produce a channel are
copied, the weights that read it are halved across the two copies. Norms over channels
(LayerNorm) see the same mean and variance, per-channel norms (InstanceNorm) and the Mamba scans
treat the copies alike, so the wider network gives the same output. Small noise on the copies
then lets training tell them apart. This is how a larger network starts from the bundled
default's function instead of from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from .checkpoint import preset_for
from .network import EMMamba

# parameters whose first axis is two concatenated groups ([x, z] of the Mamba input projection)
_OUT_GROUPS = {"in_proj.weight": 2}
# parameters whose second axis reads two concatenated groups ([upsampled, skip] of an UpBlock)
_IN_GROUPS = {"conv_block.conv1.conv.weight": 2, "conv_block.conv3.conv.weight": 2}


def _grouped(name: str, table: dict[str, int]) -> int:
    return next((g for suffix, g in table.items() if name.endswith(suffix)), 1)


def _double(t: torch.Tensor, dim: int, groups: int, halve: bool) -> torch.Tensor:
    """Each of ``groups`` equal chunks of ``t`` along ``dim`` followed by a copy of itself."""
    parts = []
    for chunk in t.chunk(groups, dim=dim):
        chunk = chunk / 2 if halve else chunk
        parts += [chunk, chunk]
    return torch.cat(parts, dim=dim)


def _expand(name: str, old: torch.Tensor, shape: torch.Size, d_state: int) -> torch.Tensor:
    if old.shape == shape:
        return old.clone()
    new = old
    transposed = ".transp_conv." in name  # ConvTranspose weights are (in, out, ...)
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    if new.dim() == 1 or name.endswith("_log"):  # biases, norms, D, A_log: one entry per channel
        out_dim, in_dim = 0, None
    if name.split(".")[-2].startswith("x_proj"):  # (dt_rank + 2 * d_state, d_inner)
        return _x_proj(old, shape, d_state)
    if name.split(".")[-2].startswith("dt_proj") and name.endswith("weight"):  # (d_inner, dt_rank)
        new = _double(new, 0, 1, halve=False) if shape[0] == 2 * old.shape[0] else new
        pad = shape[1] - new.shape[1]
        return torch.cat([new, new.new_zeros(new.shape[0], pad)], dim=1) if pad else new
    if shape[out_dim] == 2 * old.shape[out_dim]:
        new = _double(new, out_dim, _grouped(name, _OUT_GROUPS), halve=False)
    if in_dim is not None and shape[in_dim] == 2 * old.shape[in_dim]:
        new = _double(new, in_dim, _grouped(name, _IN_GROUPS), halve=True)
    if new.shape != shape:
        raise ValueError(f"{name}: cannot widen {tuple(old.shape)} to {tuple(shape)} (only doubling is supported)")
    return new


def _x_proj(old: torch.Tensor, shape: torch.Size, d_state: int) -> torch.Tensor:
    """x_proj rows are [dt (rank), B (d_state), C (d_state)]: the read side doubles, and a larger
    dt rank gets zero rows (its dt_proj columns are zero too, so dt is unchanged; with zero noise
    that rank would never get a gradient, so ``widen``'s noise is what brings it to life)."""
    new = _double(old, 1, 1, halve=True) if shape[1] == 2 * old.shape[1] else old
    extra = shape[0] - old.shape[0]
    if extra < 0:
        raise ValueError(f"x_proj: cannot shrink {tuple(old.shape)} to {tuple(shape)}")
    rank = old.shape[0] - 2 * d_state
    return torch.cat([new[:rank], new.new_zeros(extra, new.shape[1]), new[rank:]], dim=0)


def widen(
    model: EMMamba,
    feature_sizes: Sequence[int],
    hidden_size: int,
    noise: float = 0.01,
    seed: int = 0,
) -> EMMamba:
    """A copy of ``model`` with each of ``feature_sizes`` and ``hidden_size`` equal to the old
    width or twice it, computing the same function up to ``noise`` (the standard deviation of
    the noise added to doubled weights, relative to each tensor's own).

    The copy's card is the start's with the new config (preset ``custom``).
    Raises ``ValueError`` for widths that are neither, or where a residual block would lose its
    projection (a stage doubled while the next is not and then matches it).
    """
    old_cfg = model.config
    fs = tuple(int(v) for v in feature_sizes)
    widths = list(zip((*old_cfg.feature_sizes, old_cfg.hidden_size), (*fs, int(hidden_size)), strict=True))
    for a, b in widths:
        if b not in (a, 2 * a):
            raise ValueError(f"widen: each width must stay or double; {a} -> {b} does neither")
    chain = [old_cfg.in_channels, *old_cfg.feature_sizes, old_cfg.hidden_size]
    new_chain = [old_cfg.in_channels, *fs, int(hidden_size)]
    for i in range(len(chain) - 1):
        if (chain[i] == chain[i + 1]) != (new_chain[i] == new_chain[i + 1]):
            raise ValueError(
                f"widen: widths {chain[i]} -> {chain[i + 1]} become {new_chain[i]} -> {new_chain[i + 1]}, "
                "which changes whether a residual block has a projection; double the next width too"
            )
    cfg = old_cfg.with_overrides(feature_sizes=fs, hidden_size=int(hidden_size))
    wide = EMMamba(cfg, preset=None)
    gen = torch.Generator().manual_seed(seed)
    old_state = model.state_dict()
    new_state = {}
    for name, target in wide.state_dict().items():
        old = old_state[name].detach().to("cpu", torch.float32)
        value = _expand(name, old, target.shape, old_cfg.d_state)
        if noise and value.shape != old.shape and value.dim() > 1 and value.std() > 0:
            value = value + noise * value.std() * torch.randn(value.shape, generator=gen)
        new_state[name] = value.to(target.dtype)
    wide.load_state_dict(new_state, strict=True)
    card = getattr(model, "card", None)  # the start's normalisation, threshold and record carry over
    wide.card = replace(card, config=cfg.to_dict(), preset=preset_for(cfg) or "custom") if card else None
    return wide

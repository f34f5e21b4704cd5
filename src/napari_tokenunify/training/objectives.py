"""The TokenUnify pretraining objectives and their mixture.

All three work on the same network (reconstruction head, sigmoid output in [0, 1]) and the same
token grid (:class:`~.tokens.TokenGrid`):

- ``random``: a random subset of tokens (``mask_ratio``, default 0.4) is replaced with noise or
  zeros; the loss is the MSE over the whole reconstructed patch (as in the issue / MAE-like).
- ``next``: a random prefix of ``k`` tokens (raster order) is kept and the rest blanked; a small
  :class:`NextTokenHead` predicts token ``k`` — the loss covers that token's voxels only.
- ``next_all``: the same prefix; the loss covers every token from ``k`` on (reconstruct all that
  follows).

:class:`MixtureSchedule` picks an objective per step from weights that may change over training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .tokens import TokenGrid

OBJECTIVES: tuple[str, ...] = ("random", "next", "next_all")
FILLS: tuple[str, ...] = ("noise", "zeros")


def random_token_mask(
    batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bool (B, N): exactly ``round(ratio * N)`` tokens (at least one) set per row, chosen at random."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must lie strictly between 0 and 1, got {ratio}")
    n_masked = min(n_tokens - 1, max(1, round(ratio * n_tokens)))
    order = torch.rand(batch, n_tokens, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, n_tokens, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask


def prefix_lengths(
    batch: int, n_tokens: int, generator: torch.Generator | None = None, min_prefix: int = 1
) -> torch.Tensor:
    """Random prefix lengths ``k`` in ``[min_prefix, N - 1]`` (long, (B,)): at least one token is kept
    and at least one is left to predict."""
    if n_tokens < 2:
        raise ValueError("next-token objectives need a patch of at least two tokens")
    min_prefix = max(1, min(min_prefix, n_tokens - 1))
    return torch.randint(min_prefix, n_tokens, (batch,), generator=generator)


def prefix_mask(k: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Bool (B, N): True for the blanked tokens, i.e. index ≥ k (the prefix ``0..k-1`` is kept)."""
    idx = torch.arange(n_tokens).unsqueeze(0)
    return idx >= k.reshape(-1, 1).cpu()


def blank(
    x: torch.Tensor, voxel_mask: torch.Tensor, fill: str = "noise", generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x`` with the voxels where ``voxel_mask`` is set replaced by uniform noise or zeros."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if fill == "zeros":
        replacement = torch.zeros_like(x)
    else:
        replacement = torch.rand(x.shape, generator=generator).to(x.device, x.dtype)
    return torch.where(voxel_mask.to(x.device).bool(), replacement, x)


@dataclass
class ObjectiveBatch:
    """What one training step of an objective needs: the corrupted input and where the loss counts."""

    objective: str
    inputs: torch.Tensor  # (B, 1, Z, Y, X) corrupted
    target: torch.Tensor  # (B, 1, Z, Y, X) the clean patch
    loss_mask: torch.Tensor  # (B, 1, Z, Y, X) float, 1 where the loss counts
    token_mask: torch.Tensor  # (B, N) bool, the blanked tokens
    next_index: torch.Tensor | None = None  # (B,) token k for ``next``


def make_objective_batch(
    objective: str,
    clean: torch.Tensor,
    grid: TokenGrid,
    *,
    mask_ratio: float = 0.4,
    fill: str = "noise",
    generator: torch.Generator | None = None,
    perturbed: torch.Tensor | None = None,
) -> ObjectiveBatch:
    """Build the input and loss mask of ``objective`` for a clean batch (B, 1, Z, Y, X) in [0, 1].

    ``perturbed`` (noise/blur/cutout applied, see :mod:`.perturb`) is what the network sees before
    token masking; the target stays the clean patch.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if tuple(clean.shape[2:]) != tuple(grid.patch_shape):
        raise ValueError(f"batch shape {tuple(clean.shape[2:])} does not match the token grid {grid.patch_shape}")
    source = clean if perturbed is None else perturbed
    b = clean.shape[0]
    n = grid.n_tokens
    next_index = None
    if objective == "random":
        tmask = random_token_mask(b, n, mask_ratio, generator)
        loss_tokens = torch.ones(b, n)
    else:
        k = prefix_lengths(b, n, generator)
        tmask = prefix_mask(k, n)
        if objective == "next":
            loss_tokens = torch.zeros(b, n)
            loss_tokens[torch.arange(b), k] = 1.0
            next_index = k
        else:
            loss_tokens = tmask.float()
    vmask = grid.expand(tmask).to(clean.device)
    inputs = blank(source, vmask, fill, generator)
    loss_mask = grid.expand(loss_tokens).to(clean.device, clean.dtype)
    return ObjectiveBatch(objective, inputs, clean, loss_mask, tmask, next_index)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the voxels where ``mask`` > 0."""
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


class NextTokenHead(nn.Module):
    """A small convolutional head for next-token prediction.

    It sees the corrupted input, the backbone's reconstruction and a map marking token ``k``, and
    outputs a sigmoid image; only token ``k``'s voxels are scored. Used in pretraining only — it is
    not part of the finetuned segmentation model.
    """

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3, width, 3, padding=1),
            nn.GELU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv3d(width, 1, 1),
        )

    def forward(self, inputs: torch.Tensor, recon: torch.Tensor, target_map: torch.Tensor) -> torch.Tensor:
        x = torch.cat([inputs, recon, target_map], dim=1)
        # Residual on the backbone's reconstruction (in logit space) so the head starts from it.
        base = torch.logit(recon.clamp(1e-4, 1 - 1e-4))
        return torch.sigmoid(base + self.net(x))


def objective_loss(
    batch: ObjectiveBatch, recon: torch.Tensor, head: NextTokenHead | None = None
) -> torch.Tensor:
    """The loss of one objective given the backbone's reconstruction (B, 1, Z, Y, X)."""
    if batch.objective == "next":
        if head is None:
            raise ValueError("the 'next' objective needs a NextTokenHead")
        pred = head(batch.inputs, recon, batch.loss_mask)
        return masked_mse(pred, batch.target, batch.loss_mask)
    return masked_mse(recon, batch.target, batch.loss_mask)


@dataclass
class MixtureSchedule:
    """Weights of the objectives per step: ``constant`` (``weights`` throughout) or ``linear``
    (from ``start_weights`` to ``weights`` over training, e.g. random-token first, then more
    next-token as the network learns local structure)."""

    weights: dict[str, float] = field(default_factory=lambda: {"random": 1.0, "next": 1.0, "next_all": 1.0})
    schedule: str = "constant"
    start_weights: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', got {self.schedule!r}")
        for w in (self.weights, self.start_weights or {}):
            bad = set(w) - set(OBJECTIVES)
            if bad:
                raise ValueError(f"unknown objective(s) {sorted(bad)}; choose from {OBJECTIVES}")
            if any(v < 0 for v in w.values()):
                raise ValueError(f"objective weights must be non-negative, got {w}")
        if sum(self.weights.values()) <= 0:
            raise ValueError(f"at least one objective weight must be positive, got {self.weights}")
        if self.schedule == "linear" and not self.start_weights:
            raise ValueError("the linear schedule needs start_weights")

    @classmethod
    def parse(cls, text: str, schedule: str = "constant") -> MixtureSchedule:
        """``"random=1,next=1,next_all=1"`` (or one name, e.g. ``"random"``) → a schedule."""
        weights: dict[str, float] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            name, _, value = part.partition("=")
            weights[name.strip()] = float(value) if value else 1.0
        return cls(weights=weights, schedule=schedule)

    def weights_at(self, step: int, total: int) -> dict[str, float]:
        """Normalised weights (summing to 1) at ``step`` of ``total``."""
        end = {o: float(self.weights.get(o, 0.0)) for o in OBJECTIVES}
        if self.schedule == "linear":
            start = {o: float(self.start_weights.get(o, 0.0)) for o in OBJECTIVES}
            t = min(1.0, max(0.0, step / max(1, total - 1)))
            end = {o: (1 - t) * start[o] + t * end[o] for o in OBJECTIVES}
        s = sum(end.values())
        return {o: v / s for o, v in end.items()}

    def choose(self, step: int, total: int, rng: np.random.Generator) -> str:
        w = self.weights_at(step, total)
        return str(rng.choice(OBJECTIVES, p=[w[o] for o in OBJECTIVES]))

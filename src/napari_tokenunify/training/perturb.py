"""Perturbations of the pretraining input (noise, blur, cutout), as in the TokenUnify paper.

The network sees the perturbed, token-masked patch and must reconstruct the clean one, so it
learns to ignore noise and blur rather than copy them. Torch ops on (B, 1, Z, Y, X) in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation ``sigma``, clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return (x + sigma * noise).clamp(0.0, 1.0)


def _kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: tuple[float, float, float] | float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, Z, Y, X) with per-axis ``sigma`` (0 skips an axis)."""
    if isinstance(sigma, (int, float)):
        sigma = (float(sigma),) * 3
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis, s in enumerate(sigma):
        if s <= 0:
            continue
        k = _kernel1d(s).to(x.device, x.dtype)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        r = k.numel() // 2
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.reshape(shape))
    return out.reshape(x.shape)


def cutout(
    x: torch.Tensor, n_boxes: int, max_fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Set ``n_boxes`` random boxes (each side up to ``max_fraction`` of the patch) to the patch mean."""
    out = x.clone()
    spatial = x.shape[2:]
    for bi in range(x.shape[0]):
        fill = out[bi].mean()
        for _ in range(n_boxes):
            sl = []
            for size in spatial:
                side = int(torch.randint(1, max(2, int(size * max_fraction) + 1), (1,), generator=generator))
                start = int(torch.randint(0, max(1, size - side + 1), (1,), generator=generator))
                sl.append(slice(start, start + side))
            out[(bi, slice(None), *sl)] = fill
    return out


@dataclass
class Perturbation:
    """Random noise, blur and cutout, each applied with its own probability per batch."""

    noise_p: float = 0.5
    noise_sigma: float = 0.05
    blur_p: float = 0.3
    blur_sigma: float = 1.0
    cutout_p: float = 0.3
    cutout_boxes: int = 2
    cutout_max_fraction: float = 0.25

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        def happens(p: float) -> bool:
            return p > 0 and float(torch.rand(1, generator=generator)) < p

        if happens(self.blur_p):
            s = float(torch.rand(1, generator=generator)) * self.blur_sigma + 0.3
            x = gaussian_blur(x, s)
        if happens(self.noise_p):
            x = add_noise(x, self.noise_sigma, generator)
        if happens(self.cutout_p):
            x = cutout(x, self.cutout_boxes, self.cutout_max_fraction, generator)
        return x

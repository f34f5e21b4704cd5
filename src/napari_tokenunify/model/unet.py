"""A plain superhuman-style residual 3D U-Net (Lee et al. 2017): the ablation's baseline and a
bundled model (``unet``), saved and loaded like EMmamba (``model.safetensors`` + a card whose
``preset`` is ``"unet"`` and whose ``config`` holds the constructor arguments).

Same interface as EMmamba for training and prediction: ``model(x)`` takes (B, 1, Z, Y, X) in
[0, 1] and returns sigmoid affinities (B, C, Z, Y, X); ``input_divisor`` and ``valid_shape`` say
which shapes it accepts. Residual blocks (conv, ELU, conv + skip), max-pool down, transposed
convolution up, skips added (not concatenated) as in the superhuman network, in-plane (1×3×3)
convolutions at full resolution and 3×3×3 below (``top_kernel``/``kernel``); ``pool`` (1, 2, 2)
gives its anisotropic variant, (2, 2, 2) the isotropic one that fits 10 nm FIB-SEM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        pad = tuple(k // 2 for k in kernel)
        self.proj = nn.Conv3d(cin, cout, kernel, padding=pad)
        self.body = nn.Sequential(
            nn.BatchNorm3d(cout),
            nn.ELU(),
            nn.Conv3d(cout, cout, kernel, padding=pad),
            nn.BatchNorm3d(cout),
            nn.ELU(),
            nn.Conv3d(cout, cout, kernel, padding=pad),
        )
        self.act = nn.Sequential(nn.BatchNorm3d(cout), nn.ELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.act(x + self.body(x))


class ResidualUNet3D(nn.Module):
    """The superhuman-style residual U-Net with ``widths`` channels per level."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        widths: Sequence[int] = (8, 16, 32, 64),
        pool: tuple[int, int, int] = (2, 2, 2),
        kernel: tuple[int, int, int] = (3, 3, 3),
        top_kernel: tuple[int, int, int] = (1, 3, 3),
    ) -> None:
        super().__init__()
        widths = list(widths)
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "widths": widths,
            "pool": list(pool),
            "kernel": list(kernel),
            "top_kernel": list(top_kernel),
        }
        self.embed = nn.Sequential(nn.Conv3d(in_channels, widths[0], (1, 5, 5), padding=(0, 2, 2)), nn.ELU())
        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = widths[0]
        for level, w in enumerate(widths[:-1]):
            self.down.append(ResBlock(cin, w, top_kernel if level == 0 else kernel))
            self.pools.append(nn.MaxPool3d(pool, pool))
            cin = w
        self.bottom = ResBlock(cin, widths[-1], kernel)
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        cin = widths[-1]
        for level in reversed(range(len(widths) - 1)):
            w = widths[level]
            self.ups.append(nn.ConvTranspose3d(cin, w, pool, pool))
            self.up_blocks.append(ResBlock(w, w, top_kernel if level == 0 else kernel))
            cin = w
        self.out = nn.Conv3d(widths[0], out_channels, 1)
        levels = len(widths) - 1
        self.input_divisor = tuple(p**levels for p in pool)

    def valid_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """``shape`` rounded up to a multiple of ``input_divisor`` per axis."""
        return tuple(-(-int(s) // d) * d for s, d in zip(shape, self.input_divisor, strict=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s, d in zip(x.shape[2:], self.input_divisor, strict=False):
            if s % d:
                raise ValueError(
                    f"input shape {tuple(x.shape[2:])} must be a multiple of {self.input_divisor}; "
                    "use model.valid_shape() to pad"
                )
        x = self.embed(x)
        skips = []
        for block, pool in zip(self.down, self.pools, strict=False):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips), strict=False):
            x = block(up(x) + skip)
        return torch.sigmoid(self.out(x))


def unet_from_config(config: dict) -> ResidualUNet3D:
    """A fresh U-Net from the ``config`` dict a card or a saved file holds."""
    try:
        return ResidualUNet3D(
            int(config["in_channels"]), int(config["out_channels"]), list(config["widths"]),
            tuple(config["pool"]), tuple(config["kernel"]),
            tuple(config.get("top_kernel", config["kernel"])),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"the U-Net configuration {config} is incomplete or invalid ({err}); it needs "
            "in_channels, out_channels, widths, pool and kernel"
        ) from err


__all__ = ["ResidualUNet3D", "unet_from_config"]

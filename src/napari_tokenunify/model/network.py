"""EMMamba: the TokenUnify EMmamba segmentation network (``SegMamba`` in TokenUnify's
src/segmamba.py) with the same module tree, so its state_dicts load unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .blocks import GSC, BasicBlock, MambaLayer, MlpChannel, OutBlock, UpBlock
from .presets import ModelConfig


class MambaEncoder(nn.Module):
    """Stem + 3 downsamplers, each stage GSC -> Mamba layers -> side output (norm + MLP)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dims = cfg.feature_sizes
        self.depths = cfg.depths
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv3d(cfg.in_channels, dims[0], (1, 7, 7), stride=2, padding=(0, 3, 3)))]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(nn.InstanceNorm3d(dims[i]), nn.Conv3d(dims[i], dims[i + 1], (1, 2, 2), stride=2))
            )
        self.gscs = nn.ModuleList([GSC(d) for d in dims])
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    *[MambaLayer(d, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand) for _ in range(n)]
                )
                for d, n in zip(dims, cfg.depths, strict=True)
            ]
        )
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.InstanceNorm3d(d))
        self.mlps = nn.ModuleList([MlpChannel(d, 2 * d) for d in dims])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i in range(len(self.depths)):
            x = self.downsample_layers[i](x)
            x = self.gscs[i](x)
            x = self.stages[i](x)
            outs.append(self.mlps[i](getattr(self, f"norm{i}")(x)))
        return tuple(outs)


class EMMamba(nn.Module):
    """EMmamba: (B, in, Z, Y, X) in [0, 1] -> sigmoid affinities (B, out, Z, Y, X).

    Z, Y and X must be multiples of :attr:`input_divisor` (16); :meth:`valid_shape` rounds up.
    """

    input_divisor = 16

    def __init__(self, config: ModelConfig, preset: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.preset = preset
        f = config.feature_sizes
        k = config.kernel_size
        self.vit = MambaEncoder(config)
        self.encoder1 = BasicBlock(config.in_channels, f[0], k)
        self.encoder2 = BasicBlock(f[0], f[1], k)
        self.encoder3 = BasicBlock(f[1], f[2], k)
        self.encoder4 = BasicBlock(f[2], f[3], k)
        self.encoder5 = BasicBlock(f[3], config.hidden_size, k)
        self.decoder5 = UpBlock(config.hidden_size, f[3], k)
        self.decoder4 = UpBlock(f[3], f[2], k)
        self.decoder3 = UpBlock(f[2], f[1], k)
        self.decoder2 = UpBlock(f[1], f[0], k)
        self.decoder1 = BasicBlock(f[0], f[0], k)
        self.out = OutBlock(f[0], config.out_channels)
        self.card = None  # set by build_model / load_model

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    @classmethod
    def valid_shape(cls, shape: Sequence[int]) -> tuple[int, ...]:
        """``shape`` (z, y, x) rounded up to the nearest shape the network accepts: multiples of
        16, and not 16x16x16 (the deepest stage needs more than one voxel for its instance
        norms), in which case x becomes 32."""
        d = cls.input_divisor
        out = [max(d, -(-int(s) // d) * d) for s in shape]
        if all(s == d for s in out):
            out[-1] = 2 * d
        return tuple(out)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input (batch, {self.config.in_channels}, z, y, x); got {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.input_divisor for s in spatial):
            raise ValueError(
                f"input size {spatial} is not a multiple of {self.input_divisor} in every axis; "
                f"pad it to {self.valid_shape(spatial)} (model.valid_shape)"
            )
        if self.valid_shape(spatial) != spatial:
            raise ValueError(
                f"input size {spatial} is too small: the deepest stage would hold one voxel; "
                f"use at least {self.valid_shape(spatial)} (model.valid_shape)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        outs = self.vit(x)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(outs[0])
        enc3 = self.encoder3(outs[1])
        enc4 = self.encoder4(outs[2])
        hidden = self.encoder5(outs[3])
        d = self.decoder5(hidden, enc4)
        d = self.decoder4(d, enc3)
        d = self.decoder3(d, enc2)
        d = self.decoder2(d, enc1)
        return torch.sigmoid(self.out(self.decoder1(d)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

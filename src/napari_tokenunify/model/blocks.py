"""Building blocks of EMmamba, laid out like TokenUnify's (and MONAI's) modules so that
their state_dict keys match: ``GSC``, ``MambaLayer``, ``MlpChannel`` (encoder) and the
UNETR-style ``ResBlock`` / ``BasicBlock`` / ``UpBlock`` / ``OutBlock`` (decoder)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .mixer import TriMamba

Size3 = int | Sequence[int]


def _same_padding(kernel: Size3) -> int | tuple[int, ...]:
    if isinstance(kernel, int):
        return (kernel - 1) // 2
    return tuple((k - 1) // 2 for k in kernel)


class GSC(nn.Module):
    """Gated spatial convolution: two 3x3x3 conv/norm/ReLU, a parallel 1x1x1 branch, a 1x1x1
    fusion, plus the input (residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.proj = nn.Conv3d(c, c, 3, 1, 1)
        self.norm = nn.InstanceNorm3d(c)
        self.proj2 = nn.Conv3d(c, c, 3, 1, 1)
        self.norm2 = nn.InstanceNorm3d(c)
        self.proj3 = nn.Conv3d(c, c, 1, 1, 0)
        self.norm3 = nn.InstanceNorm3d(c)
        self.proj4 = nn.Conv3d(c, c, 1, 1, 0)
        self.norm4 = nn.InstanceNorm3d(c)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.act(self.norm(self.proj(x)))
        x1 = self.act(self.norm2(self.proj2(x1)))
        x2 = self.act(self.norm3(self.proj3(x)))
        y = self.act(self.norm4(self.proj4(x1 + x2)))
        return y + x


class MambaLayer(nn.Module):
    """LayerNorm over channels then the tri-directional mixer on the voxels in (z, y, x) order.
    No residual (as in the reference)."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = TriMamba(dim, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        tokens = x.reshape(b, c, -1).transpose(1, 2)
        out = self.mamba(self.norm(tokens))
        return out.transpose(1, 2).reshape(b, c, *spatial)


class MlpChannel(nn.Module):
    """1x1x1 conv, GELU, 1x1x1 conv."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvUnit(nn.Module):
    """A bare convolution under the attribute name ``conv`` (MONAI's ``Convolution`` layout)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Size3,
        stride: Size3 = 1,
        bias: bool = False,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        if transposed:
            self.conv = nn.ConvTranspose3d(cin, cout, kernel, stride=stride, bias=bias)
        else:
            self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=_same_padding(kernel), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResBlock(nn.Module):
    """MONAI ``UnetResBlock`` (stride 1): conv-norm-lrelu-conv-norm + (1x1x1 conv-norm) skip, lrelu."""

    def __init__(self, cin: int, cout: int, kernel: Size3) -> None:
        super().__init__()
        self.conv1 = ConvUnit(cin, cout, kernel)
        self.conv2 = ConvUnit(cout, cout, kernel)
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1 = nn.InstanceNorm3d(cout)
        self.norm2 = nn.InstanceNorm3d(cout)
        if cin != cout:
            self.conv3 = ConvUnit(cin, cout, 1)
            self.norm3 = nn.InstanceNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lrelu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        skip = self.norm3(self.conv3(x)) if hasattr(self, "conv3") else x
        return self.lrelu(out + skip)


class BasicBlock(nn.Module):
    """MONAI ``UnetrBasicBlock`` with ``res_block=True`` (the block sits under ``layer``)."""

    def __init__(self, cin: int, cout: int, kernel: Size3) -> None:
        super().__init__()
        self.layer = ResBlock(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class UpBlock(nn.Module):
    """MONAI ``UnetrUpBlock``: 2x2x2 transposed conv, concatenate [up, skip], ResBlock."""

    def __init__(self, cin: int, cout: int, kernel: Size3, up: int = 2) -> None:
        super().__init__()
        self.transp_conv = ConvUnit(cin, cout, up, stride=up, transposed=True)
        self.conv_block = ResBlock(2 * cout, cout, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class OutBlock(nn.Module):
    """MONAI ``UnetOutBlock``: 1x1x1 conv with bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvUnit(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

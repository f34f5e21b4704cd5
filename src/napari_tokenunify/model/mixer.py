"""The tri-directional ("v3") Mamba mixer of EMmamba.

Parameter names and shapes follow TokenUnify's vendored mamba-ssm ``Mamba(bimamba_type="v3")``:
one shared ``in_proj``/``out_proj`` (no bias) and, per direction, a depthwise causal
``conv1d``, ``x_proj``, ``dt_proj``, ``A_log`` and ``D`` (suffix ``_b`` for the backward scan,
``_s`` for the slice scan).

Directions: forward; backward (reversed sequence, result reversed back); slice (the sequence is
cut into ``nslices`` equal contiguous parts which are interleaved: scan position ``j*k + i``
visits token ``i*(L/k) + j``). Each direction's output is gated by SiLU(z); the three are summed
and projected by ``out_proj``.

Sequences whose length is not a multiple of ``nslices`` (the reference refuses them) are padded
with zero tokens at the end for the slice direction only, then cropped; for lengths that are a
multiple of ``nslices`` the result is exactly the reference's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scan import scan_backend, selective_scan

DIRECTIONS = ("", "_b", "_s")


def _init_dt_bias(bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
    """Set the bias so that softplus(bias) is log-uniform in [dt_min, dt_max] (Mamba's init)."""
    with torch.no_grad():
        dt = torch.exp(
            torch.rand(bias.shape[0]) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=1e-4)
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))


class TriMamba(nn.Module):
    """Mamba mixer with forward, backward and slice scans; input and output (B, L, d_model)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        nslices: int = 5,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        self.nslices = nslices
        di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        for sfx in DIRECTIONS:
            conv = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=True)
            x_proj = nn.Linear(di, self.dt_rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(self.dt_rank, di, bias=True)
            std = self.dt_rank**-0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            _init_dt_bias(dt_proj.bias)
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(di, 1)
            setattr(self, f"conv1d{sfx}", conv)
            setattr(self, f"x_proj{sfx}", x_proj)
            setattr(self, f"dt_proj{sfx}", dt_proj)
            setattr(self, f"A{sfx}_log", nn.Parameter(torch.log(A)))
            setattr(self, f"D{sfx}", nn.Parameter(torch.ones(di)))
        self.out_proj = nn.Linear(di, d_model, bias=False)

    # -- sequence orderings -------------------------------------------------------------
    def _slice_order(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, C, L) -> (B, C, L') in slice-scan order, L' = L rounded up to nslices."""
        L = x.shape[-1]
        k = self.nslices
        pad = (-L) % k
        if pad:
            x = F.pad(x, (0, pad))
        m = (L + pad) // k
        return x.view(*x.shape[:-1], k, m).transpose(-1, -2).reshape(*x.shape[:-1], k * m), pad

    def _slice_restore(self, y: torch.Tensor, L: int) -> torch.Tensor:
        k = self.nslices
        m = y.shape[-1] // k
        return y.view(*y.shape[:-1], m, k).transpose(-1, -2).reshape(*y.shape[:-1], k * m)[..., :L]

    # -- the three directions as one grouped computation -----------------------------------
    def _stacked(self, name: str) -> torch.Tensor:
        return torch.stack([self.get_parameter(name.format(sfx)) for sfx in DIRECTIONS])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model).

        The forward, backward and slice sequences are stacked along the channel axis (groups of
        ``d_inner`` channels, all padded to the slice length) so that the depthwise convs, the
        projections and the selective scan each run once for all three directions.
        """
        batch, L, _ = hidden.shape
        di, k = self.d_inner, 3
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2*d_inner, L)
        sliced, pad = self._slice_order(xz)
        Lp = L + pad
        fwd = F.pad(xz, (0, pad)) if pad else xz
        bwd = F.pad(xz.flip(-1), (0, pad)) if pad else xz.flip(-1)
        x = torch.cat([fwd[:, :di], bwd[:, :di], sliced[:, :di]], dim=1)  # (B, 3*di, Lp)
        z = torch.cat([fwd[:, di:], bwd[:, di:], sliced[:, di:]], dim=1)
        # causal depthwise convs (padding d_conv-1 on the left only, as in the reference)
        w = torch.cat([getattr(self, f"conv1d{sfx}").weight for sfx in DIRECTIONS])
        b = torch.cat([getattr(self, f"conv1d{sfx}").bias for sfx in DIRECTIONS])
        x = F.silu(F.conv1d(F.pad(x, (self.d_conv - 1, 0)), w, b, groups=k * di))
        # per-direction x_proj and dt_proj as batched matmuls over the 3 groups
        xg = x.view(batch, k, di, Lp)
        x_dbl = torch.matmul(self._stacked("x_proj{}.weight").unsqueeze(0), xg)  # (B, 3, R+2N, Lp)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dt = torch.matmul(self._stacked("dt_proj{}.weight").unsqueeze(0), dt).reshape(batch, k * di, Lp)
        A = -torch.exp(torch.cat([getattr(self, f"A{sfx}_log") for sfx in DIRECTIONS]).float())
        y = selective_scan(
            x,
            dt,
            A,
            Bm,
            Cm,
            torch.cat([getattr(self, f"D{sfx}") for sfx in DIRECTIONS]).float(),
            z=z,
            delta_bias=torch.cat([getattr(self, f"dt_proj{sfx}").bias for sfx in DIRECTIONS]).float(),
            delta_softplus=True,
            backend=scan_backend(hidden.device),
        )
        y = y.to(hidden.dtype)
        out = y[:, :di, :L] + y[:, di : 2 * di, :L].flip(-1) + self._slice_restore(y[:, 2 * di :], L)
        return self.out_proj(out.transpose(1, 2))

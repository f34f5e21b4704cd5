"""Selective-scan backends for the Mamba mixer.

The recurrence (per batch b, channel d, state n, token t)::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t          (then optionally * silu(z_t))

Backends (``TOKENUNIFY_SCAN=ref|torch|numba|cuda`` forces one; default ``auto``):

- ``cuda``: mamba-ssm's fused ``selective_scan_fn`` (CUDA tensors, mamba-ssm importable).
- ``numba``: our fused CPU kernel (:mod:`.scan_numba`, forward and backward, float32): one
  exponential and a few multiply-adds per state element, the state never leaves the cache.
  Chosen automatically for CPU tensors when numba imports and the kernels compile (compiled
  once, then loaded from numba's disk cache); otherwise, and for float64 or non-CPU tensors,
  the chunked scan below is used (a failed compile warns once, never raises).
- ``torch``: our chunked scan (pure PyTorch, no Python loop over tokens): inside chunks of
  ``T <= 64`` tokens the state is ``h_t = e^{S_t - R} (e^{R} h_in + sum_{s<=t} e^{R - S_s} x_s)``
  with ``S`` the cumulative sum of ``dt*A`` (log space) and ``R`` its value half-way through the
  chunk, so every exponential stays inside float32's range (``T`` shrinks where the decay of a
  chunk would exceed e^-160; e^-60 under autograd). Chunk-end states are carried across
  chunks by a log-depth scan over the chunk axis (products of decays only). The sequence is
  processed in blocks of about 2M state elements with the state carried between blocks, so the
  working memory does not grow with the sequence; under autograd each block is recomputed in
  backward (activation checkpointing) instead of being stored.
- ``ref``: a plain token-by-token loop, for tests only.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

BACKENDS = ("auto", "torch", "ref", "cuda", "numba")

# |sum of dt*A| inside one chunk is kept below this, so exp(+-half of it) stays in float32 range.
_MAX_CHUNK_LOG_DECAY = 160.0
_MAX_CHUNK_LOG_DECAY_GRAD = 60.0
_DEFAULT_CHUNK = 64
# elements of one (B, D, block, N) working tensor; bounds memory and keeps work cache-sized.
_BLOCK_ELEMENTS = 1 << 21
# on accelerators the cost is kernel launches per block, not cache misses: fewer, larger blocks
_BLOCK_ELEMENTS_ACCEL = 1 << 25


def mamba_kernels_status() -> tuple[bool, str]:
    """Whether mamba-ssm's fused CUDA kernels can be used here, and why (not)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception as err:  # ImportError, or a broken build raising OSError/RuntimeError
        return False, f"mamba-ssm not importable ({type(err).__name__}: {err})"
    return True, "mamba-ssm selective_scan_fn on CUDA"


def scan_backend(device: torch.device | None = None) -> str:
    """The backend used for tensors on ``device`` (honours ``TOKENUNIFY_SCAN``)."""
    forced = os.environ.get("TOKENUNIFY_SCAN", "auto").strip().lower() or "auto"
    if forced not in BACKENDS:
        raise ValueError(
            f"TOKENUNIFY_SCAN={forced!r} is not a scan backend; use one of {', '.join(BACKENDS)}"
        )
    cpu = device is None or device.type == "cpu"
    if forced != "auto":
        if forced == "cuda":
            ok, why = mamba_kernels_status()
            if not ok:
                raise RuntimeError(f"TOKENUNIFY_SCAN=cuda but the kernels cannot be used: {why}")
        if forced == "numba":  # a CPU kernel: other devices, or no kernel (warned), use ours
            return "numba" if cpu and numba_kernels_status()[0] else "torch"
        return forced
    if device is not None and device.type == "cuda" and mamba_kernels_status()[0]:
        return "cuda"
    if cpu and numba_kernels_status()[0]:
        return "numba"
    return "torch"


def numba_kernels_status() -> tuple[bool, str]:
    """Whether our fused numba CPU kernels can be used here, and why (not). The first call
    compiles them, or loads them from numba's disk cache, and logs the time; a failure warns
    once and is remembered for the process."""
    from . import scan_numba

    return scan_numba.status()


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` signature.

    Shapes: ``u, delta, z``: (batch, d, L); ``A``: (d, n); ``B, C``: (batch, n, L) or
    (batch, groups, n, L) with ``d`` split evenly into ``groups``; ``D, delta_bias``: (d,).
    Returns ``y`` (batch, d, L) in ``u``'s dtype.
    """
    name = backend or scan_backend(u.device)
    if name == "cuda":
        return _scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if name == "numba":
        return selective_scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    fn = selective_scan_ref if name == "ref" else selective_scan_chunked
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(
        u.contiguous(),
        delta.contiguous(),
        A.contiguous(),
        B.contiguous(),
        C.contiguous(),
        None if D is None else D.float(),
        z=None if z is None else z.contiguous(),
        delta_bias=None if delta_bias is None else delta_bias.float(),
        delta_softplus=delta_softplus,
    )


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """float32 inputs; B, C as (batch, groups, n, L); delta after bias and softplus."""
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, d, L); got {tuple(u.shape)}, {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(f"A must be (d, n) with d={u.shape[1]}; got {tuple(A.shape)}")
    ft = torch.promote_types(u.dtype, torch.float32)  # float32, or float64 if given
    u = u.to(ft)
    delta = delta.to(ft)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ft)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    groups = B.shape[1]
    if u.shape[1] % groups:
        raise ValueError(f"d={u.shape[1]} is not divisible by the {groups} groups of B")
    return u, delta, A.to(ft), B.to(ft), C.to(ft), groups


def _finish(y, u, D, z, dtype):
    if D is not None:
        y = y + u * D.to(y.dtype)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Token-by-token reference (slow; for tests). Same arguments as :func:`selective_scan`."""
    dtype = u.dtype
    u, delta, A, B, C, g = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, d, L = u.shape
    Bx = B.repeat_interleave(d // g, dim=1)  # (batch, d, n, L)
    Cx = C.repeat_interleave(d // g, dim=1)
    dA = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (batch, d, n, L)
    dBu = (delta * u).unsqueeze(2) * Bx
    h = u.new_zeros(batch, d, A.shape[1])
    ys = []
    for t in range(L):
        h = dA[..., t] * h + dBu[..., t]
        ys.append((h * Cx[..., t]).sum(-1))
    return _finish(torch.stack(ys, dim=-1), u, D, z, dtype)


def _pick_chunk(delta: torch.Tensor, amax: torch.Tensor, chunk: int, max_log: float) -> int:
    """Largest power-of-two chunk (<= chunk) whose summed log decay stays below ``max_log``
    (1 if even single steps exceed it; those are then clamped where the decay underflows)."""
    with torch.no_grad():
        rate = delta * amax[None, :, None]  # (batch, d, L) = max over n of |dt*A|
        T = chunk
        while T > 1:
            L = rate.shape[-1]
            pad = (-L) % T
            r = F.pad(rate, (0, pad)) if pad else rate
            if float(r.view(*r.shape[:-1], -1, T).sum(-1).max()) <= max_log:
                return T
            T //= 2
        return 1


def _cumsum_t_(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In-place cumulative sum over axis 3 (the token-in-chunk axis).

    torch.cumsum over a non-innermost axis is slow on CPU (a scalar loop); adding consecutive
    slices in place is several times faster (measured 0.5 ms vs 4.5 ms for 2M elements).
    """
    T = x.shape[3]
    steps = range(T - 2, -1, -1) if reverse else range(1, T)
    for t in steps:
        x[:, :, :, t].add_(x[:, :, :, t + 1 if reverse else t - 1])
    return x


class _CumsumT(torch.autograd.Function):
    """Differentiable cumulative sum over axis 3 (backward: reverse cumulative sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _cumsum_t_(x.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _cumsum_t_(grad.clone(), reverse=True)


def _cumsum_t(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Cumulative sum over axis 3: in place without autograd, else through :class:`_CumsumT`."""
    if x.shape[3] == 1:
        return x
    if x.device.type != "cpu":  # one fused kernel on accelerators; the slice loop is a CPU fix
        return x.copy_(torch.cumsum(x, dim=3)) if inplace else torch.cumsum(x, dim=3)
    return _cumsum_t_(x) if inplace else _CumsumT.apply(x)


def _carry(decay: torch.Tensor, local: torch.Tensor, h0: torch.Tensor):
    """States entering each chunk, by a log-depth (Hillis-Steele) scan over the chunk axis.

    ``decay``, ``local``: (b, g, c, e, n), chunk c maps its entering state h to
    ``decay_c * h + local_c``; ``h0``: (b, g, e, n). Returns (entering states (b, g, c, e, n),
    final state (b, g, e, n)). Only products of decays in [0, 1] appear: stable.
    """
    nc = decay.shape[2]
    first = decay[:, :, :1] * h0.unsqueeze(2) + local[:, :, :1]
    x = torch.cat([first, local[:, :, 1:]], dim=2) if nc > 1 else first
    a = decay
    k = 1
    while k < nc:
        x = torch.cat([x[:, :, :k], a[:, :, k:] * x[:, :, :-k] + x[:, :, k:]], dim=2)
        a = torch.cat([a[:, :, :k], a[:, :, k:] * a[:, :, :-k]], dim=2)
        k *= 2
    entering = torch.cat([h0.unsqueeze(2), x[:, :, :-1]], dim=2)
    return entering, x[:, :, -1]


def _scan_block(
    u, delta, A, B, C, h0, T: int, work: list[torch.Tensor] | None = None, max_log: float = 160.0
):
    """One block: u, delta (b, d, L); A (d, n); B, C (b, g, n, L); h0 (b, d, n).

    Works in the layout (b, g, chunk, t, e, n) (d = g * e) so that B, C broadcast over e and
    the per-token contraction with C is over the last axis. Returns (y (b, d, L), h_last).
    """
    batch, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    e = d // g
    pad = (-L) % T
    if pad:  # padded steps have dt=0 (decay 1) and input 0: they leave the state unchanged
        u, delta = F.pad(u, (0, pad)), F.pad(delta, (0, pad))
        B, C = F.pad(B, (0, pad)), F.pad(C, (0, pad))
    nc = (L + pad) // T

    def lay(x: torch.Tensor) -> torch.Tensor:  # (b, d, L) -> (b, g, c, t, e)
        return x.reshape(batch, g, e, nc, T).permute(0, 1, 3, 4, 2).contiguous()

    def lay_state(x: torch.Tensor) -> torch.Tensor:  # (b, g, n, L) -> (b, g, c, t, 1, n)
        return x.reshape(batch, g, n, nc, T).permute(0, 1, 3, 4, 2).contiguous().unsqueeze(-2)

    inplace = work is not None  # no autograd: reuse two preallocated buffers, in place
    dl = lay(delta)
    du = (dl * lay(u)).unsqueeze(-1)
    cd = _cumsum_t(dl.clone() if inplace else dl, inplace)  # cumulative dt; log decay S = cd * A
    half = 0.5 * cd[:, :, :, -1:]  # mid-point reference R = half * A
    Av = A.reshape(1, g, 1, 1, e, n)
    Bv = lay_state(B)
    # T == 1 means single steps decay by more than e^-max_log: clamp the exponents there. The
    # result is unchanged in float32 (e^-max_log times the old state is below its resolution).
    lim = 0.5 * max_log if T == 1 else None
    if inplace:
        shape = (batch, g, nc, T, e, n)
        size = batch * d * n * nc * T
        P = torch.mul((half - cd).unsqueeze(-1), Av, out=work[0][:size].view(shape))
        P = (P.clamp_(max=lim) if lim else P).exp_()  # e^{R - S}
        W = torch.mul(P, du, out=work[1][:size].view(shape)).mul_(Bv)
    else:
        arg = (half - cd).unsqueeze(-1) * Av
        P = torch.exp(arg.clamp(max=lim) if lim else arg)
        W = P * du * Bv
    cs = _cumsum_t(W, inplace)
    # chunk c maps its entering state h to e^{S_end} h + cs_end / P_end
    end_local = cs[:, :, :, -1] / P[:, :, :, -1]
    end_arg = cd[:, :, :, -1].unsqueeze(-1) * Av[:, :, 0]
    end_decay = torch.exp(end_arg.clamp(min=-2 * lim) if lim else end_arg)
    entering, h_last = _carry(end_decay, end_local, h0.reshape(batch, g, e, n))
    half_arg = half.unsqueeze(-1) * Av
    inc = torch.exp(half_arg.clamp(min=-lim) if lim else half_arg) * entering.unsqueeze(3)
    states = cs.add_(inc).div_(P) if inplace else (cs + inc) / P  # times e^{S - R}
    y = torch.matmul(states, lay_state(C).transpose(-1, -2)).squeeze(-1)  # (b, g, c, t, e)
    y = y.permute(0, 1, 4, 2, 3).reshape(batch, d, nc * T)[..., :L]
    return y, h_last.reshape(batch, d, n)


def selective_scan_chunked(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    chunk: int = _DEFAULT_CHUNK,
    block_tokens: int | None = None,
):
    """Chunked parallel scan in pure PyTorch (differentiable). Same arguments as :func:`selective_scan`."""
    dtype = u.dtype
    u, delta, A, B, C, _ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, d, L = u.shape
    n = A.shape[1]
    if block_tokens is None:
        elements = _BLOCK_ELEMENTS if u.device.type in ("cpu", "meta") else _BLOCK_ELEMENTS_ACCEL
        block_tokens = max(chunk, (elements // max(1, batch * d * n)) // chunk * chunk)
    amax = A.detach().abs().amax(dim=1)
    symbolic = u.device.type == "meta"  # shape tracing: no data-dependent decisions
    h = u.new_zeros(batch, d, n)
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (u, delta, A, B, C)
    )
    # backward multiplies factors of both signs of the exponent: keep them smaller there
    max_log = _MAX_CHUNK_LOG_DECAY_GRAD if grad else _MAX_CHUNK_LOG_DECAY
    work = None
    if not grad and not symbolic:
        size = batch * d * n * (min(L, block_tokens) + chunk)
        work = [u.new_empty(size), u.new_empty(size)]
    ys = []
    for start in range(0, L, block_tokens):
        sl = slice(start, min(L, start + block_tokens))
        T = chunk if symbolic else _pick_chunk(delta[..., sl], amax, chunk, max_log)
        parts = (u[..., sl], delta[..., sl], A, B[..., sl], C[..., sl], h, T, work, max_log)
        if grad and L > block_tokens:
            # keep only each block's inputs for backward and recompute its insides there:
            # training memory then grows with the sequence only through inputs and outputs
            y, h = checkpoint(_scan_block, *parts, use_reentrant=False)
        else:
            y, h = _scan_block(*parts)
        ys.append(y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
    return _finish(y, u, D, z, dtype)


class _NumbaScan(torch.autograd.Function):
    """The fused kernel's core scan ``y = scan(u, delta, A, B, C)`` (float32 CPU tensors, B and
    C as (batch, groups, n, L)). The forward keeps the state entering every tile of 32 tokens;
    the backward recomputes each tile's states from it."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):  # noqa: D102
        from . import scan_numba

        y, states = scan_numba.scan_forward(u, delta, A, B, C, save=True)
        ctx.save_for_backward(u, delta, A, B, C, states)
        return y

    @staticmethod
    def backward(ctx, gy):  # noqa: D102
        from . import scan_numba

        u, delta, A, B, C, states = ctx.saved_tensors
        return scan_numba.scan_backward(u, delta, A, B, C, states, gy.float())


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The fused numba kernel (differentiable). Same arguments as :func:`selective_scan`.

    Softplus, bias, ``D`` and the gate ``z`` are applied in PyTorch around the kernel. Inputs
    that are not float32 CPU tensors, or a kernel that is unavailable, use the chunked scan.
    """
    dtype = u.dtype
    u, delta, A, B, C, _ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    if u.dtype != torch.float32 or u.device.type != "cpu" or not numba_kernels_status()[0]:
        y = selective_scan_chunked(u, delta, A, B, C)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)):
        y = _NumbaScan.apply(u, delta, A, B, C)
    else:
        from . import scan_numba

        y = scan_numba.scan_forward(u, delta, A, B, C, save=False)[0]
    return _finish(y, u, D, z, dtype)


__all__ = [
    "BACKENDS",
    "mamba_kernels_status",
    "numba_kernels_status",
    "scan_backend",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_numba",
    "selective_scan_ref",
]

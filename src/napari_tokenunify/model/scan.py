"""Selective-scan backends for the Mamba mixer.

The recurrence (per batch b, channel d, state n, token t)::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t          (then optionally * silu(z_t))

Backends (``TOKENUNIFY_SCAN=ref|torch|cuda`` forces one; default ``auto``):

- ``cuda``: mamba-ssm's fused ``selective_scan_fn`` (CUDA tensors, mamba-ssm importable).
- ``torch``: our chunked scan (pure PyTorch, no Python loop over tokens): inside chunks of
  ``T`` tokens the state is ``h_t = e^{S_t} (h_in + sum_{s<=t} e^{-S_s} x_s)`` with ``S`` the
  cumulative sum of ``dt*A`` in log space, evaluated around the chunk's mid-point so every
  exponential stays inside float32's range; chunk-end states are carried across chunks by a
  short recurrence (one step per chunk). The sequence is processed in blocks of at most
  ``block_tokens`` tokens, so memory does not grow with the sequence beyond the output.
- ``ref``: a plain token-by-token loop, for tests only.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "torch", "ref", "cuda")

# |sum of dt*A| inside one chunk is kept below this, so exp(+-half of it) stays in float32 range.
_MAX_CHUNK_LOG_DECAY = 160.0
_DEFAULT_CHUNK = 64
# elements of one (B, D, block, N) working tensor; bounds memory and keeps work cache-sized.
_BLOCK_ELEMENTS = 1 << 21


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
    if forced != "auto":
        if forced == "cuda":
            ok, why = mamba_kernels_status()
            if not ok:
                raise RuntimeError(f"TOKENUNIFY_SCAN=cuda but the kernels cannot be used: {why}")
        return forced
    if device is not None and device.type == "cuda" and mamba_kernels_status()[0]:
        return "cuda"
    return "torch"


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
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    groups = B.shape[1]
    if u.shape[1] % groups:
        raise ValueError(f"d={u.shape[1]} is not divisible by the {groups} groups of B")
    return u, delta, A.float(), B.float(), C.float(), groups


def _finish(y, u, D, z, dtype):
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
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


def _pick_chunk(delta: torch.Tensor, amax: torch.Tensor, chunk: int) -> int:
    """Largest power-of-two chunk (<= chunk) whose summed log decay stays in range."""
    with torch.no_grad():
        rate = delta * amax[None, :, None]  # (batch, d, L) = max over n of |dt*A|
        T = chunk
        while T > 1:
            L = rate.shape[-1]
            pad = (-L) % T
            r = F.pad(rate, (0, pad)) if pad else rate
            if float(r.view(*r.shape[:-1], -1, T).sum(-1).max()) <= _MAX_CHUNK_LOG_DECAY:
                return T
            T //= 2
        return 1


def _scan_block(u, delta, A, B, C, h0, T):
    """One block: u, delta (b, d, L); A (d, n); B, C (b, g, n, L); h0 (b, d, n)."""
    batch, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    pad = (-L) % T
    if pad:  # padded steps have dt=0 (decay 1) and input 0: they leave the state unchanged
        u, delta = F.pad(u, (0, pad)), F.pad(delta, (0, pad))
        B, C = F.pad(B, (0, pad)), F.pad(C, (0, pad))
    nc = (L + pad) // T
    dl = delta.view(batch, g, d // g, nc, T)
    # log decays: S[b, g, e, c, t, n] = A[d, n] * cumsum_t dt
    S = dl.cumsum(-1).unsqueeze(-1) * A.view(1, g, d // g, 1, 1, n)
    R = 0.5 * S[..., -1:, :]
    Bv = B.view(batch, g, 1, n, nc, T).permute(0, 1, 2, 4, 5, 3)  # (b, g, 1, c, t, n)
    Cv = C.view(batch, g, 1, n, nc, T).permute(0, 1, 2, 4, 5, 3)
    x = (dl * u.view(batch, g, d // g, nc, T)).unsqueeze(-1) * Bv
    cs = (torch.exp(R - S) * x).cumsum(-2)
    E = torch.exp(S - R)
    # chunk-end states without the incoming state, then the short recurrence across chunks
    end_local = E[..., -1, :] * cs[..., -1, :]  # (b, g, e, c, n)
    end_decay = torch.exp(S[..., -1, :])
    h = h0.view(batch, g, d // g, n)
    carried = []
    for c in range(nc):
        carried.append(h)
        h = end_decay[..., c, :] * h + end_local[..., c, :]
    Hin = torch.stack(carried, dim=3).unsqueeze(-2)  # (b, g, e, c, 1, n)
    states = E * (cs + torch.exp(R) * Hin)
    y = (states * Cv).sum(-1).reshape(batch, d, nc * T)[..., :L]
    return y, h.reshape(batch, d, n)


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
        block_tokens = max(chunk, (_BLOCK_ELEMENTS // max(1, batch * d * n)) // chunk * chunk)
    amax = A.detach().abs().amax(dim=1)
    # keep a single step's log decay in range (only matters for dt*|A| > 160, where the
    # decay is e^-160 for the fastest state anyway)
    limit = (_MAX_CHUNK_LOG_DECAY / amax.clamp_min(1e-12))[None, :, None]
    symbolic = u.device.type == "meta"  # shape tracing: no data-dependent decisions
    if not symbolic and bool((delta > limit).any()):
        delta = torch.minimum(delta, limit)
    h = u.new_zeros(batch, d, n)
    ys = []
    for start in range(0, L, block_tokens):
        sl = slice(start, min(L, start + block_tokens))
        T = chunk if symbolic else _pick_chunk(delta[..., sl], amax, chunk)
        y, h = _scan_block(u[..., sl], delta[..., sl], A, B[..., sl], C[..., sl], h, T)
        ys.append(y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
    return _finish(y, u, D, z, dtype)


__all__ = [
    "BACKENDS",
    "mamba_kernels_status",
    "scan_backend",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_ref",
]

"""Selective scan: chunked parallel scan == sequential reference (values and gradients),
backend selection, stability, the slice ordering of the mixer."""

from __future__ import annotations

import pytest
import torch

from napari_tokenunify.model.mixer import TriMamba
from napari_tokenunify.model.scan import (
    numba_kernels_status,
    scan_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _inputs(L, b=2, d=6, n=4, groups=None, seed=0, dt_shift=0.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    bshape = (b, n, L) if groups is None else (b, groups, n, L)
    t = {
        "u": torch.randn(b, d, L, generator=g),
        "delta": torch.randn(b, d, L, generator=g) + dt_shift,
        "A": -(torch.rand(d, n, generator=g) * 15 + 0.5),
        "B": torch.randn(*bshape, generator=g),
        "C": torch.randn(*bshape, generator=g),
        "D": torch.randn(d, generator=g),
        "z": torch.randn(b, d, L, generator=g),
        "delta_bias": torch.randn(d, generator=g) * 0.5,
    }
    if requires_grad:
        for v in t.values():
            v.requires_grad_(True)
    return t


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("L", [1, 5, 15, 16, 17, 63, 100, 333])
def test_chunked_equals_reference_forward(L):
    t = _inputs(L)
    ref = selective_scan_ref(**t, delta_softplus=True)
    with torch.no_grad():  # in-place fast path
        fast = selective_scan_chunked(**t, delta_softplus=True, chunk=16, block_tokens=64)
    slow = selective_scan_chunked(**t, delta_softplus=True, chunk=16, block_tokens=64)
    assert _rel(fast, ref) < 1e-4
    assert _rel(slow, ref) < 1e-4


@pytest.mark.parametrize("L", [7, 48, 130])
def test_chunked_equals_reference_gradients(L):
    t_ref = _inputs(L, requires_grad=True, seed=1)
    t_new = _inputs(L, requires_grad=True, seed=1)
    w = torch.randn(2, 6, L, generator=torch.Generator().manual_seed(5))
    (selective_scan_ref(**t_ref, delta_softplus=True) * w).sum().backward()
    (selective_scan_chunked(**t_new, delta_softplus=True, chunk=16, block_tokens=32) * w).sum().backward()
    for name in t_ref:
        assert _rel(t_new[name].grad, t_ref[name].grad) < 1e-4, name


def test_gradients_with_strong_decay_are_finite_and_match():
    t_ref = _inputs(90, requires_grad=False, seed=6, dt_shift=2.0)
    t_ref["A"] = t_ref["A"] * 4
    t_new = {k: v.clone().requires_grad_(True) for k, v in t_ref.items()}
    t_ref = {k: v.clone().requires_grad_(True) for k, v in t_ref.items()}
    selective_scan_ref(**t_ref, delta_softplus=True).square().sum().backward()
    selective_scan_chunked(**t_new, delta_softplus=True, chunk=32).square().sum().backward()
    for name in t_ref:
        assert torch.isfinite(t_new[name].grad).all(), name
        assert _rel(t_new[name].grad, t_ref[name].grad) < 1e-4, name


def test_grouped_B_C_like_mamba_ssm():
    t = _inputs(40, d=6, groups=3)
    ref = selective_scan_ref(**t, delta_softplus=True)
    new = selective_scan_chunked(**t, delta_softplus=True, chunk=8)
    assert _rel(new, ref) < 1e-4


def test_strong_decay_stays_finite_and_exact():
    # dt*|A| up to ~300 per step: exponentials would overflow without the mid-point reference
    # and the adaptive chunk
    t = _inputs(200, dt_shift=3.0, seed=2)
    t["A"] = t["A"] * 6
    ref = selective_scan_ref(**t, delta_softplus=True)
    new = selective_scan_chunked(**t, delta_softplus=True, chunk=64)
    assert torch.isfinite(new).all()
    assert _rel(new, ref) < 1e-4


def test_weak_decay_long_memory():
    # tiny dt: the state carries across many chunks (exercises the cross-chunk scan)
    t = _inputs(1000, dt_shift=-6.0, seed=3, d=4, n=2)
    ref = selective_scan_ref(**t, delta_softplus=True)
    new = selective_scan_chunked(**t, delta_softplus=True, chunk=16, block_tokens=96)
    assert _rel(new, ref) < 1e-4


def test_long_sequence_runs_in_bounded_blocks():
    # 60 000 tokens; the working set is one block of at most _BLOCK_ELEMENTS elements
    t = _inputs(60_000, b=1, d=4, n=4, seed=4)
    with torch.no_grad():
        y = selective_scan_chunked(**t, delta_softplus=True)
        ref_tail = selective_scan_ref(
            **{k: (v[..., :3000] if v.dim() == 3 and k != "A" else v) for k, v in t.items()},
            delta_softplus=True,
        )
    assert y.shape == (1, 4, 60_000) and torch.isfinite(y).all()
    assert _rel(y[..., :3000], ref_tail) < 1e-4


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("TOKENUNIFY_SCAN", raising=False)
    cpu_default = "numba" if numba_kernels_status()[0] else "torch"
    assert scan_backend(torch.device("cpu")) == cpu_default
    assert scan_backend(torch.device("meta")) == "torch"
    monkeypatch.setenv("TOKENUNIFY_SCAN", "torch")
    assert scan_backend(torch.device("cpu")) == "torch"
    monkeypatch.setenv("TOKENUNIFY_SCAN", "ref")
    assert scan_backend(torch.device("cpu")) == "ref"
    t = _inputs(20)
    assert torch.allclose(selective_scan(**t, delta_softplus=True), selective_scan_ref(**t, delta_softplus=True))
    monkeypatch.setenv("TOKENUNIFY_SCAN", "bogus")
    with pytest.raises(ValueError, match="not a scan backend"):
        scan_backend(torch.device("cpu"))
    if not torch.cuda.is_available():
        monkeypatch.setenv("TOKENUNIFY_SCAN", "cuda")
        with pytest.raises(RuntimeError, match="cannot be used"):
            scan_backend(torch.device("cpu"))


def test_slice_order_matches_reference_formula():
    mixer = TriMamba(8, nslices=5)
    x = torch.arange(2 * 3 * 20, dtype=torch.float32).view(2, 3, 20)
    ours, pad = mixer._slice_order(x)
    # reference: xz.chunk(5, -1) -> stack(-1) -> flatten(-2)
    ref = torch.stack(x.chunk(5, dim=-1), dim=-1).flatten(-2)
    assert pad == 0 and torch.equal(ours, ref)
    # reference inverse: reshape(b, d, L/5, 5).permute(0, 1, 3, 2).flatten(-2)
    ref_back = ours.reshape(2, 3, 4, 5).permute(0, 1, 3, 2).flatten(-2)
    assert torch.equal(mixer._slice_restore(ours, 20), ref_back)
    assert torch.equal(ref_back, x)
    # other lengths: padded for the slice scan only, restored exactly
    y = torch.randn(1, 3, 23)
    order, pad = mixer._slice_order(y)
    assert pad == 2 and order.shape[-1] == 25
    assert torch.equal(mixer._slice_restore(order, 23), y)


def test_mixer_torch_backend_matches_reference_backend(monkeypatch):
    torch.manual_seed(0)
    mixer = TriMamba(8)
    x = torch.randn(2, 45, 8)
    monkeypatch.setenv("TOKENUNIFY_SCAN", "ref")
    ref = mixer(x)
    monkeypatch.setenv("TOKENUNIFY_SCAN", "torch")
    assert _rel(mixer(x), ref) < 1e-4
    for L in (44, 7):  # not multiples of nslices
        assert torch.isfinite(mixer(torch.randn(1, L, 8))).all()


def test_mixer_directions_are_distinct():
    # each direction has its own parameters: zeroing the slice branch changes the output
    torch.manual_seed(0)
    mixer = TriMamba(8)
    x = torch.randn(1, 30, 8)
    with torch.no_grad():
        a = mixer(x)
        mixer.D_s.zero_()
        mixer.x_proj_s.weight.zero_()
        b = mixer(x)
    assert not torch.allclose(a, b)


def _reference_v3_mixer(m: TriMamba, hidden: torch.Tensor) -> torch.Tensor:
    """The reference Mamba(bimamba_type="v3") forward written out direction by direction
    (mamba_inner_fn_no_out_proj per direction; slice order by chunk/stack/flatten)."""
    import torch.nn.functional as F

    batch, L, _ = hidden.shape
    xz = (m.in_proj.weight @ hidden.reshape(-1, m.d_model).T).reshape(-1, batch, L).permute(1, 0, 2)

    def inner(xz, sfx):
        x, z = xz.chunk(2, dim=1)
        conv = getattr(m, f"conv1d{sfx}")
        x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=m.d_conv - 1, groups=m.d_inner)[..., :L])
        x_dbl = F.linear(x.transpose(1, 2).reshape(-1, m.d_inner), getattr(m, f"x_proj{sfx}").weight)
        dt = getattr(m, f"dt_proj{sfx}").weight @ x_dbl[:, : m.dt_rank].T
        dt = dt.reshape(m.d_inner, batch, L).permute(1, 0, 2)
        Bm = x_dbl[:, m.dt_rank : m.dt_rank + m.d_state].reshape(batch, L, -1).transpose(1, 2)
        Cm = x_dbl[:, -m.d_state :].reshape(batch, L, -1).transpose(1, 2)
        A = -torch.exp(getattr(m, f"A{sfx}_log").float())
        return selective_scan_ref(
            x, dt, A, Bm, Cm, getattr(m, f"D{sfx}").float(), z=z,
            delta_bias=getattr(m, f"dt_proj{sfx}").bias.float(), delta_softplus=True,
        )

    out = inner(xz, "")
    out_b = inner(xz.flip([-1]), "_b")
    xz_s = torch.stack(xz.chunk(m.nslices, dim=-1), dim=-1).flatten(-2)
    out_s = inner(xz_s, "_s")
    out_s = out_s.reshape(batch, m.d_inner, L // m.nslices, m.nslices).permute(0, 1, 3, 2).flatten(-2)
    return F.linear((out + out_b.flip([-1]) + out_s).transpose(1, 2), m.out_proj.weight)


@pytest.mark.parametrize("L", [10, 45, 200])
def test_fused_mixer_equals_reference_v3_algorithm(L):
    torch.manual_seed(L)
    mixer = TriMamba(8)
    with torch.no_grad():  # distinct parameters per direction
        for p in mixer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, L, 8)
    ref = _reference_v3_mixer(mixer, x)
    assert _rel(mixer(x), ref) < 1e-4
    with torch.no_grad():
        assert _rel(mixer(x), ref) < 1e-4


def test_chunk_and_block_sizes_do_not_change_the_result():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=20, deadline=None)
    @given(
        L=st.integers(1, 150),
        chunk=st.sampled_from([1, 2, 4, 8, 16, 64]),
        blocks=st.integers(1, 4),
        shift=st.floats(-4.0, 3.0),
        seed=st.integers(0, 10_000),
    )
    def check(L, chunk, blocks, shift, seed):
        t = _inputs(L, b=1, d=4, n=3, seed=seed, dt_shift=shift)
        ref = selective_scan_ref(**t, delta_softplus=True)
        block = max(chunk, -(-L // blocks) // chunk * chunk)
        with torch.no_grad():
            new = selective_scan_chunked(**t, delta_softplus=True, chunk=chunk, block_tokens=block)
        assert _rel(new, ref) < 1e-4

    check()


# --- mamba-ssm's semantics, and the wiring of the ``cuda`` backend, without a GPU ------------


@pytest.mark.parametrize("groups", [None, 2])
def test_chunked_scan_matches_mamba_ssm_reference(groups):
    from mamba_ssm_reference import selective_scan_ref as mamba_ref

    t = _inputs(37, d=6, groups=groups, seed=7)
    ours = selective_scan_chunked(**t, delta_softplus=True)
    assert _rel(ours, mamba_ref(**t, delta_softplus=True)) < 1e-4
    t["delta"] = torch.nn.functional.softplus(t["delta"] + t.pop("delta_bias")[:, None])  # the same step, given
    ours = selective_scan_chunked(**t)
    assert _rel(ours, mamba_ref(**t)) < 1e-4
    bare = {k: t[k] for k in ("u", "delta", "A", "B", "C")}  # no D, z or bias
    assert _rel(selective_scan_chunked(**bare), mamba_ref(**bare)) < 1e-4


@pytest.fixture
def fake_mamba_ssm(monkeypatch):
    """A stand-in ``mamba_ssm`` package whose ``selective_scan_fn`` is mamba-ssm's reference, and a
    CUDA device that 'exists': the ``cuda`` backend then runs its real dispatch code on the CPU."""
    import sys
    import types

    from mamba_ssm_reference import selective_scan_ref as mamba_ref

    calls = []

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        for name, x in {"u": u, "delta": delta, "A": A, "B": B, "C": C, "z": z}.items():
            assert x is None or x.is_contiguous(), f"{name} must be contiguous for the kernel"
        for name, x in {"D": D, "delta_bias": delta_bias}.items():
            assert x is None or x.dtype == torch.float32, f"{name} must be float32 for the kernel"
        calls.append(u.shape)
        return mamba_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    pkg = types.ModuleType("mamba_ssm")
    ops = types.ModuleType("mamba_ssm.ops")
    iface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    iface.selective_scan_fn = selective_scan_fn
    pkg.ops, ops.selective_scan_interface = ops, iface
    for name, mod in (("mamba_ssm", pkg), ("mamba_ssm.ops", ops), ("mamba_ssm.ops.selective_scan_interface", iface)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return calls


def test_cuda_backend_passes_mamba_ssm_its_arguments(fake_mamba_ssm, monkeypatch):
    from napari_tokenunify.model.scan import mamba_kernels_status

    assert mamba_kernels_status()[0]
    monkeypatch.delenv("TOKENUNIFY_SCAN", raising=False)
    assert scan_backend(torch.device("cuda")) == "cuda"  # chosen automatically on a CUDA device
    assert scan_backend(torch.device("cpu")) == ("numba" if numba_kernels_status()[0] else "torch")
    t = _inputs(30, d=6, groups=3, seed=8)
    t["u"] = t["u"].transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous, as in the mixer
    y = selective_scan(**t, delta_softplus=True, backend="cuda")
    assert fake_mamba_ssm and _rel(y, selective_scan_chunked(**t, delta_softplus=True)) < 1e-4


def test_network_with_cuda_backend_equals_torch_backend(fake_mamba_ssm, monkeypatch):
    from napari_tokenunify.model import build_model

    torch.manual_seed(0)
    net = build_model("tiny").eval()
    x = torch.rand(1, 1, 16, 32, 32)
    monkeypatch.setenv("TOKENUNIFY_SCAN", "torch")
    with torch.no_grad():
        ours = net(x)
    monkeypatch.setenv("TOKENUNIFY_SCAN", "cuda")
    with torch.no_grad():
        via_kernel_api = net(x)
    assert len(fake_mamba_ssm) > 0  # every mixer direction went through selective_scan_fn
    assert (via_kernel_api - ours).abs().max() < 1e-4

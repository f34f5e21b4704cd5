"""The fused numba CPU scan: forward and gradients == the sequential reference, its own
exponential, selection by TOKENUNIFY_SCAN, and the fallback to the chunked scan."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from napari_tokenunify.model import scan_numba
from napari_tokenunify.model.scan import (
    scan_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_numba,
    selective_scan_ref,
)
from test_model_scan import _inputs  # noqa: E402  (the same random scan inputs)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TOL = 1e-5


@pytest.fixture(scope="module")
def kernels():
    ok, why = scan_numba.status()
    if not ok:
        pytest.skip(f"numba kernels unavailable: {why}")
    return scan_numba.load()


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _exact(t, **kw):
    """The sequential scan in float64: the reference both float32 scans are measured against."""
    return selective_scan_ref(**{k: v.double() for k, v in t.items()}, **kw)


@pytest.mark.parametrize(
    "L, d, groups, b",
    [(1, 6, None, 2), (5, 6, None, 1), (31, 8, None, 2), (32, 16, 2, 1), (33, 20, None, 2),
     (100, 48, 3, 1), (257, 10, None, 1)],
)
def test_numba_forward_equals_sequential(kernels, L, d, groups, b):
    t = _inputs(L, b=b, d=d, n=16 if d >= 16 else 4, groups=groups, seed=L)
    exact = _exact(t, delta_softplus=True)
    with torch.no_grad():
        fast = selective_scan_numba(**t, delta_softplus=True)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert _rel(fast, exact) < TOL
    assert _rel(selective_scan_ref(**t, delta_softplus=True), exact) < TOL  # float32 reference
    # with autograd on (the path that keeps the tile states): the same numbers
    t_grad = {k: v.clone().requires_grad_(True) for k, v in t.items()}
    assert torch.equal(selective_scan_numba(**t_grad, delta_softplus=True).detach(), fast)


@pytest.mark.parametrize("L, d, groups", [(7, 6, None), (64, 16, 2), (130, 12, 3), (45, 9, None)])
def test_numba_gradients_equal_sequential(kernels, L, d, groups):
    t = _inputs(L, d=d, groups=groups, seed=L + 1)
    w = torch.randn(2, d, L, generator=torch.Generator().manual_seed(5))
    t_ref = {k: v.double().requires_grad_(True) for k, v in t.items()}
    t_new = {k: v.clone().requires_grad_(True) for k, v in t.items()}
    (selective_scan_ref(**t_ref, delta_softplus=True) * w.double()).sum().backward()
    (selective_scan_numba(**t_new, delta_softplus=True) * w).sum().backward()
    for name in t:
        assert t_new[name].grad.dtype == torch.float32, name
        assert _rel(t_new[name].grad, t_ref[name].grad) < TOL, name


def test_numba_strong_and_weak_decay(kernels):
    # dt*|A| up to ~300 per step (exponentials below float32's range: clamped) and tiny dt
    # (the state carries across many tiles)
    for shift, scale, L in ((3.0, 6.0, 200), (-6.0, 1.0, 1000)):
        t = _inputs(L, seed=2, dt_shift=shift)
        t["A"] = t["A"] * scale
        exact = _exact(t, delta_softplus=True)
        t_new = {k: v.clone().requires_grad_(True) for k, v in t.items()}
        t_ref = {k: v.double().requires_grad_(True) for k, v in t.items()}
        y = selective_scan_numba(**t_new, delta_softplus=True)
        assert torch.isfinite(y).all() and _rel(y, exact) < TOL
        y.square().sum().backward()
        selective_scan_ref(**t_ref, delta_softplus=True).square().sum().backward()
        for name in t:
            assert torch.isfinite(t_new[name].grad).all(), name
            assert _rel(t_new[name].grad, t_ref[name].grad) < TOL, name


def test_numba_without_optional_inputs_and_float64(kernels):
    t = _inputs(40, seed=3)
    bare = {k: t[k] for k in ("u", "delta", "A", "B", "C")}
    bare["delta"] = torch.nn.functional.softplus(bare["delta"])
    assert _rel(selective_scan_numba(**bare), _exact(bare)) < TOL
    # float64 inputs are not the kernel's: the chunked scan, in float64
    y64 = selective_scan_numba(**{k: v.double() for k, v in bare.items()})
    assert y64.dtype == torch.float64 and _rel(y64, _exact(bare)) < 1e-9
    # non-contiguous views (as the mixer passes B and C) and inference mode
    bt = {**bare, "u": bare["u"].transpose(1, 2).contiguous().transpose(1, 2)}
    with torch.inference_mode():
        assert _rel(selective_scan_numba(**bt), _exact(bare)) < TOL


def test_own_exponential_is_float32_accurate(kernels):
    from napari_tokenunify.model._scan_kernels import exp32

    x = np.concatenate([np.linspace(-87.3, 88.0, 400_000), np.linspace(-1, 1, 100_000)])
    x = x.astype(np.float32)
    x = x[: x.size // 8 * 8]
    got = exp32(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.5e-7
    assert exp32(np.full(8, -200.0, np.float32)).max() < 1.2e-38  # clamped, not garbage
    assert np.all(exp32(np.zeros(8, np.float32)) == 1.0)


def test_tiles_and_lanes_do_not_change_the_result(kernels):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(
        L=st.integers(1, 140),
        d=st.integers(1, 20),
        n=st.integers(1, 17),
        shift=st.floats(-4.0, 3.0),
        seed=st.integers(0, 10_000),
    )
    def check(L, d, n, shift, seed):
        t = _inputs(L, b=1, d=d, n=n, seed=seed, dt_shift=shift)
        with torch.no_grad():
            assert _rel(selective_scan_numba(**t, delta_softplus=True), _exact(t, delta_softplus=True)) < TOL

    check()


def test_selection(kernels, monkeypatch):
    monkeypatch.delenv("TOKENUNIFY_SCAN", raising=False)
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert scan_backend(cpu) == "numba"  # automatic on CPU
    assert scan_backend(meta) == "torch"  # other devices: the chunked scan
    monkeypatch.setenv("TOKENUNIFY_SCAN", "numba")
    assert scan_backend(cpu) == "numba" and scan_backend(meta) == "torch"
    t = _inputs(20)
    with torch.no_grad():
        assert torch.equal(selective_scan(**t, delta_softplus=True), selective_scan_numba(**t, delta_softplus=True))
    monkeypatch.setenv("TOKENUNIFY_SCAN", "torch")
    assert scan_backend(cpu) == "torch"


def test_network_numba_equals_the_sequential_scan(kernels, monkeypatch):
    """The whole network with the numba scan against the plain sequential recurrence ("ref"),
    forward and backward, with the chunked torch scan beside it. Both land near 1e-6 (relative)
    on this machine; which of the two is closer depends on the CPU and the preset, so each is
    held to its own bound rather than one against the other."""
    from napari_tokenunify.model import build_model

    torch.manual_seed(0)
    net = build_model("tiny")
    x = torch.rand(1, 1, 16, 32, 32)
    outs, grads = {}, {}
    for backend in ("ref", "torch", "numba"):
        monkeypatch.setenv("TOKENUNIFY_SCAN", backend)
        net.zero_grad()
        out = net(x)
        out.square().mean().backward()
        outs[backend] = out.detach()
        grads[backend] = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert _rel(outs["numba"], outs["ref"]) < 1e-5
    assert _rel(outs["torch"], outs["ref"]) < 1e-4
    # all gradients together (some biases before normalisations have gradients that are zero
    # up to rounding; per-tensor relative errors of those mean nothing)
    assert _rel(grads["numba"], grads["ref"]) < 2e-5
    assert _rel(grads["torch"], grads["ref"]) < 1e-3


# --- the fallback --------------------------------------------------------------------------


@pytest.fixture
def broken_numba(monkeypatch):
    """A process where the kernels have not been loaded yet and loading them fails."""
    monkeypatch.setattr(scan_numba, "_state", {})

    def fail():
        raise RuntimeError("LLVM ERROR: simulated failure to compile")

    monkeypatch.setattr(scan_numba, "_build", fail)


def test_failed_compile_falls_back_with_one_warning(broken_numba, monkeypatch):
    monkeypatch.delenv("TOKENUNIFY_SCAN", raising=False)
    t = _inputs(30, seed=4)
    with pytest.warns(RuntimeWarning, match="numba scan kernel is unavailable.*simulated") as rec:
        assert scan_backend(torch.device("cpu")) == "torch"
        monkeypatch.setenv("TOKENUNIFY_SCAN", "numba")  # forced: still no crash
        assert scan_backend(torch.device("cpu")) == "torch"
        y = selective_scan_numba(**t, delta_softplus=True)  # called directly: the chunked scan
    assert len([w for w in rec if issubclass(w.category, RuntimeWarning)]) == 1
    assert _rel(y, selective_scan_chunked(**t, delta_softplus=True)) < 1e-6
    assert not scan_numba.status()[0] and "simulated" in scan_numba.status()[1]


def test_missing_numba_falls_back(monkeypatch):
    monkeypatch.setattr(scan_numba, "_state", {})
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    monkeypatch.delenv("TOKENUNIFY_SCAN", raising=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert scan_backend(torch.device("cpu")) == "torch"
        assert scan_backend(torch.device("cpu")) == "torch"
    assert len(rec) == 1 and "Error" in str(rec[0].message) and "import of numba" in str(rec[0].message)
    t = _inputs(12, seed=5)
    assert _rel(selective_scan(**t, delta_softplus=True), _exact(t, delta_softplus=True)) < 1e-4


def test_cache_dir_defaults_to_a_user_folder(kernels):
    import os

    assert os.environ.get("NUMBA_CACHE_DIR")  # set by the loader when it was unset
    st = scan_numba.load()
    assert st["compile_s"] > 0 and isinstance(st["cached"], bool)
    assert "kernels" in st["reason"] and ("compiled" in st["reason"] or "cache" in st["reason"])


def test_spinning_openmp_makes_the_scan_use_numbas_workqueue_threads(kernels):
    """torch imported before the package (OpenMP spins): numba must not add a spinning OpenMP
    pool of its own (it slowed torch's ops 15x after each scan); imported first: the default."""
    import os
    import subprocess
    import sys

    code = ("import {first}, {second}; from napari_tokenunify.model import scan_numba; "
            "scan_numba.load(); import numba; print(numba.config.THREADING_LAYER)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}

    def layer(first: str, second: str) -> str:
        out = subprocess.run([sys.executable, "-c", code.format(first=first, second=second)],
                             env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1], out.stderr

    late, why = layer("torch", "napari_tokenunify")
    assert late == "workqueue" and "GOMP_SPINCOUNT=2000" in why
    early, _ = layer("napari_tokenunify", "torch")
    assert early == "default"

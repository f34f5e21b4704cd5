"""A fused CPU selective scan (forward and backward) compiled with numba.

The recurrence of :mod:`.scan`, ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``,
``y_t = <C_t, h_t>``, computed token by token with the state held in a small local array, so
each state element costs one exponential and a few multiply-adds and never goes to memory
(the chunked PyTorch scan makes about eight passes over a (tokens x channels x states) tensor).

Layout: each ``prange`` job is one batch element and a block of ``LANES`` channels of one
group of B/C; the state of a job is ``(d_state, LANES)``, channels innermost, so the inner
loops run over the lanes with no reduction and the compiler vectorises them (B_t and C_t are
scalars broadcast over the lanes). Tokens are processed in tiles of ``TILE`` (u and dt are
copied into a (TILE, LANES) tile, y written back from one). The exponential is our own
(:func:`_exp32`: Cody-Waite range reduction and cephes' degree-6 polynomial, ~1 ulp in float32):
llvmlite has no SVML, so ``math.exp`` would stay a scalar call.

Backward: the forward saves the state entering each tile; the backward walks the tiles in
reverse, recomputes a tile's states and decays into (TILE+1, d_state, LANES) buffers, then runs
the adjoint recurrence ``g_t = C_t gy_t + exp(dt_{t+1} A) g_{t+1}`` back through the tile.
Gradients of B and C (shared by the channels of a group) are reduced over the lanes per tile
and summed over the channel blocks afterwards, so no two jobs write the same memory.

Everything here is float32 (float64 inputs use the chunked scan). Import this module only
through :func:`load`, which compiles (or loads from the on-disk cache) and reports the time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


_lock = threading.Lock()
_run_lock = threading.Lock()  # one kernel launch at a time (the workqueue layer needs it)
_state: dict = {}  # filled by load(): kernels or the reason they are unavailable


def default_cache_dir() -> Path:
    """Where numba caches the compiled kernels when ``NUMBA_CACHE_DIR`` is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "napari-tokenunify" / "numba"


def _build():
    """Define and compile the kernels; returns (forward, backward). Raises on any failure."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        # numba caches beside the source file when that is writable, else in a user dir it picks
        # itself; an installed package is often read-only, so give it ours (before the import:
        # numba reads its configuration once).
        os.environ["NUMBA_CACHE_DIR"] = str(default_cache_dir())
    import numba
    import numpy as np

    from ..threads import spinning_waits

    if spinning_waits() and not os.environ.get("NUMBA_THREADING_LAYER"):
        # torch was loaded before this package could make OpenMP wait passively: numba's OpenMP
        # pool would then spin beside torch's and slow torch's own ops after every scan (15x
        # measured, see threads.py); numba's workqueue layer has no spinning pool
        numba.config.THREADING_LAYER = "workqueue"
        log.warning(
            "OpenMP threads spin while waiting (torch was imported before napari_tokenunify, and "
            "neither OMP_WAIT_POLICY=PASSIVE nor a short GOMP_SPINCOUNT is set): the numba scan "
            "uses its workqueue threads; import napari_tokenunify first, or set GOMP_SPINCOUNT=2000, "
            "for full speed on a busy CPU")
    if not numba.config.CACHE_DIR:  # numba was imported before we set the variable
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    from ._scan_kernels import scan_bwd, scan_fwd

    f32 = np.float32
    # compile now (or load from the cache) on a small problem, checked against a plain loop so
    # that a kernel that compiles but computes wrong numbers (an unsupported CPU) is not used
    rng = np.random.default_rng(0)
    b, d, L, n = 1, 10, 37, 3  # a partial block of lanes, a partial tile
    u = rng.standard_normal((b, d, L)).astype(f32)
    dt = rng.uniform(0.01, 1.0, (b, d, L)).astype(f32)
    A = -rng.uniform(0.5, 8.0, (d, n)).astype(f32)
    B = rng.standard_normal((b, 1, n, L)).astype(f32)
    C = rng.standard_normal((b, 1, n, L)).astype(f32)
    y = np.empty_like(u)
    hs = np.empty((b, d, -(-L // _geometry()[1]), n), f32)
    scan_fwd(u, dt, A, B, C, y, hs, True)
    h = np.zeros((d, n))
    expect = np.empty((d, L))
    for t in range(L):
        h = np.exp(dt[0, :, t, None] * A) * h + (dt[0, :, t] * u[0, :, t])[:, None] * B[0, 0, :, t]
        expect[:, t] = h @ C[0, 0, :, t]
    err = np.abs(y[0] - expect).max() / np.abs(expect).max()
    if not err < 1e-5:
        raise RuntimeError(f"the compiled scan kernel computes wrong results here (error {err:.1e})")
    gu, gdt = np.empty_like(u), np.empty_like(u)
    gBp = np.empty((b, 1, -(-d // _geometry()[0]), n, L), f32)
    scan_bwd(u, dt, A, B, C, y, hs, gu, gdt, np.empty((b, d, n), f32), gBp, gBp.copy())
    if not (np.isfinite(gu).all() and np.isfinite(gdt).all()):
        raise RuntimeError("the compiled scan kernel's backward gives non-finite gradients here")
    hits = sum(scan_fwd.stats.cache_hits.values()) + sum(scan_bwd.stats.cache_hits.values())
    return scan_fwd, scan_bwd, hits > 0, numba


def load() -> dict:
    """Compile the kernels once per process (from numba's disk cache when it has them).

    Returns a dict: ``ok`` (bool), ``reason`` (why not, or where the kernels come from),
    ``compile_s`` (seconds to compile or load), ``cached`` (loaded from the disk cache) and, when
    ok, ``fwd``/``bwd``. Never raises: a missing numba or a failed compile gives ``ok=False``
    and one warning for the process.
    """
    with _lock:
        if _state:
            return _state
        start = time.perf_counter()
        try:
            fwd, bwd, cached, numba = _build()
        except Exception as err:  # ImportError, numba's TypingError/LoweringError, LLVM errors
            _state.update(ok=False, reason=f"{type(err).__name__}: {err}".splitlines()[0][:300])
            warnings.warn(
                f"the numba scan kernel is unavailable ({_state['reason']}); using the chunked "
                "PyTorch scan",
                RuntimeWarning,
                stacklevel=3,
            )
            return _state
        sec = time.perf_counter() - start
        where = "loaded from the cache" if cached else "compiled"
        _state.update(
            ok=True,
            fwd=fwd,
            bwd=bwd,
            numba=numba,
            compile_s=sec,
            cached=cached,
            reason=f"numba {numba.__version__} kernels {where} in {sec:.2f} s "
            f"(cache {numba.config.CACHE_DIR})",
        )
        log.info("selective scan: %s", _state["reason"])
        return _state


def status() -> tuple[bool, str]:
    """Whether the kernels are usable here, and why (not); compiles them on the first call."""
    st = load()
    return st["ok"], st["reason"]


def _threads(numba) -> None:
    """Use as many threads as torch does (the library's one thread setting), within numba's."""
    import torch

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _arrays(*ts):
    return [t.detach().contiguous().numpy() for t in ts]


def _geometry():
    from . import _scan_kernels

    return _scan_kernels.LANES, _scan_kernels.TILE


def scan_forward(u, delta, A, B, C, save: bool):
    """Run the forward kernel on CPU float32 tensors (B, C as (b, g, n, L)). Returns
    (y, tile states or None)."""
    import torch

    st = load()
    batch, d, L = u.shape
    n = A.shape[1]
    y = torch.empty(batch, d, L, dtype=torch.float32)
    _, tile = _geometry()
    hsave = torch.empty((batch, d, (L + tile - 1) // tile, n) if save else (1, 1, 1, 1))
    with _run_lock:
        _threads(st["numba"])
        st["fwd"](*_arrays(u, delta, A, B, C), y.numpy(), hsave.numpy(), save)
    return y, (hsave if save else None)


def scan_backward(u, delta, A, B, C, hsave, gy):
    """Gradients of ``sum(y * gy)`` with respect to u, delta, A, B, C."""
    import torch

    st = load()
    batch, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    lanes, _ = _geometry()
    nblk = (d // g + lanes - 1) // lanes
    gu = torch.empty(batch, d, L)
    gdt = torch.empty(batch, d, L)
    gA = torch.empty(batch, d, n)
    gBp = torch.empty(batch, g, nblk, n, L)
    gCp = torch.empty(batch, g, nblk, n, L)
    with _run_lock:
        _threads(st["numba"])
        st["bwd"](
            *_arrays(u, delta, A, B, C, gy, hsave),
            gu.numpy(), gdt.numpy(), gA.numpy(), gBp.numpy(), gCp.numpy(),
        )
    return gu, gdt, gA.sum(0), gBp.sum(2), gCp.sum(2)

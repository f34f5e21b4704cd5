"""numba kernels of the fused CPU selective scan (see :mod:`.scan_numba`, which imports this
module only after pointing numba's disk cache at a writable folder).

The lanes are explicit: ``F32x8`` is a numba type whose values are LLVM ``<8 x float>``
vectors, with a handful of intrinsics (load, store, splat, arithmetic, fused multiply-add,
floor, min/max, 2**k, a horizontal sum). Written this way the kernels are vector code whatever
LLVM's auto-vectoriser makes of numba's arrays (it cannot prove numba's local arrays distinct,
so it leaves the plain loops scalar). On CPUs with narrower vectors LLVM splits each operation.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

f32 = np.float32
LANES = 8  # channels per job: one AVX2 vector of float32
TILE = 32  # tokens per tile; the backward keeps 2 x (TILE+1) x d_state x LANES floats per job
W, K = LANES, TILE

# float32 constants (numba freezes globals with their own type)
LOG2E, HALF, ONE = f32(1.4426950408889634), f32(0.5), f32(1.0)
NEG_LN2_HI, NEG_LN2_LO = f32(-0.693359375), f32(2.12194440e-4)  # ln 2 = HI + LO, HI 9 bits
X_MIN, X_MAX = f32(-87.33654), f32(88.0)  # exp(X_MIN) = 2^-126, the smallest normal float32
P0, P1, P2 = f32(1.9875691500e-4), f32(1.3981999507e-3), f32(8.3334519073e-3)
P3, P4, P5 = f32(4.1665795894e-2), f32(1.6666665459e-1), f32(5.0000001201e-1)

_F = ir.FloatType()
_V = ir.VectorType(_F, W)
_I = ir.IntType(32)
_VI = ir.VectorType(_I, W)


class F32x8(types.Type):
    """Eight float32 lanes in one LLVM vector value."""

    def __init__(self):
        super().__init__(name="F32x8")


f32x8 = F32x8()


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V)


def _call(builder, name, args, ret=_V):
    fnty = ir.FunctionType(ret, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def _vec_ptr(context, builder, aryty, ary, idxty, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.bitcast(builder.gep(arr.data, [i], inbounds=True), _V.as_pointer())


def _f32_array(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C"


@intrinsic
def vload(typingctx, ary, idx):
    """Lanes ``ary.flat[idx : idx + 8]`` (C-contiguous float32 array)."""
    if not (_f32_array(ary) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(ptr, align=4)

    return f32x8(ary, idx), codegen


@intrinsic
def vstore(typingctx, ary, idx, v):
    """``ary.flat[idx : idx + 8] = v``."""
    if not (_f32_array(ary) and isinstance(idx, types.Integer) and v == f32x8):
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(args[2], ptr, align=4)
        return context.get_dummy_value()

    return types.none(ary, idx, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """All lanes equal to the scalar ``x``."""
    if not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        s = context.cast(builder, args[0], sig.args[0], types.float32)
        undef = ir.Constant(_V, ir.Undefined)
        v = builder.insert_element(undef, s, ir.Constant(_I, 0))
        return builder.shuffle_vector(v, undef, ir.Constant(_VI, [0] * W))

    return f32x8(x), codegen


def _vector_op(emit, nargs):
    def typer(typingctx, *args):
        if len(args) != nargs or any(a != f32x8 for a in args):
            return None

        def codegen(context, builder, sig, llargs):
            return emit(builder, *llargs)

        return f32x8(*args), codegen

    return typer


def _v_add(typingctx, a, b):
    return _vector_op(lambda bld, x, y: bld.fadd(x, y), 2)(typingctx, a, b)


def _v_sub(typingctx, a, b):
    return _vector_op(lambda bld, x, y: bld.fsub(x, y), 2)(typingctx, a, b)


def _v_mul(typingctx, a, b):
    return _vector_op(lambda bld, x, y: bld.fmul(x, y), 2)(typingctx, a, b)


def _v_fma(typingctx, a, b, c):
    """a * b + c (fused where the CPU has FMA: llvm.fmuladd)."""
    return _vector_op(lambda bld, x, y, z: _call(bld, "llvm.fmuladd.v8f32", [x, y, z]), 3)(
        typingctx, a, b, c
    )


def _v_min(typingctx, a, b):
    return _vector_op(lambda bld, x, y: _call(bld, "llvm.minnum.v8f32", [x, y]), 2)(typingctx, a, b)


def _v_max(typingctx, a, b):
    return _vector_op(lambda bld, x, y: _call(bld, "llvm.maxnum.v8f32", [x, y]), 2)(typingctx, a, b)


def _v_floor(typingctx, a):
    return _vector_op(lambda bld, x: _call(bld, "llvm.floor.v8f32", [x]), 1)(typingctx, a)


def _emit_pow2(builder, k):
    """2**k for integral lanes k in [-126, 127], by writing the exponent bits."""
    ki = builder.fptosi(k, _VI)
    bits = builder.shl(builder.add(ki, ir.Constant(_VI, [127] * W)), ir.Constant(_VI, [23] * W))
    return builder.bitcast(bits, _V)


def _v_pow2(typingctx, k):
    return _vector_op(_emit_pow2, 1)(typingctx, k)


vadd = intrinsic(_v_add)
vsub = intrinsic(_v_sub)
vmul = intrinsic(_v_mul)
vfma = intrinsic(_v_fma)
vmin = intrinsic(_v_min)
vmax = intrinsic(_v_max)
vfloor = intrinsic(_v_floor)
vpow2 = intrinsic(_v_pow2)


@intrinsic
def vhsum(typingctx, v):
    """The sum of the lanes (pairwise: (0+4)+(2+6) + (1+5)+(3+7))."""
    if v != f32x8:
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        undef = ir.Constant(_V, ir.Undefined)
        x4 = builder.fadd(
            builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(_I, 4), [0, 1, 2, 3])),
            builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(_I, 4), [4, 5, 6, 7])),
        )
        u4 = ir.Constant(ir.VectorType(_F, 4), ir.Undefined)
        x2 = builder.fadd(
            builder.shuffle_vector(x4, u4, ir.Constant(ir.VectorType(_I, 2), [0, 1])),
            builder.shuffle_vector(x4, u4, ir.Constant(ir.VectorType(_I, 2), [2, 3])),
        )
        return builder.fadd(
            builder.extract_element(x2, ir.Constant(_I, 0)),
            builder.extract_element(x2, ir.Constant(_I, 1)),
        )

    return types.float32(v), codegen


@njit(cache=True, inline="always")
def vexp(x):
    """exp of each lane in float32 (cephes expf: Cody-Waite reduction to |r| <= ln2/2 and a
    degree-6 polynomial, about 1 ulp). Lanes are clamped to [-87.34, 88]: below, the result is
    2^-126 instead of a denormal or 0 (an absolute error under 1.2e-38)."""
    x = vmin(vmax(x, vsplat(X_MIN)), vsplat(X_MAX))
    k = vfloor(vfma(x, vsplat(LOG2E), vsplat(HALF)))
    r = vfma(k, vsplat(NEG_LN2_HI), x)  # exact: k * HI has at most 17 significant bits
    r = vfma(k, vsplat(NEG_LN2_LO), r)
    p = vfma(vsplat(P0), r, vsplat(P1))
    p = vfma(p, r, vsplat(P2))
    p = vfma(p, r, vsplat(P3))
    p = vfma(p, r, vsplat(P4))
    p = vfma(p, r, vsplat(P5))
    p = vfma(p, vmul(r, r), vadd(r, vsplat(ONE)))
    return vmul(p, vpow2(k))


@njit(cache=True)
def exp32(x):
    """:func:`vexp` on a float32 array of length divisible by 8 (for tests)."""
    out = np.empty_like(x)
    for j in range(0, x.size, W):
        vstore(out, j, vexp(vload(x, j)))
    return out


@njit(parallel=True, cache=True, error_model="numpy")
def scan_fwd(u, dt, A, B, C, y, hsave, save):
    """u, dt, y: (b, d, L); A: (d, n); B, C: (b, g, n, L); hsave: (b, d, tiles, n), written
    (the state entering each tile) when ``save``. All float32, C-contiguous."""
    nb, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    e = d // g
    nblk = (e + W - 1) // W
    ntile = (L + K - 1) // K
    for job in prange(nb * g * nblk):
        bi = job // (g * nblk)
        gi = (job // nblk) % g
        blk = job % nblk
        c0 = gi * e + blk * W
        cw = min(W, e - blk * W)
        h = np.zeros(n * W, f32)  # state (n, lanes); lanes >= cw stay 0 (dt = u = 0 there)
        Al = np.zeros(n * W, f32)
        for i in range(n):
            for c in range(cw):
                Al[i * W + c] = A[c0 + c, i]
        ut = np.zeros(K * W, f32)  # (token, lane) tiles
        dtt = np.zeros(K * W, f32)
        yt = np.zeros(K * W, f32)
        for tile in range(ntile):
            t0 = tile * K
            tk = min(K, L - t0)
            if save:
                for c in range(cw):
                    for i in range(n):
                        hsave[bi, c0 + c, tile, i] = h[i * W + c]
            for c in range(cw):
                for t in range(tk):
                    ut[t * W + c] = u[bi, c0 + c, t0 + t]
                    dtt[t * W + c] = dt[bi, c0 + c, t0 + t]
            for t in range(tk):
                dv = vload(dtt, t * W)
                duv = vmul(dv, vload(ut, t * W))
                acc = vsplat(f32(0.0))
                for i in range(n):
                    a = vexp(vmul(dv, vload(Al, i * W)))
                    hv = vfma(a, vload(h, i * W), vmul(duv, vsplat(B[bi, gi, i, t0 + t])))
                    vstore(h, i * W, hv)
                    acc = vfma(hv, vsplat(C[bi, gi, i, t0 + t]), acc)
                vstore(yt, t * W, acc)
            for c in range(cw):
                for t in range(tk):
                    y[bi, c0 + c, t0 + t] = yt[t * W + c]


@njit(parallel=True, cache=True, error_model="numpy")
def scan_bwd(u, dt, A, B, C, gy, hsave, gu, gdt, gA, gBp, gCp):
    """Gradients of sum(y * gy): gu, gdt (b, d, L); gA (b, d, n) per batch element; gBp, gCp
    (b, g, blocks, n, L) per channel block (sum over axis 2 for those of B and C)."""
    nb, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    e = d // g
    nblk = (e + W - 1) // W
    ntile = (L + K - 1) // K
    nW = n * W
    for job in prange(nb * g * nblk):
        bi = job // (g * nblk)
        gi = (job // nblk) % g
        blk = job % nblk
        c0 = gi * e + blk * W
        cw = min(W, e - blk * W)
        Al = np.zeros(nW, f32)
        for i in range(n):
            for c in range(cw):
                Al[i * W + c] = A[c0 + c, i]
        G = np.zeros(nW, f32)  # adjoint carried into token t: exp(dt_{t+1} A) dL/dh_{t+1}
        gAl = np.zeros(nW, f32)
        hs = np.zeros((K + 1) * nW, f32)  # row t + 1: h_t of the tile; row 0: entering state
        dec = np.zeros(K * nW, f32)  # exp(dt_t A)
        ut = np.zeros(K * W, f32)
        dtt = np.zeros(K * W, f32)
        gyt = np.zeros(K * W, f32)
        gut = np.zeros(K * W, f32)
        gdtt = np.zeros(K * W, f32)
        for tile in range(ntile - 1, -1, -1):
            t0 = tile * K
            tk = min(K, L - t0)
            for c in range(cw):
                for t in range(tk):
                    ut[t * W + c] = u[bi, c0 + c, t0 + t]
                    dtt[t * W + c] = dt[bi, c0 + c, t0 + t]
                    gyt[t * W + c] = gy[bi, c0 + c, t0 + t]
                for i in range(n):
                    hs[i * W + c] = hsave[bi, c0 + c, tile, i]
            for t in range(tk):  # the tile's states and decays again
                dv = vload(dtt, t * W)
                duv = vmul(dv, vload(ut, t * W))
                for i in range(n):
                    a = vexp(vmul(dv, vload(Al, i * W)))
                    vstore(dec, t * nW + i * W, a)
                    hv = vfma(a, vload(hs, t * nW + i * W), vmul(duv, vsplat(B[bi, gi, i, t0 + t])))
                    vstore(hs, (t + 1) * nW + i * W, hv)
            for t in range(tk - 1, -1, -1):  # the adjoint recurrence, back through the tile
                dv = vload(dtt, t * W)
                uv = vload(ut, t * W)
                gyv = vload(gyt, t * W)
                duv = vmul(dv, uv)
                s = vsplat(f32(0.0))
                gd = vsplat(f32(0.0))
                for i in range(n):
                    bv = vsplat(B[bi, gi, i, t0 + t])
                    gh = vfma(vsplat(C[bi, gi, i, t0 + t]), gyv, vload(G, i * W))  # dL/dh_t
                    a = vload(dec, t * nW + i * W)
                    q = vmul(vmul(gh, a), vload(hs, t * nW + i * W))  # times h_{t-1}
                    gd = vfma(q, vload(Al, i * W), gd)
                    vstore(gAl, i * W, vfma(q, dv, vload(gAl, i * W)))
                    s = vfma(gh, bv, s)
                    vstore(G, i * W, vmul(gh, a))
                    gBp[bi, gi, blk, i, t0 + t] = vhsum(vmul(gh, duv))
                    gCp[bi, gi, blk, i, t0 + t] = vhsum(vmul(gyv, vload(hs, (t + 1) * nW + i * W)))
                vstore(gut, t * W, vmul(s, dv))
                vstore(gdtt, t * W, vfma(s, uv, gd))
            for c in range(cw):
                for t in range(tk):
                    gu[bi, c0 + c, t0 + t] = gut[t * W + c]
                    gdt[bi, c0 + c, t0 + t] = gdtt[t * W + c]
        for i in range(n):
            for c in range(cw):
                gA[bi, c0 + c, i] = gAl[i * W + c]

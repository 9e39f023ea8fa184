"""The compute-centric core: rebuild embedding rows from TT cores (Numba).

:func:`tt_rebuild_rows` checks its inputs and calls a private ``@njit`` kernel
that takes arrays and scalars only; :func:`emulator.tt.tt_rebuild_rows_reference`
(and ``tests/naive.py``) is the plain NumPy version it must equal to float32
tolerance (``fastmath``: sums are reassociated).

How the work is shared. A row's partial product over its leading cores
(``core_1[i_1] @ ... @ core_{d-1}[i_{d-1}]``, a ``(q_1..q_{d-1}) x r_{d-1}``
matrix) depends only on its prefix ``(i_1..i_{d-1})``. The kernel visits the
rows in an order where equal prefixes are adjacent and recomputes a level's
partial product only when that level's prefix changes (a trie walk), so each
distinct prefix is multiplied once per call; every row then costs one small
GEMM with its last core. For ``d == 3`` the order is by ``(i_2, i_1)`` (two
counting sorts), so consecutive rows reuse ``core_2[i_2]`` from L1/L2; for
``d == 4`` it is by row id; ``d == 2`` needs no order (its prefix is a slice).

How it is made fast. Numba cannot keep an accumulator array in registers, so
the kernels use a 16-lane float32 value type (``<16 x float>``, with masked
loads and stores for ragged edges) built from LLVM intrinsics below: the
partial products are GEMMs blocked 4 rows x 64 columns with 16 vector
accumulators; the last stage computes dot products over the rank, 16
outputs (4 rows x 4 columns, when q_d == 4) or 4 at a time, reduced together
by one shuffle tree. ``n_threads > 1`` splits
the ordered rows at prefix boundaries over ``prange`` threads (this machine
has 2 cores); the default runs on the calling thread (kernels release the GIL).

FLOPs (multiply and add counted separately) are stated by
:func:`tt_rebuild_flops`; :func:`unique_prefix_counts` gives its inputs.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from emulator.jit import njit
from emulator.tt import TTCores

# ---------------------------------------------------------------------------------------------- FLOPs


def unique_prefix_counts(tt: TTCores, rows) -> tuple[int, ...]:
    """Distinct leading-index prefixes among ``rows``, for prefix lengths ``2..d-1`` (empty when d <= 2)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    return tuple(int(np.unique(rows // math.prod(tt.p_shapes[k:])).size) for k in range(2, tt.d))


def tt_rebuild_flops(tt: TTCores, n_rows: int, n_unique_prefixes) -> int:
    """FLOPs the kernel executes to rebuild ``n_rows`` rows (2 per multiply-add).

    With ``Q_k = q_1 .. q_k`` and ``U_k`` the number of distinct length-``k``
    prefixes among the rows (``n_unique_prefixes``: ``U_2..U_{d-1}`` as a
    sequence, or one int when ``d == 3``)::

        flops = sum_{k=2}^{d-1} U_k * 2 * Q_{k-1} * r_{k-1} * q_k * r_k   (partial products, once per prefix)
              + n_rows * 2 * Q_{d-1} * r_{d-1} * q_d                      (last core, once per row)

    For p=(200,220,250), q=(4,4,4), ranks (1,32,32,1) and all prefixes
    distinct: 2*4*32*4*32 + 2*16*32*4 = 32768 + 4096 = 36864 FLOPs per row.
    (With ``n_threads > 1`` a prefix split across two threads is computed
    twice; at most ``n_threads - 1`` extra per call, not counted.)
    """
    d, q, r = tt.d, tt.q_shapes, tt.ranks
    if d == 1:
        return 0
    counts = (n_unique_prefixes,) if isinstance(n_unique_prefixes, (int, np.integer)) else tuple(n_unique_prefixes)
    if len(counts) != d - 2:
        raise ValueError(f"n_unique_prefixes needs {d - 2} counts (prefix lengths 2..{d - 1}), got {len(counts)}")
    flops = sum(int(counts[k - 2]) * 2 * math.prod(q[:k - 1]) * r[k - 1] * q[k - 1] * r[k] for k in range(2, d))
    return flops + int(n_rows) * 2 * math.prod(q[:d - 1]) * r[d - 1] * q[d - 1]


# ---------------------------------------------------------------------------------------------- wrapper

MAX_D = 4


def tt_rebuild_rows(tt: TTCores, rows, out: np.ndarray | None = None, n_threads: int = 1) -> np.ndarray:
    """Rows ``rows`` (integer ids in ``[0, tt.num_rows)``, any order, repeats allowed) as ``(n, dim)`` float32.

    ``out``, if given, must be a C-contiguous float32 ``(n, dim)`` array; it is
    filled and returned. ``n_threads > 1`` spreads the work over that many
    Numba threads; ``d`` (number of cores) must be 1..4.
    """
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
        raise ValueError(f"rows must be a 1-D integer array, got {rows.dtype} with shape {rows.shape}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n = rows.shape[0]
    if out is None:
        out = np.empty((n, tt.dim), dtype=np.float32)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (n, tt.dim) \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, tt.dim)}")
    if int(n_threads) < 1:
        raise ValueError(f"n_threads={n_threads} must be >= 1")
    if tt.d > MAX_D:
        raise ValueError(f"tt_rebuild_rows supports d = 1..{MAX_D} cores, got d={tt.d}")
    if n == 0:
        return out
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= tt.num_rows:
        raise ValueError(f"row id {lo if lo < 0 else hi} is outside [0, {tt.num_rows})")
    if tt.d == 1:
        out[:] = tt.cores[0].reshape(tt.num_rows, tt.dim)[rows]
        return out
    d = tt.d
    p = tuple(tt.p_shapes) + (1,) * (MAX_D - d)
    q = tuple(tt.q_shapes) + (1,) * (MAX_D - d)
    r = tuple(tt.ranks[1:d]) + (1,) * (MAX_D - d)  # r_1 .. r_{d-1} (ranks entering cores 2..d)
    flat = [c.reshape(-1) for c in tt.cores[:-1]]
    flat += [np.zeros(1, dtype=np.float32)] * (MAX_D - 1 - len(flat))
    last_t = np.ascontiguousarray(tt.cores[-1][:, :, :, 0].transpose(0, 2, 1)).reshape(-1)  # (p_d, q_d, r_{d-1})
    order = _visit_order(rows, d, p[0], p[1], p[2], p[3])
    bounds = _split_at_prefixes(rows, order, d, p[d - 1], int(n_threads))
    args = (flat[0], flat[1], flat[2], last_t, rows, order, bounds, d, p[0], p[1], p[2], p[3],
            q[0], q[1], q[2], q[3], r[0], r[1], r[2], out.reshape(-1))
    if bounds.shape[0] > 2:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
        try:
            _rebuild_parallel(*args)
        finally:
            numba.set_num_threads(previous)
    else:
        _rebuild_serial(*args)
    return out


# ---------------------------------------------------------------------------------------------- 16-lane vectors

_LANES = 16
_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, _LANES)
_I32 = ir.IntType(32)
_PTR = ir.PointerType()


class _Vec16Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="TTVec16")


_Vec16 = _Vec16Type()


@register_model(_Vec16Type)
class _Vec16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _lane_mask(builder, n):
    """``<16 x i1>`` with lanes ``[0, n)`` set (0 <= n <= 16)."""
    n32 = builder.trunc(n, _I32) if n.type.width > 32 else builder.zext(n, _I32) if n.type.width < 32 else n
    bits = builder.sub(builder.shl(ir.Constant(_I32, 1), n32), ir.Constant(_I32, 1))
    return builder.bitcast(builder.trunc(bits, ir.IntType(_LANES)), ir.VectorType(ir.IntType(1), _LANES))


def _f32_ptr(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [index]), _PTR)


def _is_f32_1d(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(lanes)), lanes))


@intrinsic
def _vzero(typingctx):
    return _Vec16(), lambda context, builder, sig, args: ir.Constant(_VEC, None)


@intrinsic
def _vload(typingctx, arr, index, n):
    """Lanes [0, n) from arr[index:]; lanes >= n are 0.0 and not read."""
    if not (_is_f32_1d(arr) and isinstance(index, types.Integer) and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        mask = _lane_mask(builder, args[2])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_PTR, _I32, mask.type, _VEC]),
                                            "llvm.masked.load.v16f32.p0")
        ptr = _f32_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VEC, None)])

    return _Vec16(arr, index, n), codegen


@intrinsic
def _vstore(typingctx, arr, index, v, n):
    """arr[index + l] = v[l] for lanes l < n."""
    if not (_is_f32_1d(arr) and isinstance(index, types.Integer) and v == _Vec16 and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        mask = _lane_mask(builder, args[3])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, _PTR, _I32, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16f32.p0")
        builder.call(fn, [args[2], _f32_ptr(context, builder, sig.args[0], args[0], args[1]), ir.Constant(_I32, 4),
                          mask])
        return context.get_dummy_value()

    return types.void(arr, index, _Vec16, n), codegen


@intrinsic
def _vbroadcast(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        undef = ir.Constant(_VEC, ir.Undefined)
        one = builder.insert_element(undef, args[0], ir.Constant(_I32, 0))
        return _shuffle(builder, one, undef, [0] * _LANES)

    return _Vec16(x), codegen


@intrinsic
def _vfma(typingctx, a, b, c):
    """a * b + c, lane-wise (one rounding)."""
    if not (a == _Vec16 and b == _Vec16 and c == _Vec16):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32")
        return builder.call(fn, list(args))

    return _Vec16(_Vec16, _Vec16, _Vec16), codegen


@intrinsic
def _vsum4(typingctx, a, b, c, d):
    """Lanes 0..3 = (sum a, sum b, sum c, sum d): four horizontal sums by one shuffle tree."""
    if not all(x == _Vec16 for x in (a, b, c, d)):
        return None

    def codegen(context, builder, sig, args):
        a, b, c, d = args
        lo, hi = list(range(8)) + list(range(16, 24)), list(range(8, 16)) + list(range(24, 32))
        ab = builder.fadd(_shuffle(builder, a, b, lo), _shuffle(builder, a, b, hi))  # a: 0-7, b: 8-15
        cd = builder.fadd(_shuffle(builder, c, d, lo), _shuffle(builder, c, d, hi))  # c: 0-7, d: 8-15
        v = builder.fadd(_shuffle(builder, ab, cd, [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]),
                         _shuffle(builder, ab, cd, [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31]))
        v = builder.fadd(_shuffle(builder, v, v, [0, 1, 4, 5, 8, 9, 12, 13] * 2),  # a: 0-1, b: 2-3, c: 4-5, d: 6-7
                         _shuffle(builder, v, v, [2, 3, 6, 7, 10, 11, 14, 15] * 2))
        return builder.fadd(_shuffle(builder, v, v, [0, 2, 4, 6] * 4), _shuffle(builder, v, v, [1, 3, 5, 7] * 4))

    return _Vec16(_Vec16, _Vec16, _Vec16, _Vec16), codegen


def _tree_sum_codegen(builder, vectors):
    """Horizontal sums of up to 16 vectors into the lanes of one (lane l = sum of vector l), by a shuffle tree:
    each level pairs vectors and adds the two halves of every lane group (30 shuffles + 15 adds for 16)."""
    size = _LANES
    while len(vectors) > 1:
        half = size // 2
        groups = _LANES // size
        lo = [g * size + i for g in range(groups) for i in range(half)]
        lo = lo + [_LANES + x for x in lo]
        hi = [x + half for x in lo]
        vectors = [builder.fadd(_shuffle(builder, u, v, lo), _shuffle(builder, u, v, hi))
                   for u, v in zip(vectors[0::2], vectors[1::2])]
        size = half
    return vectors[0]


@intrinsic
def _vsum16(typingctx, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    """Lane l = the sum of the lanes of argument l."""
    if not all(x == _Vec16 for x in (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)):
        return None
    return _Vec16(*([_Vec16] * 16)), lambda context, builder, sig, args: _tree_sum_codegen(builder, list(args))


# ---------------------------------------------------------------------------------------------- kernels


@njit
def _counting_sort(keys, order, n_keys):
    """Stable counting sort of ``order`` by ``keys[order]`` (keys in [0, n_keys))."""
    counts = np.zeros(n_keys + 1, dtype=np.int64)
    for t in range(order.shape[0]):
        counts[keys[order[t]] + 1] += 1
    for k in range(n_keys):
        counts[k + 1] += counts[k]
    result = np.empty_like(order)
    for t in range(order.shape[0]):
        k = keys[order[t]]
        result[counts[k]] = order[t]
        counts[k] += 1
    return result


@njit
def _visit_order(rows, d, p1, p2, p3, p4):
    """Row positions in visiting order: equal prefixes adjacent (d == 3: by (i_2, i_1); d == 4: by row id)."""
    n = rows.shape[0]
    if d == 2:
        return np.arange(n)
    if d == 4:
        return np.argsort(rows, kind="mergesort")
    i1 = np.empty(n, dtype=np.int64)
    i2 = np.empty(n, dtype=np.int64)
    for t in range(n):
        pre = rows[t] // p3
        i1[t] = pre // p2
        i2[t] = pre % p2
    if p1 + p2 <= 8 * n:
        return _counting_sort(i2, _counting_sort(i1, np.arange(n), p1), p2)
    return np.argsort(i2 * p1 + i1, kind="mergesort")


@njit
def _split_at_prefixes(rows, order, d, p_last, n_parts):
    """Start of each of up to ``n_parts`` runs of ``order`` (plus the end), cut only where the prefix changes."""
    n = order.shape[0]
    bounds = np.empty(n_parts + 1, dtype=np.int64)
    bounds[0] = 0
    k = 1
    for part in range(1, n_parts):
        t = max(part * n // n_parts, bounds[k - 1] + 1)
        while t < n and rows[order[t]] // p_last == rows[order[t - 1]] // p_last:
            t += 1
        if t >= n:
            break
        bounds[k] = t
        k += 1
    bounds[k] = n
    return bounds[:k + 1].copy()


@njit(fastmath=True)
def _gemm(a, a0, m, k, b, b0, n, c, c0):
    """c[c0:][:m, :n] = a[a0:][:m, :k] @ b[b0:][:k, :n] (flat row-major): 4 x 64 blocks in 16 vector
    registers (each loaded b vector feeds 4 FMAs), the last m % 4 rows 2 or 1 at a time."""
    m4 = m - m % 4
    for i in range(0, m4, 4):
        ai = a0 + i * k
        for j in range(0, n, 64):
            n0, n1, n2, n3 = _widths(n - j)
            x0, x1, x2, x3 = _vzero(), _vzero(), _vzero(), _vzero()
            y0, y1, y2, y3 = _vzero(), _vzero(), _vzero(), _vzero()
            z0, z1, z2, z3 = _vzero(), _vzero(), _vzero(), _vzero()
            w0, w1, w2, w3 = _vzero(), _vzero(), _vzero(), _vzero()
            for t in range(k):
                bt = b0 + t * n + j
                v0, v1 = _vload(b, bt, n0), _vload(b, bt + 16, n1)
                v2, v3 = _vload(b, bt + 32, n2), _vload(b, bt + 48, n3)
                s = _vbroadcast(a[ai + t])
                x0, x1, x2, x3 = _vfma(s, v0, x0), _vfma(s, v1, x1), _vfma(s, v2, x2), _vfma(s, v3, x3)
                s = _vbroadcast(a[ai + k + t])
                y0, y1, y2, y3 = _vfma(s, v0, y0), _vfma(s, v1, y1), _vfma(s, v2, y2), _vfma(s, v3, y3)
                s = _vbroadcast(a[ai + 2 * k + t])
                z0, z1, z2, z3 = _vfma(s, v0, z0), _vfma(s, v1, z1), _vfma(s, v2, z2), _vfma(s, v3, z3)
                s = _vbroadcast(a[ai + 3 * k + t])
                w0, w1, w2, w3 = _vfma(s, v0, w0), _vfma(s, v1, w1), _vfma(s, v2, w2), _vfma(s, v3, w3)
            ci = c0 + i * n + j
            _store4(c, ci, x0, x1, x2, x3, n0, n1, n2, n3)
            _store4(c, ci + n, y0, y1, y2, y3, n0, n1, n2, n3)
            _store4(c, ci + 2 * n, z0, z1, z2, z3, n0, n1, n2, n3)
            _store4(c, ci + 3 * n, w0, w1, w2, w3, n0, n1, n2, n3)
    for i in range(m4, m, 2):
        two = i + 1 < m
        ai = a0 + i * k
        for j in range(0, n, 64):
            n0, n1, n2, n3 = _widths(n - j)
            x0, x1, x2, x3 = _vzero(), _vzero(), _vzero(), _vzero()
            y0, y1, y2, y3 = _vzero(), _vzero(), _vzero(), _vzero()
            for t in range(k):
                bt = b0 + t * n + j
                v0, v1 = _vload(b, bt, n0), _vload(b, bt + 16, n1)
                v2, v3 = _vload(b, bt + 32, n2), _vload(b, bt + 48, n3)
                s = _vbroadcast(a[ai + t])
                x0, x1, x2, x3 = _vfma(s, v0, x0), _vfma(s, v1, x1), _vfma(s, v2, x2), _vfma(s, v3, x3)
                if two:
                    s = _vbroadcast(a[ai + k + t])
                    y0, y1, y2, y3 = _vfma(s, v0, y0), _vfma(s, v1, y1), _vfma(s, v2, y2), _vfma(s, v3, y3)
            ci = c0 + i * n + j
            _store4(c, ci, x0, x1, x2, x3, n0, n1, n2, n3)
            if two:
                _store4(c, ci + n, y0, y1, y2, y3, n0, n1, n2, n3)


@njit
def _widths(left):
    """Lane counts of the four 16-lane vectors covering the next min(left, 64) columns."""
    return min(16, left), min(16, max(0, left - 16)), min(16, max(0, left - 32)), min(16, max(0, left - 48))


@njit
def _store4(c, ci, v0, v1, v2, v3, n0, n1, n2, n3):
    _vstore(c, ci, v0, n0)
    _vstore(c, ci + 16, v1, n1)
    _vstore(c, ci + 32, v2, n2)
    _vstore(c, ci + 48, v3, n3)


@njit(fastmath=True)
def _last_stage(part, p0, big_q, r, last_t, base, q_d, out, o0):
    """out[o0 + j*q_d + k] = sum_b part[p0 + j*r + b] * last_t[base + k*r + b] (dot products over the rank)."""
    j0 = 0
    if q_d == 4:  # 4 rows x 4 outputs = 16 contiguous outputs per tree sum
        for j0 in range(0, big_q - 3, 4):
            _last_stage_4x4(part, p0 + j0 * r, r, last_t, base, out, o0 + j0 * 4)
        j0 = big_q - big_q % 4
    for j in range(j0, big_q):
        pj = p0 + j * r
        for k0 in range(0, q_d, 4):
            nk = min(4, q_d - k0)
            a0, a1, a2, a3 = _vzero(), _vzero(), _vzero(), _vzero()
            cb = base + k0 * r
            for b0 in range(0, r, 16):
                nb = min(16, r - b0)
                pv = _vload(part, pj + b0, nb)
                a0 = _vfma(pv, _vload(last_t, cb + b0, nb), a0)
                if nk > 1:
                    a1 = _vfma(pv, _vload(last_t, cb + r + b0, nb), a1)
                if nk > 2:
                    a2 = _vfma(pv, _vload(last_t, cb + 2 * r + b0, nb), a2)
                if nk > 3:
                    a3 = _vfma(pv, _vload(last_t, cb + 3 * r + b0, nb), a3)
            _vstore(out, o0 + j * q_d + k0, _vsum4(a0, a1, a2, a3), nk)


@njit(fastmath=True)
def _last_stage_4x4(part, p0, r, last_t, base, out, o0):
    """16 outputs out[o0 + 4*j + k] (j, k < 4) = sum_b part[p0 + j*r + b] * last_t[base + k*r + b]."""
    a0, a1, a2, a3 = _vzero(), _vzero(), _vzero(), _vzero()
    a4, a5, a6, a7 = _vzero(), _vzero(), _vzero(), _vzero()
    a8, a9, a10, a11 = _vzero(), _vzero(), _vzero(), _vzero()
    a12, a13, a14, a15 = _vzero(), _vzero(), _vzero(), _vzero()
    for b0 in range(0, r, 16):
        nb = min(16, r - b0)
        c0, c1 = _vload(last_t, base + b0, nb), _vload(last_t, base + r + b0, nb)
        c2, c3 = _vload(last_t, base + 2 * r + b0, nb), _vload(last_t, base + 3 * r + b0, nb)
        v = _vload(part, p0 + b0, nb)
        a0, a1, a2, a3 = _vfma(v, c0, a0), _vfma(v, c1, a1), _vfma(v, c2, a2), _vfma(v, c3, a3)
        v = _vload(part, p0 + r + b0, nb)
        a4, a5, a6, a7 = _vfma(v, c0, a4), _vfma(v, c1, a5), _vfma(v, c2, a6), _vfma(v, c3, a7)
        v = _vload(part, p0 + 2 * r + b0, nb)
        a8, a9, a10, a11 = _vfma(v, c0, a8), _vfma(v, c1, a9), _vfma(v, c2, a10), _vfma(v, c3, a11)
        v = _vload(part, p0 + 3 * r + b0, nb)
        a12, a13, a14, a15 = _vfma(v, c0, a12), _vfma(v, c1, a13), _vfma(v, c2, a14), _vfma(v, c3, a15)
    _vstore(out, o0, _vsum16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15), 16)


@njit(fastmath=True)
def _rebuild_run(c0, c1, c2, last_t, rows, order, lo, hi, d, p1, p2, p3, p4, q1, q2, q3, q4, r1, r2, r3, out):
    """Rows order[lo:hi] (a trie walk): level-2/3 partial products recomputed only when their prefix changes."""
    dim = q1 * q2 * q3 * q4
    part2 = np.empty(q1 * q2 * r2, dtype=np.float32)  # core_1[i_1] @ core_2[i_2], (q1 q2, r2)
    part3 = np.empty(q1 * q2 * q3 * r3 if d == 4 else 1, dtype=np.float32)
    p_last = p2 if d == 2 else (p3 if d == 3 else p4)
    q_last = q2 if d == 2 else (q3 if d == 3 else q4)
    r_last = r1 if d == 2 else (r2 if d == 3 else r3)
    prev2 = -1
    prev3 = -1
    for t in range(lo, hi):
        pos = order[t]
        row = rows[pos]
        pre = row // p_last
        base = (row % p_last) * q_last * r_last
        if d == 2:
            _last_stage(c0, pre * q1 * r1, q1, r1, last_t, base, q_last, out, pos * dim)
            continue
        pre2 = pre if d == 3 else pre // p3
        if pre2 != prev2:
            _gemm(c0, (pre2 // p2) * q1 * r1, q1, r1, c1, (pre2 % p2) * r1 * q2 * r2, q2 * r2, part2, 0)
            prev2 = pre2
            prev3 = -1
        if d == 3:
            _last_stage(part2, 0, q1 * q2, r2, last_t, base, q_last, out, pos * dim)
            continue
        if pre != prev3:
            _gemm(part2, 0, q1 * q2, r2, c2, (pre % p3) * r2 * q3 * r3, q3 * r3, part3, 0)
            prev3 = pre
        _last_stage(part3, 0, q1 * q2 * q3, r3, last_t, base, q_last, out, pos * dim)


@njit(fastmath=True)
def _rebuild_serial(c0, c1, c2, last_t, rows, order, bounds, d, p1, p2, p3, p4, q1, q2, q3, q4, r1, r2, r3, out):
    for g in range(bounds.shape[0] - 1):
        _rebuild_run(c0, c1, c2, last_t, rows, order, bounds[g], bounds[g + 1], d, p1, p2, p3, p4,
                     q1, q2, q3, q4, r1, r2, r3, out)


@njit(fastmath=True, parallel=True)
def _rebuild_parallel(c0, c1, c2, last_t, rows, order, bounds, d, p1, p2, p3, p4, q1, q2, q3, q4, r1, r2, r3, out):
    for g in numba.prange(bounds.shape[0] - 1):
        _rebuild_run(c0, c1, c2, last_t, rows, order, bounds[g], bounds[g + 1], d, p1, p2, p3, p4,
                     q1, q2, q3, q4, r1, r2, r3, out)

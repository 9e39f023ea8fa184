"""The compute-centric core: rebuild embedding rows from TT cores (Numba).

:func:`tt_rebuild_rows` checks its inputs and calls a private ``@njit`` kernel
that takes arrays and scalars only; :func:`emulator.tt.decomposition.tt_rebuild_rows_reference`
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

How it is made fast. The kernels work on a 16-lane float32 value type kept
in registers (``emulator.tt._simd``, masked loads and stores for ragged
edges): the partial products are GEMMs blocked 4 rows x 64 columns with 16
vector accumulators; the last stage computes dot products over the rank, 16
outputs (4 rows x 4 columns, when ``q_d == 4``) or 4 at a time, reduced
together by one shuffle tree.

Threads. By default a call runs on the calling thread and releases the GIL,
so callers rebuild several batches or tables side by side (``screc bench tt
--threads 2`` does). ``n_threads > 1`` instead splits one call's ordered rows
at prefix boundaries over ``prange`` threads; on this 2-core machine, shared
with other work, that lost to one thread at 4k-64k rows per call (an OpenMP
barrier per call), so it is only worth trying for very large calls.

FLOPs (multiply and add counted separately) are stated by
:func:`tt_rebuild_flops`; :func:`unique_prefix_counts` gives its inputs.
"""

from __future__ import annotations

import math
import weakref

import numba
import numpy as np

from emulator.tt._simd import vbroadcast, vfma, vload, vstore, vsum4, vsum16, vzero
from emulator.kernels.jit import njit
from emulator.tt.decomposition import TTCores

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
    if not rows.flags.writeable:  # one compiled signature (Numba types read-only arrays apart)
        rows = rows.copy()
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
    flat += [_DUMMY_CORE] * (MAX_D - 1 - len(flat))
    last_t = _last_core_t(tt.cores[-1])
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


_DUMMY_CORE = np.zeros(1, dtype=np.float32)
_DUMMY_CORE.flags.writeable = False  # read-only like TTCores' cores: one compiled signature for every d
_LAST_T: dict[int, np.ndarray] = {}  # id(last core) -> its (p_d, q_d, r_{d-1}) copy, dropped with the core


def _last_core_t(core: np.ndarray) -> np.ndarray:
    """The last core as a flat (p_d, q_d, r_{d-1}) array (each output a contiguous dot product), made once."""
    key = id(core)
    cached = _LAST_T.get(key)
    if cached is None:
        cached = np.ascontiguousarray(core[:, :, :, 0].transpose(0, 2, 1)).reshape(-1)
        _LAST_T[key] = cached
        weakref.finalize(core, _LAST_T.pop, key, None)
    return cached


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
            x0, x1, x2, x3 = vzero(), vzero(), vzero(), vzero()
            y0, y1, y2, y3 = vzero(), vzero(), vzero(), vzero()
            z0, z1, z2, z3 = vzero(), vzero(), vzero(), vzero()
            w0, w1, w2, w3 = vzero(), vzero(), vzero(), vzero()
            for t in range(k):
                bt = b0 + t * n + j
                v0, v1 = vload(b, bt, n0), vload(b, bt + 16, n1)
                v2, v3 = vload(b, bt + 32, n2), vload(b, bt + 48, n3)
                s = vbroadcast(a[ai + t])
                x0, x1, x2, x3 = vfma(s, v0, x0), vfma(s, v1, x1), vfma(s, v2, x2), vfma(s, v3, x3)
                s = vbroadcast(a[ai + k + t])
                y0, y1, y2, y3 = vfma(s, v0, y0), vfma(s, v1, y1), vfma(s, v2, y2), vfma(s, v3, y3)
                s = vbroadcast(a[ai + 2 * k + t])
                z0, z1, z2, z3 = vfma(s, v0, z0), vfma(s, v1, z1), vfma(s, v2, z2), vfma(s, v3, z3)
                s = vbroadcast(a[ai + 3 * k + t])
                w0, w1, w2, w3 = vfma(s, v0, w0), vfma(s, v1, w1), vfma(s, v2, w2), vfma(s, v3, w3)
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
            x0, x1, x2, x3 = vzero(), vzero(), vzero(), vzero()
            y0, y1, y2, y3 = vzero(), vzero(), vzero(), vzero()
            for t in range(k):
                bt = b0 + t * n + j
                v0, v1 = vload(b, bt, n0), vload(b, bt + 16, n1)
                v2, v3 = vload(b, bt + 32, n2), vload(b, bt + 48, n3)
                s = vbroadcast(a[ai + t])
                x0, x1, x2, x3 = vfma(s, v0, x0), vfma(s, v1, x1), vfma(s, v2, x2), vfma(s, v3, x3)
                if two:
                    s = vbroadcast(a[ai + k + t])
                    y0, y1, y2, y3 = vfma(s, v0, y0), vfma(s, v1, y1), vfma(s, v2, y2), vfma(s, v3, y3)
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
    vstore(c, ci, v0, n0)
    vstore(c, ci + 16, v1, n1)
    vstore(c, ci + 32, v2, n2)
    vstore(c, ci + 48, v3, n3)


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
            a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
            cb = base + k0 * r
            for b0 in range(0, r, 16):
                nb = min(16, r - b0)
                pv = vload(part, pj + b0, nb)
                a0 = vfma(pv, vload(last_t, cb + b0, nb), a0)
                if nk > 1:
                    a1 = vfma(pv, vload(last_t, cb + r + b0, nb), a1)
                if nk > 2:
                    a2 = vfma(pv, vload(last_t, cb + 2 * r + b0, nb), a2)
                if nk > 3:
                    a3 = vfma(pv, vload(last_t, cb + 3 * r + b0, nb), a3)
            vstore(out, o0 + j * q_d + k0, vsum4(a0, a1, a2, a3), nk)


@njit(fastmath=True)
def _last_stage_4x4(part, p0, r, last_t, base, out, o0):
    """16 outputs out[o0 + 4*j + k] (j, k < 4) = sum_b part[p0 + j*r + b] * last_t[base + k*r + b]."""
    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
    a4, a5, a6, a7 = vzero(), vzero(), vzero(), vzero()
    a8, a9, a10, a11 = vzero(), vzero(), vzero(), vzero()
    a12, a13, a14, a15 = vzero(), vzero(), vzero(), vzero()
    for b0 in range(0, r, 16):
        nb = min(16, r - b0)
        c0, c1 = vload(last_t, base + b0, nb), vload(last_t, base + r + b0, nb)
        c2, c3 = vload(last_t, base + 2 * r + b0, nb), vload(last_t, base + 3 * r + b0, nb)
        v = vload(part, p0 + b0, nb)
        a0, a1, a2, a3 = vfma(v, c0, a0), vfma(v, c1, a1), vfma(v, c2, a2), vfma(v, c3, a3)
        v = vload(part, p0 + r + b0, nb)
        a4, a5, a6, a7 = vfma(v, c0, a4), vfma(v, c1, a5), vfma(v, c2, a6), vfma(v, c3, a7)
        v = vload(part, p0 + 2 * r + b0, nb)
        a8, a9, a10, a11 = vfma(v, c0, a8), vfma(v, c1, a9), vfma(v, c2, a10), vfma(v, c3, a11)
        v = vload(part, p0 + 3 * r + b0, nb)
        a12, a13, a14, a15 = vfma(v, c0, a12), vfma(v, c1, a13), vfma(v, c2, a14), vfma(v, c3, a15)
    vstore(out, o0, vsum16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15), 16)


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

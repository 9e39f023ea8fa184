"""The compute-centric core: rebuild embedding rows from TT cores (Numba).

:func:`tt_rebuild_rows` checks its inputs and calls a private ``@njit`` kernel
that takes arrays and scalars only; :func:`emulator.tt.tt_rebuild_rows_reference`
(and ``tests/naive.py``) is the plain NumPy version it must equal to float32
tolerance.

How the work is shared. A row's partial product over its leading cores
(``core_1[i_1] @ ... @ core_{d-1}[i_{d-1}]``, a ``(q_1..q_{d-1}) x r_{d-1}``
matrix) depends only on its *prefix* ``(i_1..i_{d-1}) = row // p_d``, so the
kernels sort the requested rows and compute each distinct prefix once; each
row then costs one small GEMM with its last core.

- ``d == 3`` (the optimised path): rows are grouped by their middle index
  ``i_2``. In a group every distinct prefix multiplies the same
  ``core_2[i_2]``, so the group's first cores are stacked and multiplied in
  one SGEMM (``np.dot`` -> SciPy's BLAS; each call is kept below OpenBLAS's
  multi-threading threshold so BLAS never spawns threads of its own). The
  last stage is a loop over contiguous ``r_2``-long dot products
  (``fastmath``: the result only needs to match the reference to a
  tolerance). With ``n_threads > 1`` groups are spread over threads with
  ``prange`` (this machine has 2 cores).
- ``d == 2`` and ``d == 4``, and ``d == 3`` without SciPy: one generic loop
  kernel that walks the sorted rows like a trie, recomputing the partial
  product of each level only when that level's prefix changes.

FLOPs (multiply and add counted separately) are stated by
:func:`tt_rebuild_flops`; :func:`unique_prefix_counts` gives its inputs.
"""

from __future__ import annotations

import importlib.util
import math

import numba
import numpy as np

from emulator.jit import njit
from emulator.tt import TTCores

HAVE_BLAS = importlib.util.find_spec("scipy") is not None  # Numba's np.dot calls SciPy's BLAS
_OPENBLAS_SERIAL_FLOPS = 65536 * 4  # OpenBLAS multi-threads a GEMM once m*n*k reaches this


# ---------------------------------------------------------------------------------------------- FLOPs


def unique_prefix_counts(tt: TTCores, rows) -> tuple[int, ...]:
    """Distinct leading-index prefixes among ``rows``, for prefix lengths ``2..d-1`` (empty when d <= 2)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    counts = []
    for k in range(2, tt.d):
        tail = math.prod(tt.p_shapes[k:])
        counts.append(int(np.unique(rows // tail).size))
    return tuple(counts)


def tt_rebuild_flops(tt: TTCores, n_rows: int, n_unique_prefixes) -> int:
    """FLOPs the kernels execute to rebuild ``n_rows`` rows (2 per multiply-add).

    With ``Q_k = q_1 .. q_k`` and ``U_k`` the number of distinct length-``k``
    prefixes among the rows (``n_unique_prefixes``: ``U_2..U_{d-1}`` as a
    sequence, or one int for ``d == 3``)::

        flops = sum_{k=2}^{d-1} U_k * 2 * Q_{k-1} * r_{k-1} * q_k * r_k   (partial products, once per prefix)
              + n_rows * 2 * Q_{d-1} * r_{d-1} * q_d                      (last core, once per row)

    For p=(200,220,250), q=(4,4,4), ranks (1,32,32,1) and all prefixes
    distinct: 2*4*32*4*32 + 2*16*32*4 = 32768 + 4096 = 36864 FLOPs per row.
    """
    d, q, r = tt.d, tt.q_shapes, tt.ranks
    if d == 1:
        return 0
    counts = (n_unique_prefixes,) if isinstance(n_unique_prefixes, (int, np.integer)) else tuple(n_unique_prefixes)
    if len(counts) != d - 2:
        raise ValueError(f"n_unique_prefixes needs {d - 2} counts (prefix lengths 2..{d - 1}), got {len(counts)}")
    flops = 0
    for k in range(2, d):  # 1-based level k
        flops += int(counts[k - 2]) * 2 * math.prod(q[:k - 1]) * r[k - 1] * q[k - 1] * r[k]
    return flops + int(n_rows) * 2 * math.prod(q[:d - 1]) * r[d - 1] * q[d - 1]


# ---------------------------------------------------------------------------------------------- wrapper


def tt_rebuild_rows(tt: TTCores, rows, out: np.ndarray | None = None, n_threads: int = 1) -> np.ndarray:
    """Rows ``rows`` (int64 ids in ``[0, tt.num_rows)``, any order, repeats allowed) as ``(n, dim)`` float32.

    ``out``, if given, must be a C-contiguous float32 ``(n, dim)`` array and is
    filled and returned. ``n_threads > 1`` spreads the ``d == 3`` kernel over
    that many threads (``prange``); the default runs on the calling thread
    (kernels release the GIL, so callers may run tables in parallel instead).
    """
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
        raise ValueError(f"rows must be a 1-D integer array, got {rows.dtype} with shape {rows.shape}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n = rows.shape[0]
    if out is None:
        out = np.empty((n, tt.dim), dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != (n, tt.dim) or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {(n, tt.dim)}, "
                         f"got {out.dtype} {out.shape}{'' if out.flags.c_contiguous else ' (not contiguous)'}")
    if n == 0:
        return out
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= tt.num_rows:
        bad = lo if lo < 0 else hi
        raise ValueError(f"row id {bad} is outside [0, {tt.num_rows})")
    if tt.d == 1:
        out[:] = tt.cores[0].reshape(tt.num_rows, tt.dim)[rows]
        return out
    if n_threads < 1:
        raise ValueError(f"n_threads={n_threads} must be >= 1")
    if tt.d == 3 and HAVE_BLAS:
        _run_d3(tt, rows, out, int(n_threads))
        return out
    if tt.d > 4:
        raise ValueError(f"tt_rebuild_rows supports d = 1..4 cores, got d={tt.d}")
    _run_generic(tt, rows, out)
    return out


def _last_core_t(tt: TTCores) -> np.ndarray:
    """Last core as (p_d, q_d, r_{d-1}): each output is a contiguous dot product."""
    last = tt.cores[-1]
    return np.ascontiguousarray(last[:, :, :, 0].transpose(0, 2, 1))


def _run_d3(tt: TTCores, rows: np.ndarray, out: np.ndarray, n_threads: int) -> None:
    c0, c1, _ = tt.cores
    p1, p2, p3 = tt.p_shapes
    q1, q2, q3 = tt.q_shapes
    r1, r2 = tt.ranks[1], tt.ranks[2]
    order, group_starts = _group_by_middle(rows, p1, p2, p3)
    chunk = max(1, (_OPENBLAS_SERIAL_FLOPS - 1) // (q1 * r1 * q2 * r2))
    args = (c0.reshape(p1, q1, r1), c1.reshape(p2, r1, q2 * r2), _last_core_t(tt), rows, order, group_starts,
            p2, p3, chunk, out)
    if n_threads > 1 and group_starts.shape[0] > 2:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            _rebuild_d3_parallel(*args)
        finally:
            numba.set_num_threads(previous)
    else:
        _rebuild_d3(*args)


def _run_generic(tt: TTCores, rows: np.ndarray, out: np.ndarray) -> None:
    d = tt.d
    order = np.argsort(rows, kind="stable")
    dummy = np.zeros((1, 1, 1), dtype=np.float32)
    mids = [c.reshape(c.shape[0], c.shape[1], -1) for c in tt.cores[1:d - 1]] + [dummy] * (4 - d)
    first = tt.cores[0].reshape(tt.p_shapes[0], tt.q_shapes[0], tt.ranks[1])
    p = tuple(tt.p_shapes) + (1,) * (4 - d)
    q = tuple(tt.q_shapes) + (1,) * (4 - d)
    _rebuild_generic(first, mids[0], mids[1], _last_core_t(tt), rows, order, d,
                     p[0], p[1], p[2], p[3], q[0], q[1], q[2], out)


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
def _group_by_middle(rows, p1, p2, p3):
    """Order of rows sorted by (i_2, i_1), and the start of each run of equal i_2 (plus the end).

    Two stable counting-sort passes (by i_1, then by i_2) when the radices are
    small next to the number of rows, else one argsort.
    """
    n = rows.shape[0]
    i1 = np.empty(n, dtype=np.int64)
    i2 = np.empty(n, dtype=np.int64)
    for t in range(n):
        pre = rows[t] // p3
        i1[t] = pre // p2
        i2[t] = pre % p2
    if p1 + p2 <= 8 * n:
        order = _counting_sort(i2, _counting_sort(i1, np.arange(n), p1), p2)
    else:
        order = np.argsort(i2 * p1 + i1, kind="mergesort")
    starts = np.empty(n + 1, dtype=np.int64)
    g = 0
    prev = -1
    for t in range(n):
        mid = i2[order[t]]
        if mid != prev:
            starts[g] = t
            g += 1
            prev = mid
    starts[g] = n
    return order, starts[:g + 1].copy()


@njit(fastmath=True)
def _last_stage(part, last_t, i_last, out_row):
    """out_row[j * q_d + k] = sum_b part[j, b] * last_t[i_last, k, b]; part is (Q, r) flat."""
    q_d = last_t.shape[1]
    r = last_t.shape[2]
    big_q = out_row.shape[0] // q_d
    for j in range(big_q):
        for k in range(q_d):
            acc = np.float32(0.0)
            for b in range(r):
                acc += part[j * r + b] * last_t[i_last, k, b]
            out_row[j * q_d + k] = acc


@njit(fastmath=True)
def _d3_group(c0, c1, last_t, rows, order, s, e, p2, p3, chunk, out):
    """One run of rows sharing i_2: stacked first cores x core_2[i_2] by SGEMM, then the last stage per row."""
    q1, r1 = c0.shape[1], c0.shape[2]
    width = c1.shape[2]  # q2 * r2
    i2 = (rows[order[s]] // p3) % p2
    b = c1[i2]
    n_pre = 0  # distinct i_1 in the run (sorted, so equal i_1 are adjacent)
    prev = -1
    for t in range(s, e):
        i1 = rows[order[t]] // p3 // p2
        if i1 != prev:
            n_pre += 1
            prev = i1
    stack = np.empty((n_pre * q1, r1), dtype=np.float32)
    parts = np.empty((n_pre * q1, width), dtype=np.float32)
    u = -1
    prev = -1
    for t in range(s, e):
        i1 = rows[order[t]] // p3 // p2
        if i1 != prev:
            u += 1
            prev = i1
            stack[u * q1:(u + 1) * q1] = c0[i1]
    for m in range(0, n_pre, chunk):
        m2 = min(n_pre, m + chunk)
        np.dot(stack[m * q1:m2 * q1], b, parts[m * q1:m2 * q1])
    flat = parts.reshape(n_pre * q1 * width)
    size = q1 * width
    u = -1
    prev = -1
    for t in range(s, e):
        row = rows[order[t]]
        i1 = row // p3 // p2
        if i1 != prev:
            u += 1
            prev = i1
        _last_stage(flat[u * size:(u + 1) * size], last_t, row % p3, out[order[t]])


@njit(fastmath=True)
def _rebuild_d3(c0, c1, last_t, rows, order, group_starts, p2, p3, chunk, out):
    for g in range(group_starts.shape[0] - 1):
        _d3_group(c0, c1, last_t, rows, order, group_starts[g], group_starts[g + 1], p2, p3, chunk, out)


@njit(fastmath=True, parallel=True)
def _rebuild_d3_parallel(c0, c1, last_t, rows, order, group_starts, p2, p3, chunk, out):
    for g in numba.prange(group_starts.shape[0] - 1):
        _d3_group(c0, c1, last_t, rows, order, group_starts[g], group_starts[g + 1], p2, p3, chunk, out)


@njit(fastmath=True)
def _matmul_into(a, a_off, m, k, b, b_off, n, c):
    """c[:m*n] = a[a_off:][:m, :k] @ b[b_off:][:k, :n] (flat row-major operands), vectorised over n."""
    for i in range(m):
        for j in range(n):
            c[i * n + j] = 0.0
        for t in range(k):
            s = a[a_off + i * k + t]
            base = b_off + t * n
            for j in range(n):
                c[i * n + j] += s * b[base + j]


@njit(fastmath=True)
def _rebuild_generic(first, mid1, mid2, last_t, rows, order, d, p1, p2, p3, p4, q1, q2, q3, out):
    """d = 2, 3 or 4 by a trie walk over the sorted rows: a level's partial product is recomputed only
    when its prefix changes. first (p1, q1, r1); mid_k (p, r, q*r') flat per slice; last_t (p_d, q_d, r)."""
    r1 = first.shape[2]
    f0 = first.reshape(first.size)
    m1 = mid1.reshape(mid1.size)
    m2 = mid2.reshape(mid2.size)
    w1 = mid1.shape[2]  # q2 * r2 (d >= 3)
    w2 = mid2.shape[2]  # q3 * r3 (d == 4)
    p_last = p2 if d == 2 else (p3 if d == 3 else p4)
    part2 = np.empty(q1 * max(w1, 1), dtype=np.float32)
    part3 = np.empty(q1 * q2 * max(w2, 1), dtype=np.float32)
    prev2 = -1
    prev3 = -1
    for t in range(rows.shape[0]):
        row = rows[order[t]]
        i_last = row % p_last
        pre = row // p_last
        dst = out[order[t]]
        if d == 2:
            _last_stage(f0[pre * q1 * r1:(pre + 1) * q1 * r1], last_t, i_last, dst)
            continue
        pre2 = pre if d == 3 else pre // p3
        if pre2 != prev2:
            i1 = pre2 // p2
            i2 = pre2 % p2
            _matmul_into(f0, i1 * q1 * r1, q1, r1, m1, i2 * r1 * w1, w1, part2)
            prev2 = pre2
            prev3 = -1
        if d == 3:
            _last_stage(part2, last_t, i_last, dst)
            continue
        if pre != prev3:
            i3 = pre % p3
            r2 = mid2.shape[1]
            _matmul_into(part2, 0, q1 * q2, r2, m2, i3 * r2 * w2, w2, part3)
            prev3 = pre
        _last_stage(part3, last_t, i_last, dst)

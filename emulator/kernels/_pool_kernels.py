"""The pooling kernels' private ``@njit`` bodies: shared helpers, ``pool_rows``, the checks, the chunks
of bags for threads (the public wrappers are in :mod:`emulator.kernels.pooling`).

Every kernel takes arrays and scalars only. A bag's 64-column block is summed
in four ``F32x16`` registers (:mod:`emulator.kernels._simd`) while the bag's
rows stream past, in lookup order, from ``+0.0`` or from ``out`` (accumulate);
lanes are independent columns, so no addition of one output element is
reordered and no fast-math is used: the sums are bit for bit the sequential
float32 ones.

What makes them fast (measured against ``torch.nn.EmbeddingBag``, whose
FBGEMM kernel does the same things, on this AVX2 machine; ``screc bench dram``):

* a whole 64-column block (``dim - jb >= 64``) is loaded and stored unmasked:
  on AMD Zen a masked store (``vmaskmovps``) costs tens of cycles, and eight of
  them per bag made the kernel 0.8x torch at dim 64. Narrower blocks (the row's
  tail) load whole 16-lane vectors unmasked too and mask only a partial vector;
* every cache line of a row's block is prefetched ``_AHEAD_FULL`` (full block)
  or ``_AHEAD_TAIL`` lookups ahead, including the block's last line: a NumPy
  table starts 16 bytes into a page, so a 256-byte row spans five lines;
* rows are range-checked where they are prefetched, so the check costs no pass
  of its own (the first ``_CHECK_AHEAD`` lookups are checked up front);
* ``pool_sources``' kernels (:mod:`emulator.kernels._pool_sources_kernels`)
  do the same per tier.
"""

from __future__ import annotations

import numba
import numpy as np

from emulator.kernels._simd import prefetch, vadd, vload_f16, vload_f32, vload_row, vstore_f32, vzero
from emulator.kernels.jit import njit

_AHEAD_FULL = 24  # lookups ahead a full block's lines are prefetched (24-32 best at dim 64-256 here)
_AHEAD_TAIL = 32  # the same for narrower blocks (fewer bytes per lookup, so further ahead)
_CHECK_AHEAD = max(_AHEAD_FULL, _AHEAD_TAIL)  # lookups range-checked up front


# ---------------------------------------------------------------- inlined helpers (no call, no refcounts)


@njit(inline="always")
def _lanes(rem, v):
    """How many of vector ``v``'s 16 lanes lie inside the ``rem`` remaining columns."""
    return min(max(rem - 16 * v, 0), 16)


@njit(inline="always")
def _load(arr, i, n):
    """``vload_row`` of ``n`` lanes, unmasked when the vector is whole (``n == 16``)."""
    if n == 16:
        return vload_row(arr, i, 16)
    return vload_row(arr, i, n)


@njit(inline="always")
def _load_f32(arr, i, n):
    if n == 16:
        return vload_f32(arr, i, 16)
    return vload_f32(arr, i, n)


@njit(inline="always")
def _load_f16(arr, i, n):
    if n == 16:
        return vload_f16(arr, i, 16)
    return vload_f16(arr, i, n)


@njit(inline="always")
def _store(out, i, v, n):
    """Store ``n`` lanes: unmasked when whole, nothing when ``n == 0`` (masked stores are slow on Zen)."""
    if n == 16:
        vstore_f32(out, i, v, 16)
    elif n > 0:
        vstore_f32(out, i, v, n)


@njit(inline="always")
def _prefetch_lines(arr, i, step, last):
    """Prefetch every cache line holding elements ``[i, i + last]`` of ``arr`` (``step`` elements per line,
    ``last < 4 * step``): lines at ``i``, ``i + step``, ... and the one holding ``i + last``. Unsigned
    arguments; with constant ``step`` and ``last`` the branches fold away."""
    prefetch(arr, i)
    if step <= last:
        prefetch(arr, i + step)
        if step + step <= last:
            prefetch(arr, i + step + step)
            if step + step + step <= last:
                prefetch(arr, i + step + step + step)
    prefetch(arr, i + last)


# ---------------------------------------------------------------- pool_rows


@njit
def pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, b_lo, b_hi, accumulate):
    """Bags ``[b_lo, b_hi)`` of ``pool_rows``; ``src`` is the flat float32 table or its fp16 bits (uint16).

    The offsets must have been checked (``csr_ok``). Returns False, having pooled only some bags, at the
    first row outside ``[0, n_rows)`` (rows are checked where they are prefetched)."""
    if b_hi <= b_lo:
        return True
    line = np.uint64(64 // src.itemsize)  # elements per cache line
    c63 = np.uint64(63)
    last_k = np.uint64(max(offsets[b_hi] - 1, 0))  # prefetching stops at the last lookup
    if not rows_in_range(indices, offsets[b_lo], min(offsets[b_lo] + _CHECK_AHEAD, offsets[b_hi]), n_rows):
        return False
    udim = np.uint64(dim)
    rows = np.uint64(n_rows)
    full_ahead, tail_ahead = np.uint64(_AHEAD_FULL), np.uint64(_AHEAD_TAIL)
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    for b in range(b_lo, b_hi):
        lo = np.uint64(offsets[b])
        hi = np.uint64(offsets[b + 1])
        ob = np.uint64(b) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            o = ob + np.uint64(jb)
            ujb = np.uint64(jb)
            k = lo
            if rem >= 64:  # a whole block: constant lane counts fold into plain vector loads and stores
                if accumulate:
                    a0, a1 = vload_f32(out, o, 16), vload_f32(out, o + c16, 16)
                    a2, a3 = vload_f32(out, o + c32, 16), vload_f32(out, o + c48, 16)
                else:
                    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                while k < hi:
                    q = np.uint64(indices[min(k + full_ahead, last_k)])  # a negative row wraps past n_rows
                    if q >= rows:
                        return False
                    _prefetch_lines(src, q * udim + ujb, line, c63)
                    p = np.uint64(indices[k]) * udim + ujb
                    a0 = vadd(a0, vload_row(src, p, 16))
                    a1 = vadd(a1, vload_row(src, p + c16, 16))
                    a2 = vadd(a2, vload_row(src, p + c32, 16))
                    a3 = vadd(a3, vload_row(src, p + c48, 16))
                    k += np.uint64(1)
                vstore_f32(out, o, a0, 16)
                vstore_f32(out, o + c16, a1, 16)
                vstore_f32(out, o + c32, a2, 16)
                vstore_f32(out, o + c48, a3, 16)
            elif rem == 16 or rem == 32:  # dims 16, 32 (or tails of 80, 96, ...): one or two whole vectors
                two = rem == 32
                last = np.uint64(rem - 1)
                if accumulate:
                    a0 = vload_f32(out, o, 16)
                    a1 = vload_f32(out, o + c16, 16) if two else vzero()
                else:
                    a0, a1 = vzero(), vzero()
                while k < hi:
                    q = np.uint64(indices[min(k + tail_ahead, last_k)])
                    if q >= rows:
                        return False
                    _prefetch_lines(src, q * udim + ujb, line, last)
                    p = np.uint64(indices[k]) * udim + ujb
                    a0 = vadd(a0, vload_row(src, p, 16))
                    if two:
                        a1 = vadd(a1, vload_row(src, p + c16, 16))
                    k += np.uint64(1)
                vstore_f32(out, o, a0, 16)
                if two:
                    vstore_f32(out, o + c16, a1, 16)
            else:  # the row's tail: whole vectors unmasked, a partial one masked (lanes past dim read nothing)
                n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
                last = np.uint64(rem - 1)
                if accumulate:
                    a0, a1 = _load_f32(out, o, n0), _load_f32(out, o + c16, n1)
                    a2, a3 = _load_f32(out, o + c32, n2), _load_f32(out, o + c48, n3)
                else:
                    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                while k < hi:
                    q = np.uint64(indices[min(k + tail_ahead, last_k)])
                    if q >= rows:
                        return False
                    _prefetch_lines(src, q * udim + ujb, line, last)
                    p = np.uint64(indices[k]) * udim + ujb
                    a0 = vadd(a0, _load(src, p, n0))
                    if n1 > 0:  # branches taken the same way all loop long
                        a1 = vadd(a1, _load(src, p + c16, n1))
                        if n2 > 0:
                            a2 = vadd(a2, _load(src, p + c32, n2))
                            if n3 > 0:
                                a3 = vadd(a3, _load(src, p + c48, n3))
                    k += np.uint64(1)
                _store(out, o, a0, n0)
                _store(out, o + c16, a1, n1)
                _store(out, o + c32, a2, n2)
                _store(out, o + c48, a3, n3)
    return True


@njit
def pool_rows_serial(src, dim, n_rows, indices, offsets, out, row_stride, accumulate):
    """False if the offsets or a row are out of range (then ``out`` is partly written)."""
    if not csr_ok(offsets, indices.shape[0]):
        return False
    # np.int64(0), not a literal 0: a Literal[int] argument would compile another (slower here) variant
    return pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, np.int64(0),
                           offsets.shape[0] - 1, accumulate)


# ---------------------------------------------------------------- checks


@njit
def csr_ok(offsets, n_lookups):
    """Whether ``offsets`` start at >= 0, never decrease and end at <= ``n_lookups`` (branch-free)."""
    ok = offsets[0] >= 0 and offsets[offsets.shape[0] - 1] <= n_lookups
    k = np.uint64(1)
    while k < np.uint64(offsets.shape[0]):
        ok &= offsets[k] >= offsets[k - np.uint64(1)]
        k += np.uint64(1)
    return ok


@njit
def rows_in_range(indices, lo, hi, n_rows):
    """Whether every row of lookups ``[lo, hi)`` is in ``[0, n_rows)``: one branch-free (vectorised)
    pass; an unsigned index avoids Numba's negative-index wraparound, which would stop LLVM."""
    ok = True
    k = np.uint64(lo)
    while k < np.uint64(hi):
        ok &= np.uint64(indices[k]) < np.uint64(n_rows)  # a negative row wraps past n_rows
        k += np.uint64(1)
    return ok


@njit
def sources_in_range(kinds, locs, lo, hi, limits):
    """Whether every lookup in ``[lo, hi)`` has a known kind and ``0 <= loc < limits[kind]``."""
    ok = True
    k = np.uint64(lo)
    while k < np.uint64(hi):
        kind = kinds[k]
        limit = limits[kind] if kind < limits.shape[0] else np.uint64(0)
        ok &= np.uint64(locs[k]) < limit
        k += np.uint64(1)
    return ok


# ---------------------------------------------------------------- threads (prange over chunks of bags)


@njit
def chunk_bounds(offsets, n_chunks):
    """Bag boundaries ``[0, ..., n_bags]`` splitting the lookups into about ``n_chunks`` equal parts
    (strictly increasing; fewer chunks when bags are few or long)."""
    n_bags = offsets.shape[0] - 1
    n = max(min(n_bags, n_chunks), 1)
    bounds = np.empty(n + 1, np.int64)
    bounds[0] = 0
    m = 1
    lo, span = offsets[0], offsets[n_bags] - offsets[0]
    for c in range(1, n):
        target = lo + (span * c) // n
        b = np.searchsorted(offsets, target)  # the first bag starting at or after the target lookup
        if b > bounds[m - 1] and b < n_bags:
            bounds[m] = b
            m += 1
    bounds[m] = n_bags
    return bounds[:m + 1]


@njit(parallel=True)
def pool_rows_parallel(src, dim, n_rows, indices, offsets, out, row_stride, accumulate, n_chunks):
    """``pool_rows_serial`` with the bags split into ``n_chunks`` chunks of equal lookups over ``prange``."""
    if not csr_ok(offsets, indices.shape[0]):
        return False
    chunks = chunk_bounds(offsets, n_chunks)
    n_failed = 0
    for c in numba.prange(chunks.shape[0] - 1):
        n_failed += not pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, chunks[c],
                                        chunks[c + 1], accumulate)
    return n_failed == 0

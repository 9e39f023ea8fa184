"""Pooling kernels: the DRAM tier's gather-and-pool and the memory-centric cores' extract-and-pool.

Every public function checks dtypes, shapes and layout, then calls a private
``@njit`` kernel that takes arrays and scalars only (stumpy's split). The
kernels' entry points check every offset and location before they read it
(``pool_rows`` checks each row where it prefetches it, 16 lookups ahead, which
costs no pass of its own); on a bad value the wrapper raises naming the first
one. Argument checks live in :mod:`emulator.kernels._args`.

Exactness. A bag is summed in lookup order with a float32 accumulator that
starts at ``+0.0`` (or at ``out[b]`` with ``accumulate=True``); fp16 rows are
widened to float32 (exactly, LLVM ``fpext`` = F16C ``vcvtph2ps``) before
adding. That is bit for bit what ``tests/naive.py`` does (``acc +=
row.astype(np.float32)`` per lookup), so the replay's ``--verify`` can compare
with ``np.array_equal``. (The one thing IEEE leaves open is which payload a NaN
result carries; a signalling fp16 NaN comes out quieted.) Speed comes from
keeping a 64-column block of the accumulator in four 16-lane registers while
the bag's rows stream past (``emulator.kernels._simd``), from prefetching the row
``_PREFETCH_LOOKUPS`` lookups ahead, and from splitting bags over threads; none
of it reorders the additions of one output element (lanes are independent
columns, and one thread owns a whole bag), and no fast-math is used.

Threads. ``threads=1`` runs the serial kernel. ``threads=N>1`` runs a
``prange`` kernel over ``N * _CHUNKS_PER_THREAD`` chunks of bags (equal
lookups, handed out dynamically) with ``numba.set_num_threads(N)``, which is
thread-local in Numba: set for the calling thread and restored before
returning. Parallel launches are serialised by a module lock, so several
Python threads may call these functions (the workqueue threading layer would
otherwise abort on concurrent launches). Parallel speed-ups need idle cores:
on a loaded machine a worker woken per call can wait a whole time slice.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from emulator.kernels import _args
from emulator.kernels._args import DTYPE_FP16, DTYPE_FP32, KIND_DRAM, KIND_PAGE, KIND_STAGED
from emulator.kernels._simd import prefetch, vadd, vload_f16, vload_f32, vload_row, vstore_f32, vzero
from emulator.kernels.jit import njit

__all__ = [
    "DTYPE_FP32", "DTYPE_FP16", "KIND_DRAM", "KIND_PAGE", "KIND_STAGED",
    "dtype_code", "pool_rows", "pool_sources", "gather_rows", "extract_rows",
]


_PREFETCH_LOOKUPS = 16  # prefetch the row this many lookups ahead
_CHUNKS_PER_THREAD = 8  # parallel kernels split the bags into threads * this chunks of equal lookups
_PARALLEL_LOCK = threading.Lock()


def dtype_code(dtype) -> int:
    """``"fp32"`` / ``np.float32`` -> ``DTYPE_FP32``; ``"fp16"`` / ``np.float16`` -> ``DTYPE_FP16``."""
    names = {"fp32": DTYPE_FP32, "float32": DTYPE_FP32, "fp16": DTYPE_FP16, "float16": DTYPE_FP16}
    key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if key not in names:
        raise ValueError(f"dtype {dtype!r} is not fp32 or fp16")
    return names[key]


# ---------------------------------------------------------------- private kernels


@njit(inline="always")  # inlined in Numba IR: no call, no reference counting per lookup
def _lanes(rem, v):
    """How many of vector ``v``'s 16 lanes lie inside the ``rem`` remaining columns."""
    return min(max(rem - 16 * v, 0), 16)


@njit
def _pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, b_lo, b_hi, accumulate):
    """Bags ``[b_lo, b_hi)``: each 64-column block of a bag is summed in four registers over its lookups.

    Rows are range-checked where they are prefetched, ``_PREFETCH_LOOKUPS`` lookups before they are
    read (the first few up front), so the check costs no pass of its own. Returns False, having
    pooled only some bags, at the first row outside ``[0, n_rows)``."""
    line = 64 // src.itemsize  # elements per cache line
    last_k = np.uint64(max(offsets[b_hi] - 1, 0))  # prefetching stops at the last lookup
    udim = np.uint64(dim)
    rows = np.uint64(n_rows)
    ahead = np.uint64(_PREFETCH_LOOKUPS)
    if not _rows_in_range(indices, offsets[b_lo], min(offsets[b_lo] + _PREFETCH_LOOKUPS, offsets[b_hi]), n_rows):
        return False
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    for b in range(b_lo, b_hi):
        lo = np.uint64(offsets[b])
        hi = np.uint64(offsets[b + 1])
        ob = np.uint64(b) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
            o = ob + np.uint64(jb)
            ujb = np.uint64(jb)
            # this block's cache lines in the row ``ahead`` lookups on: 4 branch-free prefetches whose
            # offsets clamp to the block's last element (a repeated prefetch is nearly free)
            last = min(rem, 64) - 1
            f0 = ujb
            f1 = ujb + np.uint64(min(line, last))
            f2 = ujb + np.uint64(min(2 * line, last))
            f3 = ujb + np.uint64(min(3 * line, last))
            if accumulate:
                a0 = vload_f32(out, o, n0)
                a1 = vload_f32(out, o + c16, n1)
                a2 = vload_f32(out, o + c32, n2)
                a3 = vload_f32(out, o + c48, n3)
            else:
                a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
            k = lo
            if rem >= 64:  # full block: constant masks fold into plain vector loads
                while k < hi:
                    q = np.uint64(indices[min(k + ahead, last_k)])  # a negative row wraps past n_rows
                    if q >= rows:
                        return False
                    q *= udim
                    prefetch(src, q + f0)
                    prefetch(src, q + f1)
                    prefetch(src, q + f2)
                    prefetch(src, q + f3)
                    p = np.uint64(indices[k]) * udim + ujb
                    a0 = vadd(a0, vload_row(src, p, 16))
                    a1 = vadd(a1, vload_row(src, p + c16, 16))
                    a2 = vadd(a2, vload_row(src, p + c32, 16))
                    a3 = vadd(a3, vload_row(src, p + c48, 16))
                    k += np.uint64(1)
            else:  # the row's tail: masked loads (lanes past dim read nothing, add zeros, are not stored)
                while k < hi:
                    q = np.uint64(indices[min(k + ahead, last_k)])  # a negative row wraps past n_rows
                    if q >= rows:
                        return False
                    q *= udim
                    prefetch(src, q + f0)
                    prefetch(src, q + f1)
                    prefetch(src, q + f2)
                    prefetch(src, q + f3)
                    p = np.uint64(indices[k]) * udim + ujb
                    a0 = vadd(a0, vload_row(src, p, n0))
                    if n1 > 0:  # branches taken the same way all loop long
                        a1 = vadd(a1, vload_row(src, p + c16, n1))
                        if n2 > 0:
                            a2 = vadd(a2, vload_row(src, p + c32, n2))
                            if n3 > 0:
                                a3 = vadd(a3, vload_row(src, p + c48, n3))
                    k += np.uint64(1)
            vstore_f32(out, o, a0, n0)
            vstore_f32(out, o + c16, a1, n1)
            vstore_f32(out, o + c32, a2, n2)
            vstore_f32(out, o + c48, a3, n3)
    return True


@njit
def _pool_rows_serial(src, dim, n_rows, indices, offsets, out, row_stride, accumulate):
    """False if the offsets or a row are out of range (then ``out`` is partly written)."""
    if not _csr_ok(offsets, indices.shape[0]):
        return False
    # np.int64(0), not a literal 0: a Literal[int] argument would compile another (slower here) variant
    return _pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, np.int64(0),
                            offsets.shape[0] - 1, accumulate)


@njit(parallel=True)
def _pool_rows_parallel(src, dim, n_rows, indices, offsets, out, row_stride, accumulate, chunks):
    if not _csr_ok(offsets, indices.shape[0]):
        return False
    n_failed = 0
    for c in numba.prange(chunks.shape[0] - 1):
        n_failed += not _pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, chunks[c],
                                         chunks[c + 1], accumulate)
    return n_failed == 0


@njit
def _pool_sources_range(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride,
                        b_lo, b_hi, accumulate):
    """Like ``_pool_rows_range``, each lookup's row block loaded from the tier ``kinds[k]`` names.

    The loads are written out per tier (no helper taking arrays: a call per lookup would cost Numba
    reference counting). Lanes past ``dim`` are loaded masked (as zeros) and never stored;
    vectors wholly past it are skipped."""
    line = 64 // dram.itemsize  # elements per cache line, for prefetching DRAM rows
    last_k = np.uint64(max(offsets[b_hi] - 1, 0))
    udim = np.uint64(dim)
    ahead = np.uint64(_PREFETCH_LOOKUPS)
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    for b in range(b_lo, b_hi):
        lo = np.uint64(offsets[b])
        hi = np.uint64(offsets[b + 1])
        ob = np.uint64(b) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
            o = ob + np.uint64(jb)
            ujb = np.uint64(jb)
            last = min(rem, 64) - 1  # prefetch offsets of this block's lines, as in _pool_rows_range
            f1 = ujb + np.uint64(min(line, last))
            f2 = ujb + np.uint64(min(2 * line, last))
            f3 = ujb + np.uint64(min(3 * line, last))
            if accumulate:
                a0 = vload_f32(out, o, n0)
                a1 = vload_f32(out, o + c16, n1)
                a2 = vload_f32(out, o + c32, n2)
                a3 = vload_f32(out, o + c48, n3)
            else:
                a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
            k = lo
            while k < hi:
                kp = min(k + ahead, last_k)
                if kinds[kp] == KIND_DRAM:  # rows read from pages / staging are fresh in cache
                    q = np.uint64(locs[kp]) * udim
                    prefetch(dram, q + ujb)
                    prefetch(dram, q + f1)
                    prefetch(dram, q + f2)
                    prefetch(dram, q + f3)
                kind = kinds[k]
                loc = np.uint64(locs[k])
                if kind == KIND_DRAM:
                    p = loc * udim + ujb
                    a0 = vadd(a0, vload_row(dram, p, n0))
                    if n1 > 0:
                        a1 = vadd(a1, vload_row(dram, p + c16, n1))
                        if n2 > 0:
                            a2 = vadd(a2, vload_row(dram, p + c32, n2))
                            if n3 > 0:
                                a3 = vadd(a3, vload_row(dram, p + c48, n3))
                elif kind == KIND_PAGE and page_half:  # loc is a byte offset: 16 halves = 32 bytes
                    p = loc + np.uint64(2) * ujb
                    a0 = vadd(a0, vload_f16(pages, p, n0))
                    if n1 > 0:
                        a1 = vadd(a1, vload_f16(pages, p + c32, n1))
                        if n2 > 0:
                            a2 = vadd(a2, vload_f16(pages, p + np.uint64(64), n2))
                            if n3 > 0:
                                a3 = vadd(a3, vload_f16(pages, p + np.uint64(96), n3))
                elif kind == KIND_PAGE:  # 16 floats = 64 bytes
                    p = loc + np.uint64(4) * ujb
                    a0 = vadd(a0, vload_f32(pages, p, n0))
                    if n1 > 0:
                        a1 = vadd(a1, vload_f32(pages, p + np.uint64(64), n1))
                        if n2 > 0:
                            a2 = vadd(a2, vload_f32(pages, p + np.uint64(128), n2))
                            if n3 > 0:
                                a3 = vadd(a3, vload_f32(pages, p + np.uint64(192), n3))
                else:
                    p = loc * udim + ujb
                    a0 = vadd(a0, vload_f32(staged, p, n0))
                    if n1 > 0:
                        a1 = vadd(a1, vload_f32(staged, p + c16, n1))
                        if n2 > 0:
                            a2 = vadd(a2, vload_f32(staged, p + c32, n2))
                            if n3 > 0:
                                a3 = vadd(a3, vload_f32(staged, p + c48, n3))
                k += np.uint64(1)
            vstore_f32(out, o, a0, n0)
            vstore_f32(out, o + c16, a1, n1)
            vstore_f32(out, o + c32, a2, n2)
            vstore_f32(out, o + c48, a3, n3)


@njit
def _sources_ok(offsets, kinds, locs, limits):
    return _csr_ok(offsets, kinds.shape[0]) and _sources_in_range(kinds, locs, offsets[0], offsets[-1], limits)


@njit
def _pool_sources_serial(offsets, kinds, locs, limits, dram, pages, staged, page_half, dim, out, row_stride,
                         accumulate):
    if not _sources_ok(offsets, kinds, locs, limits):
        return False
    _pool_sources_range(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride,
                        np.int64(0), offsets.shape[0] - 1, accumulate)
    return True


@njit(parallel=True)
def _pool_sources_parallel(offsets, kinds, locs, limits, dram, pages, staged, page_half, dim, out, row_stride,
                           accumulate, chunks):
    if not _sources_ok(offsets, kinds, locs, limits):
        return False
    for c in numba.prange(chunks.shape[0] - 1):
        _pool_sources_range(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride,
                            chunks[c], chunks[c + 1], accumulate)
    return True


@njit
def _csr_ok(offsets, n_lookups):
    """Whether ``offsets`` start at >= 0, never decrease and end at <= ``n_lookups`` (branch-free)."""
    ok = offsets[0] >= 0 and offsets[offsets.shape[0] - 1] <= n_lookups
    k = np.uint64(1)
    while k < np.uint64(offsets.shape[0]):
        ok &= offsets[k] >= offsets[k - np.uint64(1)]
        k += np.uint64(1)
    return ok


@njit
def _rows_in_range(indices, lo, hi, n_rows):
    """Whether every row of lookups ``[lo, hi)`` is in ``[0, n_rows)``: one branch-free (vectorised)
    pass; an unsigned index avoids Numba's negative-index wraparound, which would stop LLVM."""
    ok = True
    k = np.uint64(lo)
    while k < np.uint64(hi):
        ok &= np.uint64(indices[k]) < np.uint64(n_rows)  # a negative row wraps past n_rows
        k += np.uint64(1)
    return ok


@njit
def _sources_in_range(kinds, locs, lo, hi, limits):
    """Whether every lookup in ``[lo, hi)`` has a known kind and ``0 <= loc < limits[kind]``."""
    ok = True
    k = np.uint64(lo)
    while k < np.uint64(hi):
        kind = kinds[k]
        limit = limits[kind] if kind < limits.shape[0] else np.uint64(0)
        ok &= np.uint64(locs[k]) < limit
        k += np.uint64(1)
    return ok


# ---------------------------------------------------------------- running the kernels


def _chunks(offsets: np.ndarray, threads: int) -> np.ndarray:
    """Bag boundaries splitting the lookups into about ``threads * _CHUNKS_PER_THREAD`` equal parts."""
    n_bags = offsets.size - 1
    n = min(n_bags, threads * _CHUNKS_PER_THREAD)
    targets = np.linspace(offsets[0], offsets[-1], n + 1)
    bounds = np.searchsorted(offsets, targets, side="left").clip(0, n_bags)
    bounds[0], bounds[-1] = 0, n_bags
    return np.unique(bounds).astype(np.int64)


def _run(threads: int, offsets: np.ndarray, serial, parallel, *args):
    """The serial kernel, or the parallel one with ``threads`` threads (set and restored, one launch at
    a time); returns what the kernel returns."""
    if threads == 1 or offsets.size <= 2:
        return serial(*args)
    chunks = _chunks(offsets, threads)
    with _PARALLEL_LOCK, numba.parallel_chunksize(1):  # chunk size 1: chunks handed out dynamically
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return parallel(*args, chunks)
        finally:
            numba.set_num_threads(previous)


# ---------------------------------------------------------------- public API


def pool_rows(table: np.ndarray, indices: np.ndarray, offsets: np.ndarray, out: np.ndarray, *,
              accumulate: bool = False, threads: int = 1) -> np.ndarray:
    """The DRAM tier's gather-and-pool: ``out[b] (+)= sum(table[indices[offsets[b]:offsets[b+1]]])``.

    ``table`` (rows, dim) float32|float16 C-contiguous; ``indices`` int64; ``offsets`` int64 of length
    n_bags + 1 (non-decreasing, a CSR into ``indices``); ``out`` float32 (n_bags, dim) with contiguous
    rows. Sums in lookup order from ``+0.0`` (``accumulate=False``) or from ``out[b]``
    (``accumulate=True``, so pooling a bag in two calls equals pooling it in one). Returns ``out``.
    Bad dtypes raise TypeError, bad shapes, layout or offsets ValueError (before anything is written);
    a row out of range raises IndexError, and then ``out`` is undefined (rows are checked as they are
    prefetched, so bags before the bad row have been pooled).
    """
    src = _args.table_view(table, "table")
    rows, dim = table.shape
    _args.int_array(indices, np.int64, "indices")
    _args.check_offsets(offsets)
    out_flat, row_stride = _args.out_view(out, offsets.size - 1, dim)
    threads = _args.check_threads(threads)
    if not _run(threads, offsets, _pool_rows_serial, _pool_rows_parallel,
                src, dim, rows, indices, offsets, out_flat, row_stride, bool(accumulate)):
        _args.raise_for_offsets(offsets, indices.size)
        lo, hi = int(offsets[0]), int(offsets[-1])
        bad = lo + int(np.flatnonzero((indices[lo:hi] < 0) | (indices[lo:hi] >= rows))[0])
        raise IndexError(f"lookup {bad}: row {int(indices[bad])} out of range for a table of {rows} rows")
    return out


def pool_sources(offsets: np.ndarray, kinds: np.ndarray, locs: np.ndarray, dram: np.ndarray,
                 pages: np.ndarray, staged: np.ndarray, dtype_code: int, dim: int, out: np.ndarray, *,
                 accumulate: bool = False, threads: int = 1) -> np.ndarray:
    """Mixed-tier pooling: lookup k of bag b adds the row named by ``kinds[k]`` / ``locs[k]``.

    ``KIND_DRAM`` (0): ``dram[locs[k]]`` ((R, dim) float32|float16, C-contiguous; may have 0 rows).
    ``KIND_PAGE`` (1): ``dim`` values of ``dtype_code`` (DTYPE_FP32 / DTYPE_FP16) at byte offset
    ``locs[k]`` of ``pages`` (1-D uint8; any offset, aligned or not) - the memory-centric core.
    ``KIND_STAGED`` (2): ``staged[locs[k]]`` ((S, dim) float32) - a row rebuilt from TT cores.
    Same order and accumulator rule as :func:`pool_rows`, so any mix of tiers gives exactly the
    sequential sum of the same rows. ``kinds`` uint8, ``locs`` int64, ``offsets`` int64. Returns ``out``.
    Bad input raises (TypeError / ValueError / IndexError, as :func:`pool_rows`) before anything is written.
    """
    dram_flat, staged_flat, page_half = _args.check_sources(kinds, locs, dram, pages, staged, dtype_code, dim)
    _args.check_offsets(offsets)
    out_flat, row_stride = _args.out_view(out, offsets.size - 1, dim)
    threads = _args.check_threads(threads)
    limits = _args.location_limits(dram, pages, staged, dtype_code, dim)
    if not _run(threads, offsets, _pool_sources_serial, _pool_sources_parallel,
                offsets, kinds, locs, limits, dram_flat, pages, staged_flat, page_half, int(dim), out_flat,
                row_stride, bool(accumulate)):
        _args.raise_for_offsets(offsets, kinds.size)
        _args.raise_for_locations(kinds, locs, int(offsets[0]), int(offsets[-1]), limits, dram, pages,
                                  staged, dtype_code, dim)
    return out


def gather_rows(table: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``out[i] = table[rows[i]]`` widened to float32 (exact); ``rows`` int64. Returns ``out``."""
    _args.table_view(table, "table")
    _args.int_array(rows, np.int64, "rows")
    dim = table.shape[1]
    kinds = np.full(rows.size, KIND_DRAM, np.uint8)
    no_pages, no_staged = np.empty(0, np.uint8), np.empty((0, dim), np.float32)
    return extract_rows(kinds, rows, table, no_pages, no_staged, DTYPE_FP32, dim, out)


def extract_rows(kinds: np.ndarray, locs: np.ndarray, dram: np.ndarray, pages: np.ndarray,
                 staged: np.ndarray, dtype_code: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """``out[i]`` = the row lookup i names (same ``kinds`` / ``locs`` meaning as :func:`pool_sources`),
    widened to float32 without pooling (e.g. rows extracted from read pages to fill a row cache).
    ``out`` (n, dim) float32 is allocated when None. Returns ``out``."""
    _args.check_sources(kinds, locs, dram, pages, staged, dtype_code, dim)
    out = np.empty((locs.size, dim), np.float32) if out is None else out
    _args.out_view(out, locs.size, dim)
    limits = _args.location_limits(dram, pages, staged, dtype_code, dim)
    if not _sources_in_range(kinds, locs, 0, locs.size, limits):
        _args.raise_for_locations(kinds, locs, 0, locs.size, limits, dram, pages, staged, dtype_code, dim)
    out[...] = -0.0  # one bag per lookup, accumulated onto -0.0: -0.0 + x == x for every x, a bit-exact copy
    offsets = np.arange(locs.size + 1, dtype=np.int64)
    return pool_sources(offsets, kinds, locs, dram, pages, staged, dtype_code, dim, out, accumulate=True)

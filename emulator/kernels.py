"""Pooling kernels: the DRAM tier's gather-and-pool and the memory-centric cores' extract-and-pool.

Every public function checks dtypes, shapes, layout and every row / offset it
will read, then calls a private ``@njit`` kernel that takes arrays and scalars
only (stumpy's split); bad input raises before anything is written.

Exactness. A bag is summed in lookup order with a float32 accumulator that
starts at ``+0.0`` (or at ``out[b]`` with ``accumulate=True``); fp16 rows are
widened to float32 (exactly, LLVM ``fpext`` = F16C ``vcvtph2ps``) before
adding. That is bit for bit what ``tests/naive.py`` does (``acc +=
row.astype(np.float32)`` per lookup), so the replay's ``--verify`` can compare
with ``np.array_equal``. (The one thing IEEE leaves open is which payload a NaN
result carries; a signalling fp16 NaN comes out quieted.) Speed comes from
keeping a 64-column block of the accumulator in four 16-lane registers while
the bag's rows stream past (``emulator._simd``), from prefetching the row
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

from emulator._simd import prefetch, vadd, vload_f16, vload_f32, vload_row, vstore_f32, vzero
from emulator.jit import njit

__all__ = [
    "DTYPE_FP32", "DTYPE_FP16", "KIND_DRAM", "KIND_PAGE", "KIND_STAGED",
    "dtype_code", "pool_rows", "pool_sources", "gather_rows", "extract_rows",
]

DTYPE_FP32 = 0
DTYPE_FP16 = 1
_ITEM_BYTES = (4, 2)
KIND_DRAM = 0  # row of the DRAM table (``locs`` = row index)
KIND_PAGE = 1  # row inside the read pages (``locs`` = byte offset into ``pages``)
KIND_STAGED = 2  # TT-rebuilt row staged in float32 (``locs`` = row of ``staged``)

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
                    a1 = vadd(a1, vload_row(src, p + c16, n1))
                    a2 = vadd(a2, vload_row(src, p + c32, n2))
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
    return _pool_rows_range(src, dim, n_rows, indices, offsets, out, row_stride, np.int64(0), offsets.shape[0] - 1,
                            accumulate)


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
    reference counting). Lanes past ``dim`` are loaded masked (as zeros) and never stored."""
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
                    a1 = vadd(a1, vload_row(dram, p + c16, n1))
                    a2 = vadd(a2, vload_row(dram, p + c32, n2))
                    a3 = vadd(a3, vload_row(dram, p + c48, n3))
                elif kind == KIND_PAGE and page_half:  # loc is a byte offset: 16 halves = 32 bytes
                    p = loc + np.uint64(2) * ujb
                    a0 = vadd(a0, vload_f16(pages, p, n0))
                    a1 = vadd(a1, vload_f16(pages, p + c32, n1))
                    a2 = vadd(a2, vload_f16(pages, p + np.uint64(64), n2))
                    a3 = vadd(a3, vload_f16(pages, p + np.uint64(96), n3))
                elif kind == KIND_PAGE:  # 16 floats = 64 bytes
                    p = loc + np.uint64(4) * ujb
                    a0 = vadd(a0, vload_f32(pages, p, n0))
                    a1 = vadd(a1, vload_f32(pages, p + np.uint64(64), n1))
                    a2 = vadd(a2, vload_f32(pages, p + np.uint64(128), n2))
                    a3 = vadd(a3, vload_f32(pages, p + np.uint64(192), n3))
                else:
                    p = loc * udim + ujb
                    a0 = vadd(a0, vload_f32(staged, p, n0))
                    a1 = vadd(a1, vload_f32(staged, p + c16, n1))
                    a2 = vadd(a2, vload_f32(staged, p + c32, n2))
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


# ---------------------------------------------------------------- input checks (wrappers)


def _table_view(table: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous (rows, dim) fp32/fp16 table as a flat float32 / uint16 (fp16 bits) view."""
    if not isinstance(table, np.ndarray) or table.ndim != 2:
        raise ValueError(f"{what} must be a 2-D numpy array (rows, dim), got {_describe(table)}")
    if table.dtype not in (np.float32, np.float16):
        raise TypeError(f"{what} must be float32 or float16, got {table.dtype}")
    if not table.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (use np.ascontiguousarray)")
    flat = table.reshape(-1)
    return flat.view(np.uint16) if table.dtype == np.float16 else flat


def _int_array(a: np.ndarray, dtype, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D numpy array, got {_describe(a)}")
    if a.dtype != dtype:
        raise TypeError(f"{what} must be {np.dtype(dtype).name}, got {a.dtype} (convert with .astype(np.{np.dtype(dtype).name}))")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be contiguous (use np.ascontiguousarray)")
    return a


def _out_view(out: np.ndarray, n_rows: int, dim: int) -> tuple[np.ndarray, int]:
    """A writable float32 (n_rows, dim) output whose rows are contiguous (the row stride may be larger,
    e.g. a column slice of a (B, T*dim) DLRM output) -> (flat float32 view, row stride in elements)."""
    if not isinstance(out, np.ndarray) or out.ndim != 2:
        raise ValueError(f"out must be a 2-D numpy array, got {_describe(out)}")
    if out.dtype != np.float32:
        raise TypeError(f"out must be float32, got {out.dtype}")
    if out.shape != (n_rows, dim):
        raise ValueError(f"out has shape {out.shape}, expected {(n_rows, dim)}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if n_rows == 0 or dim == 0:
        return np.empty(0, np.float32), dim
    row_stride, col_stride = out.strides
    if col_stride != 4 or row_stride < 4 * dim or row_stride % 4:
        raise ValueError(f"out rows must be contiguous float32 rows (strides {out.strides}); use np.ascontiguousarray")
    if out.flags.c_contiguous:
        return out.reshape(-1), dim
    span = (n_rows - 1) * (row_stride // 4) + dim  # the flat extent from out[0, 0] to out[-1, -1]
    return np.lib.stride_tricks.as_strided(out, shape=(span,), strides=(4,)), row_stride // 4


def _check_offsets(offsets: np.ndarray) -> None:
    """Type and layout only: the values are checked by the kernel's entry point (one pass, no dispatch)."""
    _int_array(offsets, np.int64, "offsets")
    if offsets.size == 0:
        raise ValueError("offsets must have length n_bags + 1 >= 1")


def _raise_for_offsets(offsets: np.ndarray, n_lookups: int) -> None:
    """After a kernel refused its input: raise for the first bad offset, if any (NumPy, slow path)."""
    if offsets[0] < 0:
        raise ValueError(f"offsets[0] = {int(offsets[0])} is negative")
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        b = int(drops[0])
        raise ValueError(f"offsets decrease at bag {b} ({int(offsets[b])} -> {int(offsets[b + 1])})")
    if offsets[-1] > n_lookups:
        raise ValueError(f"last offset {int(offsets[-1])} exceeds the {n_lookups} lookups")


def _check_threads(threads: int) -> int:
    if not isinstance(threads, (int, np.integer)) or not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be an integer in [1, {numba.config.NUMBA_NUM_THREADS}], got {threads!r}")
    return int(threads)


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


def _describe(a) -> str:
    return f"{type(a).__name__} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


# ---------------------------------------------------------------- public API


def pool_rows(table: np.ndarray, indices: np.ndarray, offsets: np.ndarray, out: np.ndarray, *,
              accumulate: bool = False, threads: int = 1) -> np.ndarray:
    """The DRAM tier's gather-and-pool: ``out[b] (+)= sum(table[indices[offsets[b]:offsets[b+1]]])``.

    ``table`` (rows, dim) float32|float16 C-contiguous; ``indices`` int64; ``offsets`` int64 of length
    n_bags + 1 (non-decreasing, a CSR into ``indices``); ``out`` float32 (n_bags, dim) with contiguous
    rows. Sums in lookup order from ``+0.0`` (``accumulate=False``) or from ``out[b]``
    (``accumulate=True``, so pooling a bag in two calls equals pooling it in one). Returns ``out``.
    Bad dtypes raise TypeError; bad shapes, layout or offsets ValueError; rows out of range IndexError
    (all checked before anything is written).
    """
    src = _table_view(table, "table")
    rows, dim = table.shape
    _int_array(indices, np.int64, "indices")
    _check_offsets(offsets)
    out_flat, row_stride = _out_view(out, offsets.size - 1, dim)
    threads = _check_threads(threads)
    if not _run(threads, offsets, _pool_rows_serial, _pool_rows_parallel,
                src, dim, rows, indices, offsets, out_flat, row_stride, bool(accumulate)):
        _raise_for_offsets(offsets, indices.size)
        lo, hi = int(offsets[0]), int(offsets[-1])
        bad = lo + int(np.flatnonzero((indices[lo:hi] < 0) | (indices[lo:hi] >= rows))[0])
        raise IndexError(f"lookup {bad}: row {int(indices[bad])} out of range for a table of {rows} rows")
    return out


def _check_sources(kinds, locs, dram, pages, staged, code, dim):
    """Shared checks of pool_sources / extract_rows; returns (dram flat, staged flat, page_half)."""
    _int_array(kinds, np.uint8, "kinds")
    _int_array(locs, np.int64, "locs")
    if kinds.size != locs.size:
        raise ValueError(f"kinds ({kinds.size}) and locs ({locs.size}) differ in length")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if code not in (DTYPE_FP32, DTYPE_FP16):
        raise ValueError(f"dtype_code {code!r} is not DTYPE_FP32 ({DTYPE_FP32}) or DTYPE_FP16 ({DTYPE_FP16})")
    dram_flat = _table_view(dram, "dram")
    if dram.shape[1] != dim:
        raise ValueError(f"dram rows have {dram.shape[1]} values, expected dim = {dim}")
    if not isinstance(pages, np.ndarray) or pages.ndim != 1 or pages.dtype != np.uint8:
        raise TypeError(f"pages must be a 1-D uint8 array (a buffer of read pages), got {_describe(pages)}"
                        + (f" of {pages.dtype}" if isinstance(pages, np.ndarray) else ""))
    if not pages.flags.c_contiguous:
        raise ValueError("pages must be contiguous")
    if not isinstance(staged, np.ndarray) or staged.ndim != 2 or staged.dtype != np.float32:
        raise TypeError(f"staged must be a 2-D float32 array (S, dim), got {_describe(staged)}"
                        + (f" of {staged.dtype}" if isinstance(staged, np.ndarray) else ""))
    if staged.shape[1] != dim or not staged.flags.c_contiguous:
        raise ValueError(f"staged must be C-contiguous with {dim} columns, got shape {staged.shape}")
    return dram_flat, staged.reshape(-1), code == DTYPE_FP16


def _limits(dram, pages, staged, code, dim) -> np.ndarray:
    """Exclusive upper bound of ``locs`` per kind; a page row must end inside the buffer."""
    return np.array([dram.shape[0], max(pages.size - dim * _ITEM_BYTES[code] + 1, 0), staged.shape[0]], np.uint64)


def _raise_for_locations(kinds, locs, lo, hi, limits, dram, pages, staged, code, dim) -> None:
    row_bytes = dim * _ITEM_BYTES[code]
    kind_used = np.minimum(kinds[lo:hi], 3)
    bad = lo + int(np.flatnonzero(locs[lo:hi].astype(np.uint64) >= np.append(limits, 0)[kind_used])[0])
    kind, loc = int(kinds[bad]), int(locs[bad])
    if kind == KIND_DRAM:
        raise IndexError(f"lookup {bad}: dram row {loc} out of range for {dram.shape[0]} rows")
    if kind == KIND_PAGE:
        raise IndexError(f"lookup {bad}: a {row_bytes}-byte row at byte offset {loc} "
                         f"does not fit in the {pages.size}-byte pages buffer")
    if kind == KIND_STAGED:
        raise IndexError(f"lookup {bad}: staged row {loc} out of range for {staged.shape[0]} rows")
    raise ValueError(f"lookup {bad}: kind {kind} is not KIND_DRAM (0), KIND_PAGE (1) or KIND_STAGED (2)")


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
    """
    dram_flat, staged_flat, page_half = _check_sources(kinds, locs, dram, pages, staged, dtype_code, dim)
    _check_offsets(offsets)
    out_flat, row_stride = _out_view(out, offsets.size - 1, dim)
    threads = _check_threads(threads)
    limits = _limits(dram, pages, staged, dtype_code, dim)
    if not _run(threads, offsets, _pool_sources_serial, _pool_sources_parallel,
                offsets, kinds, locs, limits, dram_flat, pages, staged_flat, page_half, int(dim), out_flat,
                row_stride, bool(accumulate)):
        _raise_for_offsets(offsets, kinds.size)
        _raise_for_locations(kinds, locs, int(offsets[0]), int(offsets[-1]), limits, dram, pages, staged,
                             dtype_code, dim)
    return out


def gather_rows(table: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``out[i] = table[rows[i]]`` widened to float32 (exact); ``rows`` int64. Returns ``out``."""
    _table_view(table, "table")
    _int_array(rows, np.int64, "rows")
    dim = table.shape[1]
    kinds = np.full(rows.size, KIND_DRAM, np.uint8)
    return extract_rows(kinds, rows, table, np.empty(0, np.uint8), np.empty((0, dim), np.float32), DTYPE_FP32, dim, out)


def extract_rows(kinds: np.ndarray, locs: np.ndarray, dram: np.ndarray, pages: np.ndarray,
                 staged: np.ndarray, dtype_code: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """``out[i]`` = the row lookup i names (same ``kinds`` / ``locs`` meaning as :func:`pool_sources`),
    widened to float32 without pooling (e.g. rows extracted from read pages to fill a row cache).
    ``out`` (n, dim) float32 is allocated when None. Returns ``out``."""
    _check_sources(kinds, locs, dram, pages, staged, dtype_code, dim)
    out = np.empty((locs.size, dim), np.float32) if out is None else out
    _out_view(out, locs.size, dim)
    limits = _limits(dram, pages, staged, dtype_code, dim)
    if not _sources_in_range(kinds, locs, 0, locs.size, limits):
        _raise_for_locations(kinds, locs, 0, locs.size, limits, dram, pages, staged, dtype_code, dim)
    out[...] = -0.0  # one bag per lookup, accumulated onto -0.0: -0.0 + x == x for every x, a bit-exact copy
    offsets = np.arange(locs.size + 1, dtype=np.int64)
    return pool_sources(offsets, kinds, locs, dram, pages, staged, dtype_code, dim, out, accumulate=True)

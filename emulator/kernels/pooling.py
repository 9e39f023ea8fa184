"""Pooling kernels: the DRAM tier's gather-and-pool and the memory-centric cores' extract-and-pool.

Every public function checks dtypes, shapes and layout, then calls a private
``@njit`` kernel (in :mod:`emulator.kernels._pool_kernels`) that takes arrays
and scalars only (stumpy's split). The kernels' entry points check every
offset and location before they read it (``pool_rows`` checks each row where
it prefetches it, a few dozen lookups ahead, which costs no pass of its own);
on a bad value the wrapper raises naming the first one. Argument checks live
in :mod:`emulator.kernels._args`.

Exactness. A bag is summed in lookup order with a float32 accumulator that
starts at ``+0.0`` (or at ``out[b]`` with ``accumulate=True``); fp16 rows are
widened to float32 (exactly, LLVM ``fpext`` = F16C ``vcvtph2ps``) before
adding. That is bit for bit what ``tests/naive.py`` does (``acc +=
row.astype(np.float32)`` per lookup), so the replay's ``--verify`` can compare
with ``np.array_equal``. (The one thing IEEE leaves open is which payload a NaN
result carries; a signalling fp16 NaN comes out quieted.) Speed comes from
keeping a 64-column block of the accumulator in four 16-lane registers while
the bag's rows stream past (``emulator.kernels._simd``), unmasked loads and
stores of whole blocks, prefetching every line of a row a few dozen lookups
ahead, and splitting bags over threads; none of it reorders the additions of
one output element (lanes are independent columns, and one thread owns a whole
bag), and no fast-math is used.

Threads. ``threads=1`` runs the serial kernel on the calling thread.
``threads=N>1`` runs a ``prange`` kernel over N chunks of bags of equal
lookups (bounds computed in Numba), one per thread (static schedule), with
``numba.set_num_threads(N)`` (thread-local in Numba: set for the calling
thread and restored before returning). One thread pools a whole bag in lookup
order, so the output is the same bits for every ``N``. Parallel launches are
serialised by a module lock, so several Python threads may call these
functions. Measured at 2 threads (``screc bench dram``, the benchmark at
SCHED_FIFO priority to shield it from other processes): 8 chunks per thread
handed out one at a time were no faster, and setting and restoring Numba's
chunk size per call cost about 5%; chunks claimed by the caller and a helper
thread woken per call (a thread pool) pooled about half as fast. A ``prange``
region ends at a barrier that waits for every worker, so on a loaded machine
a descheduled worker stalls the call: speed-ups need idle cores.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from emulator.kernels import _args
from emulator.kernels import _pool_kernels as _k
from emulator.kernels import _pool_sources_kernels as _ks
from emulator.kernels._args import DTYPE_FP16, DTYPE_FP32, KIND_DRAM, KIND_PAGE, KIND_STAGED

__all__ = [
    "DTYPE_FP32", "DTYPE_FP16", "KIND_DRAM", "KIND_PAGE", "KIND_STAGED",
    "dtype_code", "pool_rows", "pool_sources", "gather_rows", "extract_rows",
]

_PARALLEL_LOCK = threading.Lock()


def dtype_code(dtype) -> int:
    """``"fp32"`` / ``np.float32`` -> ``DTYPE_FP32``; ``"fp16"`` / ``np.float16`` -> ``DTYPE_FP16``."""
    names = {"fp32": DTYPE_FP32, "float32": DTYPE_FP32, "fp16": DTYPE_FP16, "float16": DTYPE_FP16}
    key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if key not in names:
        raise ValueError(f"dtype {dtype!r} is not fp32 or fp16")
    return names[key]


# ---------------------------------------------------------------- running the kernels


def _parallel(kernel, args: tuple, threads: int) -> bool:
    """``kernel(*args, n_chunks)`` with one chunk per thread on ``threads`` Numba threads (set and restored
    when they differ, one launch at a time)."""
    with _PARALLEL_LOCK:
        previous = numba.get_num_threads()
        if previous == threads:
            return kernel(*args, threads)
        numba.set_num_threads(threads)
        try:
            return kernel(*args, threads)
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
    args = (src, dim, rows, indices, offsets, out_flat, row_stride, bool(accumulate))
    if threads == 1 or offsets.size <= 2:
        ok = _k.pool_rows_serial(*args)
    else:
        ok = _parallel(_k.pool_rows_parallel, args, threads)
    if not ok:
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
    args = (offsets, kinds, locs, limits, dram_flat, pages, staged_flat, page_half, int(dim), out_flat,
            row_stride, bool(accumulate))
    if threads == 1 or offsets.size <= 2:
        ok = _ks.pool_sources_serial(*args)
    else:
        ok = _parallel(_ks.pool_sources_parallel, args, threads)
    if not ok:
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
    if not _k.sources_in_range(kinds, locs, 0, locs.size, limits):
        _args.raise_for_locations(kinds, locs, 0, locs.size, limits, dram, pages, staged, dtype_code, dim)
    out[...] = -0.0  # one bag per lookup, accumulated onto -0.0: -0.0 + x == x for every x, a bit-exact copy
    offsets = np.arange(locs.size + 1, dtype=np.int64)
    return pool_sources(offsets, kinds, locs, dram, pages, staged, dtype_code, dim, out, accumulate=True)

"""``pool_sources``' private ``@njit`` kernels: each lookup's row from the DRAM array, the read pages or
the staged TT rows (the public wrapper is :func:`emulator.kernels.pooling.pool_sources`).

Same order, registers, whole-block and prefetch rules as ``pool_rows``' kernel
(:mod:`emulator.kernels._pool_kernels`). When every tier holds float32 rows
(a float32 DRAM array and fp32 page rows), ``pool_sources_range_f32`` selects
each lookup's row address among the tiers' arrays without a branch (the kinds
of a mixed bag are unpredictable): 1.6-1.8x the per-tier kernel's rate on
mixed fp32 lookups at dims 64-256 here, about ``pool_rows``' rate. Otherwise
``pool_sources_range`` loads per tier (fp16 widened exactly).
"""

from __future__ import annotations

import numba
import numpy as np

from emulator.kernels._args import KIND_DRAM, KIND_PAGE
from emulator.kernels._pool_kernels import (_AHEAD_FULL, _AHEAD_TAIL, _lanes, _load, _load_f16, _load_f32,
                                            _prefetch_lines, _store, chunk_bounds, csr_ok, sources_in_range)
from emulator.kernels._simd import prefetch_at, vadd, vload_f16, vload_f32, vload_f32_at, vstore_f32, vzero
# the helpers inlined from _pool_kernels resolve their globals here (Numba inlines their IR): keep these
from emulator.kernels._simd import prefetch, vload_row  # noqa: F401
from emulator.kernels.jit import njit


@njit
def pool_sources_range(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride,
                       b_lo, b_hi, accumulate):
    """Like ``pool_rows_range``, each lookup's row block loaded from the tier ``kinds[k]`` names.

    Locations must have been checked (``sources_ok``). The loads are written out per tier and per block
    shape (whole blocks with constant lane counts). DRAM rows and page rows are prefetched ahead; a
    staged row was just written by the TT kernel and is in cache."""
    if b_hi <= b_lo:
        return
    dline = np.uint64(64 // dram.itemsize)  # DRAM elements per cache line
    item = np.uint64(2) if page_half else np.uint64(4)  # bytes per page value
    c64 = np.uint64(64)
    last_k = np.uint64(max(offsets[b_hi] - 1, 0))
    udim = np.uint64(dim)
    full_ahead, tail_ahead = np.uint64(_AHEAD_FULL), np.uint64(_AHEAD_TAIL)
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    h32, h64, h96 = np.uint64(32), np.uint64(64), np.uint64(96)  # byte offsets of 16-value vectors, fp16 pages
    f64, f128, f192 = np.uint64(64), np.uint64(128), np.uint64(192)  # and fp32 pages
    for b in range(b_lo, b_hi):
        lo = np.uint64(offsets[b])
        hi = np.uint64(offsets[b + 1])
        ob = np.uint64(b) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            o = ob + np.uint64(jb)
            ujb = np.uint64(jb)
            k = lo
            if rem >= 64:  # a whole block: every load and store unmasked
                blast = np.uint64(63)
                if accumulate:
                    a0, a1 = vload_f32(out, o, 16), vload_f32(out, o + c16, 16)
                    a2, a3 = vload_f32(out, o + c32, 16), vload_f32(out, o + c48, 16)
                else:
                    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                while k < hi:
                    kp = min(k + full_ahead, last_k)
                    if kinds[kp] == KIND_DRAM:
                        _prefetch_lines(dram, np.uint64(locs[kp]) * udim + ujb, dline, blast)
                    elif kinds[kp] == KIND_PAGE:
                        _prefetch_lines(pages, np.uint64(locs[kp]) + item * ujb, c64, item * c64 - np.uint64(1))
                    kind = kinds[k]
                    loc = np.uint64(locs[k])
                    if kind == KIND_DRAM:
                        p = loc * udim + ujb
                        a0 = vadd(a0, vload_row(dram, p, 16))
                        a1 = vadd(a1, vload_row(dram, p + c16, 16))
                        a2 = vadd(a2, vload_row(dram, p + c32, 16))
                        a3 = vadd(a3, vload_row(dram, p + c48, 16))
                    elif kind == KIND_PAGE and page_half:  # loc is a byte offset: 16 halves = 32 bytes
                        p = loc + item * ujb
                        a0 = vadd(a0, vload_f16(pages, p, 16))
                        a1 = vadd(a1, vload_f16(pages, p + h32, 16))
                        a2 = vadd(a2, vload_f16(pages, p + h64, 16))
                        a3 = vadd(a3, vload_f16(pages, p + h96, 16))
                    elif kind == KIND_PAGE:  # 16 floats = 64 bytes
                        p = loc + item * ujb
                        a0 = vadd(a0, vload_f32(pages, p, 16))
                        a1 = vadd(a1, vload_f32(pages, p + f64, 16))
                        a2 = vadd(a2, vload_f32(pages, p + f128, 16))
                        a3 = vadd(a3, vload_f32(pages, p + f192, 16))
                    else:
                        p = loc * udim + ujb
                        a0 = vadd(a0, vload_f32(staged, p, 16))
                        a1 = vadd(a1, vload_f32(staged, p + c16, 16))
                        a2 = vadd(a2, vload_f32(staged, p + c32, 16))
                        a3 = vadd(a3, vload_f32(staged, p + c48, 16))
                    k += np.uint64(1)
                vstore_f32(out, o, a0, 16)
                vstore_f32(out, o + c16, a1, 16)
                vstore_f32(out, o + c32, a2, 16)
                vstore_f32(out, o + c48, a3, 16)
            else:  # the row's tail: whole vectors unmasked, a partial one masked, vectors past dim skipped
                n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
                blast = np.uint64(rem - 1)
                plast = item * np.uint64(rem) - np.uint64(1)
                if accumulate:
                    a0, a1 = _load_f32(out, o, n0), _load_f32(out, o + c16, n1)
                    a2, a3 = _load_f32(out, o + c32, n2), _load_f32(out, o + c48, n3)
                else:
                    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                while k < hi:
                    kp = min(k + tail_ahead, last_k)
                    if kinds[kp] == KIND_DRAM:
                        _prefetch_lines(dram, np.uint64(locs[kp]) * udim + ujb, dline, blast)
                    elif kinds[kp] == KIND_PAGE:
                        _prefetch_lines(pages, np.uint64(locs[kp]) + item * ujb, c64, plast)
                    kind = kinds[k]
                    loc = np.uint64(locs[k])
                    if kind == KIND_DRAM:
                        p = loc * udim + ujb
                        a0 = vadd(a0, _load(dram, p, n0))
                        if n1 > 0:
                            a1 = vadd(a1, _load(dram, p + c16, n1))
                            if n2 > 0:
                                a2 = vadd(a2, _load(dram, p + c32, n2))
                                if n3 > 0:
                                    a3 = vadd(a3, _load(dram, p + c48, n3))
                    elif kind == KIND_PAGE and page_half:
                        p = loc + item * ujb
                        a0 = vadd(a0, _load_f16(pages, p, n0))
                        if n1 > 0:
                            a1 = vadd(a1, _load_f16(pages, p + h32, n1))
                            if n2 > 0:
                                a2 = vadd(a2, _load_f16(pages, p + h64, n2))
                                if n3 > 0:
                                    a3 = vadd(a3, _load_f16(pages, p + h96, n3))
                    elif kind == KIND_PAGE:
                        p = loc + item * ujb
                        a0 = vadd(a0, _load_f32(pages, p, n0))
                        if n1 > 0:
                            a1 = vadd(a1, _load_f32(pages, p + f64, n1))
                            if n2 > 0:
                                a2 = vadd(a2, _load_f32(pages, p + f128, n2))
                                if n3 > 0:
                                    a3 = vadd(a3, _load_f32(pages, p + f192, n3))
                    else:
                        p = loc * udim + ujb
                        a0 = vadd(a0, _load_f32(staged, p, n0))
                        if n1 > 0:
                            a1 = vadd(a1, _load_f32(staged, p + c16, n1))
                            if n2 > 0:
                                a2 = vadd(a2, _load_f32(staged, p + c32, n2))
                                if n3 > 0:
                                    a3 = vadd(a3, _load_f32(staged, p + c48, n3))
                    k += np.uint64(1)
                _store(out, o, a0, n0)
                _store(out, o + c16, a1, n1)
                _store(out, o + c32, a2, n2)
                _store(out, o + c48, a3, n3)


@njit(inline="always")
def _row_address(kind, loc, dram_at, pages_at, staged_at, row_bytes):
    """The byte address of lookup's row: selects, not branches (the kinds of a mixed bag are unpredictable)."""
    at = dram_at if kind == KIND_DRAM else (pages_at if kind == KIND_PAGE else staged_at)
    return at + (np.uint64(loc) if kind == KIND_PAGE else np.uint64(loc) * row_bytes)


@njit(inline="always")
def _prefetch_bytes(at, last):
    """Prefetch every cache line of bytes ``[at, at + last]`` (``last < 256``)."""
    prefetch_at(at)
    if last >= 64:
        prefetch_at(at + np.uint64(64))
        if last >= 128:
            prefetch_at(at + np.uint64(128))
            if last >= 192:
                prefetch_at(at + np.uint64(192))
    prefetch_at(at + last)


@njit(inline="always")
def _load_at(at, n):
    if n == 16:
        return vload_f32_at(at, 16)
    return vload_f32_at(at, n)


@njit
def pool_sources_range_f32(offsets, kinds, locs, dram, pages, staged, dim, out, row_stride, b_lo, b_hi,
                           accumulate):
    """``pool_sources_range`` when every tier holds float32 rows (a float32 DRAM array, float32 page rows):
    one load path whose row address is selected per lookup without a branch (a mispredicted branch per
    mixed lookup cost about a fifth of the rate). Locations must have been checked (``sources_ok``); the
    arrays outlive the call, so their addresses stay valid."""
    if b_hi <= b_lo:
        return
    row_bytes = np.uint64(4 * dim)
    dram_at = np.uint64(dram.ctypes.data)
    pages_at = np.uint64(pages.ctypes.data)
    staged_at = np.uint64(staged.ctypes.data)
    last_k = np.uint64(max(offsets[b_hi] - 1, 0))
    full_ahead, tail_ahead = np.uint64(_AHEAD_FULL), np.uint64(_AHEAD_TAIL)
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    b64, b128, b192, b255 = np.uint64(64), np.uint64(128), np.uint64(192), np.uint64(255)
    for b in range(b_lo, b_hi):
        lo = np.uint64(offsets[b])
        hi = np.uint64(offsets[b + 1])
        ob = np.uint64(b) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            o = ob + np.uint64(jb)
            col = np.uint64(4 * jb)  # the block's byte offset in a row
            k = lo
            if rem >= 64:
                if accumulate:
                    a0, a1 = vload_f32(out, o, 16), vload_f32(out, o + c16, 16)
                    a2, a3 = vload_f32(out, o + c32, 16), vload_f32(out, o + c48, 16)
                else:
                    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                while k < hi:
                    kp = min(k + full_ahead, last_k)
                    _prefetch_bytes(_row_address(kinds[kp], locs[kp], dram_at, pages_at, staged_at, row_bytes) + col,
                                    b255)
                    p = _row_address(kinds[k], locs[k], dram_at, pages_at, staged_at, row_bytes) + col
                    a0 = vadd(a0, vload_f32_at(p, 16))
                    a1 = vadd(a1, vload_f32_at(p + b64, 16))
                    a2 = vadd(a2, vload_f32_at(p + b128, 16))
                    a3 = vadd(a3, vload_f32_at(p + b192, 16))
                    k += np.uint64(1)
                vstore_f32(out, o, a0, 16)
                vstore_f32(out, o + c16, a1, 16)
                vstore_f32(out, o + c32, a2, 16)
                vstore_f32(out, o + c48, a3, 16)
            else:
                n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
                last = np.uint64(4 * rem - 1)
                if accumulate:
                    a0, a1 = _load_f32(out, o, n0), _load_f32(out, o + c16, n1)
                    a2, a3 = _load_f32(out, o + c32, n2), _load_f32(out, o + c48, n3)
                else:
                    a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                while k < hi:
                    kp = min(k + tail_ahead, last_k)
                    _prefetch_bytes(_row_address(kinds[kp], locs[kp], dram_at, pages_at, staged_at, row_bytes) + col,
                                    last)
                    p = _row_address(kinds[k], locs[k], dram_at, pages_at, staged_at, row_bytes) + col
                    a0 = vadd(a0, _load_at(p, n0))
                    if n1 > 0:
                        a1 = vadd(a1, _load_at(p + b64, n1))
                        if n2 > 0:
                            a2 = vadd(a2, _load_at(p + b128, n2))
                            if n3 > 0:
                                a3 = vadd(a3, _load_at(p + b192, n3))
                    k += np.uint64(1)
                _store(out, o, a0, n0)
                _store(out, o + c16, a1, n1)
                _store(out, o + c32, a2, n2)
                _store(out, o + c48, a3, n3)


@njit
def pool_sources_chunk(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride, b_lo, b_hi,
                       accumulate):
    """Bags ``[b_lo, b_hi)`` by the branch-free float32 kernel when every tier holds float32, else by
    ``pool_sources_range``."""
    if dram.itemsize == 4 and not page_half:
        pool_sources_range_f32(offsets, kinds, locs, dram, pages, staged, dim, out, row_stride, b_lo, b_hi,
                               accumulate)
    else:
        pool_sources_range(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride, b_lo, b_hi,
                           accumulate)


@njit
def sources_ok(offsets, kinds, locs, limits):
    return csr_ok(offsets, kinds.shape[0]) and sources_in_range(kinds, locs, offsets[0], offsets[-1], limits)


@njit
def pool_sources_serial(offsets, kinds, locs, limits, dram, pages, staged, page_half, dim, out, row_stride,
                        accumulate):
    if not sources_ok(offsets, kinds, locs, limits):
        return False
    pool_sources_chunk(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride,
                       np.int64(0), offsets.shape[0] - 1, accumulate)
    return True


@njit(parallel=True)
def pool_sources_parallel(offsets, kinds, locs, limits, dram, pages, staged, page_half, dim, out, row_stride,
                          accumulate, n_chunks):
    if not sources_ok(offsets, kinds, locs, limits):
        return False
    chunks = chunk_bounds(offsets, n_chunks)
    for c in numba.prange(chunks.shape[0] - 1):
        pool_sources_chunk(offsets, kinds, locs, dram, pages, staged, page_half, dim, out, row_stride,
                           chunks[c], chunks[c + 1], accumulate)
    return True

"""Dequantize-and-pool kernels for rows stored in a row format (:mod:`emulator.store.quant`).

``pool_quantized(rows, fmt, dim, indices, offsets, out)`` sums, for each bag
``b``, the dequantized rows ``rows[indices[offsets[b]:offsets[b+1]]]`` into
``out[b]``, where ``rows`` is a (n_rows, row_bytes) uint8 array of ``fmt`` rows
(FBGEMM's fused layout: int8 with float32 scale and bias after the data, int4
with float16 ones). fp32 and fp16 rows go to :func:`emulator.kernels.pooling.pool_rows`.

Exactness, as the pooling kernels: each lookup's row is dequantized as
``float32(q) * scale + bias`` (an IEEE float32 product, then an IEEE float32
sum, no fused multiply-add) and added to a float32 accumulator that starts at
``+0.0`` (or at ``out[b]`` with ``accumulate=True``), in lookup order. That is
bit for bit ``tests/naive.py``'s ``pool_quantized_ref``, so a replay can verify
quantized tables with ``np.array_equal``.

The public wrapper checks dtypes, shapes and layout, then calls a private
``@njit`` kernel taking arrays and scalars only; the kernel checks the offsets
and every row index (where it prefetches it, a few lookups ahead) and returns
False on the first bad one, which the wrapper then names. Each 64-column block
of a bag is summed in four 16-lane registers while the bag's rows stream past
(``emulator.kernels._simd``); one thread (``threads`` > 1 is not offered yet).
"""

from __future__ import annotations

import numpy as np

from emulator.kernels import _args
from emulator.kernels._qsimd import load_f16_at, load_f32_at, vaffine, vload_u4, vload_u8
from emulator.kernels._simd import prefetch, vadd, vload_f16, vload_f32, vstore_f32, vzero
from emulator.kernels.jit import njit
from emulator.kernels.pooling import pool_rows
from emulator.store.quant import ROW_FORMATS, RowFormat
from emulator.tiers import KIND_DRAM, KIND_PAGE

__all__ = ["pool_quantized", "pool_sources_quantized"]

_PREFETCH_LOOKUPS = 8
_INT8, _INT4, _FP16 = 0, 1, 2
_CODES = {"int8": _INT8, "int4": _INT4, "fp16": _FP16}


@njit(inline="always")
def _lanes(rem, v):
    return min(max(rem - 16 * v, 0), 16)


@njit(inline="always")
def _row_block(src, code, p, jb, data_bytes, n0, n1, n2, n3):
    """The dequantized 64-column block ``jb`` of the row at byte ``p`` as four vectors."""
    if code == _FP16:  # halves widened exactly
        q = p + np.uint64(2) * jb
        return (vload_f16(src, q, n0), vload_f16(src, q + np.uint64(32), n1), vload_f16(src, q + np.uint64(64), n2),
                vload_f16(src, q + np.uint64(96), n3))
    if code == _INT8:
        s = load_f32_at(src, p + data_bytes)
        b = load_f32_at(src, p + data_bytes + np.uint64(4))
        q = p + jb
        return (vaffine(vload_u8(src, q, n0), s, b), vaffine(vload_u8(src, q + np.uint64(16), n1), s, b),
                vaffine(vload_u8(src, q + np.uint64(32), n2), s, b),
                vaffine(vload_u8(src, q + np.uint64(48), n3), s, b))
    s = load_f16_at(src, p + data_bytes)
    b = load_f16_at(src, p + data_bytes + np.uint64(2))
    q = p + jb // np.uint64(2)
    return (vaffine(vload_u4(src, q, n0), s, b), vaffine(vload_u4(src, q + np.uint64(8), n1), s, b),
            vaffine(vload_u4(src, q + np.uint64(16), n2), s, b), vaffine(vload_u4(src, q + np.uint64(24), n3), s, b))


@njit
def _csr_ok(offsets, n_lookups):
    if offsets.shape[0] < 1 or offsets[0] < 0 or offsets[offsets.shape[0] - 1] > n_lookups:
        return False
    for b in range(offsets.shape[0] - 1):
        if offsets[b + 1] < offsets[b]:
            return False
    return True


@njit
def _pool_quantized(src, code, row_bytes, data_bytes, dim, n_rows, indices, offsets, out, row_stride, accumulate):
    """False (``out`` partly written) if the offsets or a row index are out of range."""
    n_bags = offsets.shape[0] - 1
    if not _csr_ok(offsets, indices.shape[0]):
        return False
    first, n = offsets[0], offsets[n_bags]  # lookups [first, n) are pooled
    for k in range(first, min(n, first + _PREFETCH_LOOKUPS)):
        if np.uint64(indices[k]) >= np.uint64(n_rows):  # a negative row wraps past n_rows
            return False
    urb, udb = np.uint64(row_bytes), np.uint64(data_bytes)
    ahead = _PREFETCH_LOOKUPS
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    for bag in range(n_bags):
        lo, hi = offsets[bag], offsets[bag + 1]
        ob = np.uint64(bag) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
            o = ob + np.uint64(jb)
            ujb = np.uint64(jb)
            if accumulate:
                a0, a1 = vload_f32(out, o, n0), vload_f32(out, o + c16, n1)
                a2, a3 = vload_f32(out, o + c32, n2), vload_f32(out, o + c48, n3)
            else:
                a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
            for k in range(lo, hi):
                if k + ahead < n:
                    r = np.uint64(indices[k + ahead])
                    if r >= np.uint64(n_rows):
                        return False
                    prefetch(src, r * urb)
                    prefetch(src, r * urb + urb - np.uint64(1))
                p = np.uint64(indices[k]) * urb
                if rem >= 64:  # constant masks fold into plain loads
                    v0, v1, v2, v3 = _row_block(src, code, p, ujb, udb, 16, 16, 16, 16)
                else:
                    v0, v1, v2, v3 = _row_block(src, code, p, ujb, udb, n0, n1, n2, n3)
                a0, a1, a2, a3 = vadd(a0, v0), vadd(a1, v1), vadd(a2, v2), vadd(a3, v3)
            vstore_f32(out, o, a0, n0)
            vstore_f32(out, o + c16, a1, n1)
            vstore_f32(out, o + c32, a2, n2)
            vstore_f32(out, o + c48, a3, n3)
    return True


@njit
def _pool_sources_quantized(offsets, kinds, locs, dram, pages, code, row_bytes, data_bytes, dim, out, row_stride,
                            accumulate):
    """``_pool_quantized`` with each lookup's row from the DRAM rows (``KIND_DRAM``: row ``loc``) or from read
    pages (``KIND_PAGE``: the row at byte ``loc``). False if an offset, kind or location is out of range."""
    n_bags = offsets.shape[0] - 1
    if not _csr_ok(offsets, kinds.shape[0]):
        return False
    urb, udb = np.uint64(row_bytes), np.uint64(data_bytes)
    n_dram = np.uint64(dram.shape[0]) // urb
    page_end = np.uint64(pages.shape[0]) - urb if pages.shape[0] >= row_bytes else np.uint64(0)
    has_pages = pages.shape[0] >= row_bytes
    for k in range(offsets[0], offsets[n_bags]):  # one pass of checks: these bags are small next to the rows
        loc = np.uint64(locs[k])  # a negative location wraps past every limit
        if kinds[k] == KIND_DRAM:
            if loc >= n_dram:
                return False
        elif kinds[k] != KIND_PAGE or not has_pages or loc > page_end:
            return False
    c16, c32, c48 = np.uint64(16), np.uint64(32), np.uint64(48)
    ahead, n_end = _PREFETCH_LOOKUPS, offsets[n_bags]
    for bag in range(n_bags):
        lo, hi = offsets[bag], offsets[bag + 1]
        ob = np.uint64(bag) * np.uint64(row_stride)
        for jb in range(0, dim, 64):
            rem = dim - jb
            n0, n1, n2, n3 = _lanes(rem, 0), _lanes(rem, 1), _lanes(rem, 2), _lanes(rem, 3)
            o = ob + np.uint64(jb)
            ujb = np.uint64(jb)
            if accumulate:
                a0, a1 = vload_f32(out, o, n0), vload_f32(out, o + c16, n1)
                a2, a3 = vload_f32(out, o + c32, n2), vload_f32(out, o + c48, n3)
            else:
                a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
            for k in range(lo, hi):
                kp = k + ahead
                if kp < n_end and kinds[kp] == KIND_DRAM:  # rows from pages are fresh in cache
                    r = np.uint64(locs[kp]) * urb
                    prefetch(dram, r)
                    prefetch(dram, r + urb - np.uint64(1))
                loc = np.uint64(locs[k])
                src, p = (dram, loc * urb) if kinds[k] == KIND_DRAM else (pages, loc)
                if rem >= 64:  # constant masks fold into plain loads
                    v0, v1, v2, v3 = _row_block(src, code, p, ujb, udb, 16, 16, 16, 16)
                else:
                    v0, v1, v2, v3 = _row_block(src, code, p, ujb, udb, n0, n1, n2, n3)
                a0, a1, a2, a3 = vadd(a0, v0), vadd(a1, v1), vadd(a2, v2), vadd(a3, v3)
            vstore_f32(out, o, a0, n0)
            vstore_f32(out, o + c16, a1, n1)
            vstore_f32(out, o + c32, a2, n2)
            vstore_f32(out, o + c48, a3, n3)
    return True


def pool_sources_quantized(offsets: np.ndarray, kinds: np.ndarray, locs: np.ndarray, dram: np.ndarray,
                           pages: np.ndarray, fmt: str, dim: int, out: np.ndarray, *,
                           accumulate: bool = False) -> np.ndarray:
    """Mixed-tier pooling of int8 / int4 / fp16 rows (the replay's DRAM and raw-SSD tiers of such a table).

    Lookup k of bag b adds the dequantized row named by ``kinds[k]`` / ``locs[k]``: ``KIND_DRAM``, row
    ``locs[k]`` of ``dram`` ((R, row_bytes) uint8 rows, or (R, dim) float16 for fp16; R may be 0;
    fp16 rows are widened exactly, as :func:`emulator.kernels.pooling.pool_sources` does, but with
    unmasked loads for whole 64-column blocks); ``KIND_PAGE``, the row at byte offset
    ``locs[k]`` of ``pages`` (1-D uint8, the read pages). No other kind (TT rows are never quantized). Same
    order, accumulator and dequantization as :func:`pool_quantized`. Returns ``out``; bad input raises
    TypeError / ValueError, a kind or location out of range IndexError naming the first one."""
    if fmt not in _CODES:
        raise ValueError(f"pool_sources_quantized pools int8, int4 or fp16 rows, not {fmt!r}")
    f = RowFormat(fmt, int(dim))
    if fmt == "fp16" and isinstance(dram, np.ndarray) and dram.dtype == np.float16 and dram.ndim == 2 \
            and dram.flags.c_contiguous:
        dram = dram.view(np.uint8)
    d = _rows_view(dram, f)
    _args.check_offsets(offsets)
    kinds = _args.int_array(kinds, np.uint8, "kinds")
    locs = _args.int_array(locs, np.int64, "locs")
    if kinds.size != locs.size:
        raise ValueError(f"kinds and locs differ in length ({kinds.size} and {locs.size})")
    pages = _args.int_array(pages, np.uint8, "pages")
    flat_out, stride = _args.out_view(out, offsets.shape[0] - 1, f.dim)
    code = _CODES[fmt]
    if not _pool_sources_quantized(offsets, kinds, locs, d.reshape(-1), pages, code, f.row_bytes, f.data_bytes,
                                   f.dim, flat_out, stride, bool(accumulate)):
        _args.raise_for_offsets(offsets, kinds.size)
        lo, hi = int(offsets[0]), int(offsets[-1])
        for k in range(lo, hi):
            kind, loc = int(kinds[k]), int(locs[k])
            if kind == KIND_DRAM and not 0 <= loc < d.shape[0]:
                raise IndexError(f"lookup {k}: DRAM row {loc} out of range ({d.shape[0]} rows)")
            if kind == KIND_PAGE and not 0 <= loc <= pages.size - f.row_bytes:
                raise IndexError(f"lookup {k}: a {f.row_bytes}-byte row at page byte {loc} is outside the "
                                 f"{pages.size} bytes of pages")
            if kind not in (KIND_DRAM, KIND_PAGE):
                raise IndexError(f"lookup {k}: kind {kind} is not DRAM or PAGE (quantized rows)")
    return out


def _rows_view(rows: np.ndarray, f: RowFormat) -> np.ndarray:
    if not isinstance(rows, np.ndarray) or rows.ndim != 2:
        raise ValueError(f"rows must be a 2-D (n_rows, row_bytes) uint8 array, got {_args.describe(rows)}")
    if rows.dtype != np.uint8:
        raise TypeError(f"rows must be uint8 ({f.name} rows as bytes), got {rows.dtype}")
    if rows.shape[1] != f.row_bytes:
        raise ValueError(f"{f.name} rows of dim {f.dim} are {f.row_bytes} bytes, got rows of {rows.shape[1]}")
    if not rows.flags.c_contiguous:
        raise ValueError("rows must be C-contiguous (use np.ascontiguousarray)")
    return rows


def _raise_for_rows(indices: np.ndarray, offsets: np.ndarray, n_rows: int) -> None:
    _args.raise_for_offsets(offsets, indices.size)
    lo, hi = int(offsets[0]), int(offsets[-1])
    bad = lo + int(np.flatnonzero((indices[lo:hi] < 0) | (indices[lo:hi] >= n_rows))[0])
    raise IndexError(f"lookup {bad}: row {int(indices[bad])} out of range for a table of {n_rows} rows")


def pool_quantized(rows: np.ndarray, fmt: str, dim: int, indices: np.ndarray, offsets: np.ndarray,
                   out: np.ndarray, *, accumulate: bool = False) -> np.ndarray:
    """Pool bags of ``fmt`` rows into ``out`` (float32, (len(offsets) - 1, dim)); returns ``out``.

    ``rows`` (n_rows, row_bytes) uint8 in the row format's layout; ``indices`` and ``offsets`` int64
    (CSR: bag ``b`` is ``indices[offsets[b]:offsets[b+1]]``, as :func:`pool_rows`). Raises TypeError
    on a wrong dtype, ValueError on a wrong shape, layout or offset, IndexError naming the first row out
    of range (``out`` is then undefined)."""
    if fmt not in ROW_FORMATS:
        raise ValueError(f"row format {fmt!r} is not one of {', '.join(ROW_FORMATS)}")
    f = RowFormat(fmt, int(dim))
    src = _rows_view(rows, f)
    indices = _args.int_array(indices, np.int64, "indices")
    _args.check_offsets(offsets)
    flat_out, stride = _args.out_view(out, offsets.shape[0] - 1, f.dim)
    if fmt in ("fp32", "fp16"):
        table = src.view(np.float32 if fmt == "fp32" else np.float16)
        return pool_rows(table, indices, offsets, out, accumulate=accumulate)
    code = _INT8 if fmt == "int8" else _INT4
    ok = _pool_quantized(src.reshape(-1), code, f.row_bytes, f.data_bytes, f.dim, src.shape[0], indices, offsets,
                         flat_out, stride, bool(accumulate))
    if not ok:
        _raise_for_rows(indices, offsets, src.shape[0])
    return out

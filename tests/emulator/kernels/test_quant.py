"""emulator.kernels.quant: dequantize-and-pool equals tests/naive.py's reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.kernels.quant import pool_quantized, pool_sources_quantized
from emulator.store.quant import ROW_FORMATS, RowFormat, quantize_rows
from tests import naive
from tests.emulator.kernels.test_pooling import assert_same_bits, random_csr


@pytest.mark.parametrize("fmt", ROW_FORMATS)
@pytest.mark.parametrize("dim", [1, 7, 16, 64, 100, 130])
def test_equals_the_reference(fmt, dim, rng):
    raw = (rng.standard_normal((300, dim)) * 3).astype(np.float32)
    rows = quantize_rows(raw, fmt)
    indices, offsets = random_csr(rng, 40, 12, 300)  # empty bags included
    out = np.full((40, dim), np.nan, np.float32)
    pool_quantized(rows, fmt, dim, indices, offsets, out)
    assert_same_bits(out, naive.pool_quantized_ref(rows, fmt, dim, indices, offsets))


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_accumulate_into_a_strided_output(fmt, rng):
    dim = 20
    rows = quantize_rows(rng.standard_normal((50, dim)).astype(np.float32), fmt)
    indices, offsets = random_csr(rng, 9, 5, 50, lead=3)  # bags start at lookup 3
    wide = rng.standard_normal((9, 3 * dim)).astype(np.float32)  # a (B, T * dim) DLRM output
    start = wide[:, dim:2 * dim].copy()
    pool_quantized(rows, fmt, dim, indices, offsets, wide[:, dim:2 * dim], accumulate=True)
    want = naive.pool_quantized_ref(rows, fmt, dim, indices, offsets, out=start, accumulate=True)
    assert_same_bits(np.ascontiguousarray(wide[:, dim:2 * dim]), want)


def test_hand_derived_int8_bag():
    # row 0 [-1, 0, 1, 0.5] -> codes [0, 128, 255, 191], scale 2/255, bias -1 (see test_quant in store);
    # row 1 constant 2 -> codes 0, bias 2. Bag [0, 1, 1]: column 2 = (255 * 2/255 - 1) + 2 + 2 = 5
    rows = quantize_rows(np.array([[-1.0, 0.0, 1.0, 0.5], [2.0, 2.0, 2.0, 2.0]], np.float32), "int8")
    out = np.empty((1, 4), np.float32)
    pool_quantized(rows, "int8", 4, np.array([0, 1, 1]), np.array([0, 3]), out)
    assert out[0, 0] == 3.0 and out[0, 2] == 5.0  # -1 + 2 + 2; 1 + 2 + 2 (255 * (2/255) - 1 = 1 exactly)


@pytest.mark.parametrize("fmt", ["fp16", "int8", "int4"])
def test_pooled_error_is_bounded_by_the_rows_errors(fmt, rng):
    """Against the fp32 rows the format was made from: a bag is off by at most the sum of its rows' own
    max errors (plus float32 rounding of the sums)."""
    raw = rng.standard_normal((100, 64)).astype(np.float32)
    rows = quantize_rows(raw, fmt)
    row_err = np.abs(naive.pool_quantized_ref(rows, fmt, 64, np.arange(100), np.arange(101)) - raw).max(axis=1)
    indices, offsets = random_csr(rng, 30, 20, 100)
    got = pool_quantized(rows, fmt, 64, indices, offsets, np.empty((30, 64), np.float32))
    exact = naive.pool_rows_ref(raw.astype(np.float64), indices, offsets)
    bound = np.array([row_err[indices[a:b]].sum() for a, b in zip(offsets[:-1], offsets[1:])])
    assert np.all(np.abs(got - exact).max(axis=1) <= bound + 1e-4)
    assert fmt == "fp16" or np.abs(got - exact).max() > 1e-3  # int formats do lose something


def test_input_checks(rng):
    rows = quantize_rows(rng.standard_normal((10, 8)).astype(np.float32), "int8")
    out = np.empty((2, 8), np.float32)
    idx, off = np.array([0, 9, 3], np.int64), np.array([0, 1, 3], np.int64)
    with pytest.raises(ValueError, match="int2"):
        pool_quantized(rows, "int2", 8, idx, off, out)
    with pytest.raises(ValueError, match="dim 9 are 17 bytes, got rows of 16"):
        pool_quantized(rows, "int8", 9, idx, off, np.empty((2, 9), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        pool_quantized(rows.view(np.int8), "int8", 8, idx, off, out)
    with pytest.raises(TypeError, match="int64"):
        pool_quantized(rows, "int8", 8, idx.astype(np.int32), off, out)
    with pytest.raises(IndexError, match="lookup 1: row 10"):
        pool_quantized(rows, "int8", 8, np.array([0, 10, 3], np.int64), off, out)
    with pytest.raises(IndexError, match="lookup 2: row -1"):
        pool_quantized(rows, "int8", 8, np.array([0, 1, -1], np.int64), off, out)
    with pytest.raises(ValueError, match="decrease at bag 0"):
        pool_quantized(rows, "int8", 8, idx, np.array([2, 1, 3], np.int64), out)
    assert RowFormat("int8", 8).row_bytes == rows.shape[1] == 16


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp16"])
@pytest.mark.parametrize("dim", [5, 64, 100])
def test_mixed_sources_equal_the_reference(fmt, dim, rng):
    """DRAM rows and rows at unaligned byte offsets of read pages, mixed within bags."""
    rows = quantize_rows(rng.standard_normal((60, dim)).astype(np.float32), fmt)
    rb = rows.shape[1]
    dram = np.ascontiguousarray(rows[:20])
    pages = np.zeros(4096, np.uint8)
    at = 3 + np.arange(40) * (rb + 1)  # rows 20..59 at odd offsets with a byte between them
    at = at[at + rb <= pages.size]
    for j, a in enumerate(at):
        pages[a:a + rb] = rows[20 + j]
    n = 200
    kinds = rng.integers(0, 2, n).astype(np.uint8)
    locs = np.where(kinds == 0, rng.integers(0, 20, n), at[rng.integers(0, at.size, n)]).astype(np.int64)
    offsets = np.concatenate([[0], np.sort(rng.integers(0, n, 29)), [n]]).astype(np.int64)
    out = np.full((30, dim), np.nan, np.float32)
    pool_sources_quantized(offsets, kinds, locs, dram, pages, fmt, dim, out)
    assert_same_bits(out, naive.pool_sources_quantized_ref(offsets, kinds, locs, dram, pages, fmt, dim))
    # the same lookups pooled straight from the rows they name (DRAM row i is row i, page row j is row 20 + j)
    rid = np.where(kinds == 0, locs, 20 + np.searchsorted(at, locs))
    assert_same_bits(out, naive.pool_quantized_ref(rows, fmt, dim, rid, offsets))


def test_mixed_sources_checks(rng):
    rows = quantize_rows(rng.standard_normal((4, 8)).astype(np.float32), "int8")  # 16-byte rows
    pages = np.zeros(64, np.uint8)
    out = np.empty((1, 8), np.float32)
    off = np.array([0, 2], np.int64)
    ok = dict(dram=rows, pages=pages, fmt="int8", dim=8, out=out)
    with pytest.raises(IndexError, match="lookup 1: DRAM row 4 out of range"):
        pool_sources_quantized(off, np.array([0, 0], np.uint8), np.array([0, 4]), **ok)
    with pytest.raises(IndexError, match="lookup 1: a 16-byte row at page byte 49 is outside"):
        pool_sources_quantized(off, np.array([0, 1], np.uint8), np.array([0, 49]), **ok)
    with pytest.raises(IndexError, match="lookup 0: kind 2 is not DRAM or PAGE"):
        pool_sources_quantized(off, np.array([2, 1], np.uint8), np.array([0, 0]), **ok)
    with pytest.raises(ValueError, match="int8, int4 or fp16 rows, not .fp32."):
        pool_sources_quantized(off, np.array([0, 0], np.uint8), np.array([0, 0]), **{**ok, "fmt": "fp32"})
    got = pool_sources_quantized(off, np.array([0, 1], np.uint8), np.array([3, 48]), **ok)  # 48 + 16 = 64: fits
    assert np.array_equal(got[0], naive.dequantize_row_naive(rows[3], "int8", 8)
                          + naive.dequantize_row_naive(pages[48:], "int8", 8))


def test_fp16_rows_as_float16_dram_pool_like_pool_sources(rng):
    """fp16 DRAM rows given as a float16 array: the same bits as pooling.pool_sources (exact widening)."""
    from emulator.kernels.pooling import DTYPE_FP16, pool_sources

    dram = rng.standard_normal((50, 130)).astype(np.float16)
    kinds = np.zeros(300, np.uint8)
    locs = rng.integers(0, 50, 300).astype(np.int64)
    offsets = np.arange(0, 301, 10, dtype=np.int64)
    got = pool_sources_quantized(offsets, kinds, locs, dram, np.zeros(0, np.uint8), "fp16", 130,
                                 np.empty((30, 130), np.float32))
    want = pool_sources(offsets, kinds, locs, dram, np.zeros(0, np.uint8), np.zeros((0, 130), np.float32),
                        DTYPE_FP16, 130, np.empty((30, 130), np.float32))
    assert_same_bits(got, want)

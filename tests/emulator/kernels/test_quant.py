"""emulator.kernels.quant: dequantize-and-pool equals tests/naive.py's reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.kernels.quant import pool_quantized
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

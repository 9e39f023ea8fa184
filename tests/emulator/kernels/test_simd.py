"""emulator.kernels._simd: the 16-lane vector intrinsics the pooling kernels are built from."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.kernels._simd import (prefetch, prefetch_at, vadd, vload_f16, vload_f32, vload_f32_at, vload_row,
                                    vstore_f32, vzero)
from emulator.kernels.jit import njit


@njit(cache=False)
def _load_f32_store(src, i, n, out):
    prefetch(src, i)
    vstore_f32(out, 0, vadd(vzero(), vload_f32(src, i, n)), 16)


@njit(cache=False)
def _load_f16_store(src, i, n, out):
    vstore_f32(out, 0, vload_f16(src, i, n), 16)


@njit(cache=False)
def _row_store(src, i, n, out, m):
    vstore_f32(out, 0, vload_row(src, i, n), m)


@pytest.mark.parametrize("n", [0, 1, 7, 16])
def test_masked_float32_load_from_an_odd_byte_offset(n):
    values = np.arange(1, 17, dtype=np.float32)
    buf = np.zeros(3 + 4 * n, np.uint8)  # ends right after the n-th value: lanes >= n must not be read
    buf[3:] = np.frombuffer(values[:n].tobytes(), np.uint8)
    out = np.full(16, np.nan, np.float32)
    _load_f32_store(buf, 3, n, out)
    np.testing.assert_array_equal(out, np.concatenate([values[:n], np.zeros(16 - n, np.float32)]))


def test_half_load_widens_exactly():
    h = np.array([0.5, -2.0, 65504.0, 6e-8, -0.0, np.inf] + [1.0] * 10, np.float16)
    buf = np.frombuffer(b"\x00" + h.tobytes(), np.uint8).copy()  # at byte offset 1
    out = np.empty(16, np.float32)
    _load_f16_store(buf, 1, 6, out)
    np.testing.assert_array_equal(out.view(np.uint32)[:6], h[:6].astype(np.float32).view(np.uint32))
    np.testing.assert_array_equal(out[6:], 0.0)


def test_vload_row_picks_the_format_from_the_dtype_and_store_is_masked():
    f32 = np.arange(20, dtype=np.float32)
    f16 = f32.astype(np.float16).view(np.uint16)
    out = np.full(16, -1.0, np.float32)
    _row_store(f32, 2, 16, out, 5)  # stores lanes 0..4 only
    np.testing.assert_array_equal(out, [2, 3, 4, 5, 6] + [-1.0] * 11)
    _row_store(f16, 4, 16, out, 16)
    np.testing.assert_array_equal(out, np.arange(4, 20, dtype=np.float32))



@njit(cache=False)
def _load_at_store(buf, offset, n, out):
    at = buf.ctypes.data + offset
    prefetch_at(at)
    vstore_f32(out, 0, vload_f32_at(at, n), 16)


@pytest.mark.parametrize("n", [0, 5, 16])
def test_load_at_a_byte_address_is_the_masked_load(n):
    values = np.arange(1, 17, dtype=np.float32)
    buf = np.zeros(5 + 4 * n, np.uint8)  # ends right after the n-th value at byte 5: lanes >= n are not read
    buf[5:] = np.frombuffer(values[:n].tobytes(), np.uint8)
    got, want = np.full(16, np.nan, np.float32), np.full(16, np.nan, np.float32)
    _load_at_store(buf, 5, n, got)
    _load_f32_store(buf, 5, n, want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.concatenate([values[:n], np.zeros(16 - n, np.float32)]))

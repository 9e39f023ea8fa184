"""Aligned buffers and the buffer pool."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.io import AlignedBufferPool, aligned_empty, is_aligned


@pytest.mark.parametrize("nbytes", [0, 1, 4095, 4096, 1 << 20])
@pytest.mark.parametrize("align", [512, 4096, 1 << 16])
def test_aligned_empty(nbytes, align):
    a = aligned_empty(nbytes, align)
    assert a.dtype == np.uint8 and a.shape == (nbytes,) and a.flags.c_contiguous and a.flags.writeable
    assert is_aligned(a, align)
    a[:] = 7  # writable all the way to the end
    assert not np.shares_memory(a, aligned_empty(nbytes, align))


def test_aligned_empty_rejects_bad_args():
    with pytest.raises(ValueError):
        aligned_empty(-1)
    with pytest.raises(ValueError):
        aligned_empty(10, align=3000)


def test_pool_reuses_buffers():
    pool = AlignedBufferPool(granule_bytes=1 << 16, max_cached_bytes=1 << 20)
    a = pool.get(5000)
    assert a.shape == (5000,) and is_aligned(a)
    addr = a.ctypes.data
    pool.put(a)
    b = pool.get(60000)  # fits the same 64 KiB granule: same memory, no new allocation
    assert b.ctypes.data == addr and pool.allocations == 1
    c = pool.get(100)  # b is lent out, so this one is new
    assert c.ctypes.data != addr and pool.allocations == 2
    pool.put(b)
    pool.put(c)
    assert pool.cached_bytes == 2 << 16
    pool.put(np.zeros(10, np.uint8))  # not from the pool: ignored
    assert pool.cached_bytes == 2 << 16


def test_pool_respects_cache_limit():
    pool = AlignedBufferPool(granule_bytes=1 << 16, max_cached_bytes=1 << 16)
    a, b = pool.get(1), pool.get(1)
    pool.put(a)
    pool.put(b)  # over the limit: dropped
    assert pool.cached_bytes == 1 << 16

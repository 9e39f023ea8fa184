"""emulator.kernels._pool_kernels: chunks of bags for threads=N, and the same bits for any N."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from emulator.kernels import _pool_kernels as K
from emulator.kernels.pooling import DTYPE_FP32, pool_rows, pool_sources
from tests import naive
from tests.emulator.kernels.test_pooling import assert_same_bits, mixed_sources, random_csr, table


def chunk_bounds_naive(offsets: np.ndarray, n_chunks: int) -> list[int]:
    """Bag b starts a chunk iff it is the first bag starting at or after lookup lo + span*c//n for some c."""
    n_bags = offsets.size - 1
    n = max(min(n_bags, n_chunks), 1)
    lo, span = int(offsets[0]), int(offsets[-1] - offsets[0])
    starts = {int(np.searchsorted(offsets, lo + span * c // n)) for c in range(1, n)}
    return [0] + sorted(b for b in starts if 0 < b < n_bags) + [n_bags]


@pytest.mark.parametrize("lengths,n_chunks,want", [
    ([4, 4, 4, 4], 2, [0, 2, 4]),            # 16 lookups: the chunk starts at lookup 8 = bag 2
    ([4, 4, 4, 4], 4, [0, 1, 2, 3, 4]),
    ([4, 4, 4, 4], 9, [0, 1, 2, 3, 4]),      # no more chunks than bags
    ([16, 0, 0, 0], 4, [0, 1, 4]),           # targets 4, 8, 12 all fall in bag 0: bag 1 starts the rest
    ([0, 0, 0], 2, [0, 3]),                  # no lookups: one chunk of every bag
    ([], 3, [0, 0]),                         # no bags: one empty chunk
])
def test_chunk_bounds_hand_examples(lengths, n_chunks, want):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    assert K.chunk_bounds(offsets, n_chunks).tolist() == want


def test_chunk_bounds_equal_the_naive_split_on_random_bags():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(0, 12, rng.integers(1, 60))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64) + int(rng.integers(0, 5))
        n = int(rng.integers(1, 20))
        got = K.chunk_bounds(offsets, n)
        assert got.tolist() == chunk_bounds_naive(offsets, n)
        assert (np.diff(got) > 0).all() or got.tolist() == [0, 0]


@pytest.mark.parametrize("threads", range(1, numba.config.NUMBA_NUM_THREADS + 1))  # the CPUs (pooling's limit)
def test_any_thread_count_gives_the_serial_bits(threads):
    rng = np.random.default_rng(1)
    t = table(rng, 300, 100, np.float32)
    indices, offsets = random_csr(rng, 500, 30, 300)
    out = np.full((500, 100), np.nan, np.float32)
    pool_rows(t, indices, offsets, out, threads=threads)
    assert_same_bits(out, naive.pool_rows_ref(t, indices, offsets))


def test_a_bad_row_in_any_chunk_fails_the_call():
    rng = np.random.default_rng(3)
    t = table(rng, 50, 64, np.float32)
    indices, offsets = random_csr(rng, 400, 8, 50)
    indices[-1] = 50
    with pytest.raises(IndexError, match=f"lookup {indices.size - 1}: row 50 out of range"):
        pool_rows(t, indices, offsets, np.empty((400, 64), np.float32), threads=2)


def test_concurrent_callers_each_get_their_own_bits():
    """Python threads pooling different inputs with threads=2 at once (the engine's host side and a
    device worker, say) do not mix their chunks."""
    rng = np.random.default_rng(4)
    cases = []
    for dim in (16, 64, 80, 128):
        offsets, kinds, locs, dram, pages, staged = mixed_sources(rng, dim, DTYPE_FP32, np.float32, n_bags=300)
        cases.append((offsets, kinds, locs, dram, pages, staged, dim))
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(cases))}

    def work(i):
        offsets, kinds, locs, dram, pages, staged, dim = cases[i]
        for _ in range(20):
            out = np.empty((offsets.size - 1, dim), np.float32)
            results[i].append(pool_sources(offsets, kinds, locs, dram, pages, staged, DTYPE_FP32, dim, out,
                                           threads=2))

    callers = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    for i, (offsets, kinds, locs, dram, pages, staged, dim) in enumerate(cases):
        want = naive.pool_sources_ref(offsets, kinds, locs, dram, pages, staged, DTYPE_FP32, dim)
        assert len(results[i]) == 20
        for got in results[i]:
            assert_same_bits(got, want)

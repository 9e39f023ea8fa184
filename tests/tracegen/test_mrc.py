"""LRU miss-ratio curves (tracegen.mrc) against a brute-force LRU simulation, and SHARDS within its stated error."""

from __future__ import annotations

import numpy as np
import pytest

from tests.naive import lru_miss_ratio_naive
from tracegen.generate import GeneratorParams, generate_trace
from tracegen.mrc import miss_ratios, previous_occurrence, stack_distances, trace_mrc
from tracegen.trace_io import TraceReader


def test_stack_distances_by_hand():
    # a b c a b b d a: a's second lookup has b, c between (2 distinct), b's second c, a (2), b's third 0,
    # a's third b, d (2... and c? no: after a at 3 come b, b, d: distinct {b, d} = 2)
    keys = np.array([1, 2, 3, 1, 2, 2, 4, 1])
    assert stack_distances(keys).tolist() == [-1, -1, -1, 2, 2, 0, -1, 2]
    assert previous_occurrence(keys).tolist() == [-1, -1, -1, 0, 1, 4, -1, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_curve_equals_brute_force_lru(seed):
    rng = np.random.default_rng(seed)
    keys = (rng.zipf(1.3, size=3000) % 400).astype(np.int64)
    d = stack_distances(keys)
    sizes = np.array([1, 2, 3, 5, 8, 16, 50, 100, 399, 400])
    mr = miss_ratios(d, sizes)
    for size, m in zip(sizes, mr):
        assert m == pytest.approx(lru_miss_ratio_naive(keys, int(size)), abs=1e-12)


def test_trace_curves_exact_and_sampled(tmp_path, tiny_spec):
    path = tmp_path / "t.h5"
    generate_trace(tiny_spec, GeneratorParams(seed=3, num_batches=30, reuse=0.4, reuse_window=500), path)
    with TraceReader(path) as r:
        exact = trace_mrc(r, tables=[1])
        stream, t1 = [], []
        for i in range(r.num_batches):
            b = r.batch(i)
            for t in range(r.num_tables):
                idx, _ = b.table(t)
                stream += [(t << 40) | int(x) for x in idx]
                if t == 1:
                    t1 += [int(x) for x in idx]
        whole, one = exact
        assert whole.rate == 1.0 and whole.error is None and whole.lookups == len(stream)
        for size, m in zip(whole.sizes, whole.miss_ratio):
            assert m == pytest.approx(lru_miss_ratio_naive(stream, size), abs=1e-12)
        for size, m in zip(one.sizes, one.miss_ratio):
            assert m == pytest.approx(lru_miss_ratio_naive(t1, size), abs=1e-12)
        # SHARDS at a quarter of the keys: within 0.05 of the exact curve where the cache holds >= 64 rows
        # (rows sampled at rate R stand for 1/R rows each, so small caches are coarse), and the stated error
        # (two samplings' largest difference) is reported
        sampled = trace_mrc(r, rate=0.25)[0]
        assert sampled.rate == 0.25 and sampled.error is not None and sampled.sampled_lookups < len(stream)
        ex = dict(zip(whole.sizes, whole.miss_ratio))
        for size, m in zip(sampled.sizes, sampled.miss_ratio):
            if size >= 64:
                assert abs(m - ex[size]) < 0.05

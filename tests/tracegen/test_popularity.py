"""The locality model's per-table distribution (tracegen.popularity), its expected histograms, and its sampler."""

from __future__ import annotations

import numpy as np
import pytest

from tests import naive
from tracegen.locality import batch_locality
from tracegen.locality_model import TableLayout, popularity_counts_by_bin, popularity_expected_totals
from tracegen.popularity import PopularitySampler, TablePopularity, hurwitz_total, rank_probabilities
from tracegen.trace_io import Batch


def test_probabilities_by_hand():
    # 3 ranks, s = 1, q = 1: weights 1/2, 1/3, 1/4 (sum 13/12); uniform 0.25 adds c = 0.25/0.75 * (13/12) / 3
    p = TablePopularity(s=1.0, q=1.0, uniform=0.25, active=3)
    w = np.array([1 / 2, 1 / 3, 1 / 4])
    c = (1 / 3) * (13 / 12) / 3
    assert hurwitz_total(3, 1.0, 1.0) == pytest.approx(13 / 12)
    assert p.floor == pytest.approx(c)
    assert rank_probabilities(p) == pytest.approx((w + c) / (w + c).sum())
    # the uniform part is a quarter of the mass: 3c / (13/12 + 3c) = 0.25
    assert 3 * c / (13 / 12 + 3 * c) == pytest.approx(0.25)


@pytest.mark.parametrize("pop", [
    TablePopularity(s=1.1, q=0.0, uniform=0.0, active=5000),
    TablePopularity(s=0.8, q=40.0, uniform=0.1, active=20000),
    TablePopularity(s=2.0, q=3.0, uniform=0.5, active=3000),
])
def test_sampler_matches_the_probabilities(pop):
    n = 400_000
    out = np.empty(n, dtype=np.int64)
    PopularitySampler(pop).fill(12345, out)
    assert out.min() >= 0 and out.max() < pop.active
    p = rank_probabilities(pop)
    counts = np.bincount(out, minlength=pop.active)
    # the top 20 ranks within 5 standard deviations, and the mass of ranks above 1000 (rejection cells)
    sd = np.sqrt(n * p[:20] * (1 - p[:20]))
    assert np.all(np.abs(counts[:20] - n * p[:20]) < 5 * sd + 1)
    tail = p[1000:].sum()
    assert abs(counts[1000:].sum() / n - tail) < 5 * np.sqrt(tail * (1 - tail) / n) + 1e-9


def test_sampler_is_deterministic_and_checks_its_output():
    s = PopularitySampler(TablePopularity(s=1.0, q=2.0, active=100))
    a, b = np.empty(1000, dtype=np.int64), np.empty(1000, dtype=np.int64)
    s.fill(7, a)
    s.fill(7, b)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        s.fill(7, np.empty(10, dtype=np.int32))
    with pytest.raises(ValueError, match="uniform"):
        TablePopularity(s=1.0, uniform=1.0)


def test_fast_expected_totals_agree_with_the_layout_path():
    rng = np.random.default_rng(0)
    active = rng.integers(100, 5_000_000, size=40)
    s, q, u = rng.uniform(0.3, 1.6, 40), active * 10.0 ** rng.uniform(-6, -0.5, 40), rng.uniform(0, 0.4, 40)
    lookups = rng.uniform(1e3, 1e7, 40)
    floor = np.array([TablePopularity(float(a), float(b), float(c), int(d)).floor for a, b, c, d in zip(s, q, u, active)])
    ul, ll = (x.sum(axis=0) for x in popularity_counts_by_bin(TableLayout.build(active), s, q, floor, lookups))
    uf, lf = popularity_expected_totals(active, s, q, u, lookups)
    assert np.abs(uf / uf.sum() - ul / ul.sum()).sum() < 1e-3
    assert np.abs(lf / lf.sum() - ll / ll.sum()).sum() < 1e-3
    assert uf.sum() == pytest.approx(ul.sum(), rel=1e-3) and lf.sum() == pytest.approx(lookups.sum(), rel=1e-3)


def test_expected_histograms_match_a_sampled_batch():
    pop = TablePopularity(s=0.9, q=30.0, uniform=0.2, active=200_000)
    n = 300_000
    out = np.empty(n, dtype=np.int64)
    PopularitySampler(pop).fill(99, out)
    b = batch_locality(Batch(0, out, np.array([0, n]), 1, 1), np.array([pop.active]))
    u, l = popularity_expected_totals(np.array([pop.active]), np.array([pop.s]), np.array([pop.q]),
                                      np.array([pop.uniform]), np.array([float(n)]))
    assert np.abs(b.col_size_hist / b.unique - u / u.sum()).sum() < 0.01
    assert np.abs(b.index_hist / b.indices - l / l.sum()).sum() < 0.02
    assert b.unique == pytest.approx(u.sum(), rel=0.01)


def test_histogram_counter_against_a_hand_computed_trace():
    # table 0: row 5 x3, row 1 x1, row 2 x2; table 1: row 0 x5, row 9 x1 (two bags each)
    # counts 1, 2, 3, 1, 5 -> bins (0,1]: 2 rows 2 lookups, (1,2]: 1 row 2 lookups, (2,4]: 1 row 3, (4,8]: 1 row 5
    idx = np.array([5, 1, 5, 2, 5, 2, 0, 0, 9, 0, 0, 0])
    off = np.array([0, 3, 6, 9, 12])
    b = batch_locality(Batch(0, idx, off, 2, 2), np.array([10, 10]))
    assert b.indices == 12 and b.unique == 5
    assert b.col_size_hist[:4].tolist() == [2, 1, 1, 1] and b.col_size_hist.sum() == 5
    assert b.index_hist[:4].tolist() == [2, 2, 3, 5] and b.index_hist.sum() == 12
    ref = naive.locality_hist_naive([[5, 1, 5, 2, 5, 2], [0, 0, 9, 0, 0, 0]])
    assert ref == (12, 5, b.col_size_hist.tolist(), b.index_hist.tolist())


def test_fused_permutation_gives_the_rows_of_the_unfused_ranks():
    from tracegen.permutation import PERMUTE_BLOCK, HashPermutation, hash_permute, permutation_keys

    p = TablePopularity(s=1.1, q=3.0, uniform=0.05, active=200_000)
    sampler, perm = PopularitySampler(p), HashPermutation(300_000, permutation_keys(4, 2))
    for n in (0, 5, PERMUTE_BLOCK, 3 * PERMUTE_BLOCK + 17):
        ranks, rows = np.empty(n, np.int64), np.empty(n, np.int64)
        sampler.fill(99, ranks)
        sampler.fill(99, rows, perm)
        assert np.array_equal(rows, hash_permute(ranks, 300_000, perm.keys)), n

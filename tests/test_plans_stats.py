"""plans.stats: counts and per-batch statistics against naive counting; the sketch bound; Zipf numerics."""

from __future__ import annotations

import numpy as np
import pytest

from naive import access_counts_naive, batch_cold_counts_naive, batch_cold_reads_naive
from plans.stats import (MisraGries, count_accesses, hot_grid, measure_stats, modelled_stats, trace_stats,
                         zipf_expected_unique, zipf_mass, zipf_rows_for_mass)
from plans.remap import Remap
from plans_fixtures import small_spec, write_zipf_trace
from tracegen.trace_io import TraceReader


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans_stats") / "t.h5"
    write_zipf_trace(path, small_spec(), n_batches=6, seed=1)
    return path


def test_exact_counts_match_naive(trace):
    with TraceReader(trace) as r:
        counts = count_accesses(r, 0, 4)
        batches = list(r.batches(0, 4))
    for t, c in enumerate(counts):
        np.testing.assert_array_equal(c.exact, access_counts_naive(batches, t, c.rows))
        assert c.total == c.exact.sum() and c.counting == "exact" and c.error_bound == 0


def test_measured_stats_match_naive_per_batch(trace):
    with TraceReader(trace) as r:
        stats, remap, counts = trace_stats(r, (0, 3), evaluate=(3, 6))
        batches = list(r.batches(3, 6))
    for t, ts in enumerate(stats.tables):
        want = np.zeros((ts.hot_rows.size, 3))
        io = np.zeros((ts.hot_rows.size, 2))
        total = 0
        for b in batches:
            old = b.table(t)[0]
            new = remap.new_ids(t, old)
            total += new.size
            want += [batch_cold_counts_naive(new, int(k), ts.rows_per_page, ts.pages_per_row) for k in ts.hot_rows]
            io += [batch_cold_reads_naive(old, new, int(k), ts.rows_per_page, ts.pages_per_row) for k in ts.hot_rows]
        np.testing.assert_allclose(ts.mass, want[:, 0] / total)
        np.testing.assert_allclose(ts.cold_unique_rows_per_batch, want[:, 1] / 3)
        # pages and reads are counted where the engine reads them: in the store's (old) row order
        np.testing.assert_allclose(ts.cold_unique_pages_per_batch, io[:, 0] / 3)
        np.testing.assert_allclose(ts.cold_reads_per_batch, io[:, 1] / 3)
        assert np.all(ts.cold_reads_per_batch <= ts.cold_unique_pages_per_batch + 1e-9)
        assert ts.lookups_per_batch == pytest.approx(total / 3)
    assert stats.tables[2].pages_per_row == 2  # 8 KiB rows take two pages
    assert "out-of-sample" in stats.notes[0]


def test_reads_coalesce_runs_and_split_long_ones():
    from plans.stats import cold_pages_and_reads

    # 16 rows per page; rows 0..47 (pages 0-2, one run) and row 100 (page 6); new ids: row r -> r
    old = np.r_[np.arange(48), 100]
    pages, reads = cold_pages_and_reads(old, old, np.array([0, 16, 48, 101]), 16, 1)
    # k=0: pages {0,1,2,6} in 2 runs; k=16: page 0 holds only rows < 16 -> {1,2,6}, 2 runs; k=48: {6}; k=101: none
    assert pages.tolist() == [4, 3, 1, 0] and reads.tolist() == [2, 2, 1, 0]
    # 2 pages per row, 40 neighbouring rows = 80 pages: reads of at most 32 pages -> 3 reads
    old = np.arange(40)
    pages, reads = cold_pages_and_reads(old, old, np.array([0]), 1, 2)
    assert pages.tolist() == [80] and reads.tolist() == [3]


def test_grid_reaches_mass_levels(trace):
    with TraceReader(trace) as r:
        counts = count_accesses(r)
    c = counts[0]
    ranked = np.sort(c.exact)[::-1]
    for level in (0.5, 0.9):
        k = int(np.searchsorted(np.cumsum(ranked) / c.total, level - 1e-12)) + 1
        assert k in hot_grid(c)  # smallest k whose top-k rows serve `level` of the lookups
    assert hot_grid(c)[0] == 0 and hot_grid(c)[-1] == c.seen_rows


def test_misra_gries_bound_and_heavy_hitters():
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.3, size=200_000) % 50_000
    true = np.bincount(ids, minlength=50_000)
    mg = MisraGries(200)
    for chunk in np.array_split(ids, 37):
        mg.update(chunk)
    assert mg.decremented <= ids.size / 201  # the Misra-Gries bound N / (m + 1)
    keys, est = mg.ranked()
    assert np.all(est <= true[keys]) and np.all(true[keys] - est <= mg.decremented)
    # every row counted more than the bound is tracked
    assert set(np.flatnonzero(true > mg.decremented)) <= set(keys.tolist())


def test_sketched_tables_give_prefix_remaps(trace):
    with TraceReader(trace) as r:
        stats, remap, counts = trace_stats(r, (0, 6), exact_rows_limit=1000, sketch_counters=300)
    kinds = [t.kind for t in remap.tables]
    assert kinds == ["prefix", "prefix", "dense"]  # tables a and b exceed 1000 rows
    assert stats.tables[0].counting == "misra-gries" and stats.tables[0].count_error_bound > 0
    assert remap.is_permutation()


def test_zipf_numerics_against_brute_force():
    rows, alpha, L = 3000, 0.9, 2000.0
    p = np.arange(1, rows + 1, dtype=np.float64) ** -alpha
    p /= p.sum()
    assert zipf_mass(rows, alpha, 100) == pytest.approx(p[:100].sum())
    k = zipf_rows_for_mass(rows, alpha, 0.8)
    assert p[:k].sum() >= 0.8 > p[:k - 1].sum()
    for group, start in ((1, 0), (1, 250), (16, 0), (16, 250)):
        pages = [p[max(j * group, start):(j + 1) * group].sum() for j in range(start // group, -(-rows // group))]
        want = sum(1 - (1 - q) ** L for q in pages)  # E[distinct groups] for L i.i.d. draws
        assert zipf_expected_unique(rows, alpha, L, start, group) == pytest.approx(want, rel=1e-3)
    # beyond 65,536 rows the sum is the midpoint integral: H(10^6, 1) = ln(10^6) + 0.5772 + ... = 14.39
    assert zipf_mass(10**6, 1.0, 10**6) == 1.0


def test_modelled_stats_are_labelled(tiny_spec):
    s = modelled_stats(tiny_spec)
    assert s.source == "modelled"
    for ts in s.tables:
        assert ts.estimator.startswith("modelled")
        assert np.all(np.diff(ts.mass) >= 0) and ts.mass[-1] == pytest.approx(1.0)
        assert np.all(np.diff(ts.cold_unique_pages_per_batch) <= 1e-9)
    assert all(v.modelled for ts in s.tables for v in ts.tt)


def test_measure_stats_rejects_empty_window(trace):
    from tracegen.errors import InputError

    with TraceReader(trace) as r:
        with pytest.raises(InputError):
            count_accesses(r, 5, 5)
        with pytest.raises(InputError):
            measure_stats(r, Remap.identity([t.name for t in r.spec.tables], r.rows), [np.array([0])] * 3, 9, 12)

"""plans.stats: counts and per-batch statistics against naive counting; the sketch bound; Zipf numerics."""

from __future__ import annotations

import numpy as np
import pytest

from tests.naive import access_counts_naive, batch_cold_counts_naive, batch_cold_reads_naive
from plans.stats import MisraGries, count_accesses, fold_ranges, hot_grid, measure_stats, trace_stats
from plans.remap import Remap
from tests.plans_fixtures import small_spec, write_zipf_trace
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


def test_measure_stats_rejects_empty_window(trace):
    from tracegen.errors import InputError

    with TraceReader(trace) as r:
        with pytest.raises(InputError):
            count_accesses(r, 5, 5)
        with pytest.raises(InputError):
            measure_stats(r, Remap.identity([t.name for t in r.spec.tables], r.rows), [np.array([0])] * 3, 9, 12)


def test_fold_ranges_cover_the_profile_in_contiguous_blocks():
    assert fold_ranges(0, 10, 3) == [(0, 3), (3, 6), (6, 10)]  # edges 10*i//3 = 0, 3, 6, 10
    assert fold_ranges(4, 6, 10) == [(4, 5), (5, 6)]  # never more folds than batches
    assert fold_ranges(0, 5, 1) == [(0, 5)]


def test_cross_fitted_stats_match_naive_leave_one_block_out(trace):
    # Each block of batches is measured under a remap ranked (stable, hottest first) on the other blocks only.
    with TraceReader(trace) as r:
        stats, remap, counts = trace_stats(r, (0, 6), folds=3)
        batches = list(r.batches(0, 6))
    blocks = [(0, 2), (2, 4), (4, 6)]
    for t, ts in enumerate(stats.tables):
        want = np.zeros((ts.hot_rows.size, 3))
        io = np.zeros((ts.hot_rows.size, 2))
        total = 0
        for a, b in blocks:
            other = batches[:a] + batches[b:]
            order = np.argsort(-access_counts_naive(other, t, ts.rows), kind="stable")
            perm = np.empty(ts.rows, np.int64)
            perm[order] = np.arange(ts.rows)
            for bt in batches[a:b]:
                old = bt.table(t)[0]
                new = perm[old]
                total += new.size
                want += [batch_cold_counts_naive(new, int(k), ts.rows_per_page, ts.pages_per_row) for k in ts.hot_rows]
                io += [batch_cold_reads_naive(old, new, int(k), ts.rows_per_page, ts.pages_per_row) for k in ts.hot_rows]
        np.testing.assert_allclose(ts.mass, want[:, 0] / total)
        np.testing.assert_allclose(ts.cold_unique_rows_per_batch, want[:, 1] / 6)
        np.testing.assert_allclose(ts.cold_unique_pages_per_batch, io[:, 0] / 6)  # in store order, as read
        np.testing.assert_allclose(ts.cold_reads_per_batch, io[:, 1] / 6)
    assert "cross-fitted" in stats.notes[0]
    # the returned remap and the grid are those of the whole profile
    np.testing.assert_array_equal(remap.new_ids(0, np.argsort(-counts[0].exact, kind="stable")[:5]), np.arange(5))


def test_cross_fitting_charges_rows_unseen_while_ranking(trace):
    # In sample, keeping every seen row hot serves every lookup (mass 1 at k = seen rows); cross-fitted, the
    # lookups of a block to rows only that block touched are cold, as they will be on later batches.
    with TraceReader(trace) as r:
        ins, _, _ = trace_stats(r, (0, 6))
        cross, _, _ = trace_stats(r, (0, 6), folds=3)
    t = 0  # table a: 3,000 rows, about 6 x 64 x 3 lookups at Zipf 1.0 leave a long tail seen once
    i = int(np.searchsorted(ins.tables[t].hot_rows, ins.tables[t].seen_rows))
    assert ins.tables[t].mass[i] == pytest.approx(1.0)
    assert cross.tables[t].mass[i] < 1.0
    assert np.all(cross.tables[t].mass <= ins.tables[t].mass + 1e-12)  # the in-sample ranking is the best one


def test_cross_fitting_with_sketched_tables(trace):
    with TraceReader(trace) as r:
        stats, remap, _ = trace_stats(r, (0, 6), folds=2, exact_rows_limit=1000, sketch_counters=300)
    for ts in stats.tables:
        assert np.all(np.diff(ts.mass) >= -1e-12) and np.all(np.diff(ts.cold_unique_rows_per_batch) <= 1e-9)
    assert stats.tables[0].counting == "misra-gries" and remap.is_permutation()

"""Access statistics measured on a trace.

Measured statistics take two passes over the profiling batches [a, b):

1. :func:`count_accesses`: per table, exact access counts with ``np.bincount``
   over chunks of batches when the table has at most ``exact_rows_limit`` rows;
   otherwise a Misra-Gries heavy-hitter sketch of ``sketch_counters`` counters,
   merged batch by batch (the mergeable summary of Agarwal et al., 2012). A
   sketched count underestimates the true count by at most the total amount
   decremented, ``D <= N / (m + 1)`` (N lookups, m counters); ``D`` is stored
   as ``TableStats.count_error_bound``.
2. :func:`measure_stats`: with the remap (hottest first) built from those
   counts, every batch is replayed and, at each candidate hot size k, the
   share of lookups with new id < k, the distinct rows with new id >= k, and
   the distinct 4 KiB pages and read requests the engine needs for them are
   counted exactly, then averaged over batches. The remap is applied at lookup
   time, so cold rows are read at their place in the store (old ids): pages
   and reads are counted in that order. Run on the
   profiling batches this is an in-sample measurement (the hot set was chosen
   on the same batches, so it is optimistic: rows never seen while profiling
   look free); :func:`trace_stats` therefore cross-fits by default in the
   planner (``folds``): each block of profiling batches is measured under a
   remap ranked on the other blocks, which is what a plan meets on later
   batches.

Modelled statistics (no trace: Zipf expectations) are in :mod:`plans.modelled`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from plans.cost import tt_flops_per_row
from plans.remap import Remap
from plans.types import PAGE_BYTES, FormatVariant, StatsSource, TableStats, TTVariant, WorkloadStats
from tracegen.errors import InputError

DEFAULT_EXACT_ROWS_LIMIT = 1 << 27  # 1 GiB of int64 counters per table
DEFAULT_SKETCH_COUNTERS = 1 << 16
GRID_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
GRID_GEOMETRIC_POINTS = 16
_FLUSH_LOOKUPS = 1 << 23
MAX_READ_PAGES = 32  # the replay's reads: at most 128 KiB (`ReplayConfig.max_read_bytes`) of neighbouring pages


def page_geometry(row_bytes: int) -> tuple[int, int]:
    """(rows_per_page, pages_per_row) of rows of ``row_bytes`` in 4 KiB pages."""
    return max(1, PAGE_BYTES // row_bytes), -(-row_bytes // PAGE_BYTES)


# --- pass 1: counting ---------------------------------------------------------------------------


class MisraGries:
    """Misra-Gries summary of at most ``counters`` ids; estimates undercount by <= ``decremented``."""

    def __init__(self, counters: int):
        if counters < 1:
            raise ValueError("a sketch needs at least one counter")
        self.counters = counters
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self.total = 0
        self.decremented = 0

    def update(self, ids: np.ndarray) -> None:
        k, c = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        self.merge(k, c.astype(np.int64))

    def merge(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.total += int(counts.sum())
        allk = np.concatenate([self.keys, keys])
        allc = np.concatenate([self.counts, counts])
        uk, inv = np.unique(allk, return_inverse=True)
        uc = np.bincount(inv, weights=allc).astype(np.int64)
        if uk.size > self.counters:
            thr = int(np.partition(uc, uk.size - self.counters - 1)[uk.size - self.counters - 1])
            uc = uc - thr
            keep = uc > 0
            uk, uc = uk[keep], uc[keep]
            self.decremented += thr
        self.keys, self.counts = uk, uc

    def ranked(self) -> tuple[np.ndarray, np.ndarray]:
        """Tracked ids by descending estimated count (ties by id) and their estimates."""
        order = np.lexsort((self.keys, -self.counts))
        return self.keys[order], self.counts[order]


@dataclass(frozen=True, eq=False)
class TableCounts:
    """Access counts of one table: exact (``exact``) or a sketch's ranked heavy hitters."""

    rows: int
    total: int
    exact: np.ndarray | None = None
    hot_ids: np.ndarray | None = None
    hot_counts: np.ndarray | None = None
    error_bound: float = 0.0

    @property
    def counting(self) -> str:
        return "exact" if self.exact is not None else "misra-gries"

    def ranked_counts(self) -> np.ndarray:
        """Counts in hotness order (descending)."""
        if self.exact is not None:
            return np.sort(self.exact)[::-1]
        return self.hot_counts

    @property
    def seen_rows(self) -> int:
        if self.exact is not None:
            return int(np.count_nonzero(self.exact))
        return int(self.hot_ids.size)


def count_accesses(reader, start: int = 0, stop: int | None = None, *,
                   exact_rows_limit: int = DEFAULT_EXACT_ROWS_LIMIT,
                   sketch_counters: int = DEFAULT_SKETCH_COUNTERS) -> list[TableCounts]:
    """Per-table access counts over batches [start, stop) of a ``TraceReader``."""
    stop = reader.num_batches if stop is None else min(stop, reader.num_batches)
    if not 0 <= start < stop:
        raise InputError(f"profiling batches [{start}, {stop}) are empty (trace has {reader.num_batches})",
                         reader.path)
    rows = [int(r) for r in reader.rows]
    exact = [r <= exact_rows_limit for r in rows]
    counts = [np.zeros(r, np.int64) if e else None for r, e in zip(rows, exact)]
    sketches = [None if e else MisraGries(sketch_counters) for e in exact]
    pending: list[list[np.ndarray]] = [[] for _ in rows]
    totals = [0] * len(rows)
    buffered = 0

    def flush() -> None:
        for t, bufs in enumerate(pending):
            if bufs:
                counts[t] += np.bincount(np.concatenate(bufs), minlength=rows[t])
                bufs.clear()

    for batch in reader.batches(start, stop):
        bounds = batch.table_bounds()
        for t in range(len(rows)):
            idx = batch.indices[bounds[t]:bounds[t + 1]]
            totals[t] += idx.size
            if exact[t]:
                pending[t].append(idx)
                buffered += idx.size
            else:
                sketches[t].update(idx)
        if buffered >= _FLUSH_LOOKUPS:
            flush()
            buffered = 0
    flush()
    out = []
    for t, r in enumerate(rows):
        if exact[t]:
            out.append(TableCounts(r, totals[t], exact=counts[t]))
        else:
            ids, est = sketches[t].ranked()
            out.append(TableCounts(r, totals[t], hot_ids=ids, hot_counts=est,
                                   error_bound=float(sketches[t].decremented)))
    return out


def hot_grid(counts: TableCounts, levels: Sequence[float] = GRID_LEVELS,
             geometric_points: int = GRID_GEOMETRIC_POINTS) -> np.ndarray:
    """Candidate hot sizes: 0, the smallest k reaching each mass level (by the counts), a geometric
    series up to the rows seen, and the rows seen."""
    ranked = counts.ranked_counts()
    seen = counts.seen_rows
    ks = {0, seen}
    if counts.total > 0 and ranked.size:
        cum = np.cumsum(ranked) / counts.total
        for level in levels:
            j = int(np.searchsorted(cum, level - 1e-12))
            if j < cum.size:
                ks.add(j + 1)
    if seen > 1:
        ks.update(int(x) for x in np.unique(np.round(np.geomspace(1, seen, geometric_points))))
    return np.array(sorted(k for k in ks if 0 <= k <= counts.rows), dtype=np.int64)


# --- pass 2: per-batch measurement under the remap ---------------------------------------------


def cold_pages_and_reads(old_ids: np.ndarray, new_ids: np.ndarray, grid: np.ndarray, rows_per_page: int,
                         pages_per_row: int, max_read_pages: int = MAX_READ_PAGES) -> tuple[np.ndarray, np.ndarray]:
    """Pages and read requests the engine issues for one batch's cold rows, at each hot size of ``grid``.

    ``old_ids`` (sorted, unique) are the store's row ids of a batch, ``new_ids`` their ids after the remap.
    Cold rows (new id >= k) are read by their store position, so a page group (``rows_per_page`` rows,
    ``pages_per_row`` pages) is read when the largest new id among its touched rows is >= k; runs of
    neighbouring groups are coalesced into reads of at most ``max_read_pages`` pages, as
    ``emulator.io.plan_row_reads`` does.
    """
    groups = old_ids // rows_per_page
    first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if groups.size else np.zeros(0, np.int64)
    gid = groups[first]
    top = np.maximum.reduceat(new_ids, first) if first.size else np.zeros(0, np.int64)
    pages = np.zeros(grid.size)
    reads = np.zeros(grid.size)
    for i, k in enumerate(grid):
        gk = gid[top >= k]
        if gk.size == 0:
            continue
        pages[i] = gk.size * pages_per_row
        starts = np.flatnonzero(np.r_[True, np.diff(gk) != 1])
        run_groups = np.diff(np.r_[starts, gk.size])
        reads[i] = float(np.sum(-(-(run_groups * pages_per_row) // max_read_pages)))
    return pages, reads


class _Sums:
    """Per-table sums over batches of what :func:`measure_stats` averages."""

    def __init__(self, grids: Sequence[np.ndarray]):
        self.hits = [np.zeros(g.size) for g in grids]
        self.cold_rows = [np.zeros(g.size) for g in grids]
        self.cold_pages = [np.zeros(g.size) for g in grids]
        self.cold_reads = [np.zeros(g.size) for g in grids]
        self.lookups = np.zeros(len(grids))
        self.batches = 0


def _accumulate(reader, remap: Remap, grids: Sequence[np.ndarray], start: int, stop: int, sums: _Sums) -> None:
    """Add batches [start, stop), looked up through ``remap``, to ``sums``."""
    geo = [page_geometry(t.row_bytes) for t in reader.spec.tables]
    for batch in reader.batches(start, stop):
        bounds = batch.table_bounds()
        for t in range(len(grids)):
            idx = batch.indices[bounds[t]:bounds[t + 1]]
            sums.lookups[t] += idx.size
            if idx.size == 0:
                continue
            g = grids[t]
            s = np.sort(remap.new_ids(t, idx))
            sums.hits[t] += np.searchsorted(s, g)
            u = s[np.r_[True, s[1:] != s[:-1]]]
            sums.cold_rows[t] += u.size - np.searchsorted(u, g)
            old = np.unique(idx)
            pages, reads = cold_pages_and_reads(old, remap.new_ids(t, old), g, *geo[t])
            sums.cold_pages[t] += pages
            sums.cold_reads[t] += reads
        sums.batches += 1


def _stats_from_sums(reader, grids: Sequence[np.ndarray], sums: _Sums, counts: Sequence[TableCounts] | None,
                     estimator: str, profile: tuple[int, int], note: str) -> WorkloadStats:
    n = sums.batches
    tables = []
    for t, ts in enumerate(reader.spec.tables):
        rpp, ppr = page_geometry(ts.row_bytes)
        c = counts[t] if counts is not None else None
        look = sums.lookups[t]
        tables.append(TableStats(
            name=ts.name, rows=ts.rows, row_bytes=ts.row_bytes, rows_per_page=rpp, pages_per_row=ppr,
            lookups_per_batch=look / n, pooling=look / n / reader.batch_size, hot_rows=grids[t],
            mass=sums.hits[t] / look if look else np.zeros(grids[t].size),
            cold_unique_rows_per_batch=sums.cold_rows[t] / n, cold_unique_pages_per_batch=sums.cold_pages[t] / n,
            cold_reads_per_batch=sums.cold_reads[t] / n, seen_rows=0 if c is None else c.seen_rows,
            counting="exact" if c is None else c.counting, count_error_bound=0.0 if c is None else c.error_bound,
            estimator=estimator))
    return WorkloadStats(tuple(tables), reader.batch_size, "measured", trace_id=reader.trace_id,
                         profile_batches=profile, notes=(note,) if note else ())


def measure_stats(reader, remap: Remap, grids: Sequence[np.ndarray], start: int = 0, stop: int | None = None, *,
                  counts: Sequence[TableCounts] | None = None, note: str = "") -> WorkloadStats:
    """Mass, distinct cold rows and distinct cold pages per batch at each grid size, on batches [start, stop)."""
    stop = reader.num_batches if stop is None else min(stop, reader.num_batches)
    if not 0 <= start < stop:
        raise InputError(f"batches [{start}, {stop}) are empty (trace has {reader.num_batches})", reader.path)
    sums = _Sums(grids)
    _accumulate(reader, remap, grids, start, stop, sums)
    return _stats_from_sums(reader, grids, sums, counts, f"measured per batch on [{start}, {stop})", (start, stop),
                            note)


def fold_ranges(start: int, stop: int, folds: int) -> list[tuple[int, int]]:
    """``folds`` contiguous, nearly equal, non-empty batch ranges covering [start, stop)."""
    n = stop - start
    k = max(1, min(folds, n))
    edges = [start + (n * i) // k for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


def _complement_counts(reader, counts: Sequence[TableCounts], start: int, stop: int, fa: int, fb: int,
                       **count_kwargs) -> list[TableCounts]:
    """Counts over [start, stop) without [fa, fb): exact tables by subtraction, sketched ones recounted."""
    fold = count_accesses(reader, fa, fb, **count_kwargs)
    sketched = any(c.exact is None for c in counts)
    rest: list[list[TableCounts]] = []
    if sketched:
        rest = [count_accesses(reader, a, b, **count_kwargs) for a, b in ((start, fa), (fb, stop)) if b > a]
    out = []
    for t, (c, f) in enumerate(zip(counts, fold)):
        if c.exact is not None:
            out.append(TableCounts(c.rows, c.total - f.total, exact=np.subtract(c.exact, f.exact, out=f.exact)))
            continue
        sk = MisraGries(count_kwargs.get("sketch_counters", DEFAULT_SKETCH_COUNTERS))
        bound = 0.0
        for part in rest:
            sk.merge(part[t].hot_ids, part[t].hot_counts)
            bound += part[t].error_bound
        ids, est = sk.ranked()
        out.append(TableCounts(c.rows, c.total - f.total, hot_ids=ids, hot_counts=est,
                               error_bound=bound + sk.decremented))
    return out


def trace_stats(reader, profile: tuple[int, int | None] = (0, None), evaluate: tuple[int, int | None] | None = None,
                *, folds: int = 1, exact_rows_limit: int = DEFAULT_EXACT_ROWS_LIMIT,
                sketch_counters: int = DEFAULT_SKETCH_COUNTERS,
                levels: Sequence[float] = GRID_LEVELS) -> tuple[WorkloadStats, Remap, list[TableCounts]]:
    """Count on ``profile`` batches, remap hottest-first, and measure the statistics at each candidate hot size.

    Where they are measured:

    * ``evaluate`` given: on those batches, under the profile's remap (out of sample when they do not overlap);
    * ``folds`` > 1 (cross-fitted): the profile is cut into ``folds`` contiguous blocks and each block is
      measured under a remap ranked on the other blocks only, so no batch is measured under a ranking that
      saw it. This is what a plan meets on later batches: rows never seen while profiling are not free. The
      remap returned is ranked on the whole profile (it has seen ``folds / (folds - 1)`` times more batches
      than each fold's, so the cold traffic to rarely seen rows is slightly overestimated);
    * otherwise in sample (ranked and measured on the same batches: optimistic).
    """
    a, b = profile
    b = reader.num_batches if b is None else min(b, reader.num_batches)
    kw = {"exact_rows_limit": exact_rows_limit, "sketch_counters": sketch_counters}
    counts = count_accesses(reader, a, b, **kw)
    names = [t.name for t in reader.spec.tables]
    remap = Remap.from_counts(counts, names, {"trace_id": reader.trace_id, "profile_batches": [a, b]})
    grids = [hot_grid(c, levels) for c in counts]
    parts = fold_ranges(a, b, folds)
    if evaluate is not None or len(parts) < 2:
        ea, eb = (a, b) if evaluate is None else evaluate
        note = ("in-sample: hot sets ranked and measured on the same batches" if evaluate is None
                else f"out-of-sample: ranked on [{a}, {b}), measured on [{ea}, {eb})")
        return measure_stats(reader, remap, grids, ea, eb, counts=counts, note=note), remap, counts
    sums = _Sums(grids)
    for fa, fb in parts:
        rest = _complement_counts(reader, counts, a, b, fa, fb, **kw)
        _accumulate(reader, Remap.from_counts(rest, names), grids, fa, fb, sums)
    note = (f"cross-fitted: [{a}, {b}) cut into {len(parts)} blocks, each measured under a remap ranked on the "
            "other blocks (out of sample)")
    stats = _stats_from_sums(reader, grids, sums, counts, f"cross-fitted over {len(parts)} folds of [{a}, {b})",
                             (a, b), note)
    return stats, remap, counts


class TraceStatsSource(StatsSource):
    """Measured statistics of a trace file (optionally with the TT variants of a store)."""

    def __init__(self, trace_path, profile: tuple[int, int | None] = (0, None), store=None, **kwargs):
        self.trace_path, self.profile, self.store, self.kwargs = trace_path, profile, store, kwargs
        self.remap: Remap | None = None

    def workload_stats(self) -> WorkloadStats:
        from tracegen.trace_io import TraceReader

        with TraceReader(self.trace_path) as reader:
            stats, self.remap, _ = trace_stats(reader, self.profile, **self.kwargs)
        return attach_store(stats, self.store) if self.store is not None else stats


def attach_store(stats: WorkloadStats, store) -> WorkloadStats:
    """Add the store's TT variants (error, bytes, flops per row), row formats and its id; shapes must match."""
    by_name = {t.name: t for t in store.tables}
    tables = []
    for ts in stats.tables:
        st = by_name.get(ts.name)
        if st is None:
            raise InputError(f"trace table {ts.name!r} is not in the store", store.path)
        if st.rows != ts.rows or st.row_bytes != ts.row_bytes:
            raise InputError(f"table {ts.name}: trace has {ts.rows} rows of {ts.row_bytes} B, store has "
                             f"{st.rows} rows of {st.row_bytes} B", store.path)
        variants = [TTVariant(int(v.rank), int(v.bytes), float(v.rel_fro_error), float(v.max_abs_error),
                              tt_flops_per_row(v.tt_q_shapes, v.tt_ranks)) for v in st.tt]
        formats = tuple(FormatVariant(f.format, f.row_bytes, f.rows_per_page, float(f.rel_fro_error),
                                      float(f.max_abs_error)) for f in st.formats)
        tables.append(replace(ts.with_tt(variants), formats=formats))
    return WorkloadStats(tuple(tables), stats.batch_size, stats.source, stats.trace_id, store.store_id,
                         stats.profile_batches, stats.notes)

"""Access statistics from a trace (measured) or from a spec's Zipf parameters (modelled).

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
   on the same batches, so it is optimistic); pass later batches to measure
   out of sample.

Modelled statistics (:func:`modelled_stats`) use rank-frequency
p_i = (i+1)^-alpha / H(N, alpha) and L = pooling x batch lookups drawn i.i.d.:
mass(k) = H(k)/H(N), and the expected distinct pages among ranks >= k is
sum_j 1 - (1 - P_j)^L over pages j (P_j = the page's probability), exact for
i.i.d. draws and evaluated numerically (exactly for the first pages, then in
geometric buckets of pages with their mean page mass). Everything derived from
it is labelled "modelled".
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from plans.cost import tt_flops_per_row
from plans.remap import Remap
from plans.types import PAGE_BYTES, StatsSource, TableStats, TTVariant, WorkloadStats
from tracegen.errors import InputError
from tracegen.spec import DTYPE_BYTES, ModelSpec

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


def measure_stats(reader, remap: Remap, grids: Sequence[np.ndarray], start: int = 0, stop: int | None = None, *,
                  counts: Sequence[TableCounts] | None = None, note: str = "") -> WorkloadStats:
    """Mass, distinct cold rows and distinct cold pages per batch at each grid size, on batches [start, stop)."""
    stop = reader.num_batches if stop is None else min(stop, reader.num_batches)
    if not 0 <= start < stop:
        raise InputError(f"batches [{start}, {stop}) are empty (trace has {reader.num_batches})", reader.path)
    spec = reader.spec
    T = spec.num_tables
    hits = [np.zeros(g.size) for g in grids]
    cold_rows = [np.zeros(g.size) for g in grids]
    cold_pages = [np.zeros(g.size) for g in grids]
    lookups = np.zeros(T)
    n = 0
    geo = [page_geometry(t.row_bytes) for t in spec.tables]
    cold_reads = [np.zeros(g.size) for g in grids]
    for batch in reader.batches(start, stop):
        bounds = batch.table_bounds()
        for t in range(T):
            idx = batch.indices[bounds[t]:bounds[t + 1]]
            lookups[t] += idx.size
            if idx.size == 0:
                continue
            g = grids[t]
            s = np.sort(remap.new_ids(t, idx))
            hits[t] += np.searchsorted(s, g)
            u = s[np.r_[True, s[1:] != s[:-1]]]
            cold_rows[t] += u.size - np.searchsorted(u, g)
            old = np.unique(idx)
            pages, reads = cold_pages_and_reads(old, remap.new_ids(t, old), g, *geo[t])
            cold_pages[t] += pages
            cold_reads[t] += reads
        n += 1
    tables = []
    for t, ts in enumerate(spec.tables):
        rpp, ppr = geo[t]
        c = counts[t] if counts is not None else None
        tables.append(TableStats(
            name=ts.name, rows=ts.rows, row_bytes=ts.row_bytes, rows_per_page=rpp, pages_per_row=ppr,
            lookups_per_batch=lookups[t] / n, pooling=lookups[t] / n / reader.batch_size, hot_rows=grids[t],
            mass=hits[t] / lookups[t] if lookups[t] else np.zeros(grids[t].size),
            cold_unique_rows_per_batch=cold_rows[t] / n, cold_unique_pages_per_batch=cold_pages[t] / n,
            cold_reads_per_batch=cold_reads[t] / n, seen_rows=0 if c is None else c.seen_rows, counting="exact" if c is None else c.counting,
            count_error_bound=0.0 if c is None else c.error_bound, estimator=f"measured per batch on [{start}, {stop})"))
    notes = (note,) if note else ()
    return WorkloadStats(tuple(tables), reader.batch_size, "measured", trace_id=reader.trace_id,
                         profile_batches=(start, stop), notes=notes)


def trace_stats(reader, profile: tuple[int, int | None] = (0, None), evaluate: tuple[int, int | None] | None = None,
                *, exact_rows_limit: int = DEFAULT_EXACT_ROWS_LIMIT, sketch_counters: int = DEFAULT_SKETCH_COUNTERS,
                levels: Sequence[float] = GRID_LEVELS) -> tuple[WorkloadStats, Remap, list[TableCounts]]:
    """Count on ``profile`` batches, remap hottest-first, measure on ``evaluate`` (default: the profile)."""
    a, b = profile
    b = reader.num_batches if b is None else min(b, reader.num_batches)
    counts = count_accesses(reader, a, b, exact_rows_limit=exact_rows_limit, sketch_counters=sketch_counters)
    names = [t.name for t in reader.spec.tables]
    remap = Remap.from_counts(counts, names, {"trace_id": reader.trace_id, "profile_batches": [a, b]})
    grids = [hot_grid(c, levels) for c in counts]
    ea, eb = (a, b) if evaluate is None else evaluate
    note = ("in-sample: hot sets ranked and measured on the same batches" if evaluate is None
            else f"out-of-sample: ranked on [{a}, {b}), measured on [{ea}, {eb})")
    stats = measure_stats(reader, remap, grids, ea, eb, counts=counts, note=note)
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
    """Add the store's TT variants (error, bytes, flops per row) and its id; shapes must match."""
    by_name = {t["name"]: t for t in store.tables}
    tables = []
    for ts in stats.tables:
        st = by_name.get(ts.name)
        if st is None:
            raise InputError(f"trace table {ts.name!r} is not in the store", store.path)
        if st["rows"] != ts.rows or st["row_bytes"] != ts.row_bytes:
            raise InputError(f"table {ts.name}: trace has {ts.rows} rows of {ts.row_bytes} B, store has "
                             f"{st['rows']} rows of {st['row_bytes']} B", store.path)
        variants = [TTVariant(int(v["rank"]), int(v["bytes"]), float(v["rel_fro_error"]), float(v["max_abs_error"]),
                              tt_flops_per_row(v["tt_q_shapes"], v["tt_ranks"])) for v in st.get("tt", [])]
        tables.append(ts.with_tt(variants))
    return WorkloadStats(tuple(tables), stats.batch_size, stats.source, stats.trace_id, store.store_id,
                         stats.profile_batches, stats.notes)


# --- modelled: Zipf ----------------------------------------------------------------------------

_EXACT_TERMS = 1 << 16


@functools.lru_cache(maxsize=8)
def _zipf_head(alpha: float) -> np.ndarray:
    head = np.concatenate([[0.0], np.cumsum(np.arange(1, _EXACT_TERMS + 1, dtype=np.float64) ** -alpha)])
    head.setflags(write=False)
    return head


def zipf_cumulative(n: np.ndarray | int, alpha: float) -> np.ndarray:
    """H(n, alpha) = sum_{j=1..n} j^-alpha: exact up to 65,536 terms, then the midpoint integral."""
    scalar = np.ndim(n) == 0
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    m = _EXACT_TERMS
    out = _zipf_head(float(alpha))[np.minimum(n, m).astype(np.int64)]
    big = n > m
    if np.any(big):
        a, b = m + 0.5, n[big] + 0.5
        tail = np.log(b / a) if abs(alpha - 1.0) < 1e-12 else (b ** (1 - alpha) - a ** (1 - alpha)) / (1 - alpha)
        out = out.copy()
        out[big] += tail
    return out[0] if scalar else out


def zipf_mass(rows: int, alpha: float, k: np.ndarray | int) -> np.ndarray:
    """Share of lookups on the k most popular of ``rows`` Zipf(alpha) rows."""
    return zipf_cumulative(np.minimum(k, rows), alpha) / zipf_cumulative(rows, alpha)


def zipf_rows_for_mass(rows: int, alpha: float, level: float) -> int:
    """Smallest k whose Zipf mass reaches ``level`` (the head searched exactly, the tail bisected)."""
    target = level * zipf_cumulative(rows, alpha) - 1e-12 * zipf_cumulative(rows, alpha)
    head = _zipf_head(float(alpha))
    if rows <= _EXACT_TERMS or head[-1] >= target:
        return int(min(np.searchsorted(head, target), rows))
    lo, hi = _EXACT_TERMS, rows
    while lo < hi:
        mid = (lo + hi) // 2
        if zipf_cumulative(mid, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def zipf_expected_unique(rows: int, alpha: float, lookups: float, starts, group: int = 1,
                         exact_groups: int = 2048, buckets: int = 256) -> np.ndarray | float:
    """Expected distinct groups of ``group`` consecutive ranks (pages; 1 = rows) touched among ranks
    >= each of ``starts`` by ``lookups`` i.i.d. Zipf draws.

    sum_j 1 - (1 - P_j)^L over the groups j from the start's group on (its first group counting only
    ranks >= start). Groups are summed one by one for the first ``exact_groups`` and past each start,
    then in ``buckets`` geometric buckets that use their mean group probability.
    """
    scalar = np.ndim(starts) == 0
    starts = np.atleast_1d(np.asarray(starts, dtype=np.int64))
    out = np.zeros(starts.size)
    if lookups <= 0 or rows <= 0:
        return float(out[0]) if scalar else out
    total = zipf_cumulative(rows, alpha)
    g_end = -(-rows // group)

    def prob(lo_rank, hi_rank):
        return (zipf_cumulative(hi_rank, alpha) - zipf_cumulative(lo_rank, alpha)) / total

    def touched(p):
        return -np.expm1(lookups * np.log1p(-np.minimum(p, 1.0 - 1e-16)))

    g0 = np.minimum(starts // group, g_end)
    edges = {0, g_end, *range(0, min(exact_groups, g_end) + 1)}
    edges.update(int(x) for x in np.round(np.geomspace(max(1, min(exact_groups, g_end)), g_end, buckets + 1)))
    edges.update(int(x) for x in np.minimum(g0 + 1, g_end))
    e = np.array(sorted(x for x in edges if 0 <= x <= g_end), dtype=np.int64)
    a, b = e[:-1], e[1:]
    n = (b - a).astype(np.float64)
    contrib = n * touched(prob(a * group, np.minimum(b * group, rows)) / np.maximum(n, 1))
    suffix = np.concatenate([np.cumsum(contrib[::-1])[::-1], [0.0]])  # suffix[i] = sum of segments i..
    seg_after = np.searchsorted(e, np.minimum(g0 + 1, g_end))  # segment that starts at g0 + 1
    first = touched(prob(np.minimum(starts, rows), np.minimum((g0 + 1) * group, rows)))
    out = np.where(starts >= rows, 0.0, suffix[seg_after] + first)
    return float(out[0]) if scalar else out


def modelled_table_stats(name: str, rows: int, row_bytes: int, alpha: float, lookups_per_batch: float,
                         batch_size: int, tt: Sequence[TTVariant] = (), levels: Sequence[float] = GRID_LEVELS,
                         geometric_points: int = 8) -> TableStats:
    rpp, ppr = page_geometry(row_bytes)
    ks = {0, rows}
    for level in levels:
        if level < 1.0:
            ks.add(zipf_rows_for_mass(rows, alpha, level))
    if rows > 1:
        ks.update(int(x) for x in np.unique(np.round(np.geomspace(1, rows, geometric_points))))
    grid = np.array(sorted(k for k in ks if 0 <= k <= rows), dtype=np.int64)
    mass = zipf_mass(rows, alpha, grid)
    cold_rows = zipf_expected_unique(rows, alpha, lookups_per_batch, grid, 1)
    cold_pages = zipf_expected_unique(rows, alpha, lookups_per_batch, grid, rpp) * ppr
    return TableStats(name=name, rows=rows, row_bytes=row_bytes, rows_per_page=rpp, pages_per_row=ppr,
                      lookups_per_batch=float(lookups_per_batch), pooling=lookups_per_batch / batch_size,
                      hot_rows=grid, mass=mass, cold_unique_rows_per_batch=cold_rows,
                      cold_unique_pages_per_batch=cold_pages, tt=tuple(tt), seen_rows=rows, counting="modelled",
                      estimator=f"modelled: Zipf(alpha={alpha:g}), i.i.d. draws")


# Placeholder TT error by rank for modelled tables (no weights exist to measure): labelled modelled.
MODELLED_TT_REL_ERROR = {8: 0.12, 16: 0.08, 32: 0.05, 64: 0.03}


def modelled_tt_variants(rows: int, dim: int, itemsize: int = 4,
                         ranks: Sequence[int] = (8, 16, 32)) -> list[TTVariant]:
    from emulator.tt import factorize_dim, factorize_rows

    p, q = factorize_rows(rows), factorize_dim(dim)
    out = []
    for r in ranks:
        rk = [1, r, r, 1]
        core_bytes = sum(rk[i] * p[i] * q[i] * rk[i + 1] for i in range(3)) * itemsize
        err = MODELLED_TT_REL_ERROR.get(r, MODELLED_TT_REL_ERROR[8] * math.sqrt(8 / r))
        out.append(TTVariant(r, int(core_bytes), err, float("nan"), tt_flops_per_row(q, rk), modelled=True))
    return out


def modelled_stats(spec: ModelSpec, tt_ranks: Sequence[int] = (8, 16, 32), tt_min_rows: int = 4096) -> WorkloadStats:
    """Statistics of ``spec`` from its Zipf skew and pooling alone (no trace); all labelled modelled."""
    tables = []
    for t in spec.tables:
        tt = modelled_tt_variants(t.rows, t.dim, DTYPE_BYTES[t.dtype], tt_ranks) if t.rows >= tt_min_rows else []
        tables.append(modelled_table_stats(t.name, t.rows, t.row_bytes, t.zipf_alpha,
                                           t.pooling.mean_lookups * spec.batch_size, spec.batch_size, tt))
    return WorkloadStats(tuple(tables), spec.batch_size, "modelled",
                         notes=("modelled from Zipf parameters; TT errors are a placeholder curve",))


class ModelledStatsSource(StatsSource):
    def __init__(self, spec: ModelSpec, **kwargs):
        self.spec, self.kwargs = spec, kwargs

    def workload_stats(self) -> WorkloadStats:
        return modelled_stats(self.spec, **self.kwargs)

"""Modelled access statistics: the expectations of i.i.d. Zipf draws, for workloads without a trace.

Rank-frequency p_i = (i+1)^-alpha / H(N, alpha) and L = pooling x batch lookups
drawn i.i.d.: mass(k) = H(k)/H(N), and the expected distinct pages among ranks
>= k is sum_j 1 - (1 - P_j)^L over pages j (P_j = the page's probability),
exact for i.i.d. draws and evaluated numerically (exactly for the first pages,
then in geometric buckets of pages with their mean page mass). Everything
derived from it is labelled "modelled".
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from plans.cost import tt_flops_per_row
from plans.stats import GRID_LEVELS, page_geometry
from plans.types import StatsSource, TableStats, TTVariant, WorkloadStats
from tracegen.spec import DTYPE_BYTES, ModelSpec

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
    from emulator.tt.decomposition import factorize_dim, factorize_rows

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

"""LRU sizing: the DRAM an ``lru`` policy's caches need for a hit-ratio or batch-time target (modelled).

The caches are sized as ``plans.planner.lru_plan`` sizes them for a budget: one LRU cache per table, the
budget shared in proportion to the tables' lookups in the profiled batches (water-filled, never above a
table's rows), ``cache_bytes_per_row`` bytes per slot. Hits come from each table's exact **miss-ratio
curve**, computed by one stack-distance pass (Mattson et al.) per table over the profiled batches with a
Fenwick tree (``O(N log N)``), with the replay's batch semantics: a batch looks every row up before any of
its misses is admitted, so a row's distance is the number of other rows used more recently *at the start of
its batch*, and a row missed in a batch misses for every one of its lookups in that batch (one read).
(``tracegen.mrc`` counts per lookup, a textbook LRU; the replay's cache works per batch, hence this pass.)
The first ``warmup_batches`` profiled batches only fill the caches; hits and misses are counted on the
rest, so cold (first-ever) lookups after the warm-up count as misses, as they do in a replay.

What is modelled: the caches are fully associative and private per table (the replay's caches are
set-associative and shared by a group of tables), and the batch time of a cache size is the cost model's
(``plans.cost``) with the hits as DRAM lookups and every missed row of a batch as one read of its pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from tracegen.mrc import fenwick_add, fenwick_prefix, previous_occurrence

from plans.cost import (best_core_split, is_host_serial, local_io_times_s, option_device_times, option_dram_time_s,
                        option_host_parts_s)
from plans.sizing import Target
from plans.types import Calibration, DeviceProfile, Perf, TableLoad
from tracegen.errors import InputError
from tracegen.jit import njit

HIT_RATIO = "hit-ratio"
CURVE_POINTS = 12  # budgets on the printed curve (log-spaced), besides the one found


@njit
def _batch_stack_distances(prev, starts, out):  # pragma: no cover - compiled
    """``out[i]``: rows whose latest use precedes batch b's start and follows ``prev[i]`` (-1: first use)."""
    n = prev.size
    tree = np.zeros(n + 1, dtype=np.int64)  # Fenwick tree over positions: 1 where a row was last used
    for b in range(starts.size - 1):
        s, e = starts[b], starts[b + 1]
        for i in range(s, e):  # every row of the batch is looked up against the state at the batch's start
            j = prev[i]
            if j < 0:
                out[i] = -1
                continue
            out[i] = fenwick_prefix(tree, s) - fenwick_prefix(tree, j + 1)
        for i in range(s, e):  # then the batch's rows become the most recent ones
            j = prev[i]
            if j >= 0:
                fenwick_add(tree, j, -1)
            fenwick_add(tree, i, 1)


def batch_stack_distances(batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per batch (each an array of distinct rows), every row's stack distance at the batch's start: the
    batch hits row r in an LRU cache of C rows iff ``0 <= d < C`` (-1: never used before)."""
    keys = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches]) if batches else np.zeros(0, np.int64)
    starts = np.zeros(len(batches) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(b) for b in batches])
    out = np.empty(keys.size, dtype=np.int64)
    if keys.size:
        _batch_stack_distances(previous_occurrence(keys), starts, out)
    return [out[starts[i]:starts[i + 1]] for i in range(len(batches))]


@dataclass(frozen=True, eq=False)
class TableReuse:
    """One table's reuse on the counted batches: per (batch, distinct row) its distance (sorted; inf for a
    first use) and ``cum_lookups[i]``, the lookups of the ``i`` entries with the smallest distances."""

    name: str
    rows: int
    row_bytes: int
    pages_per_row: int
    slot_bytes: int  # DRAM per cache slot (row + metadata)
    profile_lookups: int  # lookups over every profiled batch (the budget's shares)
    distance: np.ndarray
    cum_lookups: np.ndarray

    @property
    def counted_lookups(self) -> int:
        return int(self.cum_lookups[-1])

    def hits(self, cache_rows: int) -> tuple[int, int]:
        """(lookups hit, distinct rows hit, summed over the counted batches) with a cache of ``cache_rows``."""
        i = int(np.searchsorted(self.distance, cache_rows, side="left"))
        return int(self.cum_lookups[i]), i


def table_reuse(name: str, rows: int, row_bytes: int, pages_per_row: int, slot_bytes: int,
                batches: Sequence[np.ndarray], warmup_batches: int) -> TableReuse:
    """A table's :class:`TableReuse` from its lookups (row ids) in each profiled batch."""
    uniq = [np.unique(np.asarray(b, dtype=np.int64), return_counts=True) for b in batches]
    dist = batch_stack_distances([u for u, _ in uniq])
    d = np.concatenate(dist[warmup_batches:]) if len(batches) > warmup_batches else np.zeros(0, np.int64)
    c = np.concatenate([n for _, n in uniq[warmup_batches:]]) if len(batches) > warmup_batches else np.zeros(0)
    df = np.where(d < 0, np.inf, d.astype(np.float64))
    order = np.argsort(df, kind="stable")
    cum = np.zeros(d.size + 1, dtype=np.int64)
    np.cumsum(c[order], out=cum[1:])
    return TableReuse(name, int(rows), int(row_bytes), int(pages_per_row), int(slot_bytes),
                      int(sum(len(b) for b in batches)), df[order], cum)


@dataclass(frozen=True)
class LruPoint:
    """One cache budget: the DRAM its caches hold, the hit ratio on the counted batches, misses, the
    modelled batch time and its bottleneck."""

    budget_bytes: int
    cache_bytes: int
    hit_ratio: float
    missed_rows_per_batch: float
    batch_s: float
    bottleneck: str

    def to_dict(self) -> dict[str, Any]:
        return {"budget_bytes": self.budget_bytes, "cache_bytes": self.cache_bytes, "hit_ratio": self.hit_ratio,
                "missed_rows_per_batch": self.missed_rows_per_batch, "predicted_batch_s": self.batch_s,
                "bottleneck": self.bottleneck}


def water_fill_rows(reuse: Sequence[TableReuse], budget_bytes: int) -> np.ndarray:
    """Cache rows per table for ``budget_bytes``, exactly as ``plans.planner.lru_plan`` shares a budget."""
    from plans.planner import water_fill

    weights = np.array([t.profile_lookups for t in reuse], dtype=np.float64)
    slot = np.array([t.slot_bytes for t in reuse], dtype=np.float64)
    caps = np.array([t.rows for t in reuse], dtype=np.float64) * slot
    alloc = water_fill(weights, caps, budget_bytes)
    return (alloc // slot).astype(np.int64)


def one_device_perf(loads: Sequence[TableLoad], calib: Calibration, device: DeviceProfile) -> Perf:
    """The cost model's batch time when every table's cold rows are on ``device`` (as in ``plans.cost``)."""
    if is_host_serial([device], calib):
        parts = np.array([option_host_parts_s(ld, calib.host) for ld in loads]).reshape(-1, 3)
        reads, pages = sum(ld.io_reads for ld in loads), sum(ld.io_pages for ld in loads)
        shared = calib.host.batch_s + float(parts[:, 0].sum()) + (calib.host.io_device_s if reads > 0 else 0.0)
        host = shared + float(parts[:, 1].sum() + parts[:, 2].sum())
        io = local_io_times_s([reads], [pages], calib, [device.queue_depth], host_s=host)
        return Perf(shared, io, (float(parts[:, 1].sum()),), (float(parts[:, 2].sum()),), host_s=host,
                    execution="host-serial")
    dram = sum(option_dram_time_s(ld, calib) for ld in loads)
    io, mem, comp = (float(x) for x in np.sum([option_device_times(ld, device) for ld in loads], axis=0))
    m, _ = best_core_split(mem, comp, device.cores)
    split = (lambda w, c: 0.0 if w <= 0 else (w / c if c > 0 else math.inf))
    return Perf(dram, (io,), (split(mem, m),), (split(comp, device.cores - m),))


@dataclass(frozen=True, eq=False)
class LruProfile:
    """Every table's reuse, and how many batches were counted (after ``warmup_batches``)."""

    tables: tuple[TableReuse, ...]
    profile_batches: int
    warmup_batches: int

    @property
    def counted_batches(self) -> int:
        return self.profile_batches - self.warmup_batches

    @property
    def max_bytes(self) -> int:
        """The budget at which every table's cache holds all its rows."""
        return int(sum(t.rows * t.slot_bytes for t in self.tables))

    def point(self, budget_bytes: int, calib: Calibration, device: DeviceProfile) -> LruPoint:
        rows = water_fill_rows(self.tables, budget_bytes)
        nb = max(self.counted_batches, 1)
        loads, hit_total, looks_total, missed = [], 0, 0, 0.0
        for t, c in zip(self.tables, rows):
            hit_l, hit_u = t.hits(int(c))
            looks = t.counted_lookups
            miss_u = (t.distance.size - hit_u) / nb
            miss_l = (looks - hit_l) / nb
            hit_total, looks_total, missed = hit_total + hit_l, looks_total + looks, missed + miss_u
            loads.append(TableLoad(hit_l / nb, t.row_bytes, miss_l, miss_u * t.pages_per_row, 0.0, 0.0,
                                   int(c) * t.slot_bytes, 0, 0, 0.0, lookups=looks / nb, io_reads=miss_u,
                                   raw_active=-math.expm1(-miss_l)))
        perf = one_device_perf(loads, calib, device)
        cache = int(sum(int(c) * t.slot_bytes for t, c in zip(self.tables, rows)))
        return LruPoint(int(budget_bytes), cache, hit_total / looks_total if looks_total else 1.0, missed,
                        perf.total_s, perf.bottleneck)


@dataclass(frozen=True)
class LruSizing:
    """The smallest cache budget meeting the target (None with ``reason`` when even caching every row does
    not), and a curve of budgets (modelled batch times)."""

    target: str
    found: LruPoint | None
    curve: tuple[LruPoint, ...]
    reason: str | None
    counted_batches: int
    warmup_batches: int

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "found": None if self.found is None else self.found.to_dict(),
                "reason": self.reason, "curve": [p.to_dict() for p in self.curve],
                "counted_batches": self.counted_batches, "warmup_batches": self.warmup_batches,
                "basis": "modelled (batch times from the cost model; hit ratios exact on the profiled batches)",
                "method": "exact batch-granular LRU stack distances per table (Fenwick tree), bisection on "
                          "the budget"}


def size_lru(profile: LruProfile, calib: Calibration, device: DeviceProfile, target: Target | None,
             batch_size: int, hit_ratio: float | None = None, resolution_bytes: int | None = None) -> LruSizing:
    """Bisect the budget for the smallest one whose caches reach ``hit_ratio`` (or meet ``target``)."""
    if (target is None) == (hit_ratio is None):
        raise InputError("LRU sizing needs one target: a hit ratio or a batch-time target")
    if hit_ratio is not None and not 0 < hit_ratio <= 1:
        raise InputError(f"--target-hit-ratio must be in (0, 1], got {hit_ratio}")
    point: Callable[[int], LruPoint] = lambda b: profile.point(b, calib, device)  # noqa: E731
    if target is not None:
        limit = target.batch_s_limit(batch_size)
        meets, text = (lambda p: p.batch_s <= limit * (1 + 1e-12)), target.describe()
    else:
        meets, text = (lambda p: p.hit_ratio >= hit_ratio - 1e-12), f"hit ratio >= {hit_ratio:g}"
    top_b = profile.max_bytes
    curve = {b: point(b) for b in sorted({0, top_b, *np.geomspace(max(top_b, 1) / 4096, max(top_b, 1),
                                                                 CURVE_POINTS).astype(np.int64).tolist()})}
    if not meets(curve[top_b]):
        p = curve[top_b]
        reason = (f"even caching every row ({top_b:,} B) misses: hit ratio {p.hit_ratio:.3f} (first lookups miss), "
                  f"predicted {p.batch_s * 1e3:.4g} ms (modelled)")
        return LruSizing(text, None, tuple(curve.values()), reason, profile.counted_batches, profile.warmup_batches)
    step = max(1, resolution_bytes or top_b // 4096)
    lo, hi = 0, top_b  # hi meets the target; lo misses it (unless budget 0 meets it)
    if meets(curve[0]):
        hi = 0
    while hi - lo > step:
        mid = (lo + hi) // 2
        p = curve[mid] = curve.get(mid) or point(mid)
        lo, hi = (lo, mid) if meets(p) else (mid, hi)
    return LruSizing(text, curve[hi], tuple(curve[b] for b in sorted(curve)), None, profile.counted_batches,
                     profile.warmup_batches)


def lru_profile(store, reader, profile_batches: int, warmup_batches: int) -> LruProfile:
    """Every table's :class:`TableReuse` over the trace's first ``profile_batches`` batches."""
    from emulator.replay.cache import cache_bytes_per_row

    nb = min(int(profile_batches), reader.num_batches)
    if nb < 2:
        raise InputError(f"LRU sizing needs at least 2 profiled batches (one to warm the caches), got {nb}",
                         reader.path)
    warm = min(max(int(warmup_batches), 0), nb - 1)
    per_table: list[list[np.ndarray]] = [[] for _ in store.tables]
    for b in reader.batches(0, nb):
        bounds = b.table_bounds()
        for t in range(len(store.tables)):
            per_table[t].append(b.indices[bounds[t]:bounds[t + 1]])
    tables = []
    for t, entry in enumerate(store.tables):
        pages = max(1, -(-entry.row_bytes // 4096))  # a cached table's row is read as whole pages
        tables.append(table_reuse(entry.name, entry.rows, entry.row_bytes, pages,
                                  cache_bytes_per_row(entry.row_bytes), per_table[t], warm))
        per_table[t] = []
    return LruProfile(tuple(tables), nb, warm)

"""Per-table replay figures (FBGEMM #5633 asks for them): lookups by tier, cache hits, bytes read, TT rows
rebuilt and busy time, per embedding table.

:func:`table_counters` is a pure function of one finished batch (its
:class:`~emulator.replay.types.Prepared` and :class:`~emulator.replay.types.BatchWork`) and the replay's
tables; it returns a :class:`TableCounters` of arrays indexed by table. :class:`TableTotals` adds them up over
a run (owned by :class:`emulator.replay.counters.ReplayStats`, which gives the top tables to the live view and
every table to the result file).

Conventions (those of :class:`emulator.replay.counters.TierCounters`, per table):

* lookups per tier in :data:`TABLE_TIERS` order: ``dram`` (hot rows; LRU hits are not counted here),
  ``ssd_raw`` (rows read from pages), ``ssd_tt`` (rows rebuilt from TT cores), ``lru`` (probes of an LRU
  cache); ``hits`` the probes the cache served. A table's lookups served are ``dram + ssd_raw + ssd_tt + hits``;
* ``bytes_read``/``ios``: the page reads planned for the table's rows (what its device read);
* ``tt_rows``: unique rows rebuilt (a row looked up twice in a batch is rebuilt once);
* ``busy_s`` (measured, then *attributed*): the kernel time of the calls a table was in, shared by the tables
  of a call in proportion to their lookups. When the engine fills ``BatchWork.table_busy_s`` that is used as
  is; otherwise each tier's total (``dram_s``, each device's ``mem_s`` and ``compute_s``) is shared by the
  tables' lookups in that tier on that device (LRU hits count as DRAM rows, pooled from host memory). Time of
  a tier with no lookups to share it goes to ``unattributed_s``.

The engine's call, once per finished batch (``Replayer._record``)::

    stats.record_batch(..., tables=table_counters(p, info, self.tables))

and, to attribute time per kernel call rather than per tier, before that (``Replayer.finish``)::

    work.table_busy_s = np.zeros(len(self.tables))
    add_table_busy(work.table_busy_s, [tab.index], [1], dt)        # a slow-path table's rebuild or pooling call
    add_table_busy(work.table_busy_s, w.group.tables, w.counts, dt)  # a group's pooling call
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from emulator.tiers import (
    COLD_RAW,
    COUNTED_TIERS,
    DRAM,
    KIND_DRAM,
    KIND_PAGE,
    KIND_STAGED,
    LRU,
    SSD_RAW,
    SSD_TT,
)

TABLE_TIERS = COUNTED_TIERS  # columns of TableCounters.lookups: dram, ssd_raw, ssd_tt, lru
_COL = {name: k for k, name in enumerate(TABLE_TIERS)}
BUSY_BASIS = ("measured kernel time, attributed: a call's time shared by its tables in proportion to their "
              "lookups")

__all__ = ["BUSY_BASIS", "TABLE_TIERS", "TableCounters", "TableTotals", "TableView", "add_table_busy",
           "table_counters"]


@dataclass(frozen=True)
class TableCounters:
    """One batch's (or a run's) figures per table; every array is indexed by table."""

    names: tuple[str, ...]
    lookups: np.ndarray  # (T, 4) int64, per tier in TABLE_TIERS order
    hits: np.ndarray  # (T,) int64 LRU hits
    bytes_read: np.ndarray  # (T,) int64
    ios: np.ndarray  # (T,) int64 reads
    tt_rows: np.ndarray  # (T,) int64 unique rows rebuilt
    busy_s: np.ndarray  # (T,) float64, attributed
    unattributed_s: float = 0.0  # tier time with no lookups of that tier to share it

    @property
    def num_tables(self) -> int:
        return len(self.names)

    def tier(self, name: str) -> np.ndarray:
        """Lookups of tier ``name`` per table."""
        return self.lookups[:, _COL[name]]

    @property
    def served(self) -> np.ndarray:
        """Lookups per table (each counted once: DRAM, raw, TT or an LRU hit)."""
        return self.tier(DRAM) + self.tier(SSD_RAW) + self.tier(SSD_TT) + self.hits


def _empty(names: Sequence[str]) -> TableCounters:
    n = len(names)
    return TableCounters(tuple(names), np.zeros((n, len(TABLE_TIERS)), np.int64), np.zeros(n, np.int64),
                         np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n))


# --- one batch ---------------------------------------------------------------------------------


def table_counters(p, work, tables: Sequence[Any]) -> TableCounters:
    """Per-table figures of one finished batch: ``p`` its :class:`~emulator.replay.types.Prepared`, ``work`` its
    :class:`~emulator.replay.types.BatchWork`, ``tables`` the replay's :class:`~emulator.replay.tables.Table` s
    (in table order: names, devices, LRU caches). Pure: reads its arguments, changes none."""
    c = _empty([t.name for t in tables])
    look, hits, tt = c.lookups, c.hits, c.tt_rows
    for j, t in enumerate(p.slow_tables):
        _slow_table(p.slow[j], tables[t], look[t], hits[t:t + 1], tt[t:t + 1])
    for w in p.works:
        _group(w, look, hits, tt)
    for r in p.reads:
        if r is not None and r.count:
            c.bytes_read[:] += np.bincount(r.tables, weights=r.nbytes, minlength=len(tables)).astype(np.int64)
            c.ios[:] += np.bincount(r.tables, minlength=len(tables))
    given = getattr(work, "table_busy_s", None)
    if given is not None:
        busy = np.asarray(given, np.float64)
        if busy.shape != (len(tables),):
            raise ValueError(f"BatchWork.table_busy_s has shape {busy.shape}, expected ({len(tables)},)")
        c.busy_s[:] = busy
        return c
    unattributed = _attribute_tiers(c, work, np.array([t.device for t in tables], np.int64))
    return TableCounters(c.names, look, hits, c.bytes_read, c.ios, tt, c.busy_s, unattributed)


def _slow_table(lk, tab, look: np.ndarray, hits: np.ndarray, tt: np.ndarray) -> None:
    n_kind = np.bincount(lk.kind, minlength=3)
    h = 0
    if tab.cache is not None:  # hits are DRAM lookups at cache slots, which follow the hot prefix
        h = int(np.count_nonzero((lk.kind == KIND_DRAM) & (lk.loc >= tab.cache.prefix_rows)))
        look[_COL[LRU]] = h + int(n_kind[KIND_PAGE])  # every cold lookup of the table probes its cache
    look[_COL[DRAM]] = int(n_kind[KIND_DRAM]) - h
    look[_COL[SSD_RAW]] = int(n_kind[KIND_PAGE])
    look[_COL[SSD_TT]] = int(n_kind[KIND_STAGED])
    hits[0] = h
    tt[0] = 0 if lk.tt_rows is None else lk.tt_rows.size


def _group(w, look: np.ndarray, hits: np.ndarray, tt: np.ndarray) -> None:
    """A group's members: lookups are member-major, so each member's counts are counts over its segment."""
    g = w.group
    members = g.tables
    look[members, _COL[DRAM]] = w.counts
    if not w.n_cold:
        return
    cum = np.zeros(members.size + 1, np.int64)
    np.cumsum(w.counts, out=cum[1:])
    kind = w.kind
    has_raw, has_tt = bool((g.cold_kind == COLD_RAW).any()), bool(g.tt_members)
    zero = np.zeros(members.size, np.int64)
    if has_raw and has_tt:
        page, staged = _segment_counts(kind == KIND_PAGE, cum), _segment_counts(kind == KIND_STAGED, cum)
    elif has_raw:  # kinds are KIND_DRAM (0) and KIND_PAGE
        page, staged = _segment_counts(kind, cum), zero
    else:  # KIND_DRAM (0) and KIND_STAGED
        page, staged = zero, _segment_counts(kind, cum)
    h = zero.copy()
    if g.cache is not None:  # hits are DRAM lookups at cache slots, which follow the group's hot rows
        prefix = g.cache.prefix_rows
        for k in np.flatnonzero(g.lru).tolist():  # only LRU members probe the cache
            a, b = int(cum[k]), int(cum[k + 1])
            h[k] = np.count_nonzero((kind[a:b] == KIND_DRAM) & (w.loc[a:b] >= prefix))
        look[members, _COL[LRU]] = np.where(g.lru, h + page, 0)  # an LRU member's raw cold lookups all probe
    look[members, _COL[DRAM]] = w.counts - page - staged - h
    look[members, _COL[SSD_RAW]] = page
    look[members, _COL[SSD_TT]] = staged
    hits[members] = h
    for m, rows in w.tt_rows:
        tt[int(members[m])] = rows.size


def _segment_counts(values: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Nonzero ``values[cum[k]:cum[k + 1]]`` per segment ``k`` (``count_nonzero`` per slice: no cast of the
    whole array, unlike ``np.add.reduceat``; about 25x faster here on a group of 224 tables)."""
    c = cum.tolist()
    return np.fromiter((np.count_nonzero(values[a:b]) for a, b in zip(c[:-1], c[1:])), np.int64, len(c) - 1)


def _attribute_tiers(c: TableCounters, work, device: np.ndarray) -> float:
    """Share each tier's busy time by the tables' lookups in it (per device for the SSD tiers); returns the time
    no lookup could take."""
    left = 0.0
    left += _share(c.busy_s, c.tier(DRAM) + c.hits, work.dram_s)
    for d, (mem, comp) in enumerate(zip(work.mem_s, work.compute_s)):
        on = device == d
        left += _share(c.busy_s, np.where(on, c.tier(SSD_RAW), 0), mem)
        left += _share(c.busy_s, np.where(on, c.tier(SSD_TT), 0), comp)
    return left


def _share(busy: np.ndarray, weights: np.ndarray, seconds: float) -> float:
    total = int(weights.sum())
    if not seconds:
        return 0.0
    if total == 0:
        return float(seconds)
    busy += seconds * (weights / total)
    return 0.0


def add_table_busy(busy: np.ndarray, tables: Sequence[int] | np.ndarray, lookups: Sequence[int] | np.ndarray,
                   seconds: float) -> None:
    """Add one kernel call's ``seconds`` to ``busy`` (indexed by table), shared by the call's ``tables`` in
    proportion to their ``lookups`` (evenly if none has any). For the engine's ``BatchWork.table_busy_s``."""
    idx = np.asarray(tables, np.int64)
    w = np.asarray(lookups, np.float64)
    total = w.sum()
    np.add.at(busy, idx, seconds * (w / total if total > 0 else np.full(idx.size, 1.0 / max(1, idx.size))))


# --- a run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableView:
    """One table's totals over a run (as in the result file's ``tables`` list)."""

    index: int
    name: str
    lookups: int  # served: dram + ssd_raw + ssd_tt + lru_hits
    dram: int
    ssd_raw: int
    ssd_tt: int
    lru: int  # probes
    lru_hits: int
    bytes_read: int
    ios: int
    tt_rows: int
    busy_s: float  # attributed (BUSY_BASIS)
    busy_share: float  # of every table's busy time

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class TableTotals:
    """Per-table sums over a run (not thread-safe: :class:`ReplayStats` holds its lock around it)."""

    def __init__(self) -> None:
        self._c: TableCounters | None = None
        self.unattributed_s = 0.0

    @property
    def num_tables(self) -> int:
        return 0 if self._c is None else self._c.num_tables

    def add(self, c: TableCounters) -> None:
        if self._c is None:
            self._c = _empty(c.names)
        elif c.names != self._c.names:
            raise ValueError(f"per-table counters of {c.num_tables} tables do not match the run's "
                             f"{self._c.num_tables} (a different store?)")
        t = self._c
        for a, b in ((t.lookups, c.lookups), (t.hits, c.hits), (t.bytes_read, c.bytes_read), (t.ios, c.ios),
                     (t.tt_rows, c.tt_rows), (t.busy_s, c.busy_s)):
            a += b
        self.unattributed_s += float(c.unattributed_s)

    def order(self) -> np.ndarray:
        """Table indices, busiest first (then by lookups served, then by index)."""
        if self._c is None:
            return np.zeros(0, np.int64)
        return np.lexsort((np.arange(self.num_tables), -self._c.served, -self._c.busy_s))

    def views(self, top: int | None = None) -> tuple[TableView, ...]:
        """The ``top`` busiest tables (every table if None), busiest first."""
        c = self._c
        if c is None:
            return ()
        idx = self.order()[:top]
        served, total_busy = c.served, float(c.busy_s.sum())
        return tuple(TableView(int(i), c.names[i], int(served[i]), *(int(x) for x in c.lookups[i, :3]),
                               int(c.lookups[i, 3]), int(c.hits[i]), int(c.bytes_read[i]), int(c.ios[i]),
                               int(c.tt_rows[i]), float(c.busy_s[i]),
                               float(c.busy_s[i]) / total_busy if total_busy > 0 else 0.0) for i in idx)

    def rows(self) -> list[dict[str, Any]]:
        """Every table's totals in table order, as plain dicts (the result file's ``tables`` list)."""
        return [v.to_dict() for v in sorted(self.views(), key=lambda v: v.index)]

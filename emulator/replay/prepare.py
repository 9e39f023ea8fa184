"""One batch's plan, before any IO: its lookups translated, split by tier and located, its page reads planned.

:func:`prepare_batch` takes the slow-path tables one by one (remap, LRU cache
probe, :func:`emulator.io.plan_row_reads` per table) and the groups with
:func:`emulator.replay.groups.prepare_group`, then plans each device's group
raw reads at once (:func:`emulator.replay.groups.plan_raw`) and concatenates
every device's reads. The result, a :class:`_Prepared`, is what the engine's
``start_io`` and ``finish`` (and ``--verify``, the accuracy replay and the host
cost fit) consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emulator.kernels.pooling import KIND_DRAM, KIND_PAGE, KIND_STAGED
from tracegen.trace_io import Batch


@dataclass
class _Prepared:
    batch: Batch
    s_kinds: list[np.ndarray]  # per slow-path table (Replayer._slow)
    s_locs: list[np.ndarray]
    s_offsets: list[np.ndarray]
    s_old_ids: list[np.ndarray]
    s_tt_rows: list[np.ndarray | None]  # unique old ids to rebuild, per slow-path table
    reads: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per device
    dest: np.ndarray
    tier_lookups: dict[str, int]
    read_tables: list = field(default_factory=list)  # per device: table index of each read
    cache_work: dict = field(default_factory=dict)  # table -> (hit slots to unpin, (rows, dest offsets) to admit)
    lru_hits: int = 0
    handles: list = field(default_factory=list)
    t_start: float = 0.0
    works: list = field(default_factory=list)  # per group: emulator.replay.groups.GroupWork
    dev_lookups: dict = field(default_factory=dict)  # tier -> lookups per device
    slow_tables: list = field(default_factory=list)  # table index of each slow-path entry
    _per_table: list | None = None

    def _tables(self) -> list:
        """Per table (in table order): (kinds, locs, offsets rebased to 0, old ids, unique TT rows or None).
        Built on first use (verify, accuracy, host fitting); group tables' arrays are views of the group's,
        their DRAM ``locs`` count from the group's DRAM array."""
        if self._per_table is None:
            views: list = [None] * self.batch.num_tables
            for j, t in enumerate(self.slow_tables):
                views[t] = (self.s_kinds[j], self.s_locs[j], self.s_offsets[j], self.s_old_ids[j],
                            self.s_tt_rows[j])
            for w in self.works:
                cum = np.concatenate([[0], np.cumsum(w.counts)])
                tt = dict(w.tt_rows)
                for k, t in enumerate(w.group.tables):
                    ids, off = self.batch.table(int(t))
                    a, b = int(cum[k]), int(cum[k + 1])
                    views[int(t)] = (w.kind[a:b], w.loc[a:b], off, ids, tt.get(k))
            self._per_table = views
        return self._per_table

    @property
    def kinds(self) -> list[np.ndarray]:
        return [v[0] for v in self._tables()]

    @property
    def locs(self) -> list[np.ndarray]:
        return [v[1] for v in self._tables()]

    @property
    def offsets(self) -> list[np.ndarray]:
        return [v[2] for v in self._tables()]

    @property
    def old_ids(self) -> list[np.ndarray]:
        return [v[3] for v in self._tables()]

    @property
    def tt_rows(self) -> list[np.ndarray | None]:
        return [v[4] for v in self._tables()]


def prepare_batch(batch: Batch, slow: list, groups: list, dev_files: list, max_read_bytes: int,
                  clock: Callable[[], float], buffer: Callable[[int], np.ndarray]) -> _Prepared:
    """Split lookups by tier and plan the page reads (no IO yet).

    ``slow``: the tables served one by one, ``groups``: the batched path's groups, ``dev_files``: per device, its
    group raw files' (first global page, file id, table index) arrays (see :func:`emulator.replay.tables.open_tables`);
    ``clock``: the replay's clock; ``buffer(nbytes)``: the destination buffer of the batch's reads."""
    from emulator.io import plan_row_reads
    from emulator.io.types import PAGE_BYTES
    from emulator.replay.groups import plan_raw, prepare_group

    t_start = clock()
    kinds, locs, offs, olds, tt_rows = [], [], [], [], []
    per_dev: list[list[tuple]] = [[] for _ in dev_files]
    dest_pos = 0
    tiers = {"dram": 0, "ssd_raw": 0, "ssd_tt": 0, "lru": 0}
    lru_hits = 0
    cache_work: dict[int, tuple] = {}
    n_dev = len(dev_files)
    dev_lookups = {"ssd_raw": np.zeros(n_dev, np.int64), "ssd_tt": np.zeros(n_dev, np.int64)}
    for tab in slow:
        ids, off = batch.table(tab.index)
        new = ids if tab.new_ids is None else tab.new_ids(ids)
        kind = np.zeros(ids.size, dtype=np.uint8)
        loc = new.astype(np.int64, copy=True)
        cold = new >= tab.hot
        n_cold = int(cold.sum()) if tab.hot else ids.size
        tiers["dram"] += ids.size - n_cold
        tt_unique = None
        if n_cold:
            cold_idx = np.flatnonzero(cold)
            cold_old = ids[cold_idx]
            if tab.tt is None:
                hit_slots = admit = None
                read_idx, read_rows = cold_idx, cold_old
                if tab.cache is not None:
                    from emulator.replay.cache import split_hits

                    hit, hit_slots, miss_rows, miss_inv = split_hits(tab.cache, cold_old, pin=True)
                    kind[cold_idx[hit]] = KIND_DRAM
                    loc[cold_idx[hit]] = hit_slots
                    tiers["lru"] += n_cold
                    lru_hits += int(hit_slots.size)
                    read_idx, read_rows = cold_idx[~hit], miss_rows
                if read_rows.size:
                    plan = plan_row_reads(read_rows, tab.layout.rows_per_page, tab.layout.pages_per_row,
                                          tab.layout.row_bytes, max_read_bytes=max_read_bytes)
                    kind[read_idx] = KIND_PAGE
                    dest_rows = plan.row_dest_offsets + dest_pos
                    loc[read_idx] = dest_rows if tab.cache is None else dest_rows[miss_inv]
                    per_dev[tab.device].append((tab.file_id, plan.read_offsets, plan.read_nbytes,
                                                plan.dest_offsets + dest_pos, tab.index))
                    dest_pos += plan.dest_bytes
                    if tab.cache is not None:
                        admit = (read_rows, dest_rows)
                tiers["ssd_raw"] += read_idx.size
                dev_lookups["ssd_raw"][tab.device] += read_idx.size
                if tab.cache is not None:
                    cache_work[tab.index] = (hit_slots, admit)
            else:
                tt_unique, inverse = np.unique(cold_old, return_inverse=True)
                kind[cold_idx] = KIND_STAGED
                loc[cold_idx] = inverse
                tiers["ssd_tt"] += n_cold
                dev_lookups["ssd_tt"][tab.device] += n_cold
        kinds.append(kind)
        locs.append(loc)
        offs.append(off)
        olds.append(ids)
        tt_rows.append(tt_unique)
    works, raw_pending = [], [[] for _ in range(n_dev)]
    for g in groups:
        w = prepare_group(g, batch, n_dev, raw_pending)
        works.append(w)
        n_page, n_tt = int(w.page_per_dev.sum()), int(w.tt_per_dev.sum())
        tiers["dram"] += w.ids.size - n_page - n_tt
        tiers["ssd_raw"] += n_page
        tiers["ssd_tt"] += n_tt
        dev_lookups["ssd_raw"] += w.page_per_dev
        dev_lookups["ssd_tt"] += w.tt_per_dev
    reads, read_tables = [], []
    for dev, reqs in enumerate(per_dev):
        parts = [(np.full(r[1].size, r[0], np.int64), r[1], r[2], r[3], np.full(r[1].size, r[4], np.int64))
                 for r in reqs]
        if raw_pending[dev]:
            base, fids, ftabs = dev_files[dev]
            *req, used = plan_raw(raw_pending[dev], base, fids, ftabs, dest_pos, max_read_bytes,
                                  PAGE_BYTES)
            parts.append(tuple(req))
            dest_pos += used
        if parts:
            cat = [np.concatenate([q[j] for q in parts]) for j in range(5)]
            reads.append(tuple(cat[:4]))
            read_tables.append(cat[4])
        else:
            reads.append(None)
            read_tables.append(None)
    dest = buffer(dest_pos)
    return _Prepared(batch, kinds, locs, offs, olds, tt_rows, reads, dest, tiers, read_tables=read_tables,
                     cache_work=cache_work, lru_hits=lru_hits, t_start=t_start, works=works,
                     dev_lookups=dev_lookups, slow_tables=[tab.index for tab in slow])

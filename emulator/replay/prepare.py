"""One batch's plan, before any IO: its lookups translated, split by tier and located, its page reads planned.

:func:`prepare_batch` takes the slow-path tables one by one
(:func:`prepare_slow_table`: remap, LRU cache probe,
:func:`emulator.io.plan_row_reads`) and the groups with
:func:`emulator.replay.groups.prepare_group`, then plans each device's group
raw reads at once (:func:`emulator.replay.groups.plan_raw`) and concatenates
every device's reads. The result, a :class:`emulator.replay.types.Prepared`,
is what the engine's ``start_io`` and ``finish`` (and ``--verify``, the
accuracy replay and the host cost fit) consume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emulator.replay.types import CacheWork, DeviceReads, Prepared, TableLookups
from emulator.tiers import DRAM, KIND_DRAM, KIND_PAGE, KIND_STAGED, LRU, SSD_RAW, SSD_TT
from tracegen.trace_io import Batch


@dataclass
class _Pending:
    """A batch's bookkeeping while it is being prepared."""

    n_dev: int
    dest_pos: int = 0  # bytes of the destination buffer planned so far
    tiers: dict[str, int] = field(default_factory=lambda: {DRAM: 0, SSD_RAW: 0, SSD_TT: 0, LRU: 0})
    lru_hits: int = 0
    cache_work: dict[int, CacheWork] = field(default_factory=dict)
    per_dev: list[list[tuple]] = field(default_factory=list)  # per device: (file id, offsets, nbytes, dest, table)
    dev_lookups: dict[str, np.ndarray] = field(default_factory=dict)
    dev_prep_s: np.ndarray | None = None  # per device: CPU seconds of the device-side steps (see prepare_batch)

    def __post_init__(self) -> None:
        self.dev_prep_s = np.zeros(self.n_dev)
        self.per_dev = [[] for _ in range(self.n_dev)]
        self.dev_lookups = {SSD_RAW: np.zeros(self.n_dev, np.int64), SSD_TT: np.zeros(self.n_dev, np.int64)}


def prepare_batch(batch: Batch, slow: list, groups: list, dev_files: list, max_read_bytes: int,
                  clock: Callable[[], float], buffer: Callable[[int], np.ndarray]) -> Prepared:
    """Split lookups by tier and plan the page reads (no IO yet).

    The steps SCRec's devices do for their own rows (locating cold rows in pages and planning the device's
    de-duplicated, coalesced page reads; de-duplicating its TT rows) are timed per device (``Prepared.device_prep_s``, thread-CPU seconds): the
    device clock runs them on the device under a target profile.

    ``slow``: the tables served one by one, ``groups``: the batched path's groups, ``dev_files``: per device, its
    group raw files' (first global page, file id, table index) arrays (see :func:`emulator.replay.tables.open_tables`);
    ``clock``: the replay's clock; ``buffer(nbytes)``: the destination buffer of the batch's reads."""
    from emulator.replay.groups import prepare_group

    t_start = clock()
    st = _Pending(len(dev_files))
    slow_lookups = [prepare_slow_table(tab, batch, st, max_read_bytes) for tab in slow]
    works, raw_pending = [], [[] for _ in range(st.n_dev)]
    for g in groups:
        w = prepare_group(g, batch, st.n_dev, raw_pending)
        works.append(w)
        n_page, n_tt = int(w.page_per_dev.sum()), int(w.tt_per_dev.sum())
        st.tiers[DRAM] += w.ids.size - n_page - n_tt - w.lru_hits
        st.tiers[LRU] += w.lru_lookups
        st.lru_hits += w.lru_hits
        st.tiers[SSD_RAW] += n_page
        st.tiers[SSD_TT] += n_tt
        st.dev_lookups[SSD_RAW] += w.page_per_dev
        st.dev_lookups[SSD_TT] += w.tt_per_dev
        if w.cold_prep_s:
            cold = w.page_per_dev + w.tt_per_dev
            st.dev_prep_s += w.cold_prep_s * cold / max(1, int(cold.sum()))
    reads = [_device_reads(st, dev, raw_pending[dev], dev_files[dev], max_read_bytes) for dev in range(st.n_dev)]
    return Prepared(batch, slow_lookups, [tab.index for tab in slow], reads, buffer(st.dest_pos), st.tiers,
                    st.dev_lookups, works=works, cache_work=st.cache_work, lru_hits=st.lru_hits, t_start=t_start,
                    device_prep_s=st.dev_prep_s)


def prepare_slow_table(tab, batch: Batch, st: _Pending, max_read_bytes: int) -> TableLookups:
    """One slow-path table's lookups: translated, split into DRAM / LRU hits / page reads / TT rows."""
    ids, off = batch.table(tab.index)
    new = ids if tab.new_ids is None else tab.new_ids(ids)
    kind = np.zeros(ids.size, dtype=np.uint8)
    loc = new.astype(np.int64, copy=True)
    cold = new >= tab.hot
    n_cold = int(cold.sum()) if tab.hot else ids.size
    st.tiers[DRAM] += ids.size - n_cold
    tt_unique = None
    if n_cold:
        cold_idx = np.flatnonzero(cold)
        if tab.tt is None:
            _plan_raw_table(tab, cold_idx, ids[cold_idx], kind, loc, st, max_read_bytes)
        else:
            tt_unique, inverse = np.unique(ids[cold_idx], return_inverse=True)
            kind[cold_idx] = KIND_STAGED
            loc[cold_idx] = inverse
            st.tiers[SSD_TT] += n_cold
            st.dev_lookups[SSD_TT][tab.device] += n_cold
    return TableLookups(kind, loc, off, ids, tt_unique)


def _plan_raw_table(tab, cold_idx: np.ndarray, cold_old: np.ndarray, kind: np.ndarray, loc: np.ndarray,
                    st: _Pending, max_read_bytes: int) -> None:
    """The cold lookups of a raw table: LRU hits (if it has a cache) become DRAM rows, the rest page reads."""
    from emulator.io import plan_row_reads

    read_idx, read_rows, hit_slots, miss_inv = cold_idx, cold_old, None, None
    if tab.cache is not None:
        from emulator.replay.cache import split_hits

        hit, hit_slots, read_rows, miss_inv = split_hits(tab.cache, cold_old, pin=True)
        kind[cold_idx[hit]] = KIND_DRAM
        loc[cold_idx[hit]] = hit_slots
        st.tiers[LRU] += cold_idx.size
        st.lru_hits += int(hit_slots.size)
        read_idx = cold_idx[~hit]
    admit = None
    if read_rows.size:
        lay = tab.layout
        plan = plan_row_reads(read_rows, lay.rows_per_page, lay.pages_per_row, lay.row_bytes,
                              max_read_bytes=max_read_bytes)
        kind[read_idx] = KIND_PAGE
        dest_rows = plan.row_dest_offsets + st.dest_pos
        loc[read_idx] = dest_rows if tab.cache is None else dest_rows[miss_inv]
        st.per_dev[tab.device].append((tab.file_id, plan.read_offsets, plan.read_nbytes,
                                       plan.dest_offsets + st.dest_pos, tab.index))
        st.dest_pos += plan.dest_bytes
        admit = (read_rows, dest_rows)
    st.tiers[SSD_RAW] += read_idx.size
    st.dev_lookups[SSD_RAW][tab.device] += read_idx.size
    if tab.cache is not None:
        st.cache_work[tab.index] = CacheWork(hit_slots, *(admit or (None, None)))


def _device_reads(st: _Pending, dev: int, raw_pending: list, files: tuple, max_read_bytes: int) \
        -> DeviceReads | None:
    """One device's reads: its slow-path tables' reads, then its groups' raw reads planned at once."""
    from emulator.io.types import PAGE_BYTES
    from emulator.replay.groups import plan_raw

    parts = [(np.full(r[1].size, r[0], np.int64), r[1], r[2], r[3], np.full(r[1].size, r[4], np.int64))
             for r in st.per_dev[dev]]
    if raw_pending:
        c0 = time.thread_time()
        base, fids, ftabs = files
        *req, used = plan_raw(raw_pending, base, fids, ftabs, st.dest_pos, max_read_bytes, PAGE_BYTES)
        parts.append(tuple(req))
        st.dest_pos += used
        st.dev_prep_s[dev] += time.thread_time() - c0
    if not parts:
        return None
    return DeviceReads(*(np.concatenate([q[j] for q in parts]) for j in range(5)))

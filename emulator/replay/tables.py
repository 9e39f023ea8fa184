"""Opening a store's tables for replay: every table's tiers, the batched path's groups, each device's page space.

:func:`open_tables` loads each table's hot rows into the DRAM tier, opens its
raw file on its device's IO engine (``ssd_raw``, with an LRU row cache in
front of it if the plan asks for one) or loads its TT cores (``ssd_tt``). The
tables that need no per-table state in the batch loop are gathered into one
:class:`emulator.replay.groups.Group` per ``(dim, dtype)``, whose hot rows load
straight into one DRAM array; the others are served one by one (the *slow*
path). The group raw files of each device are laid end to end in one global
page space (see :func:`emulator.replay.groups.plan_raw`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from emulator.store.layout import RowLayout
from emulator.plan import Plan, TablePlacement
from emulator.replay.remap import load_hot_rows
from emulator.store.store import Store
from tracegen.errors import InputError


@dataclass
class _Table:
    index: int
    name: str
    layout: RowLayout
    placement: TablePlacement
    new_ids: Callable[[np.ndarray], np.ndarray] | None  # old -> new id under the remap (None: identity)
    dram: np.ndarray  # (hot_rows [+ cache slots], dim) in the table dtype
    hot: int = 0  # rows [0, hot) (new ids) are the DRAM tier
    tt: Any = None  # TTCores for ssd_tt
    cache: Any = None  # RowCache in front of the raw cold rows (lru)
    tt_error: dict | None = None
    file_id: int = -1
    device: int = 0
    perm: np.ndarray | None = None  # the dense remap (old -> new), if any


@dataclass
class OpenedTables:
    """What :func:`open_tables` sets up for the replay engine."""

    tables: list[_Table]  # every table, in store order
    slow: list[_Table]  # tables served one by one (LRU cache, prefix remap, wide raw rows)
    groups: list  # emulator.replay.groups.Group, tables served with whole-batch passes
    dev_files: list  # per device: (first global page, file id, table index) of its group raw files, as arrays
    dram_bytes: int  # the DRAM tiers and LRU caches


def open_tables(store: Store, plan: Plan, lru_ways: int, remap: dict, engines: list) -> OpenedTables:
    """Set up every table of ``store`` as ``plan`` places it; raw files are opened on ``engines`` (one per device).
    ``remap``: table name -> :class:`emulator.replay.remap.TableRemap`; ``lru_ways``: the LRU caches' associativity."""
    from emulator.replay.groups import COLD_NONE, COLD_RAW, COLD_TT, Group

    tables: list[_Table] = []
    slow: list[_Table] = []
    dram_bytes = 0
    metas = []
    for i, t in enumerate(store.tables):
        try:
            pl = plan.placement(t["name"])
        except KeyError:
            raise InputError(f"plan has no placement for table {t['name']}") from None
        lay = store.layouts[i]
        hot = min(pl.hot_rows, lay.rows)
        rmap = remap.get(t["name"])
        if rmap is not None and rmap.rows != lay.rows:
            raise InputError(f"remap of table {t['name']} is for {rmap.rows} rows, table has {lay.rows}")
        raw = hot < lay.rows and pl.cold_tier == "ssd_raw"
        fast = not (raw and (pl.lru_rows or lay.pages_per_row > 1)) and (rmap is None or rmap.perm is not None)
        metas.append((i, t, pl, lay, hot, rmap, fast))
    # one DRAM array per (dim, dtype) group: each member's hot rows load straight into a view of it
    keyed: dict[tuple, list] = {}
    for m in metas:
        if m[6]:
            keyed.setdefault((m[3].dim, m[3].np_dtype.str), []).append(m)
    views: dict[int, tuple[int, int, np.ndarray]] = {}
    arrays = []
    for (dim, _), members in keyed.items():
        arr = np.empty((sum(m[4] for m in members), dim), members[0][3].np_dtype)
        base = 0
        for m in members:
            views[m[0]] = (len(arrays), base, arr[base:base + m[4]])
            base += m[4]
        arrays.append(arr)
    for i, t, pl, lay, hot, rmap, fast in metas:
        inv = None if rmap is None else rmap.hot_old_ids(hot)
        dram = load_hot_rows(store, i, hot, inv, out=views[i][2] if fast else None)
        dram_bytes += dram.nbytes
        new_ids = None if rmap is None else rmap.hot_lookup(hot)
        tab = _Table(i, t["name"], lay, pl, new_ids, dram, hot=hot, device=pl.device)
        tab.perm = None if rmap is None else rmap.perm
        if hot < lay.rows:
            if pl.cold_tier == "ssd_raw":
                tab.file_id = engines[pl.device].open(store.table_path(i))
                if pl.lru_rows:
                    from emulator.replay.cache import RowCache

                    cap = min(pl.lru_rows, lay.rows - hot)  # a huge lru_rows must not allocate
                    tab.cache = RowCache(cap, lay.dim, lay.np_dtype, ways=lru_ways, seed=i,
                                         prefix=dram)
                    tab.dram = tab.cache.storage  # hot prefix rows, then the cache slots
                    dram_bytes += tab.cache.memory_bytes
            else:
                tab.tt = store.load_tt(i, pl.tt_rank)
                tab.tt_error = store.tt_variant(i, pl.tt_rank)
        tables.append(tab)
        if not fast:
            slow.append(tab)
    # device files laid end to end in a global page space, one-page gap between files
    n_dev = len(engines)
    dev_next = [0] * n_dev
    dev_files: list[list[tuple[int, int, int]]] = [[] for _ in range(n_dev)]
    page_of: dict[int, int] = {}
    for tab in tables:
        if tab.file_id >= 0 and tab.cache is None and views.get(tab.index) is not None:
            d = tab.device
            page_of[tab.index] = dev_next[d]
            dev_files[d].append((dev_next[d], tab.file_id, tab.index))
            dev_next[d] += tab.layout.pages + 1
    file_arrays = [(np.array([f[0] for f in fs], np.int64), np.array([f[1] for f in fs], np.int64),
                    np.array([f[2] for f in fs], np.int64)) for fs in dev_files]
    groups = []
    for arr, ((dim, _), members) in zip(arrays, keyed.items()):
        tabs = [tables[m[0]] for m in members]
        perms = [tab.perm for tab in tabs if tab.perm is not None]
        perm_base, pb = [], 0
        for tab in tabs:
            perm_base.append(-1 if tab.perm is None else pb)
            pb += 0 if tab.perm is None else tab.perm.size
        cold = [COLD_NONE if tab.hot >= tab.layout.rows else COLD_TT if tab.tt is not None else COLD_RAW
                for tab in tabs]
        rows = np.array([tab.layout.rows for tab in tabs], np.int64)
        key_base = np.zeros(len(tabs), np.int64)
        np.cumsum(rows[:-1], out=key_base[1:])
        groups.append(Group(
            dim=dim, np_dtype=arr.dtype, tables=np.array([tab.index for tab in tabs], np.int64), dram=arr,
            dram_base=np.array([views[tab.index][1] for tab in tabs], np.int64),
            hot=np.array([tab.hot for tab in tabs], np.int64), cold_kind=np.array(cold, np.uint8),
            device=np.array([tab.device for tab in tabs], np.int64), perm_base=np.array(perm_base, np.int64),
            perm=np.concatenate(perms).astype(np.int64) if perms else np.zeros(0, np.int64),
            page_base=np.array([page_of.get(tab.index, 0) for tab in tabs], np.int64),
            rows_per_page=np.array([tab.layout.rows_per_page for tab in tabs], np.int64),
            row_bytes=np.array([tab.layout.row_bytes for tab in tabs], np.int64), key_base=key_base,
            tt_members=[k for k, c in enumerate(cold) if c == COLD_TT]))
    return OpenedTables(tables, slow, groups, file_arrays, dram_bytes)

"""Opening a store's tables for replay: every table's tiers, the batched path's groups, each device's page space.

:func:`open_tables` loads each table's hot rows into the DRAM tier, opens its
raw file on its device's IO engine (``ssd_raw``, with an LRU row cache in
front of it if the plan asks for one) or loads its TT cores (``ssd_tt``). The
tables that need no per-table state in the batch loop are gathered into one
:class:`emulator.replay.groups.Group` per ``(dim, dtype)`` (a table placed with a
row format other than fp32 serves that format's rows: its DRAM tier holds them and
its raw reads fetch that format's file), whose hot rows load
straight into one DRAM array; the others are served one by one (the *slow*
path). The group raw files of each device are laid end to end in one global
page space (see :func:`emulator.replay.groups.plan_raw`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from emulator.store.layout import RowLayout
from emulator.store.manifest import TTEntry
from emulator.plan import Plan, TablePlacement
from emulator.replay.remap import load_hot_rows
from emulator.store.store import Store
from tracegen.errors import InputError


@dataclass
class Table:
    index: int
    name: str
    layout: RowLayout
    placement: TablePlacement
    new_ids: Callable[[np.ndarray], np.ndarray] | None  # old -> new id under the remap (None: identity)
    dram: np.ndarray  # (hot_rows [+ cache slots], dim) in the table dtype
    hot: int = 0  # rows [0, hot) (new ids) are the DRAM tier
    tt: Any = None  # TTCores for ssd_tt
    cache: Any = None  # RowCache in front of the raw cold rows (lru)
    tt_error: TTEntry | None = None  # the manifest's TT variant served (its measured errors)
    file_id: int = -1
    device: int = 0
    perm: np.ndarray | None = None  # the dense remap (old -> new), if any


@dataclass
class OpenedTables:
    """What :func:`open_tables` sets up for the replay engine."""

    tables: list[Table]  # every table, in store order
    slow: list[Table]  # tables served one by one (LRU cache, prefix remap, wide raw rows)
    groups: list  # emulator.replay.groups.Group, tables served with whole-batch passes
    dev_files: list  # per device: (first global page, file id, table index) of its group raw files, as arrays
    dram_bytes: int  # the DRAM tiers and LRU caches


@dataclass(frozen=True)
class _Meta:
    """A table's placement resolved against the store, before anything is loaded."""

    index: int
    name: str
    placement: TablePlacement
    layout: RowLayout
    hot: int  # hot rows actually held (at most the table's rows)
    remap: Any  # emulator.replay.remap.TableRemap or None
    fast: bool  # served by a group's whole-batch passes (else one by one)
    path: Any  # the file its raw tier reads: the raw rows, or its row format's file


def open_tables(store: Store, plan: Plan, lru_ways: int, remap: dict, engines: list) -> OpenedTables:
    """Set up every table of ``store`` as ``plan`` places it; raw files are opened on ``engines`` (one per device).
    ``remap``: table name -> :class:`emulator.replay.remap.TableRemap`; ``lru_ways``: the LRU caches' associativity."""
    metas = [_resolve(store, plan, remap, i) for i in range(len(store.tables))]
    keyed: dict[tuple, list[_Meta]] = {}  # one DRAM array per (dim, dtype) group of fast tables
    for m in metas:
        if m.fast:  # layout.dtype: fp32, fp16, or a row format (int8/int4 rows are uint8 bytes)
            keyed.setdefault((m.layout.dim, m.layout.dtype), []).append(m)
    arrays, views = _group_arrays(keyed)
    tables, dram_bytes = [], 0
    for m in metas:
        tab, nbytes = _open_table(store, m, views[m.index][2] if m.fast else None, lru_ways, engines)
        tables.append(tab)
        dram_bytes += nbytes
    page_of, dev_files = _device_page_space(tables, views, len(engines))
    groups = [_make_group(arr, dim, [tables[m.index] for m in members], views, page_of)
              for arr, ((dim, _), members) in zip(arrays, keyed.items())]
    for g, ((_, dtype), _) in zip(groups, keyed.items()):
        g.row_format = dtype if dtype in ("int8", "int4", "fp16") else "fp32"
    for gi, g in enumerate(groups):
        dram_bytes += _add_group_cache(g, [tables[int(t)] for t in g.tables], lru_ways, seed=gi)
    slow = [tables[m.index] for m in metas if not m.fast]
    return OpenedTables(tables, slow, groups, dev_files, dram_bytes)


def _resolve(store: Store, plan: Plan, remap: dict, i: int) -> _Meta:
    """Table ``i``'s placement and remap, checked against the store; whether it can join a group."""
    t = store.tables[i]
    try:
        pl = plan.placement(t.name)
    except KeyError:
        raise InputError(f"plan has no placement for table {t.name}") from None
    lay, path = _row_layout(store, i, pl.row_format)
    hot = min(pl.hot_rows, lay.rows)
    rmap = remap.get(t.name)
    if rmap is not None and rmap.rows != lay.rows:
        raise InputError(f"remap of table {t.name} is for {rmap.rows} rows, table has {lay.rows}")
    raw = hot < lay.rows and pl.cold_tier == "ssd_raw"
    fast = not (raw and lay.pages_per_row > 1) and (rmap is None or rmap.perm is not None)
    if pl.row_format in ("int8", "int4") and not fast:
        raise InputError(f"table {t.name}: {pl.row_format} rows are served by the batched path only (a dense "
                         "remap or none, rows within a page)")
    return _Meta(i, t.name, pl, lay, hot, rmap, fast, path)


def _row_layout(store: Store, i: int, row_format: str) -> tuple[RowLayout, Any]:
    """The layout and file of table ``i``'s rows in ``row_format`` (fp16 rows are plain fp16 rows)."""
    if row_format == "fp32":
        return store.layouts[i], store.table_path(i)
    path = store.format_path(i, row_format)  # InputError if the store has no such rows
    lay = store.format_layout(i, row_format)
    return (RowLayout(lay.rows, lay.dim, "fp16", lay.page_bytes) if row_format == "fp16" else lay), path


def _group_arrays(keyed: dict[tuple, list[_Meta]]) -> tuple[list[np.ndarray], dict[int, tuple[int, int, np.ndarray]]]:
    """One DRAM array per group; each member's hot rows get a view of it: table -> (array, first row, view)."""
    views: dict[int, tuple[int, int, np.ndarray]] = {}
    arrays = []
    for (dim, _), members in keyed.items():
        lay = members[0].layout  # int8/int4 rows are row_bytes bytes wide
        arr = np.empty((sum(m.hot for m in members), lay.row_bytes // lay.np_dtype.itemsize), lay.np_dtype)
        base = 0
        for m in members:
            views[m.index] = (len(arrays), base, arr[base:base + m.hot])
            base += m.hot
        arrays.append(arr)
    return arrays, views


def _open_table(store: Store, m: _Meta, dram_view: np.ndarray | None, lru_ways: int,
                engines: list) -> tuple[Table, int]:
    """Load a table's hot rows (into ``dram_view`` for group members), open its cold tier; its DRAM bytes."""
    rmap, lay, pl = m.remap, m.layout, m.placement
    inv = None if rmap is None else rmap.hot_old_ids(m.hot)
    dram = load_hot_rows(store, m.index, m.hot, inv, out=dram_view, row_format=pl.row_format)
    dram_bytes = dram.nbytes
    new_ids = None if rmap is None else rmap.hot_lookup(m.hot)
    tab = Table(m.index, m.name, lay, pl, new_ids, dram, hot=m.hot, device=pl.device)
    tab.perm = None if rmap is None else rmap.perm
    if m.hot < lay.rows:
        if pl.cold_tier == "ssd_raw":
            tab.file_id = engines[pl.device].open(m.path)
            if pl.lru_rows and not m.fast:  # a group member's rows go through its group's shared cache
                from emulator.replay.cache import RowCache

                cap = min(pl.lru_rows, lay.rows - m.hot)  # a huge lru_rows must not allocate
                tab.cache = RowCache(cap, lay.dim, lay.np_dtype, ways=lru_ways, seed=m.index, prefix=dram)
                tab.dram = tab.cache.storage  # hot prefix rows, then the cache slots
                dram_bytes += tab.cache.memory_bytes
        else:
            tab.tt = store.load_tt(m.index, pl.tt_rank)
            tab.tt_error = store.tt_variant(m.index, pl.tt_rank)
    return tab, dram_bytes


def _device_page_space(tables: list[Table], views: dict, n_dev: int) -> tuple[dict[int, int], list]:
    """Each device's group raw files laid end to end in one global page space, one-page gap between files:
    table -> its first global page, and per device the (first page, file id, table index) arrays."""
    dev_next = [0] * n_dev
    dev_files: list[list[tuple[int, int, int]]] = [[] for _ in range(n_dev)]
    page_of: dict[int, int] = {}
    for tab in tables:
        if tab.file_id >= 0 and tab.cache is None and views.get(tab.index) is not None:
            d = tab.device
            page_of[tab.index] = dev_next[d]
            dev_files[d].append((dev_next[d], tab.file_id, tab.index))
            dev_next[d] += tab.layout.pages + 1
    arrays = [(np.array([f[0] for f in fs], np.int64), np.array([f[1] for f in fs], np.int64),
               np.array([f[2] for f in fs], np.int64)) for fs in dev_files]
    return page_of, arrays


def _make_group(arr: np.ndarray, dim: int, tabs: list[Table], views: dict, page_of: dict[int, int]):
    """The :class:`emulator.replay.groups.Group` of tables ``tabs`` sharing the DRAM array ``arr``."""
    from emulator.replay.groups import Group
    from emulator.tiers import COLD_NONE, COLD_RAW, COLD_TT

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
    return Group(
        dim=dim, np_dtype=arr.dtype, tables=np.array([tab.index for tab in tabs], np.int64), dram=arr,
        dram_base=np.array([views[tab.index][1] for tab in tabs], np.int64),
        hot=np.array([tab.hot for tab in tabs], np.int64), cold_kind=np.array(cold, np.uint8),
        device=np.array([tab.device for tab in tabs], np.int64), perm_base=np.array(perm_base, np.int64),
        perm=np.concatenate(perms).astype(np.int64) if perms else np.zeros(0, np.int64),
        page_base=np.array([page_of.get(tab.index, 0) for tab in tabs], np.int64),
        rows_per_page=np.array([tab.layout.rows_per_page for tab in tabs], np.int64),
        row_bytes=np.array([tab.layout.row_bytes for tab in tabs], np.int64), key_base=key_base,
        tt_members=[k for k, c in enumerate(cold) if c == COLD_TT])


def _add_group_cache(g, tabs: list[Table], lru_ways: int, seed: int) -> int:
    """One LRU row cache for a group's LRU members, keyed by (table, row) as ``key_base + row``, its capacity
    the sum of theirs (each capped at its cold rows), like FBGEMM's one cache for all tables of a TBE. The
    group's DRAM array becomes the cache's storage: hot rows first, then the slots. Its bytes."""
    from emulator.replay.cache import RowCache

    caps = [min(tab.placement.lru_rows, tab.layout.rows - tab.hot) if tab.file_id >= 0 else 0 for tab in tabs]
    if not any(caps):
        return 0
    g.lru = np.array([c > 0 for c in caps], bool)
    g.cache = RowCache(sum(caps), g.dim, g.np_dtype, ways=lru_ways, seed=seed, prefix=g.dram)
    g.dram = g.cache.storage
    for tab, base in zip(tabs, g.dram_base):  # members' hot rows: views of the new storage
        tab.dram = g.dram[int(base):int(base) + tab.hot]
    return g.cache.memory_bytes

"""emulator.replay.prepare (and the groups' part, emulator.replay.groups): a prepared batch against naive
references. Through the public ``Replayer.prepare``: every lookup's tier is the one the plan names, every row it
points at (in DRAM, in the pages its device's reads bring, in the TT rows to rebuild) is the stored row, the reads
fetch each needed page exactly once within the size limit, and the tier and device counts are the naive ones."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from emulator.replay.engine import ReplayConfig, Replayer
from emulator.store.store import Store
from emulator.tiers import DRAM, KIND_DRAM, KIND_PAGE, KIND_STAGED, SSD_RAW, SSD_TT
from plans.remap import Remap, TableRemap
from tests.naive import read_many_naive
from tracegen.trace_io import TraceReader

PAGE = 4096


def _plans(store: Store, tmp_path):
    """Mixed tiers over two devices: without a remap (the batched path), with dense permutations (batched) and
    with a prefix remap (the per-table path), each with a hot set, a TT table, raw tables on both devices."""
    t = store.tables
    rank = lambda i: t[i].tt[0].rank  # noqa: E731
    rng = np.random.default_rng(7)

    def placements(hot):
        return (TablePlacement(t[0].name, hot[0], "ssd_raw", device=0),
                TablePlacement(t[1].name, hot[1], "ssd_tt", rank(1), device=1),
                TablePlacement(t[2].name, hot[2], "ssd_raw", device=1),
                TablePlacement(t[3].name, hot[3], "ssd_tt", rank(3), device=0))

    devices = (DevicePlan("dev0", 1, 1), DevicePlan("dev1", 1, 1))
    plain = Plan(store.store_id, placements([t[0].rows // 2, 100, 0, 0]), devices)
    Remap([TableRemap(x.name, x.rows, perm=rng.permutation(x.rows)) for x in t]).save(tmp_path / "dense.h5")
    dense = Plan(store.store_id, placements([50, 300, 200, 0]), devices, remap=str(tmp_path / "dense.h5"))
    Remap([TableRemap(x.name, x.rows, prefix=rng.permutation(x.rows)[:x.rows // 4]) for x in t]).save(
        tmp_path / "prefix.h5")
    prefix = Plan(store.store_id, placements([20, 40, t[2].rows // 4, 10]), devices, remap=str(tmp_path / "prefix.h5"))
    return {"plain": plain, "dense": dense, "prefix": prefix}


def _hot_naive(plan: Plan, name: str, ids: np.ndarray, hot: int) -> tuple[np.ndarray, np.ndarray]:
    """(is hot, new id) of each lookup, straight from the remap's definition."""
    if plan.remap is None:
        return ids < hot, ids
    import h5py

    with h5py.File(plan.remap, "r") as f:
        kind, data = str(f[name].attrs["kind"]), f[name][:].astype(np.int64)
    if kind == "dense":
        return data[ids] < hot, data[ids]
    pos = {int(o): j for j, o in enumerate(data[:hot])}
    new = np.array([pos.get(int(o), hot) for o in ids], np.int64)
    return new < hot, new


def _dest_naive(rep: Replayer, p) -> np.ndarray:
    """The destination buffer as the reads would fill it: each device's reads done one by one with plain file IO."""
    dest = np.zeros(p.dest.size, np.uint8)
    for dev, r in enumerate(p.reads):
        if r is None:
            continue
        paths = {fid: f.path for fid, f in enumerate(rep.engines[dev].files) if f is not None}
        got, _ = read_many_naive(paths, r.file_ids, r.offsets, r.nbytes, dest.size, r.dest_offsets)
        for o, n in zip(r.dest_offsets, r.nbytes):
            dest[o:o + n] = got[o:o + n]
    return dest


def _dram_of(rep: Replayer, t: int) -> np.ndarray:
    """The DRAM array a table's DRAM ``loc`` counts in: its group's (batched path), else its own."""
    for g in rep.groups:
        if t in set(int(x) for x in g.tables):
            return g.dram
    return rep.tables[t].dram


def _staged_of(p, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(table, old id) of each row in the staged array a table's TT ``loc`` counts in: its group's (every TT
    member's unique rows, in order) on the batched path, else its own unique rows."""
    for w in p.works:
        members = [int(x) for x in w.group.tables]
        if t in members:
            tabs = [np.full(r.size, members[m]) for m, r in w.tt_rows]
            rows = [r for _, r in w.tt_rows]
            return (np.concatenate(tabs), np.concatenate(rows)) if rows else (np.zeros(0), np.zeros(0))
    rows = p.tables()[t].tt_rows
    return np.full(rows.size, t), rows


@pytest.mark.parametrize("which", ["plain", "dense", "prefix"])
@pytest.mark.parametrize("max_read_bytes", [PAGE, 128 << 10])
def test_prepared_batch_against_naive_references(tiny_store, tiny_trace, tmp_path, which, max_read_bytes):
    store = Store.open(tiny_store)
    plan = _plans(store, tmp_path)[which]
    with Replayer(store, plan, ReplayConfig(engine="pread", queue_depth=4, max_read_bytes=max_read_bytes)) as rep, \
            TraceReader(tiny_trace) as reader:
        for batch in reader.batches(0, 2):
            p = rep.prepare(batch)
            dest = _dest_naive(rep, p)
            tiers = {DRAM: 0, SSD_RAW: 0, SSD_TT: 0}
            dev_lookups = {SSD_RAW: np.zeros(2, np.int64), SSD_TT: np.zeros(2, np.int64)}
            pages_per_dev = [set(), set()]
            for t, tl in enumerate(p.tables()):
                pl, lay = plan.placement(store.tables[t].name), store.layouts[t]
                ids, off = batch.table(t)
                np.testing.assert_array_equal(tl.old_ids, ids)
                np.testing.assert_array_equal(tl.offsets, off)
                hot, new = _hot_naive(plan, pl.table, ids, pl.hot_rows)
                want_kind = np.where(hot, KIND_DRAM, KIND_STAGED if pl.cold_tier == "ssd_tt" else KIND_PAGE)
                np.testing.assert_array_equal(tl.kind, want_kind)
                stored = store.read_rows(t, ids)
                # DRAM: the row at loc of the DRAM array is the stored row
                d = tl.kind == KIND_DRAM
                np.testing.assert_array_equal(_dram_of(rep, t)[tl.loc[d]], stored[d])
                # pages: the row_bytes at loc of the filled buffer are the stored row
                pg = np.flatnonzero(tl.kind == KIND_PAGE)
                for k in pg:
                    row = dest[tl.loc[k]:tl.loc[k] + lay.row_bytes].view(lay.np_dtype)
                    np.testing.assert_array_equal(row, stored[k])
                pages_per_dev[pl.device] |= {(t, int(r) // lay.rows_per_page) for r in ids[pg]}
                # TT: each unique cold id is rebuilt once, and loc points at its row in the staged array
                s = np.flatnonzero(tl.kind == KIND_STAGED)
                if s.size:
                    np.testing.assert_array_equal(tl.tt_rows, np.unique(ids[s]))
                    tabs, rows = _staged_of(p, t)
                    assert (tabs[tl.loc[s]] == t).all()
                    np.testing.assert_array_equal(rows[tl.loc[s]], ids[s])
                else:
                    assert tl.tt_rows is None or tl.tt_rows.size == 0
                tiers[DRAM] += int(d.sum())
                tiers[SSD_RAW] += pg.size
                tiers[SSD_TT] += s.size
                if pl.cold_tier == "ssd_tt":
                    dev_lookups[SSD_TT][pl.device] += s.size
                else:
                    dev_lookups[SSD_RAW][pl.device] += pg.size
            assert {k: p.tier_lookups[k] for k in tiers} == tiers
            for k in dev_lookups:
                np.testing.assert_array_equal(p.dev_lookups[k], dev_lookups[k])
            for dev, r in enumerate(p.reads):
                if not pages_per_dev[dev]:
                    assert r is None or r.count == 0
                    continue
                # page-aligned reads within the limit, each page needed read once, none overlapping in dest
                assert (r.offsets % PAGE == 0).all() and (r.nbytes % PAGE == 0).all()
                assert (r.nbytes <= max_read_bytes).all() and r.nbytes.min() > 0
                assert r.total_bytes == PAGE * len(pages_per_dev[dev])
                order = np.argsort(r.dest_offsets)
                assert (r.dest_offsets[order][1:] >= (r.dest_offsets + r.nbytes)[order][:-1]).all()
                read_pages = {(int(tab), int(o) // PAGE + j) for tab, o, n in zip(r.tables, r.offsets, r.nbytes)
                              for j in range(int(n) // PAGE)}
                assert read_pages == pages_per_dev[dev]

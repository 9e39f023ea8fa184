"""emulator.replay.table_stats: per-table figures of real prepared and finished batches against their batch
totals and a naive per-table count from the plan's definition; the busy-time attribution by hand; the run totals."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from emulator.replay.counters import ReplayStats
from emulator.replay.engine import ReplayConfig, Replayer
from emulator.replay.table_stats import TableCounters, TableTotals, add_table_busy, table_counters
from emulator.replay.types import BatchWork, DeviceIO
from emulator.store.store import Store
from emulator.tiers import DRAM, KIND_PAGE, KIND_STAGED, LRU, SSD_RAW, SSD_TT
from plans.remap import Remap, TableRemap
from tracegen.trace_io import TraceReader


def _plans(store: Store, tmp_path) -> dict[str, Plan]:
    """Every tier on two devices: the batched path without a remap (LRU caches shared by a group), with dense
    permutations, and the per-table path (a prefix remap) with its own LRU caches."""
    t = store.tables
    rank = lambda i: t[i].tt[0].rank  # noqa: E731
    rng = np.random.default_rng(5)

    def placements(hot, lru):
        return (TablePlacement(t[0].name, hot[0], "ssd_raw", device=0, lru_rows=lru),
                TablePlacement(t[1].name, hot[1], "ssd_tt", rank(1), device=1),
                TablePlacement(t[2].name, hot[2], "ssd_raw", device=1, lru_rows=lru),
                TablePlacement(t[3].name, hot[3], "ssd_raw", device=0))

    devices = (DevicePlan("dev0", 1, 1), DevicePlan("dev1", 1, 1))
    Remap([TableRemap(x.name, x.rows, perm=rng.permutation(x.rows)) for x in t]).save(tmp_path / "dense.h5")
    Remap([TableRemap(x.name, x.rows, prefix=rng.permutation(x.rows)[:x.rows // 4]) for x in t]).save(
        tmp_path / "prefix.h5")
    return {
        "plain-lru": Plan(store.store_id, placements([t[0].rows // 2, 100, 0, 0], 64), devices),
        "dense": Plan(store.store_id, placements([50, 300, 200, 0], 0), devices, remap=str(tmp_path / "dense.h5")),
        "prefix-lru": Plan(store.store_id, placements([20, 40, t[2].rows // 4, 10], 32), devices,
                           remap=str(tmp_path / "prefix.h5")),
    }


def _new_ids(plan: Plan, name: str, ids: np.ndarray, hot: int) -> np.ndarray:
    """New ids straight from the remap's definition (rows not in a prefix's hot part are cold: ``hot``)."""
    if plan.remap is None:
        return ids
    import h5py

    with h5py.File(plan.remap, "r") as f:
        kind, data = str(f[name].attrs["kind"]), f[name][:].astype(np.int64)
    if kind == "dense":
        return data[ids]
    pos = {int(o): j for j, o in enumerate(data[:hot])}
    return np.array([pos.get(int(o), hot) for o in ids], np.int64)


def _finished(store: Store, plan: Plan, trace, n: int = 3):
    """(replayer tables, [(prepared, work)]) of the first ``n`` batches, served one at a time (pread)."""
    out = []
    with Replayer(store, plan, ReplayConfig(engine="pread", pipeline=False, lru_ways=4)) as rep, \
            TraceReader(trace) as r:
        for b in r.batches(0, n):
            p = rep.prepare(b)
            rep.start_io(p)
            _, work = rep.finish(p)
            out.append((p, work))
        return list(rep.tables), out


@pytest.fixture(scope="module")
def finished(tiny_store, tiny_trace, tmp_path_factory):
    store = Store.open(tiny_store)
    plans = _plans(store, tmp_path_factory.mktemp("table-stats"))
    return store, {k: (plan, *_finished(store, plan, tiny_trace)) for k, plan in plans.items()}


@pytest.mark.parametrize("which", ["plain-lru", "dense", "prefix-lru"])
def test_sums_per_table_equal_the_batch_totals(finished, which):
    _, runs = finished
    _, tables, batches = runs[which]
    for p, work in batches:
        c = table_counters(p, work, tables)
        assert c.names == tuple(t.name for t in tables)
        for tier in (DRAM, SSD_RAW, SSD_TT, LRU):
            assert int(c.tier(tier).sum()) == p.tier_lookups[tier], tier
        assert int(c.hits.sum()) == p.lru_hits
        reads = [r for r in p.reads if r is not None]
        assert int(c.bytes_read.sum()) == sum(r.total_bytes for r in reads) == work.bytes_read
        assert int(c.ios.sum()) == sum(r.count for r in reads)
        assert int(c.tt_rows.sum()) == sum(0 if r is None else r.size for r in p.tt_rows)
        assert int(c.served.sum()) == p.batch.num_lookups
        total = work.dram_s + sum(work.mem_s) + sum(work.compute_s)
        assert float(c.busy_s.sum()) + c.unattributed_s == pytest.approx(total, rel=1e-9, abs=1e-15)
        assert (c.busy_s >= 0).all()
    if which != "dense":
        assert sum(p.lru_hits for p, _ in batches) > 0  # the caches hit: the hits' split is exercised


@pytest.mark.parametrize("which", ["plain-lru", "dense", "prefix-lru"])
def test_each_table_against_a_naive_count(finished, which):
    store, runs = finished
    plan, tables, batches = runs[which]
    for p, work in batches:
        c = table_counters(p, work, tables)
        for t, (pl, lk) in enumerate(zip(plan.tables, p.tables())):
            hot = min(pl.hot_rows, store.tables[t].rows)
            ids, _ = p.batch.table(t)
            cold = _new_ids(plan, pl.table, ids, hot) >= hot
            n_page, n_staged = int((lk.kind == KIND_PAGE).sum()), int((lk.kind == KIND_STAGED).sum())
            cached = pl.cold_tier == SSD_RAW and pl.lru_rows > 0
            n_hits = int(cold.sum()) - n_page - n_staged  # cold lookups served from DRAM: cache hits
            assert n_hits == 0 or cached
            assert c.tier(DRAM)[t] == int((~cold).sum())
            assert (c.tier(SSD_RAW)[t], c.tier(SSD_TT)[t], c.hits[t]) == (n_page, n_staged, n_hits)
            assert c.tier(LRU)[t] == (int(cold.sum()) if cached else 0)
            assert c.tt_rows[t] == (0 if lk.tt_rows is None else np.unique(ids[cold]).size)
            mine = [r for r in p.reads if r is not None]
            assert c.bytes_read[t] == sum(int(r.nbytes[r.tables == t].sum()) for r in mine)
            assert c.ios[t] == sum(int((r.tables == t).sum()) for r in mine)


def _one_batch_counters(names, lookups, hits=None):
    n = len(names)
    z = np.zeros(n, np.int64)
    return TableCounters(tuple(names), np.array(lookups, np.int64), z if hits is None else np.array(hits), z, z, z,
                         np.zeros(n))


def test_tier_attribution_by_hand(finished):
    """Busy time per tier and device shared by lookups: hand-built totals on a real batch's lookups."""
    _, runs = finished
    _, tables, batches = runs["plain-lru"]
    p, _ = batches[0]
    # tables 0 and 3 are on dev0 (raw), 1 and 2 on dev1 (TT, raw); dram_s 1 s, dev0 mem 2 s, dev1 mem 4 s, dev1
    # compute 8 s, dev0 compute 16 s (no TT table there: unattributed)
    work = BatchWork(dram_s=1.0, mem_s=[2.0, 4.0], compute_s=[16.0, 8.0], devices=[DeviceIO(), DeviceIO()])
    c = table_counters(p, work, tables)
    d = (c.tier(DRAM) + c.hits).astype(float)
    raw, tt = c.tier(SSD_RAW).astype(float), c.tier(SSD_TT).astype(float)
    want = d / d.sum()
    want[[0, 3]] += 2.0 * raw[[0, 3]] / raw[[0, 3]].sum()
    want[2] += 4.0  # the only raw table on dev1
    want[1] += 8.0  # the only TT table
    np.testing.assert_allclose(c.busy_s, want, rtol=1e-12)
    assert c.unattributed_s == 16.0
    assert raw[2] > 0 and tt[1] > 0  # (the hand figures above assume these)


def test_engine_filled_busy_time_is_used_as_is(finished):
    _, runs = finished
    _, tables, batches = runs["dense"]
    p, work = batches[0]
    busy = np.zeros(len(tables))
    add_table_busy(busy, [2], [7], 0.5)  # a slow-path call: all of it to its table
    add_table_busy(busy, np.array([0, 1, 3]), np.array([1, 3, 0]), 2.0)  # a group call: 1/4 and 3/4
    add_table_busy(busy, [0, 1], [0, 0], 1.0)  # no lookups at all: evenly
    np.testing.assert_allclose(busy, [0.5 + 0.5, 1.5 + 0.5, 0.5, 0.0])
    c = table_counters(p, BatchWork(work.dram_s, work.mem_s, work.compute_s, work.devices, table_busy_s=busy),
                       tables)
    np.testing.assert_array_equal(c.busy_s, busy)
    assert c.unattributed_s == 0.0
    with pytest.raises(ValueError, match="table_busy_s"):
        table_counters(p, BatchWork(0.0, [0.0, 0.0], [0.0, 0.0], [], table_busy_s=np.zeros(3)), tables)


def test_totals_over_a_run_and_the_order():
    names = ("a", "b", "c")
    tot = TableTotals()
    assert tot.views() == () and tot.rows() == []
    one = _one_batch_counters(names, [[5, 0, 0, 0], [1, 2, 0, 3], [0, 0, 4, 0]], hits=[0, 1, 0])
    one.busy_s[:] = [0.1, 0.3, 0.3]
    tot.add(one)
    tot.add(one)
    rows = tot.rows()
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    b = rows[1]  # 2 x (1 dram + 2 raw + 1 hit of 3 probes)
    assert (b["lookups"], b["dram"], b["ssd_raw"], b["lru"], b["lru_hits"]) == (8, 2, 4, 6, 2)
    assert b["busy_s"] == pytest.approx(0.6) and b["busy_share"] == pytest.approx(0.6 / 1.4)
    # b and c tie on busy time (0.6 s) and on lookups served (8 each): then by table index
    assert [v.name for v in tot.views(top=2)] == ["b", "c"]
    with pytest.raises(ValueError, match="do not match"):
        tot.add(_one_batch_counters(("a", "b"), [[0] * 4] * 2))


def test_replay_stats_keep_per_table_totals():
    stats = ReplayStats()
    stats.start(2, 4, "x", None)
    c = _one_batch_counters(("a", "b"), [[3, 0, 0, 0], [0, 9, 0, 0]])
    c.busy_s[:] = [0.5, 0.25]
    stats.record_batch(1e-3, 4, 12, tables=c)
    stats.record_batch(1e-3, 4, 12, tables=c)
    s = stats.snapshot()
    assert [v.name for v in s.tables] == ["a", "b"] and s.tables_total == 2
    assert s.tables[0].busy_s == pytest.approx(1.0) and s.tables[1].ssd_raw == 18
    p = stats.summary()
    assert [r["name"] for r in p["tables"]] == ["a", "b"] and p["tables"][1]["lookups"] == 18
    assert "attributed" in p["tables_busy_basis"]


def test_segment_counts_with_empty_segments():
    from emulator.replay.table_stats import _segment_counts

    values = np.array([1, 0, 2, 2, 0, 1], np.uint8)
    cum = np.array([0, 0, 2, 2, 5, 6, 6])  # segments [], [1 0], [], [2 2 0], [1], []
    np.testing.assert_array_equal(_segment_counts(values, cum), [0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(_segment_counts(values[:0], np.zeros(3, np.int64)), [0, 0])


def test_a_run_of_real_batches_into_replay_stats(finished):
    """What the engine does per finished batch: the summary's per-table rows add up to the run's tier totals."""
    _, runs = finished
    _, tables, batches = runs["plain-lru"]
    stats = ReplayStats()
    stats.start(len(batches), 32, "lru", None)
    tiers = {k: 0 for k in (DRAM, SSD_RAW, SSD_TT, LRU)}
    for p, work in batches:
        stats.record_batch(1e-3, p.batch.batch_size, p.batch.num_lookups, tables=table_counters(p, work, tables))
        for k in tiers:
            tiers[k] += p.tier_lookups[k]
    rows = stats.summary()["tables"]
    assert [r["name"] for r in rows] == [t.name for t in tables]
    for k in tiers:
        assert sum(r[k] for r in rows) == tiers[k], k
    assert sum(r["lookups"] for r in rows) == sum(p.batch.num_lookups for p, _ in batches)
    assert sum(r["lru_hits"] for r in rows) == sum(p.lru_hits for p, _ in batches)
    assert sum(r["busy_share"] for r in rows) == pytest.approx(1.0)

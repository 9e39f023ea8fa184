"""Replay conformance: every policy, every mix of tiers and every IO engine gives the reference result."""

import numpy as np
import pytest

from tests import naive
from emulator.io import uring_available
from emulator.plan import DevicePlan, Plan, TablePlacement, uniform_plan
from emulator.kernels.reference import pool_reference
from emulator.replay.engine import Replayer, ReplayConfig
from emulator.replay.counters import ReplayStats
from emulator.store.store import Store
from emulator.tt.decomposition import tt_rebuild_rows_reference
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

from tests import naive
from tests.conftest import one_line_error, run_cli

ENGINES = ["pread", pytest.param("uring", marks=pytest.mark.skipif(not uring_available()[0],
                                                                    reason="io_uring is not available here"))]


def _rows(store):
    return {t.name: t.rows for t in store.tables}


def _collect(store, plan, trace, **cfg):
    outs = []
    with Replayer(store, plan, ReplayConfig(**cfg)) as rep, TraceReader(trace) as r:
        totals = rep.run(r, on_batch=lambda o: outs.append([x.copy() for x in o.pooled]))
    return outs, totals


def _mixed_plan(store, trace_id=None):
    """Every tier at once: table 0 half hot + raw, table 1 hot prefix + TT, table 2 all TT, table 3 all raw,
    spread over two devices."""
    t = store.tables
    rank = lambda i: t[i].tt[0].rank  # noqa: E731
    return Plan(store_id=store.store_id, devices=(DevicePlan("d0", 2, 2), DevicePlan("d1", 3, 1)), tables=(
        TablePlacement(t[0].name, t[0].rows // 2, "ssd_raw", device=0),
        TablePlacement(t[1].name, 100, "ssd_tt", rank(1), device=1),
        TablePlacement(t[2].name, 0, "ssd_tt", rank(2), device=0),
        TablePlacement(t[3].name, 0, "ssd_raw", device=1),
    ), planner="mixed-test")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy", ["all-dram", "all-ssd"])
@pytest.mark.parametrize("pipeline", [True, False])
def test_raw_policies_equal_reference_exactly(tiny_store, tiny_trace, engine, policy, pipeline):
    store = Store.open(tiny_store)
    plan = uniform_plan(store.store_id, _rows(store), policy)
    outs, totals = _collect(store, plan, tiny_trace, engine=engine, pipeline=pipeline, queue_depth=8)
    with TraceReader(tiny_trace) as r:
        assert totals["batches"] == r.num_batches == len(outs)
        for b, pooled in zip(r.batches(), outs):
            for t in range(r.num_tables):
                ids, off = b.table(t)
                want = pool_reference(store.read_rows(t, ids), off)
                assert np.array_equal(pooled[t], want)
    assert (totals["ios"] > 0) == (policy == "all-ssd")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("offload", ["device", "host"])
def test_mixed_tiers_match_reference(tiny_store, tiny_trace, engine, offload):
    # devices pool their rows and the host adds their partials to its DRAM rows' sum (offload "device"), or
    # the host pools every row in lookup order (plain SSDs): raw rows bit for bit in that grouping either way
    store = Store.open(tiny_store)
    plan = _mixed_plan(store)
    outs, totals = _collect(store, plan, tiny_trace, engine=engine, verify=True, max_read_bytes=8192,
                            offload=offload)
    assert totals["verify"]["exact_bags"] > 0 and totals["verify"]["tt_bags"] > 0
    with TraceReader(tiny_trace) as r:
        for b, pooled in zip(r.batches(), outs):
            for t, pl in enumerate(plan.tables):
                ids, off = b.table(t)
                rows = store.read_rows(t, ids).astype(np.float32)
                hot = ids < pl.hot_rows if offload == "device" else np.ones(ids.size, bool)
                if pl.cold_tier == "ssd_tt":
                    cold = ids >= pl.hot_rows
                    rows[cold] = tt_rebuild_rows_reference(store.load_tt(t, pl.tt_rank), ids[cold])
                    np.testing.assert_allclose(pooled[t], pool_reference(rows, off), rtol=1e-4, atol=1e-5)
                else:
                    assert np.array_equal(pooled[t], naive.pool_split_ref(rows, off, hot))


def test_null_engine_runs_and_counts(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    plan = uniform_plan(store.store_id, _rows(store), "all-ssd")
    stats = ReplayStats()
    with Replayer(store, plan, ReplayConfig(engine="null"), stats=stats) as rep, TraceReader(tiny_trace) as r:
        totals = rep.run(r)
    snap = stats.snapshot()
    assert snap.batches_done == totals["batches"] and snap.lookups_done == totals["lookups"]
    assert {t.name: t.share for t in snap.tiers}["ssd_raw"] == pytest.approx(1.0)


def test_plan_for_other_store_is_refused(tiny_store, tiny_trace, tmp_path, capsys):
    store = Store.open(tiny_store)
    plan = uniform_plan("0" * 32, _rows(store), "all-ssd")
    with pytest.raises(InputError, match="made for store"):
        Replayer(store, plan)
    plan.save(tmp_path / "p.json")
    code, _, err = run_cli(["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--plan",
                            str(tmp_path / "p.json"), "--no-live"], capsys)
    assert code == 2 and one_line_error(err)


def test_replay_cli_verify_json(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--policy", "all-tt",
                              "--verify", "--engine", "pread", "--no-live", "--json", "r.json"], capsys)
    assert code == 0, err
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["verify"]["ok"] and payload["verify"]["tt_bags"] > 0
    assert payload["batches"] == 4 and payload["latency_s"]["p50"] > 0
    assert list((tmp_path / "runs").iterdir())


def test_replay_cli_bad_inputs(tiny_store, tiny_trace, tmp_path, capsys):
    cases = [
        ["--store", str(tmp_path / "missing"), "--trace", str(tiny_trace)],
        ["--store", str(tiny_store), "--trace", str(tmp_path / "missing.h5")],
        ["--store", str(tiny_store), "--trace", str(tiny_store / "manifest.json")],  # wrong format
        ["--store", str(tiny_store), "--trace", str(tiny_trace), "--qd", "0"],
        ["--store", str(tiny_store), "--trace", str(tiny_trace), "--policy", "all-tt", "--tt-rank", "99"],
    ]
    for argv in cases:
        code, _, err = run_cli(["replay", "--no-live", *argv], capsys)
        assert code == 2 and one_line_error(err), (argv, err)


def test_trace_with_more_rows_than_store_is_refused(tiny_store, tmp_path):
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import get_preset

    big = get_preset("tiny", scale=3.0)
    generate_trace(big, GeneratorParams(seed=0, num_batches=1), tmp_path / "big.h5")
    store = Store.open(tiny_store)
    with Replayer(store, uniform_plan(store.store_id, _rows(store), "all-ssd"), ReplayConfig(engine="pread")) as rep:
        with TraceReader(tmp_path / "big.h5") as r, pytest.raises(InputError, match="rows"):
            rep.run(r)


@pytest.mark.parametrize("engine", ENGINES)
def test_file_truncated_while_serving_fails_the_batch(tiny_spec, tiny_trace, tmp_path, engine):
    import os

    from emulator.store.store import StoreBuildConfig
    from emulator.store.build import build_store

    store = build_store(tiny_spec, tmp_path / "s", StoreBuildConfig(tt_ranks=()))
    plan = uniform_plan(store.store_id, _rows(store), "all-ssd")
    with Replayer(store, plan, ReplayConfig(engine=engine)) as rep, TraceReader(tiny_trace) as r:
        for i in range(len(store.tables)):
            os.truncate(store.table_path(i), 4096)  # keep one page: later pages read short (EOF)
        with pytest.raises(InputError, match="short read of table"):
            rep.run(r)


@pytest.mark.parametrize("pipeline", [True, False])
def test_lru_cache_policy_is_exact_and_hits(tiny_store, tmp_path, pipeline):
    from emulator.replay.counters import ReplayStats
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import get_preset

    trace = tmp_path / "t.h5"
    generate_trace(get_preset("tiny"), GeneratorParams(seed=5, num_batches=6), trace)
    store = Store.open(tiny_store)
    t = store.tables
    # cache of 64 rows per table (a hot prefix of 10 rows on table 0 as well), 4-way
    plan = Plan(store_id=store.store_id, planner="lru", tables=tuple(
        TablePlacement(x.name, 10 if i == 0 else 0, "ssd_raw", lru_rows=64) for i, x in enumerate(t)))
    stats = ReplayStats()
    outs = []
    with Replayer(store, plan, ReplayConfig(engine="pread", pipeline=pipeline, lru_ways=4), stats=stats) as rep, \
            TraceReader(trace) as r:
        rep.run(r, on_batch=lambda o: outs.append([x.copy() for x in o.pooled]))
        for b, pooled in zip(r.batches(), outs):
            for i in range(len(t)):
                ids, off = b.table(i)
                assert np.array_equal(pooled[i], pool_reference(store.read_rows(i, ids), off))
    lru = {v.name: v for v in stats.snapshot().tiers}["lru"]
    assert lru.lookups > 0 and 0 < lru.hits < lru.lookups  # Zipf traffic: later batches hit the cache


@pytest.mark.parametrize("pipeline", [True, False])
def test_steady_state_interval_excludes_the_first_batch(tiny_store, tiny_trace, pipeline):
    # a clock that only moves when a batch is delivered: 10 s for the first batch, 1 s for each of the other 3;
    # so the first batch took 10 s, the steady interval is 1 s a batch and the whole run 13 s
    now = [0.0]

    def delivered(out):
        now[0] += 10.0 if out.index == 0 else 1.0

    store = Store.open(tiny_store)
    with TraceReader(tiny_trace) as r, Replayer(store, uniform_plan(store.store_id, _rows(store), "all-dram"),
                                                ReplayConfig(pipeline=pipeline), clock=lambda: now[0]) as rep:
        tot = rep.run(r, on_batch=delivered)
    assert tot["batches"] == 4
    assert tot["first_batch_s"] == 10.0 and tot["steady_batch_s"] == 1.0 and tot["elapsed_s"] == 13.0


def test_prediction_check_uses_the_steady_interval():
    from bench.replay_run import prediction_check
    from emulator.plan import Plan, TablePlacement

    plan = Plan("x", (TablePlacement("a", 0, "ssd_raw"),), predicted={"perf": {"total_s": 0.004, "bottleneck": "host"}})
    got = prediction_check(plan, {"batches": 11, "elapsed_s": 0.06, "steady_batch_s": 0.005})
    assert got["measured_batch_s"] == 0.005 and got["relative_error"] == pytest.approx(0.25)  # 5 ms / 4 ms - 1
    assert got["measured_with_first_batch_s"] == pytest.approx(0.06 / 11)
    assert prediction_check(plan, {"batches": 1, "elapsed_s": 0.01})["measured_batch_s"] == 0.01  # one batch: no steady
    assert prediction_check(Plan("x", (TablePlacement("a", 0, "ssd_raw"),)), {"batches": 3, "elapsed_s": 1}) is None


@pytest.mark.parametrize("plan_of", [lambda s: _mixed_plan(s), lambda s: uniform_plan(s.store_id, _rows(s), "all-dram")],
                         ids=["mixed", "all-dram"])
def test_host_threads_give_identical_outputs(tiny_store, tiny_trace, plan_of):
    # host pooling is split by bags over the threads: every bag is summed by one task, so the bits cannot move
    store = Store.open(tiny_store)
    plan = plan_of(store)
    runs = [_collect(store, plan, tiny_trace, engine="pread", host_threads=n)[0] for n in (1, 2, 3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_replay_on_the_device_clock(tiny_store, tiny_trace):
    # every batch gets an emulated time made of its parts (host serial work + the parallel phase + host work
    # after the devices), beside its measured interval; device tasks were timed on their own threads
    from emulator.device.profile import load_profile

    store = Store.open(tiny_store)
    with Replayer(store, _mixed_plan(store), ReplayConfig(engine="pread", device_profile=load_profile("host"),
                                                          host_threads=2)) as rep, TraceReader(tiny_trace) as r:
        rep.run(r)
        em = rep.emulation
        assert len(em.batches) == r.num_batches and not rep.host_pooled
    for b in em.batches:
        assert b.emulated_s == pytest.approx(b.serial_s + b.parallel_s + b.after_s)
        assert b.measured_s > 0 and b.link_bytes > 0
    assert {k for k, _ in em.busy_s} == {"cpus"}  # the host profile: one pool of this machine's CPUs
    s = em.summary()
    assert s["steady_batches"] == r.num_batches - 1 and s["profile"] == "host"

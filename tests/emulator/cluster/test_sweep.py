"""emulator.cluster.sweep on the 3-node test cluster: replays of the tiny store as Ray tasks, never two at once
on one node (each holds the node's one replay slot), each result naming its node; a store that is not the
driver's is refused on the node; and ``screc compare --sweep --ray`` writing which node measured each budget."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from tracegen.errors import InputError


def _plans(store, reader):
    from plans.planner import PlanningConfig, PresetRequest, preset_plan

    req = PresetRequest(dram_budget_bytes=0, profile_batches=2,
                        planning=PlanningConfig(dram_budget_bytes=0, store=str(store.path), trace=str(reader.path)))
    return [("all-ssd", preset_plan("all-ssd", store, reader, req).plan)]


def test_replays_run_one_per_node_at_a_time_and_say_where(ray_cluster, tiny_store, tiny_trace):
    from bench.measure import BatchRange, MeasureConfig, measure_rounds
    from emulator.cluster.sweep import ReplayJob, replay_on_cluster
    from emulator.replay.engine import ReplayConfig
    from emulator.store.store import Store
    from tracegen.trace_io import TraceReader

    store = Store.open(tiny_store)
    with TraceReader(tiny_trace) as reader:
        plans = _plans(store, reader)
    cfg = MeasureConfig(min_batches=2, min_seconds=0.0, warmup_batches=1, rounds=1)
    jobs = [ReplayJob(f"job{i}", (plans, BatchRange(2, 2), ReplayConfig(engine="pread"), cfg)) for i in range(4)]
    done = replay_on_cluster(measure_rounds, tiny_store, tiny_trace, jobs)
    assert [d.key for d in done] == ["job0", "job1", "job2", "job3"]
    for d in done:
        (m,) = d.value
        assert m.name == "all-ssd" and m.rounds[0].payload["batches"] >= 2 and m.median_qps > 0
        assert d.node["address"] == "127.0.0.1" and d.node["node_id"] and d.ended >= d.started
    # 4 jobs, 3 slots: some node ran two; the two never overlapped in time
    for a, b in combinations(done, 2):
        if a.node["node_id"] == b.node["node_id"]:
            assert a.ended <= b.started or b.ended <= a.started
    assert len({d.node["node_id"] for d in done}) >= 2  # spread over nodes


def test_a_store_that_is_not_the_drivers_is_refused_on_the_node(ray_cluster, tiny_store, tiny_trace):
    from emulator.cluster.sweep import ReplayJob, measure_on_node

    with pytest.raises(InputError, match="is not the driver's"):
        measure_on_node(len, str(tiny_store), "0" * 64, str(tiny_trace), "x", (), {})
    from emulator.cluster.connect import import_ray, remote

    ray = import_ray()
    ref = remote(measure_on_node, num_cpus=0).remote(len, str(tiny_store), "0" * 64, str(tiny_trace), "x", (), {})
    with pytest.raises(ray.exceptions.RayTaskError) as e:
        ray.get(ref)
    assert isinstance(e.value.cause, InputError)
    assert ReplayJob("k").args == ()


def test_compare_sweep_on_the_cluster_records_the_nodes(ray_cluster, tiny_store, tiny_trace, tmp_path, capsys):
    from tests.conftest import run_cli

    out = tmp_path / "c.json"
    code, stdout, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace),
                                 "--sweep", "dram-budget=1KiB,8KiB", "--policies", "all-ssd,lru",
                                 "--profile-batches", "2", "--rounds", "1", "--min-batches", "2",
                                 "--min-seconds", "0", "--warmup-batches", "1", "--engine", "pread",
                                 "--out-dir", str(tmp_path / "runs"), "--json", str(out),
                                 "--ray", ray_cluster.cluster.address], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert [e["dram_budget_bytes"] for e in doc["sweep"]] == [1024, 8192]
    for entry in doc["sweep"]:
        on = entry["measured_on"]
        assert on["address"] == "127.0.0.1" and on["node_id"] and on["job"].startswith("dram-budget=")
        assert [r["policy"] for r in entry["rows"]] == ["all-ssd", "lru"]
        assert all(r["steady_qps"] > 0 for r in entry["rows"])
    assert "measured on node 127.0.0.1" in stdout


def test_bench_predict_on_the_cluster_names_the_node_of_every_plan(ray_cluster, tiny_store, tiny_trace, tmp_path):
    from bench.bench_predict import PredictConfig, run_bench_predict
    from plans.calibration import default_calibration

    cal = tmp_path / "cal.json"
    default_calibration().save(cal)
    cfg = PredictConfig(store=str(tiny_store), trace=str(tiny_trace), calibration=str(cal), budgets=("0", "10KiB"),
                        planners=("static-topk",), devices=1, profile_batches=1, repeats=2, warmup_batches=1,
                        engine="pread", ray=ray_cluster.cluster.address)
    result = run_bench_predict(cfg)
    rows = result["plans"]
    assert [r["budget"] for r in rows] == ["0", "10KiB"]
    for r in rows:
        assert r["measured_on"]["address"] == "127.0.0.1" and r["measured_on"]["job"] == f"static-topk at {r['budget']}"
        assert len(r["measured_runs_s"]) == 2 and all(x > 0 for x in r["measured_runs_s"])
    assert rows[1]["predicted_batch_s"] < rows[0]["predicted_batch_s"]  # hot rows take reads away (modelled)
    assert any("Ray task" in n for n in result["notes"])

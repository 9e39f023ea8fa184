"""The TT accuracy report: statistics against a direct computation, raw vs raw is exact, AUC vs pair counting."""

import argparse
import json
import math

import numpy as np
import pytest

from emulator.accuracy import DiffStats, accuracy_report, auc, default_raw_plan, log_loss, raw_bytes
from emulator.dense import DenseConfig, DenseModel
from emulator.plan import Plan, TablePlacement, uniform_plan
from emulator.replay.engine import Replayer, ReplayConfig
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

from tests.naive import auc_naive

# The conftest's session store is build_store(get_preset("tiny"), tmp, StoreBuildConfig(weights_seed=1,
# tt_ranks=(4, 8))) and its trace generate_trace(tiny, GeneratorParams(seed=3, num_batches=4)): 4 batches of 32.
SMALL_DENSE = DenseConfig(bottom_mlp=(64, 32, 16), top_mlp=(32, 1), seed=1)


def _rows(store):
    return {t.name: t.rows for t in store.tables}


def _dense(store):
    return DenseModel(SMALL_DENSE, [lay.dim for lay in store.layouts])


def _pooled_runs(store, plan, trace):
    outs = []
    with Replayer(store, plan, ReplayConfig(engine="pread")) as rep, TraceReader(trace) as r:
        rep.run(r, on_batch=lambda o: outs.append([x.copy() for x in o.pooled]))
    return outs


@pytest.fixture(scope="module")
def tt8_report(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    plan = uniform_plan(store.store_id, _rows(store), "all-tt", tt_rank=8)
    with TraceReader(tiny_trace) as r:
        return accuracy_report(store, r, plan, dense=_dense(store), seed=5)


def test_tt_plan_gives_small_nonzero_differences(tt8_report, tiny_store):
    rep = tt8_report
    store = Store.open(tiny_store)
    assert rep["raw_policy"] == "all-dram" and rep["batches"] == 4 and rep["samples"] == 128
    assert rep["tt_lookups"] == rep["lookups"] > 0
    for t, meta in zip(rep["tables"], store.tables):
        variant = store.tt_variant(store.table_index(t["table"]), 8)
        assert t["tt_rank"] == 8 and t["compression_ratio"] == variant.compression_ratio
        assert 0 < t["mean_abs_diff"] <= t["max_abs_diff"]
        # rank 8 reaches the noise floor: the manifest's row error is about 0.05, pooling keeps it about that
        assert 0 < t["rel_fro_diff"] < 3 * t["manifest_rel_fro_error"] + 0.02
    assert 0 < rep["overall"]["rel_fro_diff"] < 0.2


def test_dense_figures_are_sane(tt8_report):
    d = tt8_report["dense"]
    assert d["samples"] == 128
    assert 0 < d["auc_raw"] < 1 and 0 < d["auc_tt"] < 1
    assert 0 < d["mean_abs_pred_diff"] <= d["max_abs_pred_diff"] < 0.2
    assert abs(d["auc_tt"] - d["auc_raw"]) < 0.1
    assert d["log_loss_raw"] > 0 and d["log_loss_tt"] > 0


def test_statistics_equal_a_direct_computation(tt8_report, tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    raw = _pooled_runs(store, uniform_plan(store.store_id, _rows(store), "all-dram"), tiny_trace)
    tt = _pooled_runs(store, uniform_plan(store.store_id, _rows(store), "all-tt", tt_rank=8), tiny_trace)
    for t, row in enumerate(tt8_report["tables"]):
        a = np.concatenate([b[t] for b in tt]).astype(np.float64)
        w = np.concatenate([b[t] for b in raw]).astype(np.float64)
        assert row["mean_abs_diff"] == pytest.approx(np.abs(a - w).mean(), rel=1e-9)
        assert row["max_abs_diff"] == np.abs(a - w).max()
        assert row["rel_fro_diff"] == pytest.approx(np.linalg.norm(a - w) / np.linalg.norm(w), rel=1e-9)


def test_raw_plan_vs_raw_is_exactly_zero(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    dense = _dense(store)
    plan = uniform_plan(store.store_id, _rows(store), "all-ssd")  # raw through O_DIRECT pages vs DRAM rows
    with TraceReader(tiny_trace) as r:
        rep = accuracy_report(store, r, plan, dense=dense, batches=2)
    assert rep["batches"] == 2 and rep["tt_lookups"] == 0
    assert all(t["mean_abs_diff"] == t["max_abs_diff"] == t["rel_fro_diff"] == 0.0 for t in rep["tables"])
    assert rep["overall"] == {"mean_abs_diff": 0.0, "max_abs_diff": 0.0, "rel_fro_diff": 0.0}
    d = rep["dense"]
    assert d["max_abs_pred_diff"] == 0.0 and d["auc_raw"] == d["auc_tt"] and d["log_loss_raw"] == d["log_loss_tt"]


def test_mixed_plan_counts_only_tt_lookups(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    t = store.tables
    plan = Plan(store_id=store.store_id, planner="mixed", tables=(
        TablePlacement(t[0].name, 100, "ssd_tt", 8), TablePlacement(t[1].name, 0, "ssd_raw"),
        TablePlacement(t[2].name, t[2].rows, "ssd_raw"), TablePlacement(t[3].name, 0, "ssd_tt", 4)))
    with TraceReader(tiny_trace) as r:
        rep = accuracy_report(store, r, plan, raw_plan=default_raw_plan(store, dram_limit_bytes=0))
    assert rep["raw_policy"] == "all-ssd" and rep["dense"] is None
    t0, t1, t2, t3 = rep["tables"]
    assert 0 < t0["tt_lookups"] < t0["lookups"]  # the 100 hottest ids (the lowest, no remap) come from DRAM
    assert t1["tt_lookups"] == t2["tt_lookups"] == 0 and t1["max_abs_diff"] == t2["max_abs_diff"] == 0.0
    assert t3["tt_lookups"] == t3["lookups"] and t3["tt_rank"] == 4 and t3["rel_fro_diff"] > 0.2  # rank 4: coarse


def test_report_is_deterministic(tiny_store, tiny_trace, tt8_report):
    store = Store.open(tiny_store)
    plan = uniform_plan(store.store_id, _rows(store), "all-tt", tt_rank=8)
    with TraceReader(tiny_trace) as r:
        again = accuracy_report(store, r, plan, dense=_dense(store), seed=5)
    assert json.dumps(again, sort_keys=True) == json.dumps(tt8_report, sort_keys=True)


def test_default_raw_plan_follows_the_dram_limit(tiny_store):
    store = Store.open(tiny_store)
    n = raw_bytes(store)  # 500*64 + 2000*32 + 3000*32 + 800*32 bytes
    assert n == 500 * 64 + 2000 * 32 + 3000 * 32 + 800 * 32
    assert default_raw_plan(store, dram_limit_bytes=n).planner == "all-dram"
    assert default_raw_plan(store, dram_limit_bytes=n - 1).planner == "all-ssd"


def test_bad_inputs_raise_input_error(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    tt = uniform_plan(store.store_id, _rows(store), "all-tt", tt_rank=8)
    with TraceReader(tiny_trace) as r:
        with pytest.raises(InputError, match="must serve every row raw"):
            accuracy_report(store, r, tt, raw_plan=tt)
        with pytest.raises(InputError, match="table dims"):
            accuracy_report(store, r, tt, dense=DenseModel(SMALL_DENSE, [16, 16, 16, 16]))
        with pytest.raises(InputError, match="batches"):
            accuracy_report(store, r, tt, batches=0)


# --- metrics ------------------------------------------------------------------------------------------

def test_auc_by_hand():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4 pairs
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # a tie counts one half: positive 1 ties negative 1 (0.5), positive 2 beats it (1) -> 1.5 / 2
    assert auc([1, 1, 2], [0, 1, 1]) == 0.75
    assert auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert math.isnan(auc([0.1, 0.2], [1, 1]))


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    scores = rng.integers(0, 1 + int(rng.integers(1, 20)), n) / 7.0  # few distinct values: many ties
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    want = auc_naive(scores, labels)
    got = auc(scores, labels)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)


def test_log_loss_by_hand():
    assert log_loss([0.5, 0.5], [0, 1]) == pytest.approx(math.log(2))
    # -(ln 0.8 + ln(1 - 0.4)) / 2
    assert log_loss([0.8, 0.4], [1, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert log_loss([1.0], [0]) == pytest.approx(-math.log(1e-7), rel=1e-6)  # clipped, finite


def test_diff_stats_merge_by_hand():
    a, b = DiffStats(), DiffStats()
    a.add(np.array([1.0, 2.0]), np.array([1.0, 1.0]))  # diffs 0, 1
    b.add(np.array([0.0]), np.array([2.0]))  # diff -2
    a.merge(b)
    # mean |d| = 3/3, max 2, rel = sqrt((0 + 1 + 4) / (1 + 1 + 4))
    assert a.summary() == {"mean_abs_diff": 1.0, "max_abs_diff": 2.0, "rel_fro_diff": pytest.approx(math.sqrt(5 / 6))}


# --- the command ----------------------------------------------------------------------------------------

def _run_cmd(argv, monkeypatch, tmp_path):
    from bench import cmd_accuracy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["screc", *argv])
    parser = argparse.ArgumentParser(prog="screc")
    cmd_accuracy.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_command_writes_a_result(tiny_store, tiny_trace, tmp_path, monkeypatch, capsys):
    code = _run_cmd(["accuracy", "--store", str(tiny_store), "--trace", str(tiny_trace), "--tt-rank", "8",
                     "--batches", "2", "--json", "out.json"], monkeypatch, tmp_path)
    assert code == 0
    out = capsys.readouterr().out
    assert "rel. Frobenius" in out and "AUC" in out and "log-loss" in out
    (run,) = (tmp_path / "runs").iterdir()
    doc = json.loads((run / "result.json").read_text())
    assert doc["kind"] == "accuracy" and doc["payload"]["batches"] == 2
    assert doc["payload"]["tables"][0]["tt_rank"] == 8 and (run / "tables.csv").is_file()
    assert json.loads((tmp_path / "out.json").read_text())["dense"]["samples"] == 64


def test_command_refuses_a_missing_rank(tiny_store, tiny_trace, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no TT rank 3"):
        _run_cmd(["accuracy", "--store", str(tiny_store), "--trace", str(tiny_trace), "--tt-rank", "3", "--no-dense"],
                 monkeypatch, tmp_path)

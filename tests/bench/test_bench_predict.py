"""bench predict: plans solved on the profile batches, replayed on the rest, predicted vs measured per plan."""

import json

import pytest

from bench.bench_predict import PredictConfig, _tier_summary, run_bench_predict
from plans.calibration import default_calibration
from tracegen.errors import InputError

from tests.conftest import one_line_error, run_cli


@pytest.fixture(scope="module")
def modelled_cal(tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "cal.json"
    default_calibration().save(path)
    return path


def test_predict_replays_every_plan_and_reports_its_error(tiny_store, tiny_trace, modelled_cal):
    cfg = PredictConfig(store=str(tiny_store), trace=str(tiny_trace), calibration=str(modelled_cal),
                        budgets=("0", "10KiB"), planners=("all-ssd", "static-topk"), devices=1, profile_batches=1,
                        repeats=2, engine="pread")
    result = run_bench_predict(cfg)
    rows = result["plans"]
    assert [(r["planner"], r["budget"]) for r in rows] == [("all-ssd", "0"), ("all-ssd", "10KiB"),
                                                            ("static-topk", "0"), ("static-topk", "10KiB")]
    for r in rows:
        runs = r["measured_runs_s"]
        assert len(runs) == 2 and all(x > 0 for x in runs)
        assert min(runs) <= r["measured_batch_s"] <= max(runs)  # the median of the repeats lies among them
        assert (r["relative_error"] > 0) == (r["measured_batch_s"] > r["predicted_batch_s"])  # sign: slower than said
        assert r["run_spread"] >= 0 and (r["run_spread"] == 0) == (runs[0] == runs[1])
    assert rows[0]["tiers"] == "ssd_raw" and rows[3]["tiers"].startswith("dram")  # static-topk pins hot rows
    # the model: a DRAM budget changes nothing for all-ssd, and 10 KiB of hot rows cannot make static-topk slower
    assert rows[0]["predicted_batch_s"] == rows[1]["predicted_batch_s"]
    assert rows[3]["predicted_batch_s"] <= rows[2]["predicted_batch_s"]
    s = result["summary"]
    assert s["plans"] == 4 and s["goal"] == 0.25  # within 25%, as the README states
    assert s["within_goal"] == sum(abs(r["relative_error"]) <= 0.25 for r in rows)
    assert s["median_abs_error"] <= s["max_abs_error"] and s["max_abs_error"] in [abs(r["relative_error"]) for r in rows]
    assert result["config"]["replayed_batches"] == 3  # tiny trace: 4 batches, 1 profiled


def test_predict_config_checks(tiny_trace):
    ok = PredictConfig(store="s", trace="t")
    assert ok.check(40, tiny_trace) == (10, [0, 1 << 20, 4 << 20, 16 << 20])  # default: first quarter profiled
    for bad in (dict(planners=("nope",)), dict(budgets=("5XB",)), dict(repeats=0), dict(batches=1),
                dict(profile_batches=39)):
        with pytest.raises(InputError):
            PredictConfig(store="s", trace="t", **bad).check(40, tiny_trace)


def test_tier_summary_names_the_tiers_in_use(tiny_store):
    from emulator.plan import Plan, TablePlacement

    plan = Plan("x", (TablePlacement("a", 5, "ssd_tt", 8), TablePlacement("b", 0, "ssd_raw")),
                predicted={"tables": {"a": {"rows": 10}, "b": {"rows": 10}}})
    assert _tier_summary(plan) == "dram+ssd_raw+ssd_tt"


def test_predict_cli_bad_input_is_one_line(tiny_store, tiny_trace, capsys):
    code, _, err = run_cli(["bench", "predict", "--store", str(tiny_store), "--trace", str(tiny_trace),
                            "--planners", "mip,nope"], capsys)
    assert code == 2 and one_line_error(err)


def test_predict_cli_writes_json(tiny_store, tiny_trace, modelled_cal, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["bench", "predict", "--store", str(tiny_store), "--trace", str(tiny_trace),
                              "--calibration", str(modelled_cal), "--budgets", "0", "--planners", "all-ssd",
                              "--devices", "1", "--profile-batches", "1", "--repeats", "1", "--engine", "pread",
                              "--out", "p.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["summary"]["plans"] == 1
    assert "predicted vs measured" in out and (tmp_path / "runs").is_dir()

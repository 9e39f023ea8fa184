"""screc plan size and plan show --explain from the command line: answers, 80 columns, bad input -> exit 2."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from bench.plan_explain import render_explain
from bench.plan_sizing import render_size
from tests.conftest import one_line_error, run_cli
from tests.plans_fixtures import o_direct_supported


def size_argv(store, trace, *extra) -> list[str]:
    return ["plan", "size", "--store", str(store), "--trace", str(trace), "--profile-batches", "2",
            "--time-limit", "10", "--resolution", "5%", *extra]


@pytest.mark.parametrize("flag,value", [("--target-batch-ms", "0"), ("--target-batch-ms", "-3"),
                                        ("--target-qps", "0"), ("--target-p99-ms", "-1"),
                                        ("--target-batch-ms", "inf"), ("--target-hit-ratio", "1.5")])
def test_zero_negative_or_infinite_targets_exit_2(tiny_store, tiny_trace, capsys, flag, value):
    code, _, err = run_cli(size_argv(tiny_store, tiny_trace, flag, value), capsys)
    assert code == 2 and one_line_error(err)


def test_unreachable_target_exits_2_naming_it(tiny_store, tiny_trace, capsys):
    code, _, err = run_cli(size_argv(tiny_store, tiny_trace, "--target-batch-ms", "1e-6"), capsys)
    assert code == 2 and one_line_error(err) and "unreachable" in err and "all-DRAM" in err


def test_size_finds_the_smallest_grid_budget(tiny_store, tiny_trace, tmp_path, capsys):
    # the all-DRAM and all-SSD predictions bracket a target half way between them
    code, out, _ = run_cli(size_argv(tiny_store, tiny_trace, "--target-batch-ms", "1000", "--json", "-",
                                     "--no-lru"), capsys)
    assert code == 0
    curve = json.loads(out)["screc"]["curve"]
    lo, hi = curve[-1]["predicted_batch_s"], curve[0]["predicted_batch_s"]
    target_ms = (lo + hi) / 2 * 1e3
    code, out, _ = run_cli(size_argv(tiny_store, tiny_trace, "--target-batch-ms", f"{target_ms}", "--json", "-",
                                     "-o", str(tmp_path / "found.json")), capsys)
    assert code == 0
    p = json.loads(out)
    s = p["screc"]
    assert s["found"]["meets"] and s["found"]["predicted_batch_s"] <= target_ms * 1e-3
    if s["below"] is not None:  # the budget one grid step below misses the target
        assert not s["below"]["meets"]
        assert s["found"]["budget_bytes"] - s["below"]["budget_bytes"] <= s["resolution_bytes"]
    assert [c["budget_bytes"] for c in s["curve"]] == sorted(c["budget_bytes"] for c in s["curve"])
    assert s["basis"] == "modelled" and (tmp_path / "found.json").is_file()
    assert p["lru"]["target"].startswith("mean batch time")
    view = Console(width=80, record=True)
    view.print(render_size(p))
    assert all(len(line) <= 80 for line in view.export_text().splitlines())


def test_hit_ratio_target_sizes_the_lru_only(tiny_store, tiny_trace, capsys):
    code, out, _ = run_cli(size_argv(tiny_store, tiny_trace, "--target-hit-ratio", "0.05", "--json", "-"), capsys)
    assert code == 0
    p = json.loads(out)
    assert "screc" not in p and p["lru"]["found"]["hit_ratio"] >= 0.05


def test_explain_needs_the_trace(tiny_store, tiny_trace, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert run_cli(["plan", "solve", "--store", str(tiny_store), "--trace", str(tiny_trace), "--profile-batches", "2",
                    "--dram-budget", "16KiB", "--time-limit", "10", "--accuracy-budget", "0.5", "-o", str(plan)],
                   capsys)[0] == 0
    code, _, err = run_cli(["plan", "show", str(plan), "--explain", "--store", str(tiny_store)], capsys)
    assert code == 2 and one_line_error(err) and "--trace" in err
    code, out, _ = run_cli(["plan", "show", str(plan), "--explain", "--store", str(tiny_store), "--trace",
                            str(tiny_trace), "--profile-batches", "2", "--time-limit", "10", "--accuracy-budget", "0.5",
                            "--json", "-"], capsys)
    assert code == 0
    p = json.loads(out)
    exp = p["explain"]
    assert len(exp["tables"]) == len(p["plan"]["tables"]) and exp["basis"] == "modelled"
    # re-solved at the plan's own budget with the same profile and rates: the plan's own prediction
    assert exp["resolved_batch_s"] == pytest.approx(exp["recorded_batch_s"], rel=1e-6)
    assert exp["summary"].endswith("(modelled)")
    assert [c["name"] for c in exp["constraints"]][-1] == "accuracy (weighted)"
    view = Console(width=80, record=True)
    view.print(render_explain(exp))
    assert all(len(line) <= 80 for line in view.export_text().splitlines())


def test_check_replays_the_found_plan(tiny_store, tiny_trace, capsys):
    if not o_direct_supported(tiny_store):
        pytest.skip("O_DIRECT not supported where the test store lives")
    code, out, _ = run_cli(size_argv(tiny_store, tiny_trace, "--target-batch-ms", "1000", "--check", "--rounds",
                                     "1", "--min-batches", "2", "--min-seconds", "0", "--engine", "pread",
                                     "--json", "-"), capsys)
    assert code == 0
    chk = json.loads(out)["check"]
    assert chk["basis"] == "measured" and chk["batches"] == [2, 4]
    rows = {r["policy"]: r for r in chk["rows"]}
    assert rows["screc"]["measured_batch_s"] > 0 and rows["screc"]["meets"] is not None

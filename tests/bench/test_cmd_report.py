"""Tests for bench.cmd_report: `screc report` draws PNGs from synthetic result files."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib (the 'plots' extra) is not installed")

from bench.cli import main  # noqa: E402
from bench.cmd_report import PLOT_FILES, context, default_out_dir, make_report, qps_of, replay_rows  # noqa: E402
from bench.results import load_run, write_run  # noqa: E402
from emulator.replay.counters import LatencyHistogram  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(policy: str, qps: float, seed: int, tiers: dict) -> dict:
    h = LatencyHistogram()
    h.record_many(np.random.default_rng(seed).lognormal(np.log(1e-3 * 1000 / qps), 0.5, 500))
    return {"policy": policy, "batches": 500, "samples": 500 * 64, "lookups": 500 * 64 * 26, "qps": qps,
            "latency_s": {"p50": h.percentile(50), "p95": h.percentile(95), "p99": h.percentile(99),
                          "max": h.max_s, "mean": h.mean_s},
            "latency_hist": h.to_dict(), "tiers": {k: {"share": v} for k, v in tiers.items()}}


def _sweep_run(tmp_path):
    curves = {f"t{i}": {"k": [1, 10, 100, 1000, 10000], "share": [0.1 * i, 0.3, 0.6, 0.85, 1.0]} for i in range(3)}
    sweep = [{"dram_budget_bytes": gib << 30,
              "rows": [_row("all-ssd", 1000.0, 1, {"ssd_raw": 1.0}),
                       _row("screc", 1500.0 * gib, 2, {"dram": 0.5 * gib, "ssd_raw": 1 - 0.5 * gib})]}
             for gib in (1, 2)]
    return write_run("compare", ["screc", "compare"], {"sweep": sweep, "access_curves": curves},
                     runs_dir=tmp_path / "runs")


def _replay_run(tmp_path):  # an older-style run: percentiles only, no histogram, no curves
    payload = {"policy": "all-dram", "qps": 9000.0, "dram_budget_bytes": 4 << 30,
               "latency_s": {"p50": 1e-4, "p95": 2e-4, "p99": 3e-4, "max": 1e-3},
               "tiers": {"dram": {"share": 1.0}}}
    return write_run("replay", ["screc", "replay"], payload, runs_dir=tmp_path / "runs")


def test_rows_are_flattened_with_their_budgets(tmp_path):
    rows = replay_rows(load_run(_sweep_run(tmp_path)))
    assert [(r["policy"], r["dram_budget_bytes"] >> 30) for r in rows] == [
        ("all-ssd", 1), ("screc", 1), ("all-ssd", 2), ("screc", 2)]


def test_report_draws_every_plot(tmp_path):
    out = tmp_path / "plots"
    files = make_report([_sweep_run(tmp_path), _replay_run(tmp_path) / "result.json"], out)
    assert sorted(f.name for f in files) == sorted(PLOT_FILES)
    for f in files:
        assert f.read_bytes()[:8] == PNG_MAGIC and f.stat().st_size > 5000


def test_single_replay_run_draws_what_it_can(tmp_path):
    run_dir = _replay_run(tmp_path)
    files = make_report([run_dir], default_out_dir([str(run_dir)]))
    # one budget -> no budget sweep plot; no curves -> no access curve plot
    assert sorted(f.name for f in files) == ["latency_cdf.png", "throughput.png", "tier_share.png"]
    assert all(f.parent == run_dir / "plots" for f in files)


def test_cli_json_and_errors(tmp_path, capsys):
    run_dir = _sweep_run(tmp_path)
    assert main(["report", str(run_dir), "-o", str(tmp_path / "o"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["files"]) == 5 and out["out_dir"] == str(tmp_path / "o")
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no result file" in err
    bench_run = write_run("bench-io", ["screc", "bench", "io"], {"iops": 1.0}, runs_dir=tmp_path / "runs")
    assert main(["report", str(bench_run)]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_missing_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    run_dir = _replay_run(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["report", str(run_dir)]) == 2
    assert "pip install 'screc[plots]'" in capsys.readouterr().err


def test_help_has_an_example(capsys):
    assert main(["report", "--help"]) == 0
    assert "example:" in capsys.readouterr().out


def test_titles_name_the_store_trace_and_budget(tmp_path, monkeypatch):
    import bench.cmd_report as report

    titles = []

    def spy(fig, path):
        titles.append(fig.axes[0].get_title())
        return path

    monkeypatch.setattr(report, "_save", spy)
    payload = {"store": "stores/ck", "trace": "traces/ck.h5", "dram_budget_bytes": 64 << 20,
               "rows": [_row("all-ssd", 1000.0, 1, {"ssd_raw": 1.0}), _row("screc", 3000.0, 2, {"dram": 1.0})]}
    make_report([write_run("compare", ["screc", "compare"], payload, runs_dir=tmp_path / "runs")], tmp_path / "o")
    assert len(titles) == 3 and all(t.endswith("store stores/ck, trace traces/ck.h5, DRAM budget 64.00 MiB")
                                    for t in titles)
    titles.clear()
    make_report([_sweep_run(tmp_path)], tmp_path / "o2")  # no paths: the run's ids; two budgets: the range
    assert titles[0].endswith("store unknown, trace unknown, DRAM budgets 1.00 GiB to 2.00 GiB")


def test_context_and_steady_throughput():
    rows = [{"store": "a/s1", "trace": "t.h5", "dram_budget_bytes": 1024, "qps": 10.0, "steady_qps": 12.0},
            {"store": "b/s2", "trace": "t.h5", "dram_budget_bytes": None, "qps": 7.0}]
    assert context(rows) == "2 stores, trace t.h5, DRAM budget 1.00 KiB"
    assert context([{"store": "/tmp/x/demo/store", "trace": "/tmp/x/demo/trace.h5"}]) == \
        "store demo/store, trace demo/trace.h5, no DRAM budget"
    assert qps_of(rows[0]) == 12.0 and qps_of(rows[1]) == 7.0  # steady state when the row has it


def test_rows_take_the_runs_store_and_trace(tmp_path):
    run = write_run("replay", ["screc", "replay"], {"policy": "all-dram", "qps": 1.0}, store_id="ab" * 16,
                    trace_id="cd" * 16, runs_dir=tmp_path / "runs")
    row, = replay_rows(load_run(run))
    assert row["store"] == "ab" * 6 and row["trace"] == "cd" * 6
    assert context([row]) == f"store {'ab' * 6}, trace {'cd' * 6}, no DRAM budget"


def test_unwritable_out_dir_and_bare_json(tmp_path, capsys):
    run_dir = _sweep_run(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["report", str(run_dir), "--out-dir", str(blocker / "plots")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a_file" in err
    assert main(["report", str(run_dir), "--out-dir", str(tmp_path / "p"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["files"]) == 5


def _tables_run(tmp_path):
    """A replay whose payload has per-table figures (the summary's ``tables`` list), 12 tables."""
    tables = [{"index": i, "name": f"t{i}", "lookups": 100 * i, "dram": 100 * i, "ssd_raw": 0, "ssd_tt": 0,
               "lru": 0, "lru_hits": 0, "bytes_read": 0, "ios": 0, "tt_rows": 0, "busy_s": 0.01 * (i % 5),
               "busy_share": 0.0} for i in range(12)]
    row = {**_row("screc", 1000.0, 3, {"dram": 1.0}), "tables": tables}
    return write_run("replay", ["screc", "replay"], row, runs_dir=tmp_path / "runs")


def test_report_prints_the_busiest_tables(tmp_path, capsys):
    run = _tables_run(tmp_path)
    rc = main(["report", str(run), "--out-dir", str(tmp_path / "plots"), "--tables", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "screc: top 3 of 12 tables by busy s (measured, shared by lookups)" in " ".join(out.split())
    # busy 0.04 s: t4 and t9, t9 first (more lookups); then 0.03 s: t8 and t3, t8 (800 lookups) first
    names = [line.split()[0] for line in out.splitlines() if line.startswith("t") and "%" in line]
    assert names == ["t9", "t4", "t8"]
    rc = main(["report", str(run), "--out-dir", str(tmp_path / "plots"), "--tables", "2", "--json"])
    doc = json.loads(capsys.readouterr().out)
    (entry,) = doc["tables"]
    assert entry["tables_total"] == 12 and [t["name"] for t in entry["top"]] == ["t9", "t4"]


def test_report_tables_bad_input(tmp_path, capsys):
    rc = main(["report", str(_replay_run(tmp_path)), "--out-dir", str(tmp_path / "p"), "--tables", "5"])
    assert rc == 0 and "no per-table figures in these runs" in capsys.readouterr().out
    row = {**_row("x", 10.0, 1, {"dram": 1.0}), "tables": [{"name": "t0"}]}
    bad = write_run("replay", ["screc", "replay"], row, runs_dir=tmp_path / "bad")
    rc = main(["report", str(bad), "--out-dir", str(tmp_path / "p2"), "--tables", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a per-table object" in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(bad), "--tables", "-1"]) == 2

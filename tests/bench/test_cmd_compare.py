"""screc compare: every policy on the same later batches, measured warm in interleaved rounds, fairly."""

import json

import pytest
from bench.cmd_compare import render
from emulator.plan import uniform_plan
from emulator.store.store import Store
from plans.planner import spread_over_devices

from tests.bench.test_tables import assert_fits, rendered
from tests.conftest import one_line_error, run_cli


def _fast(tmp_path, *extra):
    return ["--profile-batches", "2", "--engine", "pread", "--no-live", "--time-limit", "5", "--min-batches", "3",
            "--min-seconds", "0", "--rounds", "2", "--warmup-batches", "1", "--out-dir", str(tmp_path / "out"),
            *extra]


def test_compare_all_policies_on_tiny(tiny_store, tiny_trace, tmp_path, capsys):
    code, out, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--dram-budget",
                              "10%", "--devices", "2", "--json", str(tmp_path / "c.json"), *_fast(tmp_path)], capsys)
    assert code == 0, err
    payload = json.loads((tmp_path / "c.json").read_text())
    rows = {r["policy"]: r for r in payload["rows"]}
    assert list(rows) == ["all-dram", "all-ssd", "lru", "static-topk", "screc"]
    for r in rows.values():
        # batches [2, 4) replayed, looped to 3 batches per round, 2 rounds; the first of each run apart
        assert r["rounds"] == 2 and r["measured_batches"] == 6 and r["steady_batches"] == 2
        assert r["distinct_batches"] == 2 and r["warmup_batches"] == 1 and r["steady_qps"] > 0
        assert r["queue_depth"] == 128 and r["devices_used"] == 2  # baselines get the planned policies' devices
        assert len(r["round_steady_qps"]) == 2 and r["qps_spread"] >= 0
    assert rows["all-ssd"]["speedup_vs_all_ssd"] == pytest.approx(1.0)
    assert rows["all-dram"]["bytes_read_per_batch"] == 0 and rows["all-ssd"]["ios_per_batch"] > 0
    # no --calibration: the planned policies' notes say their rates are modelled, and the prediction is too
    assert any("modelled" in n for n in rows["screc"]["notes"])
    assert rows["screc"]["prediction"]["basis"] == "modelled"
    assert "predicted ms" in out and "(modelled)" in out
    # each plan note printed once, led by the policies it applies to, its basis kept (not eaten as markup)
    assert "static-topk, screc: no calibration given: modelled default rates" in out and "[modelled]" in out
    assert "again in a loop" in out  # 2 distinct batches looped to 3: said so
    runs = list((tmp_path / "out").iterdir())
    assert {p.name for p in runs} >= {"plans"} and any("compare" in p.name for p in runs)


def test_compare_bare_json_is_stdout_only(tiny_store, tiny_trace, tmp_path, capsys):
    code, out, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--dram-budget",
                              "1KiB", "--policies", "all-ssd", "--json", *_fast(tmp_path)], capsys)
    assert code == 0, err
    assert json.loads(out)["rows"][0]["policy"] == "all-ssd" and "throughput" in err


def test_compare_sweep_resolves_sizes_and_shares(tiny_store, tiny_trace, tmp_path, capsys):
    code, out, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--sweep",
                              "dram-budget=1KiB,10%", "--policies", "all-ssd,lru", "--json", *_fast(tmp_path)], capsys)
    assert code == 0, err
    sweep = json.loads(out)["sweep"]
    raw = Store.open(tiny_store).raw_bytes
    assert [e["dram_budget_bytes"] for e in sweep] == [1024, int(raw * 0.10)]  # 1 KiB, then 10% of the model
    assert all([r["policy"] for r in e["rows"]] == ["all-ssd", "lru"] for e in sweep)
    assert sweep[1]["rows"][1]["dram_used_bytes"] > sweep[0]["rows"][1]["dram_used_bytes"]  # the larger cache


def test_spread_over_devices_balances_bytes(tiny_store):
    store = Store.open(tiny_store)
    plan = uniform_plan(store.store_id, {t.name: t.rows for t in store.tables}, "all-ssd")
    two = spread_over_devices(plan, store, 2)
    assert [d.name for d in two.devices] == ["dev0", "dev1"]
    size = {t.name: t.rows * t.row_bytes for t in store.tables}
    load = [sum(size[p.table] for p in two.tables if p.device == d) for d in (0, 1)]
    # greedy largest-first: the loads differ by at most the largest table
    assert abs(load[0] - load[1]) <= max(size.values()) and min(load) > 0
    assert spread_over_devices(plan, store, 1) is plan


def _row(policy, qps):
    return {"policy": policy, "steady_qps": qps, "qps_spread": 0.123, "steady_lookups_per_s": qps * 26,
            "latency_s": {"p50": 0.00123, "p99": 0.0456}, "speedup_vs_all_ssd": qps / 21_370.0,
            "speedup_vs_lru": 1.0, "dram_used_bytes": 89 << 20, "bytes_read_per_batch": 1.48 * 2**30,
            "ios_per_batch": 35_868.0, "tt_tables": 76, "tt_weighted_rel_error": 0.0007,
            "prediction": {"predicted_batch_s": 0.571, "measured_batch_s": 0.734, "relative_error": 0.734 / 0.571 - 1}}


def test_tables_fit_80_columns():
    rows = [_row(p, q) for p, q in (("all-dram", 1_439_614.0), ("all-ssd", 21_370.0), ("lru", 21_700.0),
                                    ("static-topk", 401_000.0), ("screc", 756_000.0))]
    text = rendered(render(rows, 89 << 20, int(1.74 * 2**30), 3))
    # 67.37 = 1,439,614 / 21,370 (x all-ssd); 734 / 571 - 1 = +29%; 1.23 and 45.6 ms; 1.00 x lru
    assert_fits(text, [("all-dram", "1,439,614", "12%", "37.43", "1.23", "45.6", "67.37", "1.00"),
                       ("static-topk", "89.00 MiB", "1.48 GiB", "35,868", "76", "0.0007"),
                       ("screc", "571", "734", "+29%")])
    assert "predicted ms (modelled)" in text


def test_compare_bad_inputs(tiny_store, tiny_trace, tmp_path, capsys):
    base = ["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--no-live"]
    for extra in (["--dram-budget", "5XB"], ["--dram-budget", "1000"], [], ["--dram-budget", "1MiB", "--policies", "nope"],
                  ["--sweep", "budget=1,2"], ["--dram-budget", "1MiB", "--profile-batches", "99"],
                  ["--dram-budget", "1MiB", "--min-batches", "1"], ["--dram-budget", "1MiB", "--rounds", "0"]):
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and one_line_error(err), (extra, err)


def test_unwritable_outputs_fail_before_any_work(tiny_store, tiny_trace, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a path under a regular file cannot be written, even by root
    for extra in (["--out-dir", str(blocker / "runs")], ["--plan-dir", str(blocker / "plans")],
                  ["--json", str(blocker / "c.json")]):
        code, _, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace),
                                "--dram-budget", "1MiB", "--no-live", "--out-dir", str(tmp_path / "runs"), *extra],
                               capsys)
        assert code == 2 and one_line_error(err) and "round" not in err, (extra, err)
    assert not (tmp_path / "runs").exists()  # nothing was measured or written


def test_compare_on_an_emulated_profile(tiny_store, tiny_trace, tmp_path, capsys):
    # smartssd devices (modelled rates: no calibration): every policy measured and emulated, speed-ups on the
    # device clock over all-dram / all-ssd, energy modelled, SCRec's reported figure stated beside ours
    code, out, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--dram-budget",
                              "10%", "--devices", "2", "--cores", "4", "--device-profile", "smartssd",
                              "--policies", "all-dram,all-ssd,all-tt,screc", "--json", str(tmp_path / "c.json"),
                              *_fast(tmp_path)], capsys)
    assert code == 0, err
    rows = {r["policy"]: r for r in json.loads((tmp_path / "c.json").read_text())["rows"]}
    for r in rows.values():
        e = r["emulated"]
        assert e["profile"] == "smartssd" and e["mode"] == "per-device cores" and e["emulated_qps"] > 0
        assert e["energy_j"] > 0 and e["queries_per_joule"] > 0
    assert rows["all-dram"]["emulated_speedup_vs_all_dram"] == pytest.approx(1.0)
    assert rows["all-ssd"]["pooled_by"] == "host" and rows["screc"]["pooled_by"] == "devices"
    assert rows["all-ssd"]["emulated"]["link_bytes_per_batch"] == pytest.approx(rows["all-ssd"]["bytes_read_per_batch"])
    assert "emulated under the smartssd profile" in out and "SCRec reports 55.77x" in out

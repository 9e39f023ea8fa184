"""screc demo: every batch verified, then each policy measured warm, long enough, first batch apart.

Timings are never asserted (the machine is shared); what is checked is that warm-up happened, that the
first batch is excluded, and that the floor on measured batches was reached."""

from __future__ import annotations

import json

from bench.cmd_demo import render
from tests.bench.test_tables import assert_fits, rendered
from tests.conftest import one_line_error, run_cli


def test_demo_verifies_then_measures_warm(tmp_path, capsys):
    code, out, err = run_cli(["demo", "--model", "tiny", "--scale", "1", "--batches", "4", "--engine", "pread",
                              "--min-batches", "6", "--min-seconds", "0", "--rounds", "2", "--warmup-batches", "2",
                              "--out-dir", str(tmp_path), "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)  # bare --json: stdout is the JSON alone, the tables went to stderr
    rows = {r["policy"]: r for r in payload["rows"]}
    assert list(rows) == ["all-dram", "all-ssd", "all-tt"]
    for r in rows.values():
        assert r["verify"]["ok"] and r["verify"]["exact_bags"] + r["verify"]["tt_bags"] > 0
        # warm-up: 2 batches before each measured run, the first of which is the cold one reported apart
        assert r["warmup_batches"] == 2 and r["cold_first_batch_s"] > 0
        # 4 trace batches looped to the floor of 6 per run, 2 rounds; the first batch of each run excluded
        assert r["measured_batches"] == 12 and r["steady_batches"] == 5 and r["passes"] == 1.5
        assert r["steady_qps"] > 0 and r["rounds"] == 2 and r["pipeline"] is True
    assert rows["all-dram"]["ios_per_batch"] == 0 and rows["all-ssd"]["ios_per_batch"] > 0
    assert rows["all-tt"]["verify"]["tt_bags"] > 0
    assert "throughput: steady state" in err and "again in a loop" in err
    assert (tmp_path / "demo" / "store").is_dir() and any("-demo-" in p.name for p in tmp_path.iterdir())


def test_demo_refuses_bad_input_before_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for extra in (["--out-dir", str(blocker)], ["--json", str(blocker / "d.json")], ["--engine", "null"],
                  ["--min-batches", "1"], ["--batches", "0"]):
        code, _, err = run_cli(["demo", "--model", "tiny", "--out-dir", str(tmp_path / "o"), *extra], capsys)
        assert code == 2 and one_line_error(err), (extra, err)
    assert not (tmp_path / "o").exists()


def test_demo_tables_fit_80_columns():
    row = {"policy": "all-tt", "steady_qps": 1_188_467.0, "qps_spread": 0.07, "steady_lookups_per_s": 30.9e6,
           "latency_s": {"p50": 0.00457, "p99": 0.00881}, "cold_first_batch_s": 0.412, "ios_per_batch": 340.0,
           "bytes_read_per_batch": 1.7 * 2**20, "dram_used_bytes": 41 << 20,
           "verify": {"exact_bags": 346_112, "tt_bags": 186_368, "max_tt_abs_diff": 3.1e-3}}
    text = rendered(render([row], 3))
    assert_fits(text, [("all-tt", "1,188,467", "7%", "30.90", "4.57", "8.81", "412"),
                       ("all-tt", "340", "1.70 MiB", "41.00 MiB", "346,112", "186,368", "3.10e-03")])

"""screc bench emulate: every policy x device count on both clocks; bad input refused before any work."""

import json

import pytest

from tests.conftest import one_line_error, run_cli


def test_bench_emulate_on_tiny(tiny_store, tiny_trace, tmp_path, capsys):
    code, out, err = run_cli(["bench", "emulate", "--store", str(tiny_store), "--trace", str(tiny_trace),
                              "--engine", "pread", "--profile-batches", "2", "--rounds", "1", "--min-batches", "3",
                              "--min-seconds", "0", "--warmup-batches", "1", "--dram-budget", "10%",
                              "--out-dir", str(tmp_path / "out"), "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "e.json").read_text())
    got = [(r["policy"], r["devices"]) for r in res["rows"]]
    assert got == [(p, n) for n in (1, 2) for p in ("all-ssd", "all-tt", "screc")]
    for r in res["rows"]:
        assert r["measured_batch_s"] > 0 and r["emulated_batch_s"] > 0 and r["steady_batches"] == 2
        assert r["within_goal"] == (abs(r["ratio"] - 1) <= 0.10)
        assert r["pooled_by"] == ("host" if r["policy"] == "all-ssd" else "devices")
        assert len(r["cores"]) == r["devices"]
    assert res["profile"] == "host" and len(res["load_average"]) == 3
    assert "emulated ms" in out and "load average" in out


@pytest.mark.parametrize("args,expect", [(["--devices", "0"], "--devices"), (["--policies", "lru"], "--policies"),
                                         (["--host-threads", "0"], "--host-threads")])
def test_bench_emulate_bad_input(tiny_store, tiny_trace, tmp_path, capsys, args, expect):
    code, out, err = run_cli(["bench", "emulate", "--store", str(tiny_store), "--trace", str(tiny_trace),
                              "--out-dir", str(tmp_path / "out"), *args], capsys)
    assert code == 2 and one_line_error(err) and expect in err

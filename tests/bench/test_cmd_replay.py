"""bench.cmd_replay (and the shared driver bench.replay_run): the flag convention and first-contact problems.

Unwritable outputs are made with a path under a regular file (``file/sub``): the tests run as root, where a
chmod-ed read-only directory is still writable, but nothing can be created below a regular file.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import one_line_error, run_cli


def _no_work(monkeypatch):
    """Fail the test if the replay starts: every check must come before any work."""
    import bench.cmd_replay as cmd

    def refuse(*a, **k):
        raise AssertionError("the replay ran before the bad input was refused")

    monkeypatch.setattr(cmd, "run_replay", refuse)


def _replay(store, trace, *extra):
    return ["replay", "--store", str(store), "--trace", str(trace), "--no-live", "--engine", "pread", *extra]


def test_json_bare_prints_the_payload_and_out_dir_takes_the_result(tiny_store, tiny_trace, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(_replay(tiny_store, tiny_trace, "--policy", "all-tt", "--verify", "--json",
                                     "--out-dir", str(tmp_path / "elsewhere")), capsys)
    assert code == 0, err
    payload = json.loads(out)  # stdout is the JSON alone
    assert payload["policy"] == "all-tt" and payload["batches"] == 4  # the tiny trace has 4 batches
    assert payload["verify"]["tt_bags"] > 0 and payload["bytes_read"] == 0  # every tiny table has TT cores
    (run,) = (tmp_path / "elsewhere").iterdir()
    assert json.loads((run / "result.json").read_text())["kind"] == "replay"
    assert not (tmp_path / "runs").exists()  # nothing under the default


def test_json_file_and_summary_line(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(_replay(tiny_store, tiny_trace, "--policy", "all-dram", "--json", "r.json"), capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["policy"] == "all-dram"
    assert out.startswith("all-dram: 4 batches") and "result in runs/" in out


def test_start_batch_past_the_end_is_exit_2(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    code, _, err = run_cli(_replay(tiny_store, tiny_trace, "--start-batch", "999"), capsys)
    assert code == 2 and one_line_error(err), err
    assert str(tiny_trace) in err and "999 is past the last batch (the trace has 4 batches" in err
    assert not (tmp_path / "runs").exists()


def test_null_engine_with_verify_is_refused_up_front(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    code, _, err = run_cli(["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--engine", "null",
                            "--verify"], capsys)
    assert code == 2 and one_line_error(err) and "null reads nothing" in err and "differs" not in err


@pytest.mark.parametrize("where", ["out-dir", "cwd-runs", "json"])
def test_unwritable_outputs_fail_before_any_work(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch, where):
    (tmp_path / "file").write_text("a regular file")
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    extra = {"out-dir": ["--out-dir", "file/sub"], "json": ["--json", "file/r.json"], "cwd-runs": []}[where]
    if where == "cwd-runs":  # a directory where runs/ cannot be made: here it is a regular file
        (tmp_path / "runs").write_text("not a directory")
    code, _, err = run_cli(_replay(tiny_store, tiny_trace, *extra), capsys)
    assert code == 2 and one_line_error(err), err
    assert ("runs" if where == "cwd-runs" else "file") in err


def test_a_file_given_as_store_says_so(tiny_trace, capsys):
    code, _, err = run_cli(_replay(tiny_trace, tiny_trace), capsys)
    assert code == 2 and one_line_error(err)
    assert f"{tiny_trace}: is a file, not a store directory" in err


@pytest.mark.parametrize("edit, entry", [
    (lambda d: d["tables"][0].update(table="renamed"), "tables[0]: the store has no table 'renamed'"),
    (lambda d: d["tables"].append({"table": "extra", "hot_rows": 0}), "the store has no table 'extra'"),
    (lambda d: d["tables"][1].update(hot_rows=10**9), "hot_rows 1000000000 is more than the table's"),
])
def test_hand_edited_plan_is_refused_naming_file_and_entry(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch,
                                                             edit, entry):
    from emulator.plan import uniform_plan
    from emulator.store.store import Store

    store = Store.open(tiny_store)
    d = json.loads(json.dumps(uniform_plan(store.store_id, {t.name: t.rows for t in store.tables},
                                           "all-ssd").to_dict()))
    edit(d)
    plan = tmp_path / "edited.json"
    plan.write_text(json.dumps(d))
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    code, _, err = run_cli(_replay(tiny_store, tiny_trace, "--plan", str(plan)), capsys)
    assert code == 2 and one_line_error(err), err
    assert f"{plan}: " in err and entry in err


@pytest.mark.parametrize("flag, value", [("--qd", "0"), ("--batches", "0"), ("--start-batch", "-1")])
def test_bad_numbers_are_exit_2(tiny_store, tiny_trace, capsys, monkeypatch, flag, value):
    _no_work(monkeypatch)
    code, _, err = run_cli(_replay(tiny_store, tiny_trace, flag, value), capsys)
    assert code == 2 and one_line_error(err) and flag in err


def test_help_has_an_example_and_a_legend(capsys):
    code, out, _ = run_cli(["replay", "--help"], capsys)
    assert code == 0
    assert "example:" in out and "--json" in out and "--out-dir" in out and "--plan plan.json" in out
    assert "predicted" in out and "modelled" in out  # the legend says the prediction is modelled


def test_summary_puts_the_steady_state_first_and_flags_few_batches():
    from bench.cmd_replay import summary_line

    payload = {"policy": "screc", "batches": 5, "steady_batches": 4, "steady_qps": 2048.0,
               "steady_lookups_per_s": 3.0e6, "first_batch_s": 0.25, "qps": 1000.0, "latency_s": {"p50": 0.004,
               "p99": 0.009}, "ios": 1234, "bytes_read": 1 << 20, "dram_used_bytes": 0, "verify": None,
               "prediction": {"measured_batch_s": 0.005, "predicted_batch_s": 0.004, "relative_error": 0.25}}
    text = summary_line(payload, "runs/x")
    assert text.startswith("screc: 5 batches; steady state 2,048 queries/s, 3.00 M lookups/s over 4 batches "
                           "(first batch 250.00 ms apart; whole run 1,000 queries/s)")
    assert "only 4 steady-state batches" in text  # fewer than 10
    assert "5.00 ms measured vs 4.00 ms predicted (modelled) (+25%)" in text and "1,234 IOs (1.00 MiB)" in text
    payload["steady_batches"] = 10
    assert "only" not in summary_line(payload, "runs/x")


def test_with_cores_keeps_the_plans_split():
    from bench.cmd_replay import with_cores
    from emulator.plan import DevicePlan, Plan

    plan = Plan(store_id="x", tables=(), devices=(DevicePlan("d0", 1, 1), DevicePlan("d1", 0, 2),
                                                   DevicePlan("d2", 3, 1)))
    assert [(d.mem_cores, d.compute_cores) for d in with_cores(plan, 8).devices] == [(4, 4), (0, 8), (6, 2)]

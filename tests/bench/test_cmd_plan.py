"""bench.cmd_plan and bench.cmd_calibrate: solve, show, refuse a plan for another store, bad input -> exit 2."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from bench.cli import main
from bench.cmd_plan import render_plan
from emulator.plan import Plan
from tests.conftest import one_line_error, run_cli
from tests.plans_fixtures import o_direct_supported, small_spec, write_zipf_trace


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from emulator.store.store import StoreBuildConfig
    from emulator.store.build import build_store

    d = tmp_path_factory.mktemp("cmd_plan")
    spec = small_spec()
    write_zipf_trace(d / "t.h5", spec, n_batches=3, seed=4)
    build_store(spec, d / "store", StoreBuildConfig(tt_ranks=(4,), tt_min_rows=1000))
    other = small_spec().scaled(0.5)
    build_store(other, d / "other", StoreBuildConfig(tt_ranks=()))
    return d


def test_solve_then_show(setup, capsys):
    d = setup
    rc = main(["plan", "solve", "--store", str(d / "store"), "--trace", str(d / "t.h5"), "--profile-batches", "2",
               "--dram-budget", "64KiB", "--devices", "2", "--cores", "2", "--accuracy-budget", "0.5",
               "--time-limit", "20", "-o", str(d / "plan.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "plan by screc" in out and "modelled" in out  # no --calibration: modelled default rates
    plan = Plan.load(d / "plan.json")
    assert plan.remap == str(d / "plan.remap.h5") and (d / "plan.remap.h5").is_file()  # resolved beside the plan
    assert plan.predicted["storage"]["host_dram_bytes"] <= 64 * 1024
    assert "cross-fitted" in out  # the default: no profile batch is measured under a ranking that saw it
    drift = plan.predicted["drift"]  # profiled on [0, 2): drift measured on the one batch left, [2, 3)
    assert drift["batches"] == [2, 3]
    if drift["tables"]:
        assert 0 <= drift["hit_ratio"] <= drift["oracle_hit_ratio"] + 1e-12 <= 1 + 1e-12
    assert main(["plan", "show", str(d / "plan.json"), "--store", str(d / "store")]) == 0
    assert "devices" in capsys.readouterr().out
    assert main(["plan", "show", str(d / "plan.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "screc-plan"


def test_show_refuses_another_store(setup, capsys):
    d = setup
    if not (d / "plan.json").exists():
        pytest.skip("needs the plan from test_solve_then_show")
    assert main(["plan", "show", str(d / "plan.json"), "--store", str(d / "other")]) == 2
    err = capsys.readouterr().err
    assert "plan was made for store" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra", [["--dram-budget", "5XB"], ["--dram-budget", "1MiB", "--devices", "0"],
                                   ["--dram-budget", "1MiB", "--calibration", "/nonexistent.json"]])
def test_bad_input_exits_2(setup, capsys, extra):
    d = setup
    rc = main(["plan", "solve", "--store", str(d / "store"), "--trace", str(d / "t.h5"), *extra,
               "-o", str(d / "bad.json")])
    assert rc == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_trace_for_another_store_is_refused(setup, capsys):
    d = setup
    rc = main(["plan", "solve", "--store", str(d / "other"), "--trace", str(d / "t.h5"), "--dram-budget", "1MiB",
               "-o", str(d / "x.json")])
    assert rc == 2 and "rows" in capsys.readouterr().err


def test_modelled_solve_and_render(tmp_path):
    rc = main(["plan", "solve", "--model", "tiny", "--modelled", "--dram-budget", "8KiB", "--planner", "greedy",
               "--device-profile", "smartssd", "--devices", "2", "-o", str(tmp_path / "p.json")])
    assert rc == 0
    plan = Plan.load(tmp_path / "p.json")
    con = Console(width=160, record=True)
    con.print(render_plan(plan))
    text = con.export_text()
    assert "(modelled)" in text and "t0" in text and "dev1" in text


def test_calibrate_command(tmp_path, capsys, monkeypatch):
    if not o_direct_supported(tmp_path):
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT, which the IO calibration needs")
    import plans.calibration as pc

    monkeypatch.setattr(pc, "SCRATCH_FILE_BYTES", 8 << 20)
    real = pc.measure_calibration
    monkeypatch.setattr(pc, "measure_calibration",
                        lambda target, seconds, **kw: real(target, seconds, queue_depths=(1, 4), tt_ranks=(8,),
                                                           scratch_bytes=8 << 20, **kw))
    rc = main(["calibrate", "--dir", str(tmp_path), "--seconds", "1", "--no-host-costs", "-o", str(tmp_path / "c.json")])
    assert rc == 0 and (tmp_path / "c.json").is_file()
    out = capsys.readouterr().out
    assert "calibration (measured)" in out and "load average" in out
    assert main(["calibrate", "--dir", str(tmp_path / "missing"), "-o", str(tmp_path / "d.json")]) == 2
    assert main(["calibrate", "--dir", str(tmp_path), "--replay-batches", "1", "-o", str(tmp_path / "e.json")]) == 2


def test_render_calibration_shows_host_costs():
    from bench.cmd_calibrate import render_calibration
    from plans.calibration import default_calibration

    con = Console(width=160, record=True)
    con.print(render_calibration(default_calibration()))
    text = con.export_text()
    assert "host thread (modelled), per table" in text and "device IO (modelled)" in text


def test_solve_with_a_calibration_predicts_the_host_serial_emulator(setup, tmp_path, capsys):
    from plans.calibration import default_calibration

    d = setup
    default_calibration().save(tmp_path / "cal.json")  # modelled host costs: the local devices are host-serial
    rc = main(["plan", "solve", "--store", str(d / "store"), "--trace", str(d / "t.h5"), "--dram-budget", "16KiB",
               "--devices", "2", "--calibration", str(tmp_path / "cal.json"), "--time-limit", "20",
               "-o", str(tmp_path / "p.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "host thread (every core, serial)" in out and "one host thread runs every core" in out
    plan = Plan.load(tmp_path / "p.json")
    assert plan.predicted["perf"]["execution"] == "host-serial" and plan.predicted["perf"]["bottleneck"]


def test_solve_budget_needs_a_unit_and_takes_a_share(setup, tmp_path, capsys):
    d = setup
    base = ["plan", "solve", "--store", str(d / "store"), "--trace", str(d / "t.h5"), "--planner", "static-topk",
            "--profile-batches", "2", "-o", str(tmp_path / "p.json")]
    code, _, err = run_cli([*base, "--dram-budget", "65536"], capsys)
    assert code == 2 and one_line_error(err) and "has no unit" in err and not (tmp_path / "p.json").exists()
    code, out, err = run_cli([*base, "--dram-budget", "1%", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)  # the plan, with the notes on how it was made
    from emulator.store.store import Store

    assert doc["dram_budget_bytes"] == Store.open(d / "store").raw_bytes // 100  # 1% of the model
    assert {n["basis"] for n in doc["notes"]} >= {"measured", "modelled"}
    assert doc["planner"] == "static-topk" and Plan.load(tmp_path / "p.json").planner == "static-topk"


def test_solve_notes_carry_their_basis_and_the_policy_is_screc(setup, tmp_path, capsys):
    d = setup
    code, out, err = run_cli(["plan", "solve", "--model", "tiny", "--modelled", "--dram-budget", "8KiB",
                              "--time-limit", "20", "-o", str(tmp_path / "p.json"),
                              "--json", str(tmp_path / "p-notes.json")], capsys)
    assert code == 0, err
    assert "plan by screc" in out and "[modelled]" in out and "dev0" in out
    assert json.loads((tmp_path / "p-notes.json").read_text())["planner"] == "screc"


def test_solve_checks_outputs_before_measuring(setup, tmp_path, capsys, monkeypatch):
    import bench.cmd_plan as cmd

    d = setup
    (tmp_path / "file").write_text("a regular file")  # tests run as root: a path under a file is unwritable
    monkeypatch.setattr(cmd, "run_planning", lambda *a, **k: pytest.fail("planned before checking the outputs"))
    for out in (["-o", str(tmp_path / "file" / "p.json")],
                ["-o", str(tmp_path / "p.json"), "--json", str(tmp_path / "file" / "j.json")]):
        code, _, err = run_cli(["plan", "solve", "--store", str(d / "store"), "--trace", str(d / "t.h5"),
                                "--dram-budget", "1KiB", *out], capsys)
        assert code == 2 and one_line_error(err) and "file" in err


def test_show_with_store_refuses_a_hand_edited_plan(setup, tmp_path, capsys):
    from emulator.plan import uniform_plan
    from emulator.store.store import Store

    d = setup
    store = Store.open(d / "store")
    doc = json.loads(json.dumps(uniform_plan(store.store_id, {t.name: t.rows for t in store.tables},
                                             "all-ssd").to_dict()))
    doc["tables"][0]["hot_rows"] = 3001  # table a of the planners' small_spec has 3000 rows
    (tmp_path / "e.json").write_text(json.dumps(doc))
    code, _, err = run_cli(["plan", "show", str(tmp_path / "e.json"), "--store", str(d / "store")], capsys)
    assert code == 2 and one_line_error(err)
    assert f"{tmp_path / 'e.json'}: tables[0] (a): hot_rows 3001 is more than the table's 3000 rows" in err


def test_help_examples_use_the_convention(capsys):
    code, out, _ = run_cli(["plan", "solve", "--help"], capsys)
    assert code == 0 and "--dram-budget 5%" in out and "5%%" not in out and "--json" in out
    assert "[measured] or [modelled]" in out and "hot share" in out  # notes and columns explained
    code, out, _ = run_cli(["plan", "show", "--help"], capsys)
    assert code == 0 and "example:" in out and "IO pages" in out


def test_plan_view_fits_80_columns(tmp_path):
    rc = main(["plan", "solve", "--model", "tiny", "--modelled", "--dram-budget", "8KiB", "--devices", "2",
               "--device-profile", "smartssd", "--time-limit", "20", "-o", str(tmp_path / "p.json")])
    assert rc == 0
    con = Console(width=80, record=True)
    con.print(render_plan(Plan.load(tmp_path / "p.json")))
    text = con.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80  # nothing cut or too wide
    assert "dev0" in text and "dev1" in text and "IO pages" in text


def test_plan_view_names_row_formats(tmp_path):
    from emulator.plan import TablePlacement

    plan = Plan("s" * 32, (TablePlacement("long_table_name_0", 10, row_format="int8"),
                           TablePlacement("t1", 0, row_format="int4"), TablePlacement("t2", 0)), planner="screc")
    con = Console(width=80, record=True)
    con.print(render_plan(plan))
    text = con.export_text()
    assert "ssd_raw int8" in text and "ssd_raw int4" in text and max(len(line) for line in text.splitlines()) <= 80

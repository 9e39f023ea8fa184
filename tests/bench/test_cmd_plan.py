"""bench.cmd_plan and bench.cmd_calibrate: solve, show, refuse a plan for another store, bad input -> exit 2."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from bench.cli import main
from bench.cmd_plan import render_plan
from emulator.plan import Plan
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

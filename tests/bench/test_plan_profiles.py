"""screc plan profiles: every figure with its source, 80 columns, JSON that reads back, bad files exit 2."""

from __future__ import annotations

import json

from rich.console import Console

from bench.plan_profiles import format_figure, render_profiles
from emulator.device.profile import Figure, load_profile, parse_profile
from tests.conftest import one_line_error, run_cli


def test_lists_both_builtins_with_sources(capsys):
    code, out, _ = run_cli(["plan", "profiles"], capsys)
    assert code == 0
    assert "smartssd" in out and "host" in out and "540 kIO/s" in out and "PM983" in out
    assert "(modelled) assumption: 8 embedding cores" in out and "(measured) measured:" in out


def test_fits_80_columns():
    con = Console(width=80, record=True)
    con.print(render_profiles([load_profile("host"), load_profile("smartssd"), load_profile("smartssd")]))
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text


def test_json_reads_back_and_files_are_listed(tmp_path, capsys):
    d = load_profile("smartssd").to_dict()
    d["name"] = "mine"
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(d))
    code, out, _ = run_cli(["plan", "profiles", str(f), "--json"], capsys)
    assert code == 0
    got = json.loads(out)["profiles"]
    assert [p["name"] for p in got] == ["host", "smartssd", "mine"] and got[2]["origin"] == str(f)
    assert got[1]["cores_per_device"] == 8 and got[1]["modelled"] is True
    assert parse_profile(got[1], "x").ssd == load_profile("smartssd").ssd  # the JSON is a profile document


def test_bad_file_is_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"format": "screc-device-profile", "version": 1, "name": "b", "cores": {}}))
    code, _, err = run_cli(["plan", "profiles", str(f)], capsys)
    assert code == 2 and one_line_error(err) and "bad.json" in err and "field cores.count" in err


def test_format_figure_by_hand():
    # 3.84e12 B -> 3.84 TB; 2**32 B -> 4 GiB; 85e-6 s -> 85 us; 540e3 IO/s -> 540 kIO/s; inf B/s -> no link
    f = lambda v, u: format_figure(Figure(v, u, "x"))  # noqa: E731
    assert f(3_840_000_000_000, "B") == "3.84 TB" and f(4 << 30, "B") == "4 GiB"
    assert f(85e-6, "s") == "85 us" and f(2.5e-3, "s") == "2.5 ms" and f(0.0, "s") == "0"
    assert f(540e3, "IO/s") == "540 kIO/s" and f(float("inf"), "B/s") == "none (no link)"
    assert format_figure(Figure(0.5, "W", "x"), "power.mem_core_busy_w") == "+0.5 W"
    assert format_figure(Figure(8.0, "W", "x"), "power.idle_w") == "8 W"


def test_plan_solve_takes_host_and_refuses_a_bad_file_before_work(tmp_path, capsys):
    out = tmp_path / "p.json"
    code, text, _ = run_cli(["plan", "solve", "--model", "tiny", "--modelled", "--dram-budget", "5%",
                             "--device-profile", "host", "--time-limit", "20", "-o", str(out)], capsys)
    assert code == 0 and out.is_file() and "device profile host" in text
    bad = tmp_path / "bad.toml"
    bad.write_text('format = "screc-device-profile"\nversion = 1\nname = "b"\n[cores]\ncount = { value = 0, '
                   'unit = "cores", source = "assumption" }\n')
    out2 = tmp_path / "p2.json"
    code, _, err = run_cli(["plan", "solve", "--model", "tiny", "--modelled", "--dram-budget", "5%",
                            "--device-profile", str(bad), "-o", str(out2)], capsys)
    assert code == 2 and one_line_error(err) and "field cores.count: value must be >= 1" in err
    assert not out2.exists()

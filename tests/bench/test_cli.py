"""bench.cli: one parser, usage errors as exit 2 (returned, not raised), Ctrl-C as 130, help with examples."""

from __future__ import annotations

import pytest

from bench.cli import main
from tests.conftest import one_line_error, run_cli

OWNED = (["store", "build"], ["store", "verify"], ["store", "info"], ["plan", "solve"], ["plan", "show"],
         ["calibrate"], ["replay"], ["accuracy"])


@pytest.mark.parametrize("argv", OWNED, ids=" ".join)
def test_help_has_an_example_in_the_convention(argv, capsys):
    code, out, _ = run_cli([*argv, "--help"], capsys)
    assert code == 0 and "example:" in out
    assert "--json [FILE]" in out  # every one of these reports something
    assert "--spec" not in out and "%%" not in out and "local0" not in out and "mip" not in out.split()


def test_top_level_help_states_the_convention(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "--model NAME|FILE" in out and "--dram-budget SIZE|PCT%" in out and "--out-dir" in out


def test_usage_errors_return_2_with_one_line(capsys):
    code, _, err = run_cli(["replay", "--store"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "screc replay: error" in err


def test_ctrl_c_is_exit_130(monkeypatch, capsys):
    import bench.cmd_store as cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd, "cmd_info", interrupted)
    assert main(["store", "info", "x"]) == 130
    assert capsys.readouterr().err.strip() == "screc: interrupted"


def test_input_errors_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["store", "info", str(tmp_path / "missing")], capsys)
    assert code == 2 and one_line_error(err) and "store directory not found" in err

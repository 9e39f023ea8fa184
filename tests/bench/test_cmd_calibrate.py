"""bench.cmd_calibrate: outputs checked before measuring, shared --qd and --json [FILE], the help example.

(The measuring run itself is tested in test_cmd_plan.py::test_calibrate_command.) Unwritable outputs are a
path under a regular file: the tests run as root, where a chmod-ed read-only directory is still writable.
"""

from __future__ import annotations

import pytest

from tests.conftest import one_line_error, run_cli


@pytest.mark.parametrize("extra", [["-o", "file/c.json"], ["-o", "c.json", "--json", "file/j.json"],
                                   ["-o", "c.json", "--qd", "0"]])
def test_refused_before_measuring(tmp_path, capsys, monkeypatch, extra):
    import plans.calibration as pc

    (tmp_path / "file").write_text("a regular file")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pc, "measure_calibration", lambda *a, **k: pytest.fail("measured before checking"))
    code, _, err = run_cli(["calibrate", "--dir", str(tmp_path), *extra], capsys)
    assert code == 2 and one_line_error(err)
    assert ("--qd" if "--qd" in extra else "file") in err
    assert not (tmp_path / "c.json").exists()


def test_help(capsys):
    code, out, _ = run_cli(["calibrate", "--help"], capsys)
    assert code == 0 and "example:" in out and "--json" in out and "--qd" in out and "--calibration" in out


@pytest.mark.parametrize("scratch, msg", [("missing", "directory not found"), ("file", "is a file, not a directory")])
def test_scratch_directory_is_checked_first(tmp_path, capsys, monkeypatch, scratch, msg):
    import plans.calibration as pc

    (tmp_path / "file").write_text("a regular file")
    monkeypatch.setattr(pc, "measure_calibration", lambda *a, **k: pytest.fail("measured before checking"))
    code, _, err = run_cli(["calibrate", "--dir", str(tmp_path / scratch), "-o", str(tmp_path / "c.json")], capsys)
    assert code == 2 and one_line_error(err) and f"{tmp_path / scratch}: {msg}" in err

"""The strict-skips hook of tests/conftest.py: under SCREC_STRICT_SKIPS=1 a skip for a missing io_uring, fio or
reference data fails; other skips (and the liburing wheel's SIGILL) stay skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STRICT_SKIPS_ENV, skip_is_forbidden, strict_skips

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("reason,forbidden", [
    ("io_uring unavailable: io_uring_setup failed: Operation not permitted (errno 1)", True),
    ("io_uring_setup failed: Function not implemented (errno 38); kernel too old or io_uring disabled", True),
    ("fio is not installed (apt-get install -y fio)", True),
    ("tests/data/dlrm_datasets_2021_locality_stats.txt (Meta's published stats) not present", True),
    ("reference data missing: tests/data/x.txt", True),
    ("io_uring through the liburing package unavailable: the liburing package's wheel uses instructions this "
     "CPU lacks (SIGILL)", False),
    ("the temporary directory's filesystem refuses O_DIRECT, which the IO calibration needs", False),
    ("torch is an optional extra", False),
    ("no /dev/shm on this machine", False),
    ("the fiord profile is optional", False),  # "fio" as a whole word only
])
def test_which_skip_reasons_are_forbidden(reason, forbidden):
    assert skip_is_forbidden(reason) is forbidden


INNER_TESTS = '''
import pytest

def test_no_uring():
    pytest.skip("io_uring unavailable: io_uring_setup failed")

@pytest.mark.skipif(True, reason="fio is not installed")
def test_no_fio():
    pass

def test_sigill():
    pytest.skip("io_uring through the liburing package unavailable: wheel dies with SIGILL")

def test_optional():
    pytest.skip("torch is an optional extra")

@pytest.mark.xfail(reason="io_uring bug", strict=True)
def test_xfail():
    assert False
'''


def _run_inner(tmp_path: Path, strict: str | None) -> str:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    env = {k: v for k, v in os.environ.items() if k != STRICT_SKIPS_ENV}
    env["PYTHONPATH"] = str(ROOT)
    if strict is not None:
        env[STRICT_SKIPS_ENV] = strict
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", "/dev/null",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    return lines[-1]


def test_strict_mode_fails_environment_skips_only(tmp_path):
    # 5 tests: the two environment skips fail (io_uring's in the call, so "failed"; fio's skipif in the set-up,
    # which pytest counts as an "error"); the SIGILL and optional-extra skips stay skips; the xfail stays
    assert _run_inner(tmp_path, "1").startswith("1 failed, 2 skipped, 1 xfailed, 1 error")


def test_without_the_variable_every_skip_is_a_skip(tmp_path, monkeypatch):
    assert _run_inner(tmp_path, None).startswith("4 skipped, 1 xfailed")
    for value, strict in (("", False), ("0", False), ("1", True), ("yes", True)):
        monkeypatch.setenv(STRICT_SKIPS_ENV, value)
        assert strict_skips() is strict

"""The soak script: a short run (45 s, as in CI) passes; usage errors exit 2; memory growth is caught.

These run in the normal suite (CI runs every test); the soak itself takes about a minute on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.sh"


def _soak(duration: str, soak_dir: Path, timeout_s: float = 240, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), duration], capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "SOAK_DIR": str(soak_dir), "SOAK_SCALE": "10", "SOAK_BATCHES": "24",
                               **env})


@pytest.fixture(scope="module")
def soak_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("soak")


def test_short_soak_passes(soak_dir):
    r = _soak("45", soak_dir)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "soak: ok" in r.stdout and " 0 failed" in r.stdout
    rows = [l.split("\t") for l in (soak_dir / "soak.tsv").read_text().splitlines()]
    assert len(rows) >= 3 and {r[1] for r in rows} == {"all-ssd", "all-tt", "half-hot"}
    assert all(r[3] == "0" and r[4] == "1" for r in rows)  # no failed batch, every batch verified
    assert not (soak_dir / "work" / "runs").exists()  # per-run result directories are not kept
    print(f"\nsoak: {len(rows)} replays, {sum(int(r[2]) for r in rows)} batches verified")


@pytest.mark.parametrize("arg", ["", "abc", "0", "-5", "10x"])
def test_usage_errors_exit_2(arg, tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), *([arg] if arg else [])], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "SOAK_DIR": str(tmp_path)})
    assert r.returncode == 2 and "usage" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_memory_growth_fails_the_soak(soak_dir):
    """A negative tolerance makes any run 'grow': the verdict must fail with exit 1 (store and trace reused)."""
    r = _soak("1", soak_dir, SOAK_RSS_TOLERANCE_PCT="-50", SOAK_RSS_SLACK_MIB="0")
    assert r.returncode == 1 and "memory grew" in r.stderr, r.stdout + r.stderr
    assert "building store" not in r.stdout  # reused

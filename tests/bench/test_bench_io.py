"""``screc bench io``: result keys, the fio-missing path, the command line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench.bench_io import BenchIOConfig, ensure_test_file, fio_command, render, run_bench_io
from bench.cli import main
from emulator.io import uring_available

URING_OK, URING_WHY = uring_available()
ROW_KEYS = {"qd", "engine_iops", "fio_iops", "ratio", "engine_p50_us", "engine_p99_us", "fio_p50_us", "fio_p99_us"}


def _engine():
    return "uring" if URING_OK else "pread"


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (apt-get install -y fio)")
def test_one_second_run_against_fio(tmp_path):
    cfg = BenchIOConfig(file=str(tmp_path / "f.bin"), size_bytes=8 << 20, queue_depths=(1, 4), seconds=1.0,
                        engine=_engine())
    out = run_bench_io(cfg)
    assert [r["qd"] for r in out["results"]] == [1, 4]
    for r in out["results"]:
        assert ROW_KEYS <= r.keys()
        assert r["engine_iops"] > 0 and r["fio_iops"] > 0
        assert r["ratio"] == pytest.approx(r["engine_iops"] / r["fio_iops"])
        assert 0 < r["engine_p50_us"] <= r["engine_p99_us"]
    assert out["fio_missing"] is None and out["size_bytes"] == 8 << 20
    json.dumps(out)  # JSON-ready


def test_fio_missing_gives_null(tmp_path):
    cfg = BenchIOConfig(file=str(tmp_path / "f.bin"), size_bytes=1 << 20, queue_depths=(1, 4), seconds=0.3,
                        engine=_engine(), fio_binary="screc-no-such-fio")
    out = run_bench_io(cfg)
    assert "not found" in out["fio_missing"]
    for r in out["results"]:
        assert ROW_KEYS <= r.keys()
        assert r["fio_iops"] is None and r["ratio"] is None and r["engine_iops"] > 0
    assert "fio numbers missing" in str(render(out).caption)


def test_test_file_written_once(tmp_path):
    p = tmp_path / "t.bin"
    assert ensure_test_file(p, 3 * 4096, seed=1) == 3 * 4096
    first = p.read_bytes()
    assert len(set(first)) > 200  # random bytes, not zeros
    assert ensure_test_file(p, 3 * 4096, seed=2) == 3 * 4096 and p.read_bytes() == first  # reused as is
    assert np.frombuffer(first, np.uint8).size == 3 * 4096


def test_fio_command_is_the_reference_run():
    cmd = fio_command("fio", "data/x.bin", 32, 5)
    assert {"--rw=randread", "--bs=4096", "--direct=1", "--ioengine=io_uring", "--iodepth=32", "--runtime=5",
            "--time_based", "--output-format=json"} <= set(cmd)


def test_cli_json_without_fio(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no fio on PATH
    code = main(["bench", "io", "--file", str(tmp_path / "c.bin"), "--size", "1MiB", "--qd", "2",
                 "--seconds", "0.2", "--engine", _engine(), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    out = json.loads(captured.out)
    assert out["results"][0]["qd"] == 2 and out["results"][0]["fio_iops"] is None
    assert "fio not found" in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--qd", "1,x"], ["--qd", "0"], ["--size", "lots"], ["--seconds", "0"]])
def test_cli_bad_input_exit_2(tmp_path, capsys, argv):
    code = main(["bench", "io", "--file", str(tmp_path / "c.bin"), "--size", "1MiB", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("screc: error:") and len(err.strip().splitlines()) == 1

"""``screc bench io``: structure, the fio set-ups' command lines, figures checked against each side's own counters,
the fio-missing path, the command line. No timing assertions."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from rich.console import Console

from bench.bench_io import SIDES, BenchIOConfig, ensure_test_file, fio_command, render, run_bench_io
from bench.cli import main
from emulator.io import uring_available

URING_OK, URING_WHY = uring_available()
BATCHING = {"--iodepth_batch_submit=32", "--iodepth_batch_complete_max=32", "--registerfiles", "--randrepeat=0",
            "--norandommap"}


def _engine():
    return "uring" if URING_OK else "pread"


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (apt-get install -y fio)")
def test_three_rounds_against_both_fio_setups(tmp_path):
    steps = []
    cfg = BenchIOConfig(file=str(tmp_path / "f.bin"), size_bytes=8 << 20, queue_depths=(4,), seconds=0.1,
                        engine=_engine(), rounds=3)
    out = run_bench_io(cfg, on_step=steps.append)
    assert [r["qd"] for r in out["results"]] == [4]
    assert out["fio_missing"] is None and out["size_bytes"] == 8 << 20
    # the sides take turns at going first: round k starts with side k (mod 3)
    assert [s.split()[0] for s in steps] == ["engine", "fio_default", "fio_batched", "fio_default", "fio_batched",
                                             "engine", "fio_batched", "engine", "fio_default"]
    for r in out["results"]:
        for side in SIDES:
            runs = r["runs"][side]
            assert len(runs) == 3
            # the reported figure is one of the three rounds' (the median of an odd count)
            assert r[side]["iops"] in [x["iops"] for x in runs]
            for x in runs:
                assert x["reads"] > 0 and x["p50_us"] <= x["p99_us"]
                # bytes come from each side's own counters: the engine's IOResult, fio's io_bytes
                assert x["bytes_read"] == x["ios"] * 4096
        for x in r["runs"]["engine"]:
            assert x["ios"] == x["reads"]  # whole aligned 4 KiB reads: no retries, no continuations
            if _engine() == "uring" and r["qd"] == 4:
                assert x["syscalls"] < x["reads"]  # a round of reads per io_uring_enter, not one call each
        assert r["ratio"]["default"] > 0 and r["ratio"]["batched"] > 0
    assert "--runtime=100000us" in out["fio_commands"]["batched"]
    json.dumps(out)  # JSON-ready


def test_fio_missing_gives_null(tmp_path):
    cfg = BenchIOConfig(file=str(tmp_path / "f.bin"), size_bytes=1 << 20, queue_depths=(1, 4), seconds=0.2,
                        engine=_engine(), fio_binary="screc-no-such-fio", rounds=2)
    out = run_bench_io(cfg)
    assert "not found" in out["fio_missing"]
    for r in out["results"]:
        assert r["fio_default"] is None and r["fio_batched"] is None
        assert r["ratio"] == {"default": None, "batched": None}
        assert len(r["runs"]["engine"]) == 2 and r["runs"]["fio_default"] == []
        assert all(x["bytes_read"] == x["ios"] * 4096 > 0 for x in r["runs"]["engine"])
    assert "fio numbers missing" in _text(out)


def _text(result, width=80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(render(result))
    return console.export_text()


def test_test_file_written_once(tmp_path):
    p = tmp_path / "t.bin"
    assert ensure_test_file(p, 3 * 4096, seed=1) == 3 * 4096
    first = p.read_bytes()
    assert len(first) == 3 * 4096 and len(set(first)) > 200  # random bytes, not zeros
    assert ensure_test_file(p, 3 * 4096, seed=2) == 3 * 4096 and p.read_bytes() == first  # reused as is


def test_fio_commands_default_and_batched():
    default = fio_command("fio", "data/x.bin", 32, 2.5)
    batched = fio_command("fio", "data/x.bin", 32, 2.5, setup="batched")
    common = {"--rw=randread", "--bs=4096", "--direct=1", "--ioengine=io_uring", "--iodepth=32", "--time_based",
              "--output-format=json", "--runtime=2500000us"}  # 2.5 s exactly, not rounded to whole seconds
    assert common <= set(default) and common <= set(batched)
    assert BATCHING <= set(batched) and not BATCHING & set(default)
    assert "--fixedbufs" not in batched
    assert "--fixedbufs" in fio_command("fio", "x", 32, 1, setup="batched", fixed_buffers=True)
    assert "--fixedbufs" not in fio_command("fio", "x", 32, 1, fixed_buffers=True)  # defaults stay defaults
    with pytest.raises(ValueError):
        fio_command("fio", "x", 1, 1, setup="fast")


def test_render_fits_80_columns(tmp_path):
    cfg = BenchIOConfig(file=str(tmp_path / "f.bin"), size_bytes=1 << 20, queue_depths=(128,), seconds=0.1,
                        engine=_engine(), fio_binary="screc-no-such-fio")
    text = _text(run_bench_io(cfg))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text and "fio batched" in text


def test_cli_json_to_stdout_and_to_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no fio on PATH
    base = ["bench", "io", "--file", str(tmp_path / "c.bin"), "--size", "1MiB", "--qd", "2", "--seconds", "0.1",
            "--engine", _engine(), "--out-dir", str(tmp_path / "runs")]
    assert main([*base, "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["results"][0]["qd"] == 2 and out["results"][0]["fio_default"] is None
    assert "fio not found" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert main([*base, "--json", str(tmp_path / "r.json")]) == 0
    assert "engine IOPS" in capsys.readouterr().out  # the table, since the JSON went to the file
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["qd"] == 2
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "result.json").is_file() for r in runs)


@pytest.mark.parametrize("argv", [["--qd", "1,x"], ["--qd", "0"], ["--size", "lots"], ["--seconds", "0"],
                                  ["--json", "@/x.json"], ["--out-dir", "@/runs"]])
def test_cli_bad_input_exit_2(tmp_path, capsys, argv):
    (tmp_path / "a_file").write_text("")
    argv = [a.replace("@", str(tmp_path / "a_file")) for a in argv]  # a path under a regular file: unwritable
    code = main(["bench", "io", "--file", str(tmp_path / "c.bin"), "--size", "1MiB", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("screc: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.bin").exists()  # refused before the test file is made


def test_ctrl_c_mid_run_exits_130_with_one_line(tmp_path):
    """SIGINT while reads are in flight: exit 130, one line, no traceback, no result written."""
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "c.bin"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "bench", "io", "--file", str(data), "--size", "8MiB",
                             "--qd", "32", "--seconds", "30", "--engine", _engine(), "--json", str(tmp_path / "r.json"),
                             "--out-dir", str(tmp_path / "runs")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ,
                                                                                              "PATH": str(tmp_path)})
    try:
        for _ in range(600):  # the test file appears once the command is past its imports, inside the run
            if data.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # well into the first queue depth's reads
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "screc: interrupted"
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "runs").exists()

"""``screc bench build``: the result's structure and its figures checked against each run's own bytes and seconds,
the sides' rotating order, the scratch directory removed, fio's command line, the fio-missing error and the
command line. No timing assertions."""

from __future__ import annotations

import json
import shutil

import pytest
from rich.console import Console

from bench.bench_build import (
    SIDES,
    BuildBenchConfig,
    fio_command,
    render,
    run_bench_build,
)
from bench.cli import main
from emulator.store.layout import RowLayout
from tracegen.presets import load_model

FIO = shutil.which("fio")
needs_fio = pytest.mark.skipif(FIO is None, reason="fio is not installed (apt-get install -y fio)")


def test_fio_command_writes_the_store_bytes_direct_with_a_final_fsync():
    cmd = fio_command("fio", "/d/f.tmp", (3 << 20) + 1)  # 3 MiB and a byte: rounded up to 4 MiB
    assert cmd[0] == "fio" and "--filename=/d/f.tmp" in cmd and "--size=4M" in cmd
    assert {"--rw=write", "--bs=1M", "--direct=1", "--end_fsync=1"} <= set(cmd)


@needs_fio
def test_two_rounds_of_the_three_sides(tmp_path):
    steps = []
    cfg = BuildBenchConfig(model="tiny", scale=4, tt_ranks=(4, 8), workers=2, rounds=2, out_dir=str(tmp_path))
    out = run_bench_build(cfg, on_step=steps.append)
    spec = load_model("tiny", scale=4)
    raw = sum(RowLayout(t.rows, t.dim, t.dtype).file_bytes for t in spec.tables)
    assert out["raw_bytes"] == raw and out["tables"] == len(spec.tables)
    # warm-up first, then round 1 in the sides' order and round 2 starting with the second side
    assert steps[0].startswith("warm-up")
    assert [s.split(": ")[1] for s in steps[1:]] == ["fio", "build raw", "build tt", "build raw", "build tt", "fio"]
    for side in SIDES:
        runs = out["runs"][side]
        assert len(runs) == 2
        for r in runs:  # each figure is its run's own bytes over its own seconds
            assert r["seconds"] > 0 and r["mib_per_s"] == pytest.approx(r["bytes"] / 2**20 / r["seconds"])
            assert side == "fio" or r["cpu_seconds"] > 0
        assert min(r["mib_per_s"] for r in runs) <= out["mib_per_s"][side] <= max(r["mib_per_s"] for r in runs)
    assert all(r["bytes"] == raw for s in ("build_raw", "build_tt") for r in out["runs"][s])
    assert all(r["bytes"] >= raw for r in out["runs"]["fio"])  # fio writes whole MiBs
    assert [r["tt_variants"] for r in out["runs"]["build_raw"]] == [0, 0]
    assert all(r["tt_variants"] > 0 and r["tt_method"] == "fast" for r in out["runs"]["build_tt"])
    for s in ("build_raw", "build_tt"):
        assert out["ratio"][s] == pytest.approx(out["mib_per_s"][s] / out["mib_per_s"]["fio"])
        assert out["meets_goal"][s] == (out["ratio"][s] >= out["goal"][s])
    assert list(tmp_path.iterdir()) == []  # the scratch directory (stores, fio's file) is gone
    text = _render(out)
    assert "fio seq. write, direct" in text and "store build, TT 4,8" in text and "load average" in text


def _render(result) -> str:
    console = Console(width=80, record=True)
    console.print(render(result))
    return console.export_text()


def test_fio_missing_is_a_one_line_error(tmp_path, capsys):
    cfg = BuildBenchConfig(model="tiny", out_dir=str(tmp_path), fio_binary="no-such-fio-binary")
    from tracegen.errors import InputError

    with pytest.raises(InputError, match="no-such-fio-binary not found"):
        run_bench_build(cfg)
    code = main(["bench", "build", "--model", "tiny", "--rounds", "0", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--rounds" in err


@needs_fio
def test_command_line_json(tmp_path, capsys):
    code = main(["bench", "build", "--model", "tiny", "--tt-ranks", "4", "--workers", "1", "--out-dir",
                 str(tmp_path), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert result["benchmark"] == "build" and result["config"]["tt_ranks"] == [4]
    assert set(result["mib_per_s"]) == set(SIDES)
    assert [p.name for p in tmp_path.iterdir()] != []  # the run record under --out-dir
    assert not any(p.name.startswith(".bench-build-") for p in tmp_path.iterdir())

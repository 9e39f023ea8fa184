"""Tests for bench/bench_tracegen.py: the generated trace is the one `trace gen` makes, the figures are consistent,
nothing is left behind; the command's JSON, table and errors."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from bench.bench_tracegen import TraceGenBenchConfig, render, run_bench_tracegen
from tests.conftest import one_line_error, run_cli
from tracegen.generate import GeneratorParams, generate_trace
from tracegen.presets import get_preset
from tracegen.selection import select


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    return scratch, run_bench_tracegen(TraceGenBenchConfig(model="tiny", batches=3, tables="1:", seed=4,
                                                           bound_runs=3, scratch_dir=str(scratch)))


def test_it_generates_what_trace_gen_generates(result, tmp_path):
    scratch, r = result
    spec, params = select(get_preset("tiny"), GeneratorParams(seed=4, num_batches=3), "1:")
    assert r["trace_id"] == generate_trace(spec, params, tmp_path / "t.h5", workers=1)
    assert r["bytes"] == (tmp_path / "t.h5").stat().st_size and r["tables"] == 3
    assert list(scratch.iterdir()) == []  # the trace and the tofile file are removed


def test_figures_are_consistent(result):
    _, r = result
    assert r["ratio"] == pytest.approx(r["tofile_s"] / r["generate_s"])
    assert len(r["tofile_runs_s"]) == 3 and r["tofile_s"] == sorted(r["tofile_runs_s"])[1]  # the median
    assert r["lookups_per_s"] == pytest.approx(r["lookups"] / r["generate_s"])
    assert r["tofile_bytes_per_s"] == pytest.approx(r["bytes"] / r["tofile_s"])
    assert r["peak_rss_bytes"] > 0 and r["measured"] is True
    assert {"bags_s", "tables_s", "copy_s", "checksum_s", "write_s", "hash_s", "close_s"} <= set(r["stages_s"])
    assert all(v >= 0 for v in r["stages_s"].values())
    text = _render_text(r)
    assert "numpy.tofile + fsync" in text and "measured" in text and "ratio" in text


def _render_text(r, width=120) -> str:
    con = Console(width=width, record=True)
    con.print(render(r))
    return con.export_text()


def test_params_file_drives_the_generator(tmp_path, capsys):
    params = GeneratorParams(zipf_alpha=0.5, seed=9)  # the seed flag (default 0) overrides the file's
    (tmp_path / "p.json").write_text(json.dumps(params.to_dict()))
    r = run_bench_tracegen(TraceGenBenchConfig(model="tiny", params=str(tmp_path / "p.json"), bound_runs=1,
                                               scratch_dir=str(tmp_path / "s")))
    expected = generate_trace(get_preset("tiny"), GeneratorParams(zipf_alpha=0.5, seed=0), tmp_path / "t.h5")
    assert r["trace_id"] == expected


def test_command_json_and_errors(tmp_path, capsys):
    code, out, _ = run_cli(["bench", "tracegen", "--model", "tiny", "--batches", "2", "--workers", "1",
                            "--out-dir", str(tmp_path / "runs"), "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["batches"] == 2 and doc["workers"] == 1 and doc["lookups"] > 0
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # scratch removed
    (tmp_path / "bad.json").write_text("{nope")
    for argv in (["--batches", "0"], ["--workers", "0"], ["--bound-runs", "0"], ["--params", str(tmp_path / "none")],
                 ["--params", str(tmp_path / "bad.json")], ["--scale", "0"], ["--model", "no-such-model"],
                 ["--tables", "nope"]):
        code, _, err = run_cli(["bench", "tracegen", "--model", "tiny", "--out-dir", str(tmp_path / "r2"), *argv],
                               capsys) if "--model" not in argv else run_cli(
            ["bench", "tracegen", "--out-dir", str(tmp_path / "r2"), *argv], capsys)
        assert code == 2 and one_line_error(err), (argv, err)

"""Tests for bench/bench_tt.py: a tiny run produces the documented keys; the command's JSON, table and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from bench.bench_tt import BenchTTConfig, draw_batch, render, run_bench_tt
from tests.conftest import one_line_error, run_cli

TINY = BenchTTConfig(p_shapes=(10, 11, 12), q_shapes=(2, 2, 4), ranks=(4, 8), batch=64, seconds=0.5, rounds=2,
                     sgemm_n=128, n_batches=3, n_threads=1)


def test_tiny_run_produces_the_keys():
    steps = []
    result = run_bench_tt(TINY, on_step=steps.append)
    assert [r["rank"] for r in result["results"]] == [4, 8]
    for r in result["results"]:
        for key in ("rank", "rows_per_s", "gflops", "sgemm_gflops", "fraction", "gflops_cpu", "fraction_cpu"):
            assert r[key] > 0, key
        assert r["fraction"] == pytest.approx(r["gflops"] / r["sgemm_gflops"])
        # per row at rank 8 with all prefixes distinct: 2*2*8*2*8 + 2*4*8*4 = 512 + 256 = 768 FLOPs, fewer when shared
        if r["rank"] == 8:
            assert 256 < r["flops_per_row"] <= 768
    assert "distinct prefixes" in result["flops_formula"]
    assert result["row_distribution"] == "uniform"
    assert len(steps) == 2
    text = _render_text(result)
    assert "fraction" in text and "SGEMM" in text


def _render_text(result) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render(result))
    return console.export_text()


def test_draw_batch_is_distinct_and_in_range():
    rng = np.random.default_rng(0)
    for distribution in ("uniform", "zipf"):
        rows = draw_batch(rng, 1000, 500, distribution)
        assert rows.dtype == np.int64 and len(np.unique(rows)) == len(rows)
        assert rows.min() >= 0 and rows.max() < 1000


def test_cli_json(capsys):
    code, out, err = run_cli(["bench", "tt", "--rows", "10x11x12", "--dims", "2x2x4", "--ranks", "4", "--batch", "32",
                              "--seconds", "0.2", "--rounds", "1", "--threads", "1", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["results"][0]["rank"] == 4 and result["results"][0]["gflops"] > 0


@pytest.mark.parametrize("argv", [["--rows", "10x0x12"], ["--ranks", "a,b"], ["--rows", "10x11", "--dims", "2x2x4"],
                                  ["--seconds", "0"]])
def test_cli_bad_input_is_one_line(argv, capsys):
    code, out, err = run_cli(["bench", "tt", *argv], capsys)
    assert code == 2 and one_line_error(err), err

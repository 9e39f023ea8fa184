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
        for key in ("rank", "rows_per_s", "gflops", "gflops_median", "sgemm_gflops", "sgemm_gflops_median",
                    "fraction", "gflops_cpu", "fraction_cpu"):
            assert r[key] > 0, key
        assert r["gflops_median"] <= r["gflops"] and r["sgemm_gflops_median"] <= r["sgemm_gflops"]  # best >= median
        # per row at rank 8 with all prefixes distinct: 2*2*8*2*8 + 2*4*8*4 = 512 + 256 = 768 FLOPs, fewer when shared
        if r["rank"] == 8:
            assert 256 < r["flops_per_row"] <= 768
    assert "distinct prefixes" in result["flops_formula"]
    assert result["row_distribution"] == "uniform"
    assert len(steps) == 2
    text = _render_text(result, width=80)
    assert "frac. CPU" in text and "SGEMM" in text and "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_rates_from_a_fake_clock_are_the_hand_derived_ones():
    """Every clock read advances 1 s. An SGEMM reads it twice: 1 s for 2 * 128^3 = 4,194,304 FLOPs. A kernel slice
    reads it at its start and after each batch: one batch per 1 s slice. A batch of one row of a (1, 1, 50) x
    (2, 2, 4) table at rank 4 costs 2*2*4*2*4 = 128 FLOPs (its one prefix) + 2*(2*2)*4*4 = 128 (the last core)."""
    cfg = BenchTTConfig(p_shapes=(1, 1, 50), q_shapes=(2, 2, 4), ranks=(4,), batch=1, seconds=0.5, rounds=3,
                        sgemm_n=128, n_batches=2, n_threads=1)
    ticks = iter(range(10**6))
    r = run_bench_tt(cfg, clock=lambda: float(next(ticks)))["results"][0]
    assert r["sgemm_gflops"] == r["sgemm_gflops_median"] == 4_194_304 / 1e9
    assert r["flops_per_row"] == 256 and r["rows_per_s"] == 1.0 and r["batches"] == 3 and r["rows"] == 3
    assert r["gflops"] == r["gflops_median"] == 256 / 1e9
    assert r["fraction"] == pytest.approx(256 / 4_194_304, rel=1e-12)


def test_every_batch_is_rebuilt_before_the_clock(monkeypatch):
    """The warm-up rebuilds every batch once into every worker's outputs before the first clock read."""
    import bench.bench_tt as bt

    events = []
    real = bt.tt_rebuild_rows
    monkeypatch.setattr(bt, "tt_rebuild_rows", lambda *a, **k: (events.append("rebuild"), real(*a, **k))[1])
    cfg = BenchTTConfig(p_shapes=(5, 5, 5), q_shapes=(2, 2, 2), ranks=(2,), batch=8, seconds=0.5, rounds=1,
                        sgemm_n=16, n_batches=3, n_threads=1)
    ticks = iter(range(10**6))
    run_bench_tt(cfg, clock=lambda: (events.append("clock"), float(next(ticks)))[1])
    first_clock = events.index("clock")
    assert events[:first_clock].count("rebuild") >= 3  # the 3 batches, before the SGEMM's and the slice's clocks


def _render_text(result, width=200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(render(result))
    return console.export_text()


def test_draw_batch_is_distinct_and_in_range():
    rng = np.random.default_rng(0)
    for distribution in ("uniform", "zipf"):
        rows = draw_batch(rng, 1000, 500, distribution)
        assert rows.dtype == np.int64 and len(np.unique(rows)) == len(rows)
        assert rows.min() >= 0 and rows.max() < 1000


def test_cli_json(capsys, tmp_path):
    code, out, err = run_cli(["bench", "tt", "--rows", "10x11x12", "--dims", "2x2x4", "--ranks", "4", "--batch", "32",
                              "--seconds", "0.2", "--rounds", "1", "--threads", "1", "--json",
                              "--out-dir", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["results"][0]["rank"] == 4 and result["results"][0]["tt_ranks"] == [1, 4, 4, 1]
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.mark.parametrize("argv", [["--rows", "10x0x12"], ["--ranks", "a,b"], ["--rows", "10x11", "--dims", "2x2x4"],
                                  ["--seconds", "0"]])
def test_cli_bad_input_is_one_line(argv, capsys):
    code, out, err = run_cli(["bench", "tt", *argv], capsys)
    assert code == 2 and one_line_error(err), err

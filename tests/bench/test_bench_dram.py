"""bench.bench_dram: the DRAM pooling benchmark (tiny sizes; no timing assertions)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from bench.bench_dram import (DramBenchConfig, _time_passes, cpu_threads, make_workload, parse_threads, render,
                              run_bench_dram, run_bench_dram_threads, zipf_indices)
from tests.conftest import run_cli
from tracegen.errors import InputError

TINY = dict(rows=500, dim=20, batch=16, pooling=4, alpha=1.05, seconds=0.01)


def test_tiny_run_returns_the_keys():
    result = run_bench_dram(DramBenchConfig(**TINY))
    for key in ("lookups_per_s", "torch_lookups_per_s", "ratio", "threads", "config", "outputs_allclose"):
        assert key in result
    assert result["lookups_per_s"] > 0
    assert result["threads"] == 1 and result["config"]["rows"] == 500
    assert result["lookups_per_pass"] == 4 * 16 * 4  # N_BATCHES batches of 16 bags x 4 lookups
    assert result["table_bytes"] == 500 * 20 * 4
    json.dumps(result)  # JSON-ready as it is


def test_tiny_run_against_torch():
    torch = pytest.importorskip("torch", reason="torch is an optional extra")
    before = torch.get_num_threads()
    result = run_bench_dram(DramBenchConfig(**TINY, threads=2))
    assert result["torch_lookups_per_s"] > 0 and result["torch_lookups_per_s_median"] > 0
    assert result["outputs_allclose"] is True and result["torch_missing"] is None
    assert result["outputs_bit_exact"] is True and result["max_abs_diff"] == 0.0  # both sum in lookup order
    assert result["torch_passes"] >= 3 and result["passes"] >= 3
    assert torch.get_num_threads() == before  # restored


def test_rates_from_a_fake_clock_are_the_hand_derived_ones():
    """Every clock read advances 1 s, and a pass reads it twice: every pass takes 1 s on both sides, so both rates
    are the lookups of one pass, 4 batches x 16 bags x 4 lookups = 256 per second, and their ratio 1."""
    pytest.importorskip("torch", reason="torch is an optional extra")
    ticks = iter(range(10**6))
    result = run_bench_dram(DramBenchConfig(**{**TINY, "seconds": 10}), clock=lambda: float(next(ticks)))
    assert result["lookups_per_s"] == result["lookups_per_s_median"] == 256.0
    assert result["torch_lookups_per_s"] == result["torch_lookups_per_s_median"] == 256.0
    assert result["ratio"] == result["ratio_median"] == 1.0
    # 10 s of budget: rounds of 2 passes (2 reads each) + 1 read to check the budget = 5 s; 2 rounds give
    # start + 10 = the budget, and MIN_PASSES (3) asks for a third
    assert result["passes"] == result["torch_passes"] == 3


def test_a_wrong_kernel_is_caught_before_timing(monkeypatch):
    """The benchmark compares the kernel's bags with torch's before it times anything."""
    pytest.importorskip("torch", reason="torch is an optional extra")
    import bench.bench_dram as bd

    real = bd.pool_rows

    def off_by_one(table, idx, offsets, out, **kw):
        real(table, idx, offsets, out, **kw)
        out += 1.0

    monkeypatch.setattr(bd, "pool_rows", off_by_one)
    with pytest.raises(RuntimeError, match="disagree"):
        run_bench_dram(DramBenchConfig(**TINY))


def test_without_torch_reports_nulls(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    result = run_bench_dram(DramBenchConfig(**TINY))
    assert result["torch_lookups_per_s"] is None and result["ratio"] is None
    assert "not installed" in result["torch_missing"]
    off = run_bench_dram(DramBenchConfig(**TINY, use_torch=False))
    assert off["torch_lookups_per_s"] is None and off["torch_passes"] == 0


def test_zipf_indices_follow_the_inverse_cdf():
    rng = np.random.default_rng(0)
    # two rows, alpha 1: P(rank 1) = 1 / (1 + 1/2) = 2/3
    idx = zipf_indices(2, 60_000, 1.0, rng)
    assert idx.dtype == np.int64 and set(np.unique(idx)) == {0, 1}
    assert abs((idx == 0).mean() - 2 / 3) < 0.01
    # with a permutation, rank r is row perm[r - 1]
    perm = np.array([4, 2, 0, 1, 3])
    mapped = zipf_indices(5, 1000, 2.0, np.random.default_rng(1), perm)
    plain = zipf_indices(5, 1000, 2.0, np.random.default_rng(1))
    np.testing.assert_array_equal(mapped, perm[plain])


def test_workload_is_seeded():
    a, b = make_workload(DramBenchConfig(**TINY)), make_workload(DramBenchConfig(**TINY))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][3], b[1][3])
    np.testing.assert_array_equal(a[2], np.arange(0, 16 * 4 + 1, 4))  # fixed pooling: bags of 4


def test_time_passes_alternates_until_the_budget_is_spent():
    ticks = iter(range(1000))
    calls = []
    times = _time_passes({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 20,
                         clock=lambda: float(next(ticks)))
    # fake clock: 1 tick per read; each pass reads it twice and each round once more, so ~5 ticks per round
    assert calls[:4] == ["a", "b", "a", "b"]
    assert len(times["a"]) == len(times["b"]) >= 3
    assert all(t == 1.0 for t in times["a"])


@pytest.mark.parametrize("change", [dict(rows=0), dict(dim=-1), dict(alpha=0.0), dict(threads=0),
                                    dict(threads=10**6), dict(seconds=0.0), dict(rows=10**13)])
def test_bad_config_is_an_input_error(change):
    with pytest.raises(InputError):
        run_bench_dram(DramBenchConfig(**{**TINY, **change}))


def test_cli_json_and_table(capsys, tmp_path):
    base = ["bench", "dram", "--rows", "300", "--dim", "8", "--batch", "4", "--pooling", "3", "--seconds", "0.01",
            "--out-dir", str(tmp_path / "runs")]
    code, out, _ = run_cli([*base, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["config"]["dim"] == 8 and result["lookups_per_pass"] == 4 * 4 * 3  # 4 batches of 4 bags of 3
    code, out, _ = run_cli([*base, "--no-torch", "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0 and "pool_rows" in out and "switched off" in out  # the table, the JSON in the file
    assert json.loads((tmp_path / "r.json").read_text())["torch_missing"] == "torch comparison switched off"
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_cli_bad_input_is_one_line_and_exit_2(capsys):
    code, out, err = run_cli(["bench", "dram", "--rows", "0"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "--rows must be a positive integer" in err


def test_help_has_an_example(capsys):
    code, out, _ = run_cli(["bench", "dram", "--help"], capsys)
    assert code == 0 and "example:" in out and "--json [FILE]" in out


def test_render_without_torch():
    from rich.console import Console

    result = run_bench_dram(DramBenchConfig(**TINY, use_torch=False))
    console = Console(width=80, record=True)
    console.print(render(result))
    text = console.export_text()
    assert "screc pool_rows" in text and "switched off" in text
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())  # an 80-column terminal


def test_parse_threads():
    assert parse_threads("2") == [2]
    assert parse_threads("all") == parse_threads(" ALL ") == list(range(1, cpu_threads() + 1))
    with pytest.raises(InputError, match="positive integer or 'all'"):
        parse_threads("two")


def test_a_sweep_runs_every_count_on_one_workload():
    counts = list(range(1, cpu_threads() + 1))
    result = run_bench_dram_threads(DramBenchConfig(**TINY, use_torch=False), counts)
    assert result["thread_counts"] == counts and [r["threads"] for r in result["runs"]] == counts
    assert all(r["lookups_per_s_median"] > 0 and r["ratio_median"] is None for r in result["runs"])
    json.dumps(result)
    with pytest.raises(InputError):
        run_bench_dram_threads(DramBenchConfig(**TINY), [1, 10**6])  # checked before any work


def test_cli_threads_all_renders_a_row_pair_per_count(capsys, tmp_path):
    from rich.console import Console

    base = ["bench", "dram", "--rows", "300", "--dim", "8", "--batch", "4", "--pooling", "3", "--seconds", "0.01",
            "--out-dir", str(tmp_path / "runs"), "--threads", "all"]
    code, out, _ = run_cli([*base, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["thread_counts"] == list(range(1, cpu_threads() + 1))
    console = Console(width=80, record=True)
    console.print(render(result))
    text = console.export_text()
    assert text.count("screc pool_rows") == len(result["runs"]) and "measured" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    code, _, err = run_cli([*base[:-1], "x"], capsys)
    assert code == 2 and "--threads must be a positive integer or 'all'" in err

"""bench.bench_quant: rates from a fake clock, the outputs compared, the FBGEMM side's skips (tiny sizes,
no timing assertions). The FBGEMM side itself runs only where scripts/fbgemm_env.sh made its virtualenv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.bench_quant import FBGEMM_PYTHON, QuantBenchConfig, make_workload, render, run_bench_quant, screc_pass
from tests import naive
from tests.conftest import one_line_error, run_cli
from tracegen.errors import InputError

TINY = dict(tables=2, rows=300, dim=20, batch=4, pooling=3, rounds=2, seconds=0.01)


def _ticks():
    t = [0.0]

    def clock() -> float:  # one second per call
        t[0] += 1.0
        return t[0]

    return clock


def test_rates_from_a_fake_clock_are_the_hand_derived_ones(tmp_path):
    # a pass is timed between two consecutive calls: 1 s; a pass pools 2 batches x 2 tables x 4 bags x 3
    # lookups = 48 lookups, so every side runs at 48 lookups/s (best and median); 2 passes per round
    # (the clock has run past `seconds` by then), 2 rounds -> 4 passes per format
    r = run_bench_quant(QuantBenchConfig(**TINY, fbgemm_python=None, use_torch=False), clock=_ticks(),
                        runs_dir=str(tmp_path))
    assert r["lookups_per_pass"] == 48
    for f in ("fp32", "fp16", "int8", "int4"):
        assert r["formats"][f]["screc"] == {"best": 48.0, "median": 48.0, "passes": 4}
        assert r["formats"][f]["fbgemm"] is None and r["formats"][f]["ratio_vs_fbgemm"] is None
    assert r["formats"]["int8"]["row_bytes"] == 28 and r["formats"]["int4"]["row_bytes"] == 14  # 20 + 8; 10 + 4
    assert r["formats"]["int4"]["table_bytes"] == 2 * 300 * 14
    assert r["fbgemm_missing"] == "FBGEMM side switched off" and r["torch_missing"] == "torch side switched off"
    assert list(tmp_path.iterdir()) == []  # the data directory is removed
    json.dumps(r)


def test_screc_pass_equals_the_reference_per_table():
    config = QuantBenchConfig(**TINY)
    work = make_workload(config)
    outs = [np.empty((4, 2 * 20), np.float32) for _ in work.indices]
    screc_pass(work, "int4", outs)
    for b, batch in enumerate(work.indices):
        for t, idx in enumerate(batch):
            want = naive.pool_quantized_ref(work.stored["int4"][t], "int4", 20, idx, work.offsets)
            assert np.array_equal(outs[b][:, t * 20:(t + 1) * 20], want)


def test_formats_compared_with_fp32_and_torch(tmp_path):
    pytest.importorskip("torch", reason="torch is an optional extra")
    r = run_bench_quant(QuantBenchConfig(**TINY, fbgemm_python=None), runs_dir=str(tmp_path))
    f = r["formats"]
    assert f["fp32"]["torch_bit_exact"] is True and f["fp32"]["max_abs_vs_fp32"] == 0.0
    # coarser formats lose more: fp16 < int8 < int4 (pooled sums of 3 normal rows)
    assert 0 < f["fp16"]["max_abs_vs_fp32"] < f["int8"]["max_abs_vs_fp32"] < f["int4"]["max_abs_vs_fp32"] < 3
    assert r["torch_fp32"]["passes"] >= 4 and f["int8"]["ratio_vs_torch_fp32"] > 0


def test_fbgemm_side_missing_or_broken_is_skipped_with_the_reason(tmp_path):
    r = run_bench_quant(QuantBenchConfig(**TINY, formats=("int8",), fbgemm_python=str(tmp_path / "nope"),
                                         use_torch=False), runs_dir=str(tmp_path))
    assert r["fbgemm_missing"].startswith(f"FBGEMM skipped: {tmp_path / 'nope'} not found")
    assert "scripts/fbgemm_env.sh" in r["fbgemm_missing"]
    # a python that dies at once (as one without fbgemm_gpu does at its import): its last stderr line is the reason
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback ...' >&2\necho \"ModuleNotFoundError: No module named 'fbgemm_gpu'\" >&2"
                    "\nexit 1\n")
    fake.chmod(0o755)
    r = run_bench_quant(QuantBenchConfig(**TINY, formats=("int8",), fbgemm_python=str(fake), use_torch=False),
                        runs_dir=str(tmp_path / "runs"))
    assert r["fbgemm_missing"] == ("FBGEMM skipped: the FBGEMM side stopped (ModuleNotFoundError: No module named "
                                   "'fbgemm_gpu')")
    assert r["formats"]["int8"]["screc"]["passes"] >= 4


@pytest.mark.skipif(not Path(FBGEMM_PYTHON).is_file(), reason="FBGEMM virtualenv not made (scripts/fbgemm_env.sh)")
def test_against_fbgemm(tmp_path):
    r = run_bench_quant(QuantBenchConfig(**{**TINY, "dim": 64}, use_torch=False), runs_dir=str(tmp_path))
    f = r["formats"]
    assert r["fbgemm_missing"] is None and r["fbgemm_versions"]["fbgemm_gpu"] == "1.9.0"
    # same codes, same scale and bias, dequantized and summed in the same order: identical bits
    assert f["int4"]["fbgemm_bit_exact"] and f["fp16"]["fbgemm_bit_exact"] and f["fp32"]["fbgemm_bit_exact"]
    # FBGEMM's int8 keeps the scale and bias as fp16: off by the rounding of both, not equal
    assert 0 < f["int8"]["fbgemm_max_abs_diff"] < 0.05
    assert f["int8"]["fbgemm"]["passes"] >= 4 and f["int8"]["ratio_vs_fbgemm"] > 0


def test_bad_input_and_render(tmp_path, capsys):
    with pytest.raises(InputError, match="--formats int8,int3"):
        QuantBenchConfig(formats=("int8", "int3")).check()
    code, _, err = run_cli(["bench", "quant", "--formats", "int9", "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and one_line_error(err)
    code, out, _ = run_cli(["bench", "quant", "--help"], capsys)
    assert code == 0 and "example:" in out and "scripts/fbgemm_env.sh" in out and "max diff" in out
    r = run_bench_quant(QuantBenchConfig(**TINY, fbgemm_python=None, use_torch=False), runs_dir=str(tmp_path))
    from rich.console import Console

    con = Console(width=80, record=True)
    con.print(render(r))
    text = con.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "(measured)" in text and "load average" in text


@pytest.mark.parametrize("extra, expect", [
    (["--rows", "0"], "--rows"), (["--seconds", "nan"], "--seconds"), (["--dim", "-3"], "--dim"),
    (["--rows", "4000000000", "--tables", "64"], "more than this machine has free"),
    (["--json", "{file}/r.json"], "file"), (["--out-dir", "{file}/runs"], "file")])
def test_bad_input_exits_2_before_any_work(tmp_path, capsys, monkeypatch, extra, expect):
    import bench.bench_quant as bq

    (tmp_path / "file").write_text("a regular file")
    monkeypatch.setattr(bq, "make_workload", lambda *a: pytest.fail("worked before checking the input"))
    argv = ["bench", "quant", "--out-dir", str(tmp_path / "runs")] + [x.format(file=tmp_path / "file") for x in extra]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and one_line_error(err) and expect in err

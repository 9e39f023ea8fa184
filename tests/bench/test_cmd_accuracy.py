"""bench.cmd_accuracy through the command line: --json [FILE], --out-dir, the shared --engine, outputs first.

Unwritable outputs are made with a path under a regular file (``file/sub``): tests run as root.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import one_line_error, run_cli


def _acc(store, trace, *extra):
    return ["accuracy", "--store", str(store), "--trace", str(trace), "--engine", "pread", *extra]


def test_json_bare_and_out_dir(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(_acc(tiny_store, tiny_trace, "--tt-rank", "4", "--batches", "1", "--no-dense",
                                  "--json", "--out-dir", "res"), capsys)
    assert code == 0, err
    payload = json.loads(out)  # stdout is the JSON alone
    assert payload["batches"] == 1 and payload["dense"] is None
    assert {t["tt_rank"] for t in payload["tables"]} == {4}  # every tiny table served from its rank-4 cores
    assert len(list((tmp_path / "res").iterdir())) == 1 and not (tmp_path / "runs").exists()


def test_null_engine_is_refused(tiny_store, tiny_trace, capsys):
    code, _, err = run_cli(["accuracy", "--store", str(tiny_store), "--trace", str(tiny_trace), "--engine", "null"],
                           capsys)
    assert code == 2 and one_line_error(err) and "null reads nothing" in err


@pytest.mark.parametrize("extra", [["--out-dir", "file/sub"], ["--json", "file/a.json"]])
def test_unwritable_outputs_fail_first(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch, extra):
    import bench.cmd_accuracy as cmd

    (tmp_path / "file").write_text("a regular file")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cmd, "accuracy_report", lambda *a, **k: pytest.fail("measured before checking outputs"))
    code, _, err = run_cli(_acc(tiny_store, tiny_trace, *extra), capsys)
    assert code == 2 and one_line_error(err) and "file" in err


def test_help_explains_the_columns(capsys):
    code, out, _ = run_cli(["accuracy", "--help"], capsys)
    assert code == 0 and "example:" in out and "--json" in out
    assert "rel. Frobenius" in out and "max |diff|" in out and "TT lookups" in out


def test_tables_fit_80_columns():
    from rich.console import Console

    from bench.cmd_accuracy import render_tables

    row = {"table": "table_with_a_long_name", "dim": 128, "cold_tier": "ssd_tt", "hot_rows": 123456, "tt_rank": 16,
           "compression_ratio": 2843.2, "tt_lookups": 1234567, "mean_abs_diff": 1.5e-3, "max_abs_diff": 2.5e-2,
           "rel_fro_diff": 0.0451}
    payload = {"tt_planner": "screc", "raw_policy": "all-dram", "batches": 30, "samples": 61440,
               "tables": [row], "tt_lookups": 1234567, "overall": row}
    con = Console(width=80, record=True)
    con.print(render_tables(payload))
    text = con.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "2843.2x" in text and "dram 123,456 +" in text and "0.0451" in text  # the tier may wrap, not cut


def test_row_formats_each_compared_in_80_columns(tmp_path, capsys, tiny_spec):
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig
    from tracegen.generate import GeneratorParams, generate_trace

    build_store(tiny_spec, tmp_path / "s", StoreBuildConfig(weights_seed=1, tt_ranks=(), row_formats=("int8", "int4")))
    generate_trace(tiny_spec, GeneratorParams(seed=3, num_batches=2), tmp_path / "t.h5")
    args = ["accuracy", "--store", str(tmp_path / "s"), "--trace", str(tmp_path / "t.h5"), "--engine", "pread",
            "--out-dir", str(tmp_path / "runs")]
    from rich.console import Console

    from bench.cmd_accuracy import render_formats

    code, out, err = run_cli(args + ["--row-formats", "int8,int4", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert [r["format"] for r in payload["summary"]] == ["int8", "int4"] and payload["summary"][0]["tables"] == 4
    con = Console(width=80, record=True)
    con.print(render_formats(payload["summary"], payload["batches"], payload["samples"]))
    lines = con.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80 and "(measured;" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["int8"], ["int4"])}
    assert float(rows["int8"][2]) < float(rows["int4"][2])  # rel Frob: int8 loses less than int4
    code, _, err = run_cli(args + ["--row-formats", "fp16"], capsys)  # the store has no fp16 rows
    assert code == 2 and one_line_error(err) and "fp16" in err

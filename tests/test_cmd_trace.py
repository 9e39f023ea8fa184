"""``screc trace gen | stats | presets`` through the real entry point."""

from __future__ import annotations

import json

import pytest

from tests.conftest import one_line_error, run_cli
from tracegen.trace_io import TraceReader


def _run(argv, capsys):
    """run_cli, also for argparse's own errors (they leave main() as SystemExit(2) after one stderr line)."""
    try:
        return run_cli(argv, capsys)
    except SystemExit as e:
        cap = capsys.readouterr()
        return e.code, cap.out, cap.err


def test_gen_then_stats(tmp_path, capsys):
    out = tmp_path / "t.h5"
    code, stdout, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "3", "--seed", "4", "--reuse", "0.2",
                                 "-o", str(out)], capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and "3 batches" in lines[0] and "lookups/s" in lines[0]
    with TraceReader(out) as r:
        assert r.num_batches == 3 and r.seed == 4 and r.params["reuse"] == 0.2
        assert lines[0].endswith(f"trace_id {r.trace_id}")
        num_lookups = r.num_lookups
    assert f"{num_lookups:,} lookups" in lines[0]

    code, stdout, err = run_cli(["trace", "stats", str(out)], capsys)
    assert code == 0, err
    assert "Histogram of col sizes:" in stdout and "Ratio of index distribution" in stdout
    assert "(32768+: 0.000" in stdout and "t3" in stdout

    code, stdout, err = run_cli(["trace", "stats", str(out), "--batches", "2", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["num_batches"] == 2 and doc["total_batches"] == 3 and len(doc["tables"]) == 4
    assert doc["locality"]["bins"][0] == "(0, 1]"


def test_gen_options_reach_the_trace(tmp_path, capsys):
    out = tmp_path / "t.h5"
    code, _, err = run_cli(["trace", "gen", "--model", "criteo-kaggle", "--scale", "0.001", "--batch-size", "16",
                            "--batches", "1", "--alpha", "0.8", "-o", str(out)], capsys)
    assert code == 0, err
    with TraceReader(out) as r:
        assert r.batch_size == 16 and r.spec.tables[2].rows == 10131  # round(10,131,227 * 0.001)
        assert all(t.zipf_alpha == 0.8 for t in r.spec.tables)


def test_presets_listing(capsys):
    code, stdout, _ = run_cli(["trace", "presets"], capsys)
    assert code == 0 and "criteo-kaggle" in stdout and "mlperf-dlrmv2" in stdout
    code, stdout, _ = run_cli(["trace", "presets", "--json"], capsys)
    doc = {p["name"]: p for p in json.loads(stdout)}
    assert doc["mlperf-dlrmv2"]["tables"] == 26 and doc["mlperf-dlrmv2"]["lookups_per_sample"] == 214
    assert doc["criteo-kaggle"]["rows"] == 33_762_577


@pytest.mark.parametrize("argv, needle", [
    (["--model", "missing_spec.json"], "spec file not found"),
    (["--model", "no-such-preset"], "neither a preset"),
    (["--model", "tiny", "--scale", "0"], "scale"),
    (["--model", "tiny", "--scale", "-2"], "scale"),
    (["--model", "tiny", "--scale", "abc"], "--scale"),
    (["--model", "tiny", "--reuse", "1.5"], "reuse"),
    (["--model", "tiny", "--seed", "-1"], "seed"),
    (["--model", "tiny", "--batch-size", "0"], "--batch-size"),
])
def test_gen_bad_inputs(tmp_path, capsys, argv, needle):
    code, stdout, err = _run(["trace", "gen", *argv, "--batches", "1", "-o", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and one_line_error(err) and needle in err
    assert not (tmp_path / "x.h5").exists()


def test_gen_zero_batches(tmp_path, capsys):
    code, _, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "0", "-o", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and one_line_error(err) and "--batches" in err


def test_stats_bad_inputs(tmp_path, capsys):
    code, _, err = run_cli(["trace", "stats", str(tmp_path / "nope.h5")], capsys)
    assert code == 2 and one_line_error(err) and "not found" in err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    code, _, err = run_cli(["trace", "stats", str(junk)], capsys)
    assert code == 2 and one_line_error(err)


def test_help_has_examples(capsys):
    for cmd in ("gen", "stats", "presets"):
        with pytest.raises(SystemExit) as e:
            run_cli(["trace", cmd, "--help"], capsys)
        assert e.value.code == 0
        assert "example:" in capsys.readouterr().out

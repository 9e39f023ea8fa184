"""``screc trace gen | stats | presets`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

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
    code, stdout, err = run_cli(["trace", "stats", str(out), "--batches", "2", "--json", str(tmp_path / "s.json")],
                                capsys)
    assert code == 0 and "Histogram" in stdout and json.loads((tmp_path / "s.json").read_text()) == doc
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
    for cmd in ("gen", "stats", "presets", "fit", "import-dlrm", "export-dlrm"):
        code, out, _ = _run(["trace", cmd, "--help"], capsys)
        assert code == 0 and "example:" in out


# --- fit, gen --params, stats --model --------------------------------------------------------------------


def _stats_file(tmp_path, capsys) -> tuple:
    """A locality_stats.txt with two blocks, made from small generated traces of known skew."""
    from tracegen.locality import format_locality_stats, trace_stats

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "s", "batch_size": 1024, "tables": [
        {"name": n, "rows": r, "dim": 4, "pooling": {"kind": "fixed", "mean": p, "min": p, "max": p}}
        for n, r, p in (("a", 3000, 4), ("b", 40_000, 6), ("c", 500, 8), ("d", 90_000, 2))]}))
    blocks = []
    for name, alpha in (("small_t4_x.pt", "0.9"), ("small_t4_y.pt", "0.4")):
        out = tmp_path / f"{alpha}.h5"
        code, _, err = run_cli(["trace", "gen", "--model", str(spec), "--batches", "2", "--alpha", alpha,
                                "-o", str(out)], capsys)
        assert code == 0, err
        with TraceReader(out) as r:
            blocks.append(format_locality_stats(name, trace_stats(r).locality))
    target = tmp_path / "locality_stats.txt"
    target.write_text("\n\n".join(blocks) + "\n")
    return spec, target


def test_fit_then_gen_with_the_fit(tmp_path, capsys):
    spec, target = _stats_file(tmp_path, capsys)
    fit = tmp_path / "fit.json"
    code, out, err = run_cli(["trace", "fit", "--target", str(target), "--block", "small_t4_x.pt",
                              "--model", str(spec), "--kind", "hurwitz-lal", "--knots", "1", "--full-batch",
                              "-o", str(fit), "--json", str(tmp_path / "report.json")], capsys)
    assert code == 0, err
    assert "small_t4_x.pt" in out and "wrote" in out and "in-sample" in out
    doc = json.loads(fit.read_text())
    assert doc["format"] == "screc-trace-fit" and doc["target"]["name"] == "small_t4_x.pt"
    d = doc["distances"]
    assert d["held_out"] is not None and "out of sample" in d["held_out"]["kind"]
    fb = d["full_batch"]
    assert "measured" in fb["kind"] and fb["unique_l1"] < 0.15 and fb["lookup_l1"] < 0.15 and fb["tofile_s"] > 0
    assert len(doc["params"]["popularity"]) == 4 and doc["params"]["batch_size"] == 1024
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outputs"] == [str(fit)] and report["fits"][0]["model"]["kind"] == "hurwitz-lal"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch left

    out_trace = tmp_path / "g.h5"
    code, _, err = run_cli(["trace", "gen", "--model", str(spec), "--params", str(fit), "--batches", "1",
                            "--seed", "5", "-o", str(out_trace)], capsys)
    assert code == 0, err
    with TraceReader(out_trace) as r:
        fitted = {p[0]: p[1] for p in doc["params"]["popularity"]}
        assert [t.zipf_alpha for t in r.spec.tables] == [round(fitted[n], 6) for n in "abcd"]
        assert r.seed == 5 and r.params["pooling_scale"] == doc["params"]["pooling_scale"]

    code, out, err = run_cli(["trace", "fit", "--target", str(target), "--all", "--model", str(spec),
                              "--kind", "zipf", "--knots", "1", "--transfer", "--full-batch",
                              "--out-dir", str(tmp_path / "fits" / "new")], capsys)  # a directory not made yet
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "fits" / "new").iterdir()) == ["small_t4_x.json", "small_t4_y.json"]
    assert "transfer" in out
    doc = json.loads((tmp_path / "fits" / "new" / "small_t4_x.json").read_text())
    assert [t["to"] for t in doc["transfer"]] == ["small_t4_y.pt"]


def test_calibrate_is_gone(tmp_path, capsys):
    code, _, err = _run(["trace", "calibrate", "--help"], capsys)
    assert code == 2 and "fit" in err


@pytest.mark.parametrize("extra, needle", [
    ([], "--block NAME"),
    (["--block", "nope"], "no block 'nope'"),
    (["--all", "--knots", "0"], "knots"),
    (["--all", "--kind", "nope"], "unknown model kind"),
    (["--all", "-o", "f.json"], "--out-dir"),
])
def test_fit_bad_inputs(tmp_path, capsys, extra, needle):
    spec, target = _stats_file(tmp_path, capsys)
    argv = ["trace", "fit", "--target", str(target), "--model", str(spec), *extra]
    if "-o" not in extra and "--all" not in extra:
        argv += ["-o", str(tmp_path / "f.json")]
    code, _, err = _run(argv, capsys)
    assert code == 2 and one_line_error(err) and needle in err


def test_gen_with_a_bad_params_file(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    code, _, err = _run(["trace", "gen", "--model", "tiny", "--batches", "1", "--params", str(bad),
                         "-o", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and one_line_error(err) and "not a JSON file" in err
    bad.write_text(json.dumps({"alpha_overrides": [["no_such_table", 1.0]]}))
    code, _, err = _run(["trace", "gen", "--model", "tiny", "--batches", "1", "--params", str(bad),
                         "-o", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and one_line_error(err) and "unknown table" in err


def test_expected_stats_of_a_full_size_preset(capsys):
    code, out, err = run_cli(["trace", "stats", "--model", "meta-2021", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["tables"] == 856 and doc["bytes"] > 1e12 and doc["expected"] is True
    assert doc["locality"]["avg_indices"] == pytest.approx(887e6, rel=0.01)  # 15.8 x 856 x 65,536
    code, out, err = run_cli(["trace", "stats", "--model", "meta-2022", "--scale", "0.001"], capsys)
    assert code == 0, err and "Histogram of col sizes:" in out
    code, _, err = _run(["trace", "stats"], capsys)
    assert code == 2 and one_line_error(err)


def test_fit_bad_or_truncated_target(tmp_path, capsys):
    good = (Path(__file__).resolve().parents[1] / "data" / "dlrm_datasets_2021_locality_stats.txt")
    text = good.read_text() if good.is_file() else "name\nHistogram of col sizes:\n(0, 1]: 1.0\n" * 2
    cut = tmp_path / "cut.txt"
    cut.write_text(text[: len(text) // 3 + 7])  # ends inside a histogram
    for target in (cut, tmp_path / "missing.txt"):
        code, _, err = _run(["trace", "fit", "--target", str(target), "--all", "--model", "tiny",
                             "--out-dir", str(tmp_path / "f")], capsys)
        assert code == 2 and one_line_error(err) and str(target) in err


# --- gen --tables, --json, Ctrl-C; stats --mrc; a directory as a trace ------------------------------------


def test_gen_tables_draws_each_table_as_in_the_whole_model(tmp_path, capsys):
    whole, part = tmp_path / "whole.h5", tmp_path / "part.h5"
    for out, extra in ((whole, []), (part, ["--tables", "1::2"])):
        code, _, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "2", "--seed", "3", *extra,
                                "-o", str(out)], capsys)
        assert code == 0, err
    code, stdout, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "1", "--tables", "t0,t3",
                                 "-o", str(tmp_path / "names.h5"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["tables"] == 2
    with TraceReader(whole) as w, TraceReader(part) as p:
        assert [t.name for t in p.spec.tables] == ["t1", "t3"] and p.params["source_tables"] == [1, 3]
        for i in range(2):
            for k, t in enumerate((1, 3)):
                assert (w.batch(i).table(t)[0] == p.batch(i).table(k)[0]).all()
    code, _, err = _run(["trace", "gen", "--model", "tiny", "--batches", "1", "--tables", "t9",
                         "-o", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and one_line_error(err) and "'t9'" in err


def test_stats_mrc_and_a_directory_as_a_trace(tmp_path, capsys):
    out = tmp_path / "t.h5"
    code, _, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "5", "--reuse", "0.3",
                            "--reuse-window", "200", "-o", str(out)], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["trace", "stats", str(out), "--mrc", "--tables", "t1", "--json"], capsys)
    assert code == 0, err
    curves = json.loads(stdout)["mrc"]
    assert [c["name"] for c in curves] == ["all tables", "t1"] and curves[0]["exact"] is True
    mr = curves[0]["miss_ratio"]
    assert all(a >= b for a, b in zip(mr, mr[1:])) and 0 < mr[-1] < 1
    code, stdout, err = run_cli(["trace", "stats", str(out), "--mrc"], capsys)
    assert code == 0 and "LRU miss ratio" in stdout
    code, _, err = run_cli(["trace", "stats", str(tmp_path)], capsys)
    assert code == 2 and one_line_error(err) and "is a directory" in err


def test_ctrl_c_stops_gen_exit_130_and_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "big.h5"
    cmd = [sys.executable, "-m", "bench.cli", "trace", "gen", "--model", "criteo-kaggle", "--scale", "0.05",
           "--batch-size", "65536", "--batches", "400", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".big.h5") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)  # inside the generation loop
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []

"""bench.cmd_store: --model, --out-dir (and -o), --json [FILE], outputs checked first, the column legend.

Unwritable outputs are made with a path under a regular file (``file/sub``): the tests run as root, where a
chmod-ed read-only directory is still writable.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import one_line_error, run_cli


def test_build_with_model_and_out_dir_then_json_file(tmp_path, capsys):
    code, out, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "4", "--out-dir",
                              str(tmp_path / "s"), "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "b.json").read_text())
    assert summary["tables"] == 4 and summary["store"] == str(tmp_path / "s")  # the tiny preset has 4 tables
    assert out.startswith(f"built {tmp_path / 's'}: 4 tables")
    code, out, _ = run_cli(["store", "info", str(tmp_path / "s"), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and [v["rank"] for v in info["tables"][0]["tt"]] == [4]
    code, out, _ = run_cli(["store", "verify", str(tmp_path / "s"), "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"] is True


def test_spec_flag_is_gone(tmp_path, capsys):
    code, _, err = run_cli(["store", "build", "--spec", "tiny", "-o", str(tmp_path / "s")], capsys)
    assert code == 2 and one_line_error(err) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("extra", [["--out-dir", "file/sub"], ["--out-dir", "ok", "--json", "file/b.json"]])
def test_unwritable_outputs_fail_before_building(tmp_path, capsys, monkeypatch, extra):
    import bench.cmd_store as cmd

    (tmp_path / "file").write_text("a regular file")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cmd, "build_store", lambda *a, **k: pytest.fail("built before checking the outputs"))
    code, _, err = run_cli(["store", "build", "--model", "tiny", *extra], capsys)
    assert code == 2 and one_line_error(err) and "file" in err
    assert not (tmp_path / "ok").exists()


def test_a_file_given_as_store(tmp_path, capsys):
    (tmp_path / "t.h5").write_bytes(b"not a store")
    for cmd in ("info", "verify"):
        code, _, err = run_cli(["store", cmd, str(tmp_path / "t.h5")], capsys)
        assert code == 2 and one_line_error(err) and "is a file, not a store directory" in err


def test_help_examples_and_legend(capsys):
    for sub in ("build", "verify", "info"):
        code, out, _ = run_cli(["store", sub, "--help"], capsys)
        assert code == 0 and "example:" in out and "--json" in out
    code, out, _ = run_cli(["store", "build", "--help"], capsys)
    assert "--model tiny --out-dir stores/tiny" in out and "--spec" not in out
    code, out, _ = run_cli(["store", "info", "--help"], capsys)
    assert "max abs err" in out and "rel err" in out and "ratio" in out  # every column explained


def test_info_view_fits_80_columns(tiny_store):
    from rich.console import Console

    from bench.cmd_store import render_store_info, store_info
    from emulator.store.store import Store

    con = Console(width=80, record=True)
    con.print(render_store_info(store_info(Store.open(tiny_store))))
    text = con.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert text.count("│ t0 ") == 3  # t0 in the tables' table and once per TT rank (4 and 8)


def test_build_row_formats_and_info(tmp_path, capsys):
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "", "--row-formats", "int8,int4",
                            "--out-dir", str(tmp_path / "s")], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["store", "info", str(tmp_path / "s"), "--json"], capsys)
    # t0: 500 x 16 fp32, raw 8 pages; int8 24-byte rows in 3 pages (ratio 8 / 3), int4 12-byte rows in 2 pages
    fmts = {f["format"]: f for f in json.loads(out)["tables"][0]["formats"]}
    assert fmts["int8"]["bytes"] == 3 * 4096 and fmts["int8"]["compression_ratio"] == pytest.approx(8 / 3)
    assert fmts["int4"]["row_bytes"] == 12 and fmts["int4"]["bytes"] == 2 * 4096
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--row-formats", "int8,int3",
                            "--out-dir", str(tmp_path / "t")], capsys)
    assert code == 2 and one_line_error(err) and "int3" in err and not (tmp_path / "t").exists()


def test_build_workers_generator_and_tt_method_flags(tmp_path, capsys):
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "4", "--workers", "2",
                            "--weights-generator", "tt-gauss", "--tt-method", "svd", "--out-dir", str(tmp_path / "s"),
                            "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["weights"]["generator"] == "tt-gauss" and manifest["build"]["tt_method"] == "svd"
    assert json.loads((tmp_path / "b.json").read_text())["workers"] == 2
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--workers", "0", "--out-dir", str(tmp_path / "t")],
                           capsys)
    assert code == 2 and one_line_error(err) and "--workers" in err and not (tmp_path / "t").exists()

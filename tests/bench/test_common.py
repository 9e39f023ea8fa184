"""bench.common: sizes need a unit, budgets may be a share, outputs are checked without leaving anything."""

from __future__ import annotations

import argparse

import pytest

from bench.common import (ENGINES, SizeOrShare, add_batch_size_arg, add_dram_budget_arg, add_engine_arg,
                          add_json_arg, add_out_dir_arg, add_qd_arg, ensure_writable_dir, ensure_writable_file,
                          parse_size, parse_size_or_share)
from tracegen.errors import InputError


@pytest.mark.parametrize("text, n", [("5GiB", 5 * 1024**3), ("1.5GB", 1_500_000_000), ("64KiB", 65536),
                                     ("100B", 100), ("2 MiB", 2 * 1024**2), ("0", 0), ("3k", 3000)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text, msg", [("1024", "has no unit"), ("5XB", "is not a size"), ("", "is not a size"),
                                       ("-1MiB", "is not a size"), ("MiB", "is not a size")])
def test_parse_size_refuses(text, msg):
    with pytest.raises(InputError, match=msg):
        parse_size(text, "--dram-budget")


def test_size_or_share():
    assert parse_size_or_share("5%") == SizeOrShare("5%", share=0.05)
    assert parse_size_or_share("5%").resolve(2000) == 100  # 5% of 2000 bytes
    assert parse_size_or_share("64MiB").resolve(1) == 64 << 20  # a size ignores the model
    for bad in ("0%", "101%", "x%", "64"):
        with pytest.raises(InputError):
            parse_size_or_share(bad)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    add_dram_budget_arg(p)
    add_engine_arg(p)
    add_qd_arg(p)
    add_batch_size_arg(p)
    add_json_arg(p)
    add_out_dir_arg(p)
    return p


def test_shared_flags_have_one_definition():
    a = _parser().parse_args([])
    assert (a.engine, a.qd, a.batch_size, a.json, a.out_dir, a.dram_budget) == ("uring", 128, None, None, "runs", None)
    assert ENGINES == ("uring", "liburing", "pread", "null")
    a = _parser().parse_args(["--json", "--dram-budget", "5%"])
    assert a.json == "-" and a.dram_budget.share == 0.05  # bare --json: stdout
    assert _parser().parse_args(["--json", "f.json"]).json == "f.json"


def test_bare_budget_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--dram-budget", "1024"])
    assert e.value.code == 2 and "has no unit" in capsys.readouterr().err


def test_ensure_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    ensure_writable_file(None)
    ensure_writable_file("-")
    ensure_writable_file(tmp_path / "new" / "deeper" / "r.json")  # parents would be created: fine
    ensure_writable_dir(tmp_path / "runs")
    for bad in (tmp_path / "file" / "r.json", tmp_path / "file" / "sub" / "r.json"):
        with pytest.raises(InputError, match="not a directory"):
            ensure_writable_file(bad)
    with pytest.raises(InputError, match="not a directory"):
        ensure_writable_dir(tmp_path / "file")
    with pytest.raises(InputError, match="is a directory"):
        ensure_writable_file(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the checks created nothing


def test_a_read_only_filesystem_is_caught_even_as_root(tmp_path, monkeypatch):
    import errno
    import os
    import tempfile

    def erofs(*a, **k):  # what creating a file on a read-only mount gives, whoever asks
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "access", lambda *a, **k: True)  # root: access() says yes to a chmod-ed directory
    monkeypatch.setattr(tempfile, "mkstemp", erofs)
    with pytest.raises(InputError, match="cannot write here .Read-only file system."):
        ensure_writable_dir(tmp_path / "runs")
    with pytest.raises(InputError, match="Read-only file system"):
        ensure_writable_file(tmp_path / "r.json")

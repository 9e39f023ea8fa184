"""Tests for bench.results: self-describing run directories under runs/."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from bench.results import RESULT_FORMAT, load_run, load_table, to_jsonable, write_run
from tracegen.errors import InputError

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _write(tmp_path, **kw):
    payload = {"policy": "mip", "qps": np.float64(123.5), "batches": np.int64(7), "bad": float("nan"),
               "latency_s": {"p50": 0.001}, "hist": np.arange(3)}
    tables = {"per table": [{"table": "t0", "hot_rows": 10, "tiers": {"dram": 1.0}}, {"table": "t1", "extra": None}]}
    return write_run("replay", ["screc", "replay", "--policy", "mip x"], payload, store_id="ab" * 16,
                     trace_id="cd" * 16, tables=tables, runs_dir=tmp_path / "runs", store_path=tmp_path,
                     created=WHEN, **kw)


def test_round_trip_and_schema(tmp_path):
    run_dir = _write(tmp_path)
    assert run_dir.parent == tmp_path / "runs"
    assert run_dir.name.startswith("20260102T030405Z-replay-") and len(run_dir.name.split("-")[-1]) == 8
    run = load_run(run_dir)
    assert run == load_run(run_dir / "result.json")  # the directory or the file
    assert run["format"] == RESULT_FORMAT and run["schema_version"] == 1 and run["kind"] == "replay"
    assert run["run_id"] == run_dir.name and run["run_dir"] == str(run_dir)
    assert run["created_utc"] == "2026-01-02T03:04:05.000000Z"
    assert run["command"] == ["screc", "replay", "--policy", "mip x"]
    assert run["command_line"] == "screc replay --policy 'mip x'"
    assert (run["store_id"], run["trace_id"]) == ("ab" * 16, "cd" * 16)
    # numpy values become plain JSON; NaN becomes null
    assert run["payload"] == {"policy": "mip", "qps": 123.5, "batches": 7, "bad": None,
                              "latency_s": {"p50": 0.001}, "hist": [0, 1, 2]}
    for key in ("python", "numpy", "numba", "h5py", "pulp", "rich", "screc"):
        assert key in run["versions"], key
    m = run["machine"]
    for key in ("cpu_model", "cores_logical", "memory_bytes", "kernel", "store_storage"):
        assert key in m, key
    assert m["store_storage"]["fs_type"] and m["store_storage"]["path"] == str(tmp_path.resolve())
    assert not list((tmp_path / "runs").glob(".*"))  # no temporary leftovers


def test_tables_are_csv(tmp_path):
    run = load_run(_write(tmp_path))
    assert run["tables"] == {"per table": "per_table.csv"}
    rows = load_table(run, "per table")
    assert rows[0] == {"table": "t0", "hot_rows": "10", "tiers": '{"dram": 1.0}', "extra": ""}
    assert rows[1]["table"] == "t1" and rows[1]["hot_rows"] == ""
    with open(run["run_dir"] + "/per_table.csv", newline="") as f:
        assert next(csv.reader(f)) == ["table", "hot_rows", "tiers", "extra"]  # columns in first-seen order
    with pytest.raises(InputError):
        load_table(run, "nope")


def test_bad_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="no result file"):
        load_run(tmp_path / "missing")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a JSON result"):
        load_run(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not a screc result"):
        load_run(bad)
    good = json.loads((_write(tmp_path) / "result.json").read_text())
    bad.write_text(json.dumps(dict(good, schema_version=99)))
    with pytest.raises(InputError, match="schema version 99"):
        load_run(bad)
    del good["payload"]
    bad.write_text(json.dumps(good))
    with pytest.raises(InputError, match="'payload'"):
        load_run(bad)


def test_kind_and_table_names_are_checked(tmp_path):
    with pytest.raises(ValueError):
        write_run("../evil", [], {}, runs_dir=tmp_path)
    with pytest.raises(ValueError):
        write_run("replay", [], {}, tables={"a b": [], "a_b": []}, runs_dir=tmp_path)


def test_to_jsonable():
    assert to_jsonable({"a": (np.float32(1.5), float("inf")), 3: np.bool_(True)}) == {"a": [1.5, None], "3": True}
    with pytest.raises(TypeError):
        to_jsonable(object())

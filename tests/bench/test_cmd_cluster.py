"""screc cluster project: per-node rates read from build and replay/compare results, the projection labelled
modelled with its assumptions, and bad input as one line (exit 2). (cluster nodes needs Ray: see
tests/emulator/cluster/test_cli.py.)"""

from __future__ import annotations

import json

import pytest

from bench.cmd_cluster import build_rate, lookup_rate
from tests.conftest import one_line_error, run_cli
from tracegen.errors import InputError


def test_rates_from_result_files(tmp_path):
    one = tmp_path / "build.json"
    one.write_text(json.dumps({"raw_bytes": 3000, "seconds": 2.0}))
    assert build_rate(str(one)) == 1500.0
    sharded = tmp_path / "sharded.json"  # the median over built shards; kept shards carry no build time
    sharded.write_text(json.dumps({"shards": [{"status": "built", "raw_bytes": 100, "seconds": 1.0},
                                              {"status": "built", "raw_bytes": 300, "seconds": 1.0},
                                              {"status": "built", "raw_bytes": 900, "seconds": 1.0},
                                              {"status": "kept", "raw_bytes": 5, "seconds": 0.1}]}))
    assert build_rate(str(sharded)) == 300.0
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps({"steady_lookups_per_s": 1.5e6}))
    assert lookup_rate(str(replay), None) == 1.5e6
    compare = tmp_path / "compare.json"
    compare.write_text(json.dumps({"sweep": [{"rows": [{"policy": "lru", "steady_lookups_per_s": 10.0},
                                                       {"policy": "screc", "steady_lookups_per_s": 40.0}]},
                                             {"rows": [{"policy": "screc", "steady_lookups_per_s": 60.0}]}]}))
    assert lookup_rate(str(compare), "screc") == 50.0
    with pytest.raises(InputError, match="policy 'x'"):
        lookup_rate(str(compare), "x")
    with pytest.raises(InputError, match="not a store build"):
        build_rate(str(replay))


def test_project_cli_labels_every_figure_modelled(tmp_path, capsys):
    build = tmp_path / "build.json"
    build.write_text(json.dumps({"raw_bytes": 126 << 20, "seconds": 1.0}))
    code, out, err = run_cli(["cluster", "project", "--build-json", str(build), "--lookup-rate", "2e7",
                              "--nodes", "16,64", "--json", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["basis"] == "modelled" and doc["figures"]["build_source"] == f"measured: {build}"
    assert [(p["nodes"], p["split_rows"]) for p in doc["projection"]] == [(16, False), (64, False), (16, True),
                                                                          (64, True)]
    assert all(p["basis"] == "modelled" for p in doc["projection"])
    whole16, whole64, split16, split64 = doc["projection"]
    # meta-2021's largest table (809 GiB) bounds whole-table placement; split rows balance the bytes
    assert whole16["max_node_bytes"] == whole64["max_node_bytes"] and split64["byte_balance"] < 1.01
    assert split64["build_s"] < split16["build_s"] < whole16["build_s"]
    assert "(modelled)" in out and "assumes:" in out


def test_project_cli_bad_input_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["cluster", "project", "--lookup-rate", "1e6"], capsys)
    assert code == 2 and one_line_error(err) and "--build-json" in err
    code, _, err = run_cli(["cluster", "project", "--build-rate", "5XB", "--lookup-rate", "1"], capsys)
    assert code == 2 and one_line_error(err)
    code, _, err = run_cli(["cluster", "project", "--build-json", str(tmp_path / "no.json"), "--lookup-rate", "1"],
                           capsys)
    assert code == 2 and one_line_error(err) and "not found" in err


def test_merge_parts_cli(tiny_spec, tmp_path, capsys):
    from tests.tracegen.test_trace_parts import PARAMS, _write_parts
    from tracegen.generate import generate_trace

    _write_parts(tiny_spec, tmp_path / "p", [(0, 2), (2, tiny_spec.num_tables)], [(0, 3)])
    code, out, err = run_cli(["cluster", "merge-parts", str(tmp_path / "p"), "-o", str(tmp_path / "m.h5"), "--json",
                              str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["trace_id"] == generate_trace(tiny_spec, PARAMS,
                                                                                         tmp_path / "one.h5")
    code, _, err = run_cli(["cluster", "merge-parts", str(tmp_path), "-o", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and one_line_error(err) and "parts.json" in err and not (tmp_path / "x.h5").exists()

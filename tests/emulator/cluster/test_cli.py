"""The --ray flags of the command line on the 3-node test cluster: store build --ray and store verify --ray
(a cluster store refused without --ray), trace gen --ray read back as one trace, cluster nodes; bad input
one line with exit 2."""

from __future__ import annotations

import json

from tests.conftest import one_line_error, run_cli


def test_store_build_and_verify_on_the_cluster(ray_cluster, tmp_path, capsys):
    addr = ray_cluster.cluster.address
    out = tmp_path / "stores" / "tiny"
    code, stdout, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "4", "--out-dir", str(out),
                                 "--ray", addr, "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["complete"] and len(doc["shards"]) == 3 and all(s["status"] == "built" for s in doc["shards"])
    assert {s["location"].split(":", 1)[1] for s in doc["shards"]} == {str(ray_cluster.disk(d))
                                                                       for d in ("disk0", "disk1", "disk2")}
    code, stdout, err = run_cli(["store", "verify", str(out), "--ray", addr], capsys)
    assert code == 0 and stdout.startswith("ok:"), err
    code, _, err = run_cli(["store", "verify", str(out)], capsys)  # a cluster store needs --ray
    assert code == 2 and one_line_error(err) and "--ray" in err
    code, stdout, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "4", "--out-dir", str(out),
                                 "--ray", addr], capsys)  # again: every shard kept
    assert code == 0 and "3 kept" in stdout, err
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "8", "--out-dir", str(out),
                            "--ray", addr], capsys)
    assert code == 2 and one_line_error(err) and "other build settings" in err


def test_trace_gen_on_the_cluster_reads_as_one_trace(ray_cluster, tmp_path, capsys):
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import get_preset
    from tracegen.trace_parts import merge_parts

    addr = ray_cluster.cluster.address
    code, stdout, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "3", "--seed", "9", "--parts", "2",
                                 "--batch-parts", "3", "-o", str(tmp_path / "t.parts"), "--ray", addr], capsys)
    assert code == 0 and "6 parts" in stdout, err
    trace_id = generate_trace(get_preset("tiny"), GeneratorParams(seed=9, num_batches=3), tmp_path / "one.h5")
    assert merge_parts(tmp_path / "t.parts", tmp_path / "merged.h5") == trace_id
    code, _, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "3", "--reuse", "0.5", "--batch-parts",
                            "2", "-o", str(tmp_path / "r.parts"), "--ray", addr], capsys)
    assert code == 2 and one_line_error(err) and "--reuse 0" in err


def test_cluster_nodes_lists_disks_and_slots(ray_cluster, capsys):
    code, stdout, err = run_cli(["cluster", "nodes", "--ray", ray_cluster.cluster.address, "--json"], capsys)
    assert code == 0, err
    nodes = json.loads(stdout)["nodes"]
    assert sorted(n["disk"] for n in nodes) == sorted(str(ray_cluster.disk(d)) for d in ray_cluster.disks())
    assert all(n["address"] == "127.0.0.1" and n["replay_slots"] == 1 for n in nodes)

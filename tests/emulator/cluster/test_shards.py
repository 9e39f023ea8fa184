"""emulator.cluster.shards on a 3-node Ray cluster of this machine: the table partition (by hand), a sharded
build whose shards sit on their nodes' disks and verify there, a flipped byte found on its node, and a node
killed mid-build: no shard of it verifies, and the resumed build keeps the done shards (same files, same
store ids) and rebuilds only the lost one."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from emulator.cluster.manifest import CLUSTER_MANIFEST, read_cluster_manifest
from emulator.cluster.shards import partition_tables, shard_seed, shard_spec
from emulator.store.store import StoreBuildConfig
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec

CONFIG = StoreBuildConfig(weights_seed=5, tt_ranks=(4,))


def _spec(big_rows: int = 100) -> ModelSpec:
    # t0 is the largest, so it is alone in shard 0; t1..t4 share shards 1 and 2 by bytes
    return ModelSpec("clu", (TableSpec("t0", big_rows, 64), TableSpec("t1", 300, 16), TableSpec("t2", 200, 16),
                             TableSpec("t3", 150, 16), TableSpec("t4", 100, 8)), batch_size=8)


def test_partition_balances_bytes_largest_first():
    spec = _spec(1000)
    # bytes: t0 256000, t1 19200, t2 12800, t3 9600, t4 3200. t0 -> shard 0; t1 -> 1; t2 -> 2; t3 -> 2 (12800 <
    # 19200); t4 -> 1 (19200 < 22400)
    assert partition_tables(spec, 3) == [[0], [1, 4], [2, 3]]
    assert partition_tables(spec, 9) == [[0], [1], [2], [3], [4]]  # never an empty shard
    assert partition_tables(spec, 1) == [[0, 1, 2, 3, 4]]
    with pytest.raises(InputError):
        partition_tables(spec, 0)
    sub = shard_spec(spec, ("t3", "t1"), 1, 3)
    assert [t.name for t in sub.tables] == ["t1", "t3"] and sub.batch_size == spec.batch_size
    assert shard_seed(5, 0) != shard_seed(5, 1) and shard_seed(5, 1) == shard_seed(5, 1) >= 0


def _shard_files(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file under ``root`` that a shard store holds."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_sharded_build_places_shards_on_their_nodes_and_verifies(ray_cluster, tmp_path):
    from emulator.cluster.shards import build_sharded, verify_sharded
    from emulator.store.build import verify_store
    from emulator.store.store import Store

    spec = _spec()
    out = tmp_path / "logical"
    m = build_sharded(spec, out, CONFIG, shards=3)
    assert m.complete and [s.status for s in m.shards] == ["built"] * 3
    doc = json.loads((out / CLUSTER_MANIFEST).read_text())
    assert doc["complete"] is True and [s["tables"] for s in doc["shards"]] == [["t0"], ["t1", "t4"], ["t2", "t3"]]
    for s, disk in zip(m.shards, ("disk0", "disk1", "disk2")):
        assert s.location.disk == str(ray_cluster.disk(disk)) and s.location.address == "127.0.0.1"
        assert Path(s.path).parent.parent == ray_cluster.disk(disk)  # on that node's disk
        store = Store.open(s.path)
        assert store.store_id == s.store_id and [t.name for t in store.tables] == list(s.tables)
        assert store.manifest.weights.seed == s.seed == shard_seed(CONFIG.weights_seed, s.index)
        assert verify_store(s.path).ok
    assert m.raw_bytes == sum(Store.open(s.path).raw_bytes for s in m.shards)
    report = verify_sharded(out)
    assert report.ok and [r["node"]["disk"] for r in report.shards] == [s.location.disk for s in m.shards]
    assert report.files == sum(r["files"] for r in report.shards) > 0

    # a flipped byte in shard 1's raw rows is found by the task on shard 1's node
    raw = Path(m.shards[1].path) / "raw" / "t4.bin"
    data = bytearray(raw.read_bytes())
    data[10] ^= 0xFF
    raw.write_bytes(bytes(data))
    bad = verify_sharded(out)
    assert not bad.ok and len(bad.problems) == 1 and bad.problems[0].startswith("shard 1 on 127.0.0.1:")
    assert "checksum mismatch" in bad.problems[0]
    # resuming rebuilds exactly that shard (the others are kept, checked by checksum)
    before = {k: _shard_files(Path(m.shards[k].path)) for k in (0, 2)}
    again = build_sharded(spec, out, CONFIG)
    assert [s.status for s in again.shards] == ["kept", "built", "kept"] and again.complete
    assert [s.store_id for s in again.shards][::2] == [m.shards[0].store_id, m.shards[2].store_id]
    assert {k: _shard_files(Path(again.shards[k].path)) for k in (0, 2)} == before
    assert verify_sharded(out).ok
    with pytest.raises(InputError, match="another model"):
        build_sharded(_spec(101), out, CONFIG)


def test_node_killed_mid_build_leaves_no_shard_and_resume_keeps_done_shards(ray_cluster, tmp_path):
    from emulator.cluster.shards import build_sharded, verify_sharded

    spec = _spec(big_rows=120_000)  # shard 0 (on disk0's worker) takes long enough to be caught mid-build
    out = tmp_path / "killed"
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(m=build_sharded(spec, out, CONFIG, shards=3)))
    th.start()
    shard_parent, builder = None, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and th.is_alive():  # the temporary directory of shard 0's build appears
        parents = list(ray_cluster.disk("disk0").glob("killed-*"))
        tmp = [p for p in parents[0].iterdir() if p.name.startswith(".shard-000.tmp-")] if parents else []
        if tmp:  # named .shard-000.tmp-<pid of the building process>-<random> (tracegen.atomic)
            shard_parent, builder = parents[0], int(tmp[0].name.split(".tmp-")[1].split("-")[0])
            break
        time.sleep(0.005)
    assert shard_parent is not None, "shard 0's build was not seen in progress"
    os.kill(builder, signal.SIGKILL)  # the node dies: its building process at once, then the rest of it
    ray_cluster.kill("disk0")
    th.join(timeout=120)
    m = result["m"]
    assert not m.complete and m.shards[0].status == "failed" and m.shards[0].problem
    assert [s.status for s in m.shards[1:]] == ["built", "built"]
    assert not (shard_parent / "shard-000").exists()  # nothing at the shard's path: no shard that verifies
    assert read_cluster_manifest(out).complete is False
    report = verify_sharded(out)
    assert not report.ok and "not complete" in report.problems[0]

    # the node comes back with the same disk: shard 0 is rebuilt there, shards 1 and 2 are kept
    before = {k: _shard_files(Path(m.shards[k].path)) for k in (1, 2)}
    ray_cluster.add("disk0")
    again = build_sharded(spec, out, CONFIG)
    assert [s.status for s in again.shards] == ["built", "kept", "kept"] and again.complete
    assert again.shards[0].path == m.shards[0].path
    assert [s.store_id for s in again.shards[1:]] == [s.store_id for s in m.shards[1:]]
    assert {k: _shard_files(Path(again.shards[k].path)) for k in (1, 2)} == before
    assert not [p for p in shard_parent.iterdir() if ".tmp-" in p.name]  # the dead build's leftovers are gone
    assert verify_sharded(out).ok


def test_stop_cancels_the_tasks_and_leaves_a_resumable_manifest(ray_cluster, tmp_path):
    from emulator.cluster.shards import build_sharded

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        build_sharded(_spec(), out, CONFIG, shards=3, should_stop=lambda: True)
    m = read_cluster_manifest(out)
    assert not m.complete and all(s.status in ("pending", "built") for s in m.shards)
    assert build_sharded(_spec(), out, CONFIG).complete  # the same command resumes it

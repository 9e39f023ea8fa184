"""emulator.cluster.remote_device on the 3-node test cluster: a plan's two devices as Ray actors on two worker
nodes, each reading its node's own copy of the tiny store, give the local replay's outputs exactly (devices
pooling, and plain-SSD devices sending pages), with ``--verify``; the network transfer is counted apart from the
device link; a killed device actor is one clean error naming the device and its node."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from tracegen.errors import InputError

STORE_ON_NODE = "stores/tiny"  # under each node's disk


def _mixed_plan(store, lru: bool = False) -> Plan:
    """Every tier on two devices: table 0 half hot + raw (device 0), table 1 hot prefix + TT (device 1),
    table 2 all TT (device 0), table 3 all raw (device 1; with ``lru``, an LRU cache in front of it)."""
    t = store.tables
    rank = lambda i: t[i].tt[0].rank
    return Plan(store_id=store.store_id, devices=(DevicePlan("d0", 2, 2), DevicePlan("d1", 1, 1)), tables=(
        TablePlacement(t[0].name, t[0].rows // 2, "ssd_raw", device=0),
        TablePlacement(t[1].name, 100, "ssd_tt", rank(1), device=1),
        TablePlacement(t[2].name, 0, "ssd_tt", rank(2), device=0),
        TablePlacement(t[3].name, 0, "ssd_raw", device=1, lru_rows=64 if lru else 0),
    ), planner="mixed-test")


def test_segments_are_the_merged_byte_ranges_of_the_reads(rng):
    from emulator.cluster.remote_device import _segments

    assert _segments(np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0, 2)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        starts = rng.integers(0, 200, n) * 64
        sizes = rng.integers(1, 5, n) * 64
        covered = np.zeros(int((starts + sizes).max()) + 1, bool)  # the plain reference: bytes covered, by a loop
        for a, b in zip(starts, sizes):
            covered[a:a + b] = True
        seg = _segments(starts, sizes)
        mask = np.zeros_like(covered)
        for a, b in seg:
            assert not mask[a:a + b].any()  # disjoint, and never touching (they would have merged)
            mask[a:a + b] = True
            assert a == 0 or not covered[a - 1]
        assert np.array_equal(mask, covered) and (np.diff(seg[:, 0]) > 0).all()


@pytest.fixture(scope="module")
def node_stores(ray_cluster, tiny_store):
    """The tiny store copied onto both worker nodes' disks (each node reads its own copy)."""
    for name in ("disk0", "disk1"):
        dst = ray_cluster.disk(name) / STORE_ON_NODE
        if not dst.exists():
            shutil.copytree(tiny_store, dst)
    return {0: str(ray_cluster.disk("disk0")), 1: str(ray_cluster.disk("disk1"))}


def _replay(store, plan, trace, factory=None, **cfg):
    from emulator.replay.engine import ReplayConfig, Replayer
    from tracegen.trace_io import TraceReader

    outs = []
    with Replayer(store, plan, ReplayConfig(engine="pread", device_factory=factory, **cfg)) as rep, \
            TraceReader(trace) as r:
        totals = rep.run(r, on_batch=lambda o: outs.append([x.copy() for x in o.pooled]))
    return outs, totals


@pytest.mark.parametrize("offload, lru", [("device", False), ("host", True), ("device", True)],
                         ids=["devices-pool", "plain-ssd-lru", "devices-pool-lru"])
def test_remote_devices_equal_local_devices(ray_cluster, node_stores, tiny_store, tiny_trace, offload, lru):
    from emulator.cluster.remote_device import RemoteDevices
    from emulator.store.store import Store

    store = Store.open(tiny_store)
    plan = _mixed_plan(store, lru)
    local, _ = _replay(store, plan, tiny_trace, offload=offload, verify=True)
    remote = RemoteDevices(None, store, plan, node_of_device=node_stores, store_dir=STORE_ON_NODE)
    outs, totals = _replay(store, plan, tiny_trace, remote, offload=offload, verify=True)
    assert totals["verify"]["exact_bags"] > 0 and totals["verify"]["tt_bags"] > 0
    assert len(outs) == len(local) == totals["batches"]
    for a, b in zip(local, outs):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # each device ran on its own node, from that node's copy of the store
    assert [d.node["disk"] for d in remote.devices] == [node_stores[0], node_stores[1]]
    assert all(d.node["store"].endswith(STORE_ON_NODE) and d.node["address"] == "127.0.0.1" for d in remote.devices)
    ts = remote.transfers()
    assert len(ts) == 2 * totals["batches"]  # every batch used both devices
    assert all(t.request_bytes > 0 and t.response_bytes > 0 and t.round_trip_s >= t.device_s >= 0 for t in ts)
    # pages come back only for what the host pools or caches: every page of a plain SSD; with devices pooling,
    # only the LRU table's pages (device 1), none of device 0's
    pages = {d: sum(t.pages_bytes for t in ts if t.device == d) for d in (0, 1)}
    if offload == "host":
        assert pages[0] > 0 and pages[1] > 0
    else:
        assert pages[0] == 0 and (pages[1] > 0) == lru
    summary = remote.summary()
    assert summary["kind"] == "measured" and summary["bytes_per_batch"] > 0
    assert [d["batches"] for d in summary["devices"]] == [totals["batches"]] * 2


def test_prefix_remapped_tables_served_by_the_host_get_their_pages(ray_cluster, node_stores, tiny_store, tiny_trace,
                                                                     tmp_path):
    # a prefix remap puts table 3 (raw, device 1) on the host's one-by-one path: the host pools its rows from
    # pages device 1 sends back, while the devices pool the other tables (device 0's raw table 0 among them)
    import dataclasses

    from emulator.cluster.remote_device import RemoteDevices
    from emulator.store.store import Store
    from plans.remap import Remap, TableRemap

    store = Store.open(tiny_store)
    rng = np.random.default_rng(7)
    t3 = store.tables[3]
    Remap([TableRemap(t3.name, t3.rows, prefix=rng.permutation(t3.rows)[:t3.rows // 4])]).save(tmp_path / "prefix.h5")
    base = _mixed_plan(store)
    plan = dataclasses.replace(base, remap=str(tmp_path / "prefix.h5"), tables=tuple(
        dataclasses.replace(pl, hot_rows=min(pl.hot_rows, 20)) for pl in base.tables))
    local, _ = _replay(store, plan, tiny_trace, offload="device", verify=True)
    remote = RemoteDevices(None, store, plan, node_of_device=node_stores, store_dir=STORE_ON_NODE)
    outs, totals = _replay(store, plan, tiny_trace, remote, offload="device", verify=True)
    assert totals["verify"]["exact_bags"] > 0
    for a, b in zip(local, outs):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    pages = [sum(t.pages_bytes for t in remote.transfers() if t.device == d) for d in (0, 1)]
    assert pages[0] == 0 and pages[1] > 0


def test_responses_carry_their_transfer_apart_from_the_device_link(ray_cluster, node_stores, tiny_store,
                                                                    tiny_trace):
    import time

    from emulator.cluster.remote_device import RemoteDevices, RemoteResponse
    from emulator.device.profile import load_profile
    from emulator.replay.engine import ReplayConfig, Replayer
    from emulator.store.store import Store
    from tracegen.trace_io import TraceReader

    store = Store.open(tiny_store)
    plan = _mixed_plan(store)
    remote = RemoteDevices(None, store, plan, node_of_device=node_stores, store_dir=STORE_ON_NODE)
    cfg = ReplayConfig(engine="pread", device_factory=remote, device_profile=load_profile("host"))
    with Replayer(store, plan, cfg) as rep, TraceReader(tiny_trace) as r:
        p = rep.prepare(next(r.batches(0, 1)))
        t_before = time.perf_counter_ns()
        rep.start_io(p)
        rep.finish(p)
        t_after = time.perf_counter_ns()
        responses = p.device_record[1]  # what the device clock is given
        assert sorted(d for d, _, _ in responses) == [0, 1]
        for d, req, resp in responses:
            assert isinstance(resp, RemoteResponse) and resp.net.batch_id == 0 and resp.net.device == d
            # the device link carries the partials only; the network carried them and the IO records too
            assert resp.link_bytes == sum(x.nbytes for x in resp.partials) > 0
            assert resp.net.response_bytes > resp.link_bytes and resp.net.pages_bytes == 0
            assert resp.net.request_bytes >= sum(t.locs.nbytes + t.offsets.nbytes for t in req.pools)
            assert resp.net.wire_s == pytest.approx(max(0.0, resp.net.round_trip_s - resp.net.device_s))
            if resp.io is not None:  # the node's read submissions, on the host's clock
                assert (t_before <= resp.io.submit_ns).all() and (resp.io.submit_ns <= t_after).all()
    assert {id(t) for t in remote.transfers()} == {id(resp.net) for _, _, resp in responses}


def test_a_killed_device_actor_is_one_error_naming_device_and_node(ray_cluster, node_stores, tiny_store, tiny_trace):
    import ray

    from emulator.cluster.remote_device import RemoteDeviceError, RemoteDevices
    from emulator.replay.engine import ReplayConfig, Replayer
    from emulator.store.store import Store
    from tracegen.trace_io import TraceReader

    store = Store.open(tiny_store)
    plan = _mixed_plan(store)
    remote = RemoteDevices(None, store, plan, node_of_device=node_stores, store_dir=STORE_ON_NODE)
    cfg = ReplayConfig(engine="pread", device_factory=remote)
    with Replayer(store, plan, cfg) as rep, TraceReader(tiny_trace) as r, pytest.raises(RemoteDeviceError) as e:
        rep.run(r, on_batch=lambda o: ray.kill(remote.devices[1].actor) if o.index == 0 else None)
    msg = str(e.value)
    assert isinstance(e.value, InputError) and "\n" not in msg
    assert "remote device 1 (d1)" in msg and "node 127.0.0.1" in msg and node_stores[1] in msg


def test_a_node_without_the_store_is_refused_naming_it(ray_cluster, node_stores, tiny_store):
    from emulator.cluster.remote_device import RemoteDeviceError, RemoteDevices
    from emulator.replay.engine import ReplayConfig, Replayer
    from emulator.store.store import Store

    store = Store.open(tiny_store)
    plan = _mixed_plan(store)
    remote = RemoteDevices(None, store, plan, node_of_device=node_stores, store_dir="stores/absent")
    with pytest.raises(RemoteDeviceError, match=r"remote device 0 \(d0\) on node 127.0.0.1.*stores/absent"):
        Replayer(store, plan, ReplayConfig(engine="pread", device_factory=remote))
    with pytest.raises(InputError, match="no alive node"):
        RemoteDevices(None, store, plan, node_of_device={0: "/no/such/disk"})


def test_cli_replay_with_remote_devices(ray_cluster, node_stores, tiny_store, tiny_trace, tmp_path, capsys):
    from emulator.store.store import Store
    from tests.conftest import one_line_error, run_cli

    plan_path = tmp_path / "plan.json"
    _mixed_plan(Store.open(tiny_store)).save(plan_path)
    out = tmp_path / "r.json"
    base = ["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--plan", str(plan_path),
            "--engine", "pread", "--no-live", "--out-dir", str(tmp_path / "runs")]
    code, stdout, err = run_cli(base + ["--verify", "--ray", ray_cluster.cluster.address, "--remote-devices",
                                        "--remote-store", STORE_ON_NODE, "--device-profile", "smartssd",
                                        "--json", str(out)], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    em = doc["emulated"]  # the device clock ran on the remote devices' records, under the target profile
    assert em["profile"] == "smartssd" and em["batches"] == doc["batches"] and em["emulated_batch_s"] > 0
    assert em["link_bytes_per_batch"] > 0
    net = doc["network"]
    assert net["kind"] == "measured" and len(net["devices"]) == 2 and net["bytes_per_batch"] > 0
    assert doc["verify"]["exact_bags"] > 0 and "network (measured" in stdout
    code, _, err = run_cli(base + ["--remote-devices"], capsys)  # no cluster named
    assert code == 2 and one_line_error(err) and "--ray" in err

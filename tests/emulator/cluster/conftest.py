"""One multi-node Ray cluster on this machine for every cluster test, bound to 127.0.0.1 only.

Three nodes (the head and two workers), each with one CPU, a 100 MB object store, no dashboard, one replay
slot and its own "local disk" (a separate directory: the head's by the ``screc-disk`` node label, the
workers' by ``SCREC_DISK`` in their processes' environment, as ``ray start`` would give it). The worker
nodes' disks sort first (``disk0``, ``disk1``; the head's is ``disk2``), so shard 0 of a build lands on a
worker node, which a test may kill. Skipped, with the reason, when Ray (the cluster extra) is not installed;
under SCREC_STRICT_SKIPS=1 that skip is a failure (tests/conftest.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RAY_MISSING = "Ray is not installed (the cluster extra: pip install 'screc[cluster]')"
NODE_ARGS = dict(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=100 << 20)


def node_args(disk: Path, label: bool = False) -> dict:
    """A node's arguments: its disk by the SCREC_DISK environment of its processes (as `ray start` gives it),
    or by the screc-disk label (``label``)."""
    from emulator.cluster.connect import DISK_ENV, DISK_LABEL, REPLAY_SLOT

    disk.mkdir(parents=True, exist_ok=True)
    where = {"labels": {DISK_LABEL: str(disk)}} if label else {"env_vars": {DISK_ENV: str(disk)}}
    return {**NODE_ARGS, **where, "resources": {REPLAY_SLOT: 1}}


@dataclass
class LocalCluster:
    cluster: object
    root: Path
    workers: dict = field(default_factory=dict)  # disk name -> Ray node object

    def disk(self, name: str) -> Path:
        return self.root / name

    def disks(self) -> list[str]:
        """The disks of the alive nodes: the head's and the workers'."""
        return ["disk2", *self.workers]

    def kill(self, name: str) -> None:
        """Kill the worker node whose disk is ``name`` at once (no graceful shutdown)."""
        self.cluster.remove_node(self.workers.pop(name), allow_graceful=False)

    def add(self, name: str) -> None:
        """Start a worker node with the disk ``name`` (an existing directory keeps its contents)."""
        self.workers[name] = self.cluster.add_node(**node_args(self.disk(name)))
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="package")
def ray_cluster(tmp_path_factory):
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.skip(RAY_MISSING)
    from emulator.cluster.connect import connect, keep_loopback

    keep_loopback()  # the nodes and the driver resolve localhost to 127.0.0.1, never the machine's interface
    # Ray's memory monitor kills tasks when the whole machine's memory is nearly full, which other processes
    # on a shared test machine can cause: these tests measure nothing that needs it
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    root = tmp_path_factory.mktemp("ray_nodes")
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={**node_args(root / "disk2", label=True), "include_dashboard": False})
    tc = LocalCluster(cluster, root)
    try:
        for name in ("disk0", "disk1"):
            tc.workers[name] = cluster.add_node(**node_args(root / name))
        cluster.wait_for_nodes()
        connect(cluster.address)
        assert cluster.address.startswith("127.0.0.1:")
        assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
        yield tc
    finally:
        ray.shutdown()
        cluster.shutdown()

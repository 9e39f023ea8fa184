"""Connecting to a Ray cluster and placing work on its nodes.

A node of a screc cluster says where its local disk is with the environment
variable ``SCREC_DISK`` of its ``ray start`` (a directory on that node:
``SCREC_DISK=/mnt/nvme/screc ray start ...``; the node's tasks inherit it, and
the driver asks each node with a small task), or with the Ray node label
``screc-disk`` where the label can hold a path (nodes started from Python; Ray's
``ray start --labels`` accepts no ``/`` in a value). It says how many replays it
runs at a time with the custom resource ``replay_slot`` (``--resources
'{"replay_slot": 1}'``: one, so that two replays never share a node's cores and
disk). A storage
location is ``ADDRESS:DIRECTORY``: a node restarted with the same address and
disk label is the same location (its shards are still there), whatever its new
Ray node id.

An address on the loopback interface (``127.0.0.1:PORT``, and ``auto`` when the
running cluster's address is one) is kept on loopback: Ray would otherwise
replace it by the machine's interface address, and a test cluster bound to
127.0.0.1 would not answer there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from tracegen.errors import InputError

DISK_ENV = "SCREC_DISK"  # environment of a node's `ray start`: its local directory for shards
DISK_LABEL = "screc-disk"  # or this node label (nodes started from Python)
PROBE_TIMEOUT_S = 60.0
REPLAY_SLOT = "replay_slot"  # custom resource: replays a node runs at a time (1)
INSTALL_HINT = "pip install 'screc[cluster]'"
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray resolves localhost to 127.0.0.1, not the NIC


def import_ray():
    """The ``ray`` module, or an InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, the optional cluster extra: {INSTALL_HINT}") from None
    return ray


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def keep_loopback() -> None:
    """Make Ray (this process and the processes it starts) resolve localhost to 127.0.0.1."""
    os.environ[_LOOPBACK_ENV] = "0"
    import ray._private.ray_constants as rc

    rc.ENABLE_RAY_CLUSTER = False


def _resolve(address: str) -> str:
    if address != "auto":
        return address
    from ray._private import services

    found = services.get_ray_address_from_environment("auto", None)
    if not found:
        raise InputError("--ray auto: no running Ray cluster found on this machine (start one with `ray start "
                         "--head`, or give --ray HOST:PORT)")
    return found


def connect(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` (``HOST:PORT`` or ``auto``) unless it already is.

    A cluster that does not answer is an InputError naming the address."""
    ray = import_ray()
    if ray.is_initialized():
        return
    if not address or not isinstance(address, str):
        raise InputError(f"--ray {address!r} is not HOST:PORT or auto")
    addr = _resolve(address)
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--ray {address!r} is not HOST:PORT or auto")
    kwargs: dict[str, Any] = {}
    if is_loopback(host):
        keep_loopback()
        kwargs["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(address=addr, logging_level=logging.WARNING, log_to_driver=False, **kwargs)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot connect to the Ray cluster at {addr} ({e.__class__.__name__}: {e})") from None


@dataclass(frozen=True)
class NodeInfo:
    """One alive node of the cluster, as screc uses it."""

    node_id: str
    address: str  # the node's IP address
    disk: str | None  # its DISK_LABEL directory, if it has one
    replay_slots: float  # its REPLAY_SLOT resource
    cpus: float

    @property
    def location(self) -> str | None:
        """``ADDRESS:DIRECTORY``: where a shard on this node lives (None without a disk)."""
        return f"{self.address}:{self.disk}" if self.disk else None

    def to_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "address": self.address, "disk": self.disk}


def _nodes() -> list[NodeInfo]:
    ray = import_ray()
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        out.append(NodeInfo(n["NodeID"], n.get("NodeManagerAddress", ""), (n.get("Labels") or {}).get(DISK_LABEL),
                            float(res.get(REPLAY_SLOT, 0.0)), float(res.get("CPU", 0.0))))
    return out


def node_disk() -> str | None:
    """(A task on a node.) The node's disk directory from its environment."""
    return os.environ.get(DISK_ENV) or None


def cluster_nodes(disks: bool = True) -> list[NodeInfo]:
    """The alive nodes, ordered by (address, disk, node id) so that an assignment made from them is stable.

    ``disks``: a node without the ``screc-disk`` label is asked for ``SCREC_DISK`` by one small task."""
    import dataclasses

    ray = import_ray()
    nodes = _nodes()
    ask = [n for n in nodes if not n.disk] if disks else []
    refs = [on_node(node_disk, n.node_id, num_cpus=0).remote() for n in ask]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    found = {}
    for n, ref in zip(ask, refs):
        try:
            found[n.node_id] = ray.get(ref, timeout=0)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):  # a node that died meanwhile
            found[n.node_id] = None
    nodes = [dataclasses.replace(n, disk=found[n.node_id]) if n.node_id in found else n for n in nodes]
    return sorted(nodes, key=lambda n: (n.address, n.disk or "", n.node_id))


def storage_nodes() -> list[NodeInfo]:
    """The alive nodes with a local disk; InputError when there is none."""
    nodes = [n for n in cluster_nodes() if n.disk]
    if not nodes:
        raise InputError(f"no node of the Ray cluster has a local disk for screc: start each node with {DISK_ENV} "
                         f"naming a directory on it, e.g. {DISK_ENV}=/mnt/nvme/screc ray start --address ...")
    return nodes


def replay_nodes() -> list[NodeInfo]:
    """The alive nodes with a replay slot; InputError when there is none (tasks would wait forever)."""
    nodes = [n for n in cluster_nodes(disks=False) if n.replay_slots >= 1]
    if not nodes:
        raise InputError(f"no node of the Ray cluster has a {REPLAY_SLOT} resource: start each node that may "
                         f"measure replays with --resources '{{\"{REPLAY_SLOT}\": 1}}'")
    return nodes


def remote(fn: Callable, **options) -> Any:
    """``fn`` as a Ray remote function with ``options`` (made when called: Ray is optional)."""
    ray = import_ray()
    return ray.remote(**options)(fn) if options else ray.remote(fn)


def on_node(fn: Callable, node_id: str, **options) -> Any:
    """``fn`` as a Ray task pinned to ``node_id`` (hard node affinity, no retries: a task of a dead node fails
    instead of running elsewhere, where its disk is not)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return remote(fn).options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                              max_retries=0, **options)


def where_am_i() -> dict[str, Any]:
    """Inside a task: the node it runs on (id, IP address, host name, disk label)."""
    import socket

    ray = import_ray()
    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    labels = {}
    try:
        labels = ctx.get_node_labels() or {}
    except AttributeError:  # older Ray
        pass
    return {"node_id": node_id, "address": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
            "disk": labels.get(DISK_LABEL) or node_disk()}

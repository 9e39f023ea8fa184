"""Start a multi-node Ray cluster on this machine, bound to 127.0.0.1 only, and keep it up until Ctrl-C.

Each node gets one replay slot and its own "local disk" (``ROOT/nodeK``, given to the node as SCREC_DISK),
so every ``--ray`` command of screc can be tried without a cluster (``ray start`` cannot start a second
node on loopback: see docs/cluster.md). Prints the address to pass as ``--ray``::

    python scripts/local_cluster.py --nodes 3 --cpus 1 --root runs/cluster-nodes &
    screc cluster nodes --ray 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=3, help="nodes, the head included (default 3)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs per node (default 1)")
    p.add_argument("--root", default="runs/cluster-nodes", help="the nodes' disks go under it (default runs/...)")
    p.add_argument("--object-store", type=int, default=100, help="object store per node in MB (default 100)")
    args = p.parse_args()
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        print("local_cluster: Ray is not installed (pip install 'screc[cluster]')", file=sys.stderr)
        return 2
    from emulator.cluster.connect import DISK_ENV, REPLAY_SLOT, keep_loopback

    keep_loopback()
    root = Path(args.root).resolve()

    def node(k: int) -> dict:
        disk = root / f"node{k}"
        disk.mkdir(parents=True, exist_ok=True)
        return {"num_cpus": args.cpus, "node_ip_address": "127.0.0.1", "object_store_memory": args.object_store << 20,
                "env_vars": {DISK_ENV: str(disk)}, "resources": {REPLAY_SLOT: 1}}

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={**node(0), "include_dashboard": False})
    try:
        for k in range(1, args.nodes):
            cluster.add_node(**node(k))
        cluster.wait_for_nodes()
        print(f"{args.nodes} nodes up: --ray {cluster.address} (disks under {root}); Ctrl-C stops them", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A store built as table shards, each on the node that serves it, and verified where it lives.

:func:`build_sharded`:

1. partitions the model's tables into shards balanced by raw bytes (largest
   table first onto the lightest shard) and places shard ``k`` on storage node
   ``k mod n`` (nodes ordered by address and disk, :func:`.connect.storage_nodes`);
2. writes the cluster manifest (every shard ``pending``) before any work, so a
   driver that dies leaves the plan behind;
3. runs one Ray task per shard pinned to its node (hard node affinity, no
   retries), which calls :func:`emulator.store.build.build_store` on a sub-model
   holding only the shard's tables, into ``<disk>/<store name>-<hash>/shard-K``
   on that node's disk. ``build_store`` builds in a temporary directory and
   renames it when complete, so a node that dies mid-build leaves no shard at
   that path;
4. rewrites the cluster manifest (atomically) as each shard finishes.

Resuming is running it again with the same model and settings: a shard already
at its path is kept when its manifest names the same tables, weights and build
settings, its ``store_id`` is the one the cluster manifest recorded (if any),
and every chunk checksum verifies (:func:`emulator.store.build.verify_store`);
anything else is rebuilt. A shard whose location (address and disk) is no longer
in the cluster moves to the storage node holding the fewest shards.

Weights: each shard is a store of its own; its synthetic weights are seeded by
``(seed, shard)`` (:func:`shard_seed`, recorded per shard), so a sharded store's
rows are not those of a one-machine build of the same model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emulator.cluster.connect import (
    NodeInfo,
    import_ray,
    on_node,
    storage_nodes,
    where_am_i,
)
from emulator.cluster.manifest import (
    CLUSTER_MANIFEST,
    ClusterManifest,
    ShardEntry,
    ShardLocation,
    is_cluster_store,
    read_cluster_manifest,
    write_cluster_manifest,
)
from emulator.store.store import StoreBuildConfig
from tracegen.errors import InputError
from tracegen.spec import ModelSpec

WAIT_S = 0.5  # the driver wakes this often (Ctrl-C is noticed within it)


def partition_tables(spec: ModelSpec, shards: int) -> list[list[int]]:
    """Table indices per shard (each ascending), balanced by raw bytes: largest table first onto the shard
    with the fewest bytes (ties: the lower index). At most one shard per table."""
    if shards < 1:
        raise InputError(f"--shards must be >= 1, got {shards}")
    n = min(shards, spec.num_tables)
    load = [0] * n
    parts: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(spec.num_tables), key=lambda i: (-spec.tables[i].bytes, i)):
        k = min(range(n), key=lambda k: (load[k], k))
        parts[k].append(i)
        load[k] += spec.tables[i].bytes
    return [sorted(p) for p in parts]


def shard_seed(seed: int, shard: int) -> int:
    """The weights seed of shard ``shard`` of a store built with ``seed`` (a whole number >= 0)."""
    return int(np.random.SeedSequence([int(seed), int(shard), 0x5AD]).generate_state(1, np.uint32)[0])


def shard_spec(spec: ModelSpec, tables: tuple[str, ...], index: int, count: int) -> ModelSpec:
    """The sub-model of one shard: its tables, in model order."""
    wanted = set(tables)
    return dataclasses.replace(spec, tables=tuple(t for t in spec.tables if t.name in wanted),
                               name=f"{spec.name}[shard {index} of {count}]")


def config_doc(config: StoreBuildConfig) -> dict[str, Any]:
    """The build settings as recorded in the cluster manifest (JSON types)."""
    d = dataclasses.asdict(config)
    d.pop("imports")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def store_dir_name(out_dir: Path) -> str:
    """The directory holding a store's shards on each node: its name plus a hash of its absolute path (two
    stores of the same name never share shards)."""
    full = str(out_dir.resolve())
    return f"{out_dir.resolve().name}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"


def _shard_path(disk: str, store_name: str, index: int) -> str:
    return str(Path(disk) / store_name / f"shard-{index:03d}")


def plan_shards(spec: ModelSpec, config: StoreBuildConfig, out_dir: Path, nodes: list[NodeInfo],
                shards: int | None, previous: ClusterManifest | None) -> ClusterManifest:
    """Which tables go in which shard and where each lives: the previous manifest's partition when resuming
    (locations kept while their node is alive), else a fresh one."""
    by_location = {n.location: n for n in nodes}
    name = store_dir_name(out_dir)
    notes = []
    if previous is None:
        parts = partition_tables(spec, shards or len(nodes))
        entries = []
        for k, idx in enumerate(parts):
            node = nodes[k % len(nodes)]
            entries.append(ShardEntry(k, tuple(spec.tables[i].name for i in idx), shard_seed(config.weights_seed, k),
                                      ShardLocation(node.address, node.disk, node.node_id),
                                      _shard_path(node.disk, name, k)))
        return ClusterManifest(spec, config_doc(config), tuple(entries), False)
    if shards is not None and shards != len(previous.shards):
        raise InputError(f"--shards {shards}: the store being resumed has {len(previous.shards)} shards",
                         out_dir / CLUSTER_MANIFEST)
    count = {n.location: 0 for n in nodes}
    for s in previous.shards:
        if s.location.key in count:
            count[s.location.key] += 1
    entries = []
    for s in previous.shards:
        node = by_location.get(s.location.key)
        if node is None:  # its node left the cluster: the lightest storage node takes it
            node = min(nodes, key=lambda n: (count[n.location], n.address, n.disk, n.node_id))
            count[node.location] += 1
            notes.append(f"shard {s.index}: {s.location.key} is not in the cluster; rebuilt on {node.location}")
            s = replace(s, location=ShardLocation(node.address, node.disk, node.node_id),
                        path=_shard_path(node.disk, name, s.index), store_id="")
        entries.append(replace(s, status="pending", problem="",
                               location=replace(s.location, node_id=node.node_id)))
    return ClusterManifest(spec, config_doc(config), tuple(entries), False, tuple(notes))


def _existing_problem(path: Path, spec: ModelSpec, config: StoreBuildConfig, expected_id: str) -> str | None:
    """None when the store at ``path`` is this shard, complete and intact; else why it is not."""
    from emulator.store.build import verify_store
    from emulator.store.store import Store

    if not (path / "manifest.json").is_file():
        return "missing"
    try:
        store = Store.open(path)
    except InputError as e:
        return f"unreadable ({e})"
    m = store.manifest
    if store.spec.to_dict() != spec.to_dict():
        return "holds other tables"
    w = m.weights  # the seed and the signal; a change of generator is caught by the cluster manifest's settings
    if (w.seed, w.signal_rank, w.noise_ratio) != (config.weights_seed, config.signal_rank, config.noise_ratio):
        return "holds other weights"
    if (tuple(m.build.tt_ranks), m.build.tt_rel_tol, tuple(m.build.row_formats)) != (
            tuple(config.tt_ranks), config.tt_rel_tol, tuple(config.row_formats)):
        return "was built with other settings"
    if expected_id and store.store_id != expected_id:
        return f"store_id {store.store_id[:12]} is not the recorded {expected_id[:12]}"
    report = verify_store(path)
    if not report.ok:
        return f"checksum: {report.problems[0]}"
    return None


def ensure_shard(spec_json: str, path: str, config: StoreBuildConfig, expected_id: str) -> dict[str, Any]:
    """(A Ray task on the shard's node.) Keep the shard at ``path`` if it verifies, else build it there."""
    from emulator.store.build import build_store
    from emulator.store.store import Store

    t0 = time.perf_counter()
    node = where_am_i()
    spec = ModelSpec.from_json(spec_json)
    target = Path(path)
    try:
        problem = _existing_problem(target, spec, config, expected_id)
        if problem is None:
            store = Store.open(target)
            return {"status": "kept", "store_id": store.store_id, "raw_bytes": store.raw_bytes,
                    "seconds": time.perf_counter() - t0, "node": node}
        target.parent.mkdir(parents=True, exist_ok=True)
        store = build_store(spec, target, config)
        return {"status": "built", "store_id": store.store_id, "raw_bytes": store.raw_bytes,
                "seconds": time.perf_counter() - t0, "node": node, "replaced": problem}
    except (InputError, OSError) as e:
        return {"status": "failed", "problem": str(e), "node": node, "seconds": time.perf_counter() - t0}


def _task_problem(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0] if text else ''}"[:300]


@dataclass
class _Tracker:
    """The manifest being built, rewritten (atomically) whenever a shard's state changes."""

    out_dir: Path
    manifest: ClusterManifest
    on_shard: Callable[[ShardEntry], None] | None = None
    shards: list[ShardEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shards = list(self.manifest.shards)

    def update(self, k: int, **changes) -> None:
        self.shards[k] = replace(self.shards[k], **changes)
        self.write()
        if self.on_shard is not None:
            self.on_shard(self.shards[k])

    def write(self, complete: bool = False) -> ClusterManifest:
        self.manifest = replace(self.manifest, shards=tuple(self.shards), complete=complete)
        write_cluster_manifest(self.out_dir, self.manifest)
        return self.manifest


def build_sharded(spec: ModelSpec, out_dir: str | Path, config: StoreBuildConfig = StoreBuildConfig(),
                  shards: int | None = None, on_shard: Callable[[ShardEntry], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> ClusterManifest:
    """Build (or resume) the sharded store ``out_dir`` of ``spec`` on the connected cluster's storage nodes.

    Returns the final cluster manifest (``complete`` when every shard is built or kept; failed shards carry
    their problem). ``on_shard(entry)`` is called as each shard finishes; ``should_stop()`` (asked every
    :data:`WAIT_S`) cancels the running tasks and raises KeyboardInterrupt, the manifest recording what was
    done."""
    ray = import_ray()
    out = Path(out_dir)
    if config.imports:
        raise InputError("--import is not supported with --ray (the weights file would have to be on every node)")
    if out.exists() and not is_cluster_store(out) and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not a cluster store; refusing to replace it (remove it or choose "
                         "another path)", out)
    previous = read_cluster_manifest(out) if is_cluster_store(out) else None
    if previous is not None and (previous.spec.to_dict() != spec.to_dict() or previous.build != config_doc(config)):
        raise InputError("holds a cluster store of another model or other build settings (give the same --model, "
                         "--scale and build flags to resume it, or another --out-dir)", out / CLUSTER_MANIFEST)
    nodes = storage_nodes()
    tracker = _Tracker(out, plan_shards(spec, config, out, nodes, shards, previous), on_shard)
    tracker.write()
    node_of = {n.location: n.node_id for n in nodes}
    refs = {}
    for s in tracker.shards:
        sub = shard_spec(spec, s.tables, s.index, len(tracker.shards))
        task = on_node(ensure_shard, node_of[s.location.key], num_cpus=1)
        refs[task.remote(sub.to_json(), s.path, replace(config, weights_seed=s.seed), s.store_id)] = s.index
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=WAIT_S)
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            for ref in ready:
                k = refs.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayError as e:  # the node died, the worker crashed, ...
                    tracker.update(k, status="failed", problem=_task_problem(e), store_id="")
                    continue
                tracker.update(k, status=r["status"], store_id=r.get("store_id", ""), problem=r.get("problem", ""),
                               raw_bytes=int(r.get("raw_bytes", 0)), seconds=round(float(r["seconds"]), 3))
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        tracker.write()
        raise
    return tracker.write(complete=all(s.done for s in tracker.shards))


# --- verify -------------------------------------------------------------------------------------------------


def verify_shard(path: str, expected_id: str) -> dict[str, Any]:
    """(A Ray task on the shard's node.) Re-read every chunk of the shard store and compare its checksums."""
    from emulator.store.build import verify_store
    from emulator.store.store import Store

    t0 = time.perf_counter()
    node = where_am_i()
    try:
        report = verify_store(path)
        problems = list(report.problems)
        store_id = Store.open(path).store_id
        if expected_id and store_id != expected_id:
            problems.insert(0, f"store_id {store_id[:12]} is not the cluster manifest's {expected_id[:12]}")
        return {"files": report.files, "bytes": report.bytes, "problems": problems, "node": node,
                "seconds": time.perf_counter() - t0}
    except InputError as e:
        return {"files": 0, "bytes": 0, "problems": [str(e)], "node": node, "seconds": time.perf_counter() - t0}


@dataclass
class ClusterVerifyReport:
    store: str
    shards: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # every shard's problems, led by the shard

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def files(self) -> int:
        return sum(s.get("files", 0) for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.get("bytes", 0) for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "shards": self.shards, "problems": self.problems, "ok": self.ok,
                "files": self.files, "bytes": self.bytes}


def verify_sharded(path: str | Path) -> ClusterVerifyReport:
    """Check every shard of the cluster store ``path`` on the node where it lives (a Ray task there)."""
    ray = import_ray()
    manifest = read_cluster_manifest(path)
    report = ClusterVerifyReport(str(path))
    pending = [s.index for s in manifest.shards if not s.done]
    if not manifest.complete or pending:
        report.problems.append(f"the build is not complete (shards {', '.join(map(str, pending)) or 'unknown'} "
                               f"not built): resume it with the same store build --ray command")
    where = {n.location: n.node_id for n in storage_nodes()}
    refs = {}
    for s in manifest.shards:
        if not s.done:
            continue
        node_id = where.get(s.location.key)
        if node_id is None:
            report.shards.append({"index": s.index, "location": s.location.key, "path": s.path,
                                  "problems": [f"its node {s.location.key} is not in the cluster"]})
            continue
        refs[on_node(verify_shard, node_id, num_cpus=1).remote(s.path, s.store_id)] = s
    for ref, s in refs.items():
        try:
            r = ray.get(ref)
        except ray.exceptions.RayError as e:
            r = {"problems": [_task_problem(e)]}
        report.shards.append({"index": s.index, "location": s.location.key, "path": s.path, **r})
    report.shards.sort(key=lambda r: r["index"])
    for r in report.shards:
        report.problems += [f"shard {r['index']} on {r['location']}: {p}" for p in r["problems"]]
    return report

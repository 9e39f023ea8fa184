"""The cluster manifest: one logical store whose table shards live on several nodes' local disks.

``<store dir>/cluster.json`` (written atomically: temporary name, fsync, rename)::

    format           "screc-cluster-store"
    format_version   1
    complete         true once every shard is built and checked
    spec             the whole model (ModelSpec JSON form)
    build            the StoreBuildConfig every shard was built with (its weights seed is per shard, below)
    shards           per shard: index, tables (names, in model order), seed (the shard's weights seed),
                     location (node address and disk directory, Ray node id at the last build), path (the
                     shard store on that node), status (pending | built | kept | failed), store_id (the shard
                     store's manifest hash: its checksum), raw_bytes, seconds, problem (when failed)

A shard is an ordinary store (``emulator.store``) of a sub-model holding only
its tables; its manifest's ``store_id`` hashes every chunk checksum of its
files, so the cluster manifest pins each shard's content.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracegen.atomic import atomic_path
from tracegen.errors import InputError
from tracegen.spec import ModelSpec

CLUSTER_FORMAT = "screc-cluster-store"
CLUSTER_FORMAT_VERSION = 1
CLUSTER_MANIFEST = "cluster.json"
STATUSES = ("pending", "built", "kept", "failed")
DONE = ("built", "kept")


@dataclass(frozen=True)
class ShardLocation:
    address: str
    disk: str
    node_id: str = ""  # Ray node id when last placed (informative: a restarted node gets a new one)

    @property
    def key(self) -> str:
        return f"{self.address}:{self.disk}"


@dataclass(frozen=True)
class ShardEntry:
    index: int
    tables: tuple[str, ...]
    seed: int
    location: ShardLocation
    path: str
    status: str = "pending"
    store_id: str = ""
    raw_bytes: int = 0
    seconds: float = 0.0
    problem: str = ""

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass(frozen=True)
class ClusterManifest:
    spec: ModelSpec
    build: dict[str, Any]
    shards: tuple[ShardEntry, ...]
    complete: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def raw_bytes(self) -> int:
        return sum(s.raw_bytes for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"format": CLUSTER_FORMAT, "format_version": CLUSTER_FORMAT_VERSION, "complete": self.complete,
                "spec": self.spec.to_dict(), "build": self.build, "notes": list(self.notes),
                "shards": [{**dataclasses.asdict(s), "tables": list(s.tables)} for s in self.shards]}


def is_cluster_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a cluster store directory (or its manifest file)."""
    p = Path(path)
    return (p.is_dir() and (p / CLUSTER_MANIFEST).is_file()) or (p.is_file() and p.name == CLUSTER_MANIFEST)


def manifest_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.name == CLUSTER_MANIFEST and not p.is_dir() else p / CLUSTER_MANIFEST


def write_cluster_manifest(path: str | os.PathLike, manifest: ClusterManifest) -> Path:
    """Write ``manifest`` to ``path`` (a store directory, created if missing) atomically."""
    mpath = manifest_path(path)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(mpath) as tmp:
        Path(tmp).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return mpath


def read_cluster_manifest(path: str | os.PathLike) -> ClusterManifest:
    """Parse a cluster manifest; any problem is an InputError naming the file."""
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise InputError("not a cluster store (no cluster.json)", mpath.parent)
    try:
        doc = json.loads(mpath.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable JSON cluster manifest ({e.__class__.__name__})", mpath) from None
    if not isinstance(doc, dict) or doc.get("format") != CLUSTER_FORMAT:
        raise InputError(f"not a screc cluster manifest (format is {doc.get('format') if isinstance(doc, dict) else None!r})",
                         mpath)
    if doc.get("format_version") != CLUSTER_FORMAT_VERSION:
        raise InputError(f"cluster manifest version {doc.get('format_version')!r} is not supported "
                         f"(expected {CLUSTER_FORMAT_VERSION})", mpath)
    try:
        spec = ModelSpec.from_dict(doc["spec"])
        shards = []
        for i, s in enumerate(doc["shards"]):
            loc = s["location"]
            entry = ShardEntry(int(s["index"]), tuple(str(t) for t in s["tables"]), int(s["seed"]),
                               ShardLocation(str(loc["address"]), str(loc["disk"]), str(loc.get("node_id", ""))),
                               str(s["path"]), str(s["status"]), str(s.get("store_id", "")),
                               int(s.get("raw_bytes", 0)), float(s.get("seconds", 0.0)), str(s.get("problem", "")))
            if entry.index != i or entry.status not in STATUSES:
                raise ValueError(f"shard {i}: index {entry.index} or status {entry.status!r} is wrong")
            shards.append(entry)
        build = dict(doc["build"])
        complete = doc["complete"] is True
    except (KeyError, TypeError, ValueError, InputError) as e:
        raise InputError(f"corrupt cluster manifest ({e.__class__.__name__}: {e})", mpath) from None
    names = [t for s in shards for t in s.tables]
    if sorted(names) != sorted(t.name for t in spec.tables):
        raise InputError("corrupt cluster manifest: the shards' tables are not the model's tables, each once", mpath)
    return ClusterManifest(spec, build, tuple(shards), complete, tuple(doc.get("notes", ())))

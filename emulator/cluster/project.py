"""A modelled projection of a sharded store's build time and replay throughput to more nodes.

Every figure here is **modelled**: a formula over two measured per-node figures
(a store build's write rate and a replay's steady-state lookup rate, both
measured on one node of this kind) and stated assumptions.

The model, for ``N`` nodes:

* Placement: pieces go largest first onto the node with the fewest bytes (as
  :func:`emulator.cluster.shards.partition_tables` places tables). A piece is a
  whole table (how screc builds shards), or with ``split_rows`` a table larger
  than a node's even share is cut into that many equal row ranges (row-wise
  sharding, not implemented in screc's build): meta-2021's largest table is 47%
  of the model, so whole tables cannot use more than about two nodes' worth.
* Build: every node builds its pieces at the measured rate, all at once:
  ``build_s = max over nodes(bytes on the node) / build rate + shard overhead``.
* Serving one batch of ``batch_size`` samples: node ``k`` pools the lookups of
  its pieces (``batch_size`` x the mean pooling, a split table's in proportion
  to its rows) at the measured lookup rate, and sends one pooled float32 vector
  per (piece, sample). ``all-to-all``: every node runs the dense part for
  ``1/N`` of the samples (torchrec's model-parallel embeddings), so its link
  carries the larger of what it sends and what it receives (full duplex);
  ``host``: one host receives every partial (SCRec's single server). The
  receivers add the partials. Batches are pipelined, so the interval between
  batches is the slowest stage (``max(slowest node's pooling, busiest link,
  merge)``) and a batch's latency their sum.
* Nodes are alike (the measured node's rates hold on each, whatever its share
  of the model) and the network carries nothing else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from tracegen.errors import InputError
from tracegen.spec import ModelSpec

PARTIAL_BYTES_PER_VALUE = 4  # pooled partial sums travel as float32


@dataclass(frozen=True)
class NodeFigures:
    """The measured per-node figures the projection rests on, and where each came from."""

    build_bytes_per_s: float
    lookups_per_s: float
    build_source: str = "given"
    replay_source: str = "given"

    def check(self) -> None:
        if not (self.build_bytes_per_s > 0 and self.lookups_per_s > 0):
            raise InputError("the projection needs a build rate > 0 and a lookup rate > 0")


@dataclass(frozen=True)
class ClusterAssumptions:
    """What the projection assumes (each stated in its output)."""

    link_bytes_per_s: float = 1.25e9  # the host's network link: 10 Gb/s Ethernet (assumption)
    link_latency_s: float = 50e-6  # one round trip over it (assumption)
    host_merge_bytes_per_s: float = 5e9  # the host adds partials at memory speed (assumption)
    shard_overhead_s: float = 5.0  # per build: task start, manifest, fsync (assumption)

    def lines(self) -> list[str]:
        return [f"each node's network link carries {self.link_bytes_per_s / 1e9:g} GB/s each way with "
                f"{self.link_latency_s * 1e6:g} us latency, not shared with other traffic (assumption)",
                f"partials are added at {self.host_merge_bytes_per_s / 1e9:g} GB/s (assumption)",
                f"a shard build costs {self.shard_overhead_s:g} s beyond writing its bytes (assumption)",
                "every node runs at the measured node's build and lookup rates whatever share of the model it "
                "serves; nodes build and serve in parallel; batches are pipelined (assumption)",
                "pieces placed largest first onto the node with the fewest bytes; whole tables as screc builds "
                "them, or (split rows, not implemented in screc's build) a table larger than a node's even "
                "share cut into equal row ranges whose lookups are in proportion to their rows, as after a "
                "random permutation of rows (assumption)"]


@dataclass(frozen=True)
class Projection:
    """One cluster size under one placement and exchange, every figure modelled."""

    nodes: int
    split_rows: bool  # large tables split into row ranges (not how screc builds today)
    exchange: str  # "all-to-all" or "host"
    max_node_bytes: int
    byte_balance: float  # max / mean bytes per node
    build_s: float
    max_node_lookups: float  # per batch
    lookup_balance: float  # max / mean lookups per node
    pool_s: float  # the slowest node's pooling per batch
    transfer_s: float  # the busiest link per batch (latency + its bytes)
    merge_s: float
    interval_s: float  # between batches, pipelined
    latency_s: float  # one batch end to end
    queries_per_s: float
    lookups_per_s: float
    bottleneck: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "basis": "modelled"}


EXCHANGES = ("all-to-all", "host")


def _pieces(spec: ModelSpec, nodes: int, split_rows: bool) -> list[tuple[int, float, float, int]]:
    """(table, bytes, lookups per sample, dim) of each piece placed: whole tables, or with ``split_rows`` a
    table larger than a node's even share cut into that many equal row ranges (lookups in proportion)."""
    share = spec.total_bytes / nodes
    out = []
    for i, t in enumerate(spec.tables):
        k = max(1, min(nodes, math.ceil(t.bytes / share))) if split_rows else 1
        out += [(i, t.bytes / k, t.pooling.mean_lookups / k, t.dim)] * k
    return out


def _place(pieces: list[tuple[int, float, float, int]], nodes: int) -> list[list[tuple[int, float, float, int]]]:
    """Largest piece first onto the node with the fewest bytes (as partition_tables places tables)."""
    load = [0.0] * nodes
    placed: list[list] = [[] for _ in range(nodes)]
    for piece in sorted(pieces, key=lambda p: (-p[1], p[0])):
        k = min(range(nodes), key=lambda k: (load[k], k))
        placed[k].append(piece)
        load[k] += piece[1]
    return placed


def project(spec: ModelSpec, figures: NodeFigures, nodes: Sequence[int],
            assumptions: ClusterAssumptions = ClusterAssumptions(), split_rows: bool = False,
            exchange: str = "all-to-all") -> list[Projection]:
    """The modelled build time and replay throughput of ``spec`` on each cluster size in ``nodes``.

    ``exchange``: ``all-to-all`` (every node also runs the dense part for ``1/N`` of the samples, as
    torchrec's model-parallel embeddings do: a node sends its partials for the others' samples and receives
    theirs for its own, on a full-duplex link) or ``host`` (one host receives every partial, SCRec's single
    server)."""
    figures.check()
    if exchange not in EXCHANGES:
        raise InputError(f"exchange {exchange!r} is not one of {', '.join(EXCHANGES)}")
    if not nodes or any(int(n) < 1 for n in nodes):
        raise InputError(f"--nodes must list whole numbers >= 1, got {list(nodes)}")
    B = spec.batch_size
    out = []
    for n in (int(x) for x in nodes):
        placed = _place(_pieces(spec, n, split_rows), n)
        node_bytes = [sum(p[1] for p in ps) for ps in placed]
        node_lookups = [B * sum(p[2] for p in ps) for ps in placed]
        sent = [B * sum(p[3] for p in ps) * PARTIAL_BYTES_PER_VALUE for ps in placed]  # one vector/piece/sample
        total = sum(sent)
        if exchange == "host":
            link_bytes, merge_bytes = total, total
        else:  # node k keeps its own 1/n of the samples; receives the others' partials for its samples
            link_bytes = max(max(s * (n - 1) / n, (total - s) / n) for s in sent)
            merge_bytes = total / n
        pool_s = max(node_lookups) / figures.lookups_per_s
        transfer_s = (assumptions.link_latency_s if n > 1 or exchange == "host" else 0.0) + \
            link_bytes / assumptions.link_bytes_per_s
        merge_s = merge_bytes / assumptions.host_merge_bytes_per_s
        stages = {"node pooling": pool_s, "network link": transfer_s, "merge": merge_s}
        interval = max(stages.values())
        out.append(Projection(
            nodes=n, split_rows=split_rows, exchange=exchange, max_node_bytes=int(max(node_bytes)),
            byte_balance=max(node_bytes) / (sum(node_bytes) / n),
            build_s=max(node_bytes) / figures.build_bytes_per_s + assumptions.shard_overhead_s,
            max_node_lookups=max(node_lookups), lookup_balance=max(node_lookups) / (sum(node_lookups) / n),
            pool_s=pool_s, transfer_s=transfer_s, merge_s=merge_s, interval_s=interval,
            latency_s=sum(stages.values()), queries_per_s=B / interval, lookups_per_s=sum(node_lookups) / interval,
            bottleneck=max(stages, key=stages.get)))
    return out

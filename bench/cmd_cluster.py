"""``screc cluster nodes | merge-parts | project``: a Ray cluster's nodes as screc sees them, a parts trace as one
file, the modelled projection to more nodes."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType

from bench.common import (
    add_json_arg,
    add_model_arg,
    emit_json,
    ensure_writable_file,
    format_bytes,
    stdout_console,
)
from bench.tables import fit_table
from tracegen.errors import InputError

NODES_EXAMPLE = """example:
  screc cluster nodes --ray auto
  screc cluster nodes --ray 10.0.0.1:6379 --json
"""
MERGE_EXAMPLE = """example:
  screc trace gen --model meta-2021 --scale 0.01 --batches 8 --ray auto -o traces/meta.parts
  screc cluster merge-parts traces/meta.parts -o traces/meta.h5
"""
PROJECT_EXAMPLE = """example:
  screc store build --model meta-2021 --scale 0.001 --tt-ranks '' --out-dir stores/m --json runs/build.json
  screc replay --store stores/m --trace traces/m.h5 --policy all-ssd --batches 20 --json runs/replay.json
  screc cluster project --model meta-2021 --build-json runs/build.json --replay-json runs/replay.json
  screc cluster project --model meta-2021 --build-rate 126MiB --lookup-rate 20e6 --nodes 16,32,64 --json

every figure is modelled: the model (emulator/cluster/project.py) and its assumptions are printed with it;
the two per-node rates it rests on are measured (from the files given) or given."""


def _nodes(args: argparse.Namespace) -> int:
    from emulator.cluster.connect import cluster_nodes, connect

    ensure_writable_file(args.json)
    connect(args.ray)
    nodes = [{**n.to_dict(), "replay_slots": n.replay_slots, "cpus": n.cpus} for n in cluster_nodes()]
    if emit_json(args.json, {"nodes": nodes}):
        return 0
    stdout_console().print(fit_table(f"{len(nodes)} alive nodes", ("node id", "address", "disk (SCREC_DISK)",
                                                                    "replay slots", "CPUs"),
                                     [(n["node_id"][:12], n["address"], n["disk"] or "-", f"{n['replay_slots']:g}",
                                       f"{n['cpus']:g}") for n in nodes]))
    return 0


def _merge(args: argparse.Namespace) -> int:
    """A parts trace (trace gen --ray) written as one trace file."""
    import time

    from tracegen.atomic import check_writable
    from tracegen.trace_parts import PartsReader, merge_parts

    check_writable(args.output)
    ensure_writable_file(args.json)
    with PartsReader(args.parts) as r:  # checked before any work
        parts, batches, lookups = len(r.parts), r.num_batches, r.num_lookups
    t0 = time.perf_counter()
    trace_id = merge_parts(args.parts, args.output)
    doc = {"output": str(args.output), "parts": parts, "batches": batches, "lookups": lookups,
           "seconds": round(time.perf_counter() - t0, 3), "trace_id": trace_id}
    if emit_json(args.json, doc):
        return 0
    stdout_console().print(f"wrote {args.output}: {parts} parts, {batches} batches, {lookups:,} lookups, "
                           f"{doc['seconds']:.2f} s (measured), trace_id {trace_id}", markup=False, highlight=False)
    return 0


def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("file not found", p) from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable JSON file ({e.__class__.__name__})", p) from None
    if not isinstance(doc, dict):
        raise InputError("not a JSON object", p)
    return doc


def build_rate(path: str) -> float:
    """Bytes/s of one node's build from a ``store build --json`` summary (one store: raw bytes / seconds; a
    cluster build: the median over its built shards of each shard's bytes / seconds)."""
    doc = _load(path)
    if isinstance(doc.get("shards"), list):
        rates = [s["raw_bytes"] / s["seconds"] for s in doc["shards"]
                 if s.get("status") == "built" and s.get("seconds", 0) > 0 and s.get("raw_bytes", 0) > 0]
        if rates:
            return statistics.median(rates)
        raise InputError("no shard of this cluster build was built in that run (kept shards have no build time)",
                         path)
    if doc.get("raw_bytes", 0) > 0 and doc.get("seconds", 0) > 0:
        return doc["raw_bytes"] / doc["seconds"]
    raise InputError("not a store build --json summary (raw_bytes and seconds)", path)


def lookup_rate(path: str, policy: str | None) -> float:
    """Steady-state lookups/s from a ``replay --json`` result, or a ``compare --json`` row of ``policy``."""
    doc = _load(path)
    rows = doc.get("rows") or [r for e in doc.get("sweep", []) for r in e.get("rows", [])]
    if rows:
        picked = [r for r in rows if policy is None or r.get("policy") == policy]
        rates = [r["steady_lookups_per_s"] for r in picked if r.get("steady_lookups_per_s")]
        if not rates:
            raise InputError(f"no row of policy {policy!r} with a steady-state lookup rate", path)
        return statistics.median(rates)
    if doc.get("steady_lookups_per_s"):
        return float(doc["steady_lookups_per_s"])
    raise InputError("not a replay or compare --json result (steady_lookups_per_s)", path)


def render(result: dict[str, Any]) -> RenderableType:
    f = result["figures"]
    head = (f"{result['model']} ({format_bytes(result['model_bytes'])}, batch size {result['batch_size']}); per node: "
            f"build {format_bytes(f['build_bytes_per_s'])}/s ({f['build_source']}), "
            f"{f['lookups_per_s'] / 1e6:.2f} M lookups/s ({f['replay_source']})")
    tables = []
    for split, title in ((False, "whole tables on nodes, as screc builds shards"),
                         (True, "large tables split into row ranges (not in screc's build)")):
        rows = [(str(p["nodes"]), format_bytes(p["max_node_bytes"]), f"{p['byte_balance']:.2f}",
                 f"{p['build_s'] / 60:.1f}", f"{p['interval_s'] * 1e3:,.1f}", f"{p['queries_per_s']:,.0f}",
                 f"{p['lookups_per_s'] / 1e6:,.1f}", p["bottleneck"])
                for p in result["projection"] if p["split_rows"] == split]
        tables.append(fit_table(f"{title}; {result['exchange']} exchange (modelled)",
                                ("nodes", "bytes/node", "balance", "build min", "batch ms", "queries/s",
                                 "M lookups/s", "bottleneck"), rows))
    return Group(head, *tables, *(f"assumes: {a}" for a in result["assumptions"]))


def _project(args: argparse.Namespace) -> int:
    from bench.common import parse_size
    from emulator.cluster.project import ClusterAssumptions, NodeFigures, project
    from tracegen.presets import load_model

    ensure_writable_file(args.json)
    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    if (args.build_json is None) == (args.build_rate is None):
        raise InputError("give one of --build-json FILE (measured) or --build-rate SIZE (per second)")
    if (args.replay_json is None) == (args.lookup_rate is None):
        raise InputError("give one of --replay-json FILE (measured) or --lookup-rate N (lookups per second)")
    try:
        nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--nodes {args.nodes!r} is not a comma-separated list of whole numbers") from None
    figures = NodeFigures(
        build_bytes_per_s=build_rate(args.build_json) if args.build_json else parse_size(args.build_rate, "--build-rate"),
        lookups_per_s=lookup_rate(args.replay_json, args.policy) if args.replay_json else args.lookup_rate,
        build_source=f"measured: {args.build_json}" if args.build_json else "given",
        replay_source=f"measured: {args.replay_json}" if args.replay_json else "given")
    assumptions = ClusterAssumptions(link_bytes_per_s=args.link_gbps * 1e9 / 8)
    result = {"model": spec.name, "model_bytes": spec.total_bytes, "batch_size": spec.batch_size, "basis": "modelled",
              "figures": vars(figures), "assumptions": assumptions.lines(),
              "exchange": args.exchange,
              "projection": [p.to_dict() for split in (False, True)
                             for p in project(spec, figures, nodes, assumptions, split, args.exchange)]}
    if emit_json(args.json, result):
        return 0
    stdout_console().print(render(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nodes", help="the Ray cluster's alive nodes: disks, replay slots, CPUs",
                       description="List a Ray cluster's alive nodes as screc uses them.", epilog=NODES_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ray", required=True, metavar="ADDRESS", help="the cluster: HOST:PORT or auto")
    add_json_arg(p, "the nodes")
    p.set_defaults(func=_nodes)

    p = sub.add_parser("merge-parts", help="write a parts trace (trace gen --ray) as one trace file",
                       description="Write the parts of a trace made by `trace gen --ray` as one trace file (the "
                                   "trace_id of generating it in one process).", epilog=MERGE_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", help="the parts directory (holding parts.json)")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    add_json_arg(p, "a summary (parts, batches, lookups, seconds, trace_id)")
    p.set_defaults(func=_merge)

    p = sub.add_parser("project", help="modelled build time and replay throughput on 16-64 nodes",
                       description="Project a sharded store's build time and replay throughput to more nodes "
                                   "(modelled) from measured per-node figures.", epilog=PROJECT_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p, default="meta-2021", extra=" (default meta-2021)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every table's rows (default 1: full size)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default the model's)")
    p.add_argument("--nodes", default="16,32,48,64", help="cluster sizes, comma separated (default 16,32,48,64)")
    p.add_argument("--build-json", default=None, metavar="FILE", help="a store build --json summary (measured rate)")
    p.add_argument("--build-rate", default=None, metavar="SIZE",
                   help="or one node's build rate per second, with a unit (126MiB)")
    p.add_argument("--replay-json", default=None, metavar="FILE",
                   help="a replay or compare --json result (its steady-state lookups/s)")
    p.add_argument("--policy", default=None, help="with a compare result: the policy whose rate to use")
    p.add_argument("--lookup-rate", type=float, default=None, metavar="N", help="or one node's lookups per second")
    p.add_argument("--link-gbps", type=float, default=10.0, help="each node's network link in Gb/s (default 10)")
    p.add_argument("--exchange", choices=("all-to-all", "host"), default="all-to-all",
                   help="where pooled partials go: every node runs the dense part for its share of the samples "
                        "(all-to-all, default) or one host receives them all (host)")
    add_json_arg(p, "the projection")
    p.set_defaults(func=_project)

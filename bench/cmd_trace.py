"""``screc trace gen | stats | presets`` (``fit`` in :mod:`bench.cmd_trace_fit`, the importers in :mod:`bench.cmd_trace_io`).

Make synthetic lookup traces, fit them to Meta's published locality
statistics, bring real traces in (dlrm_datasets ``.pt``, Criteo text) and send
them back out (``.pt``), and look at them.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from rich.table import Table

from bench.common import (
    format_bytes,
    make_progress,
    stdout_console,
    stop_flag,
    write_json,
)
from bench.common import positive_int as _positive_int
from tracegen.errors import InputError

GEN_EXAMPLE = """example:
  screc trace gen --model tiny --batches 20 -o traces/tiny.h5
  screc trace gen --model criteo-kaggle --scale 0.01 --batch-size 4096 --batches 100 --seed 7 --reuse 0.2 \\
      -o traces/kaggle.h5
  screc trace gen --model my_model.toml --batches 10 --alpha 0.9 -o traces/mine.h5
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --batches 1 -o traces/meta2021.h5
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --tables 0::4 --batches 1 -o traces/q.h5 \\
      --json runs/q_gen.json --write-bound                 (every 4th table; lookups/s vs numpy.tofile)
  screc trace gen --model meta-2021 --scale 0.01 --batches 8 --ray auto --parts 32 -o traces/meta.parts
                                                          (Ray tasks write parts read as one trace: docs/cluster.md)
"""
STATS_EXAMPLE = """example:
  screc trace stats traces/tiny.h5
  screc trace stats traces/kaggle.h5 --batches 10 --json runs/kaggle_stats.json
  screc trace stats traces/kaggle.h5 --mrc --tables c2,c3        (LRU miss-ratio curves: whole trace, 2 tables)
  screc trace stats --model meta-2021 --params runs/meta2021_fit.json     (expected, no trace: full size in ms)
"""
PRESETS_EXAMPLE = """example:
  screc trace presets
  screc trace presets --json
"""


def cmd_gen(args: argparse.Namespace) -> int:
    from tracegen.atomic import check_writable
    from tracegen.fit_check import write_bound
    from tracegen.generate import generate_trace
    from tracegen.presets import load_model
    from tracegen.selection import select

    _positive_int("--batches", args.batches)
    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    if args.workers is not None:
        _positive_int("--workers", args.workers)
    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    params = _params(args, num_batches=args.batches)
    spec, params = select(spec, params, args.tables)
    out = Path(args.output)
    if args.ray:  # parts written by Ray tasks into the directory -o (emulator.cluster.trace_gen)
        return _gen_parts(args, spec, params, out)
    check_writable(out)
    if args.json not in (None, "-"):
        check_writable(args.json)
    t0 = time.perf_counter()
    with make_progress() as progress, stop_flag() as stop:
        task = progress.add_task(f"trace {spec.name}", total=args.batches)
        trace_id = generate_trace(spec, params, out, progress=lambda done, total: progress.update(task, completed=done),
                                  should_stop=stop.is_set, workers=args.workers)
        if stop.is_set():  # Ctrl-C after the last table: the trace was completed, but the user asked to stop
            out.unlink(missing_ok=True)
            raise KeyboardInterrupt
    elapsed_s = time.perf_counter() - t0
    from tracegen.trace_io import TraceReader

    with TraceReader(out, validate=False) as reader:
        lookups = reader.num_lookups
    size = out.stat().st_size
    rate = lookups / elapsed_s if elapsed_s > 0 else math.inf
    doc = {"output": str(out), "model": spec.name, "tables": spec.num_tables, "batches": args.batches,
           "lookups": lookups, "bytes": size, "seconds": elapsed_s, "lookups_per_s": rate, "trace_id": trace_id,
           "measured": True}
    if args.write_bound:
        bound_s = write_bound(out.parent, size)
        doc.update(tofile_seconds=bound_s, tofile_bytes_per_s=size / bound_s, generate_vs_tofile=bound_s / elapsed_s)
    if args.json is not None:
        write_json(args.json, doc)
        if args.json == "-":
            return 0
    rate_text = f"{rate / 1e6:.2f} M" if rate >= 1e5 else f"{rate:,.0f}"
    bound = ""
    if args.write_bound:
        bound = (f"; numpy.tofile of the same {format_bytes(size)} took {doc['tofile_seconds']:.2f} s "
                 f"(generation at {doc['generate_vs_tofile']:.2f}x the write bound)")
    stdout_console().print(
        f"wrote {out}: {args.batches} batches, {lookups:,} lookups, {format_bytes(size)}, {elapsed_s:.2f} s, "
        f"{rate_text} lookups/s, trace_id {trace_id}{bound}", soft_wrap=True, markup=False, highlight=False)
    return 0


def _gen_parts(args: argparse.Namespace, spec, params, out: Path) -> int:
    """trace gen --ray: a parts trace (a directory read as one trace by tracegen.trace_parts)."""
    from emulator.cluster.connect import connect
    from emulator.cluster.trace_gen import generate_parts
    from tracegen.atomic import check_writable

    check_writable(out, "dir")
    if args.json not in (None, "-"):
        check_writable(args.json)
    connect(args.ray)
    with stop_flag() as stop:
        doc = generate_parts(spec, params, out, parts=args.parts, batch_parts=args.batch_parts,
                             should_stop=stop.is_set)
    summary = {"output": str(out), "model": spec.name, "tables": spec.num_tables, "batches": args.batches,
               "lookups": doc["num_lookups"], "parts": len(doc["parts"]), "seconds": doc["seconds"],
               "lookups_per_s": doc["num_lookups"] / max(doc["seconds"], 1e-9), "trace_id": doc["trace_id"],
               "nodes": len({p["made_on"]["node_id"] for p in doc["parts"]}), "measured": True}
    if args.json is not None:
        write_json(args.json, summary)
        if args.json == "-":
            return 0
    stdout_console().print(
        f"wrote {out}: {summary['parts']} parts made on {summary['nodes']} nodes, {args.batches} batches, "
        f"{summary['lookups']:,} lookups, {doc['seconds']:.2f} s (measured), parts trace_id {doc['trace_id']}",
        soft_wrap=True, markup=False, highlight=False)
    return 0


def _params(args: argparse.Namespace, num_batches: int = 1):
    """GeneratorParams from ``--params`` (a fit document or a parameters JSON) with the flags given on top."""
    import json

    from tracegen.fit import load_params_file
    from tracegen.generate import GeneratorParams

    base = GeneratorParams()
    if getattr(args, "params", None):
        p = Path(args.params)
        if not p.is_file():
            raise InputError("parameters file not found", p)
        try:
            doc = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"not a JSON file ({e})", p) from None
        base = load_params_file(doc, p)
    over: dict = {"num_batches": num_batches}
    for flag, field in (("seed", "seed"), ("reuse", "reuse"), ("alpha", "zipf_alpha"), ("batch_size", "batch_size"),
                        ("reuse_window", "reuse_window"), ("reuse_lag_exponent", "reuse_lag_exponent")):
        value = getattr(args, flag, None)
        if value is not None:
            over[field] = value
    return GeneratorParams.from_dict({**base.to_dict(), **over})


def _stats_table(stats) -> Table:
    t = Table(title=f"{stats.num_batches} of {stats.total_batches} batches, batch size {stats.batch_size}, "
                    f"{stats.lookups_per_batch:,.0f} lookups and {stats.unique_rows_per_batch:,.0f} unique rows "
                    f"per batch")
    for col in ("table", "rows", "lookups/batch", "unique/batch", "pooling", "alpha (spec)", "alpha (fit)"):
        t.add_column(col, justify="left" if col == "table" else "right")
    for s in stats.tables:
        fit = "-" if math.isnan(s.alpha_estimate) else f"{s.alpha_estimate:.3f}"
        t.add_row(s.name, f"{s.rows:,}", f"{s.lookups_per_batch:,.1f}", f"{s.unique_rows_per_batch:,.1f}",
                  f"{s.mean_pooling:.2f}", f"{s.spec_alpha:.3f}", fit)
    return t


def cmd_stats(args: argparse.Namespace) -> int:
    from tracegen.locality import format_locality_stats, trace_stats
    from tracegen.trace_io import TraceReader

    if args.batches is not None:
        _positive_int("--batches", args.batches)
    if (args.trace is None) == (args.model is None):
        raise InputError("give a trace file or --model (expected statistics without a trace), not both")
    if args.json not in (None, "-"):
        from tracegen.atomic import check_writable

        check_writable(args.json)
    if args.model is not None:
        if args.mrc:
            raise InputError("--mrc needs a trace file (it replays the trace's lookups)")
        return _expected_stats(args)
    _check_trace_path(args.trace)
    with TraceReader(args.trace) as reader:
        stats = trace_stats(reader, args.batches)
        curves = _mrc(args, reader) if args.mrc else None
    if args.json is not None:
        doc = stats.to_dict()
        if curves is not None:
            doc["mrc"] = [c.to_dict() for c in curves]
        write_json(args.json, doc)
        if args.json == "-":
            return 0
    con = stdout_console()
    con.print(_stats_table(stats))
    con.print(format_locality_stats(str(args.trace), stats.locality), soft_wrap=True, markup=False)
    if curves is not None:
        con.print(_mrc_table(curves))
    return 0


def _check_trace_path(path) -> None:
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, not a trace file (give the .h5 file inside it)", p)
    if not p.exists():
        raise InputError("trace file not found", p)


def _mrc(args: argparse.Namespace, reader):
    from tracegen.mrc import trace_mrc
    from tracegen.selection import select_tables

    if args.mrc_rate is not None and not (0 < args.mrc_rate <= 1):
        raise InputError(f"--mrc-rate must be in (0, 1], got {args.mrc_rate}")
    tables = [] if args.tables is None else [int(i) for i in select_tables(reader.spec, args.tables)]
    return trace_mrc(reader, tables, args.batches, rate=args.mrc_rate)


def _mrc_table(curves) -> Table:
    first = curves[0]
    how = "exact" if first.rate >= 1 else (f"SHARDS, {first.rate:.2%} of the keys, sampling error <= "
                                             f"{first.error:.4f} (two samplings' largest difference)")
    t = Table(title=f"LRU miss ratio by cache size in rows ({how})")
    t.add_column("cache rows", justify="right")
    for c in curves:
        t.add_column(c.name, justify="right")
    sizes = sorted({s for c in curves for s in c.sizes})
    for size in sizes:
        cells = []
        for c in curves:
            mr = dict(zip(c.sizes, c.miss_ratio)).get(size)
            cells.append("" if mr is None else f"{mr:.4f}")
        t.add_row(f"{size:,}", *cells)
    return t


def _expected_stats(args: argparse.Namespace) -> int:
    from tracegen.locality import LocalityStats, format_locality_stats
    from tracegen.locality_model import spec_locality
    from tracegen.presets import load_model
    from tracegen.selection import select

    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    spec, params = select(spec, _params(args), args.tables)
    eff = params.effective_spec(spec)
    e = spec_locality(eff, params)
    stats = LocalityStats.from_shares(1, eff.batch_size, e.lookups, e.unique, e.unique_share, e.lookup_share)
    if args.json is not None:
        write_json(args.json, {"model": eff.name, "expected": True, "tables": eff.num_tables,
                               "bytes": eff.total_bytes, "locality": stats.to_dict()})
        if args.json == "-":
            return 0
    con = stdout_console()
    con.print(f"{eff.name}: {eff.num_tables} tables, {format_bytes(eff.total_bytes)}, batch {eff.batch_size:,}; "
              f"expected statistics of one batch (modelled by tracegen.locality_model, no trace generated)",
              soft_wrap=True, markup=False, highlight=False)
    con.print(format_locality_stats(f"{eff.name} (expected)", stats), soft_wrap=True, markup=False)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from tracegen.presets import PRESETS

    rows = []
    for name, preset in PRESETS.items():
        spec = preset.build()
        rows.append({"name": name, "tables": spec.num_tables, "rows": sum(t.rows for t in spec.tables),
                     "bytes": spec.total_bytes, "batch_size": spec.batch_size,
                     "lookups_per_sample": sum(t.pooling.mean_lookups for t in spec.tables),
                     "description": preset.description})
    if args.json is not None:
        write_json(args.json, rows)
        if args.json == "-":
            return 0
    t = Table(title="model presets (scale rows with --scale)")
    for col in ("preset", "tables", "rows", "GiB", "batch", "lookups/sample", "description"):
        t.add_column(col, justify="left" if col in ("preset", "description") else "right")
    for r in rows:
        t.add_row(r["name"], str(r["tables"]), f"{r['rows']:,}", f"{r['bytes'] / 2**30:.3f}", str(r["batch_size"]),
                  f"{r['lookups_per_sample']:g}", r["description"])
    stdout_console().print(t)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("gen", help="generate a synthetic lookup trace",
                              description="Generate a synthetic trace: each table's rows from its locality model "
                                          "(fitted parameters from `screc trace fit`, else Zipf) over a seeded "
                                          "permutation, per-bag pooling from the spec, optional temporal reuse.",
                              epilog=GEN_EXAMPLE, formatter_class=fmt)
    p.add_argument("--model", required=True, help="a preset (see `screc trace presets`) or a .json/.toml spec file")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every table's rows (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="override the spec's batch size")
    p.add_argument("--batches", type=int, required=True, help="number of batches to generate")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0); same seed, same bytes")
    p.add_argument("--reuse", type=float, default=None,
                   help="probability that a lookup repeats an earlier lookup of its table (default 0)")
    p.add_argument("--reuse-window", type=int, default=None,
                   help="repeat the lookup L places back, L <= this many lookups of the table, P(L) ~ L^-beta "
                        "(default 0: a random lookup of the previous batch)")
    p.add_argument("--reuse-lag-exponent", type=float, default=None, help="beta of the lag law (default 1)")
    p.add_argument("--alpha", type=float, default=None, help="override every table's Zipf skew")
    p.add_argument("--params", default=None,
                   help="generator parameters JSON, e.g. from `screc trace fit` (flags given override it)")
    p.add_argument("--tables", default=None,
                   help="generate only these tables, as in the whole model: a slice (0::4) or names (t1,t7)")
    p.add_argument("--workers", type=int, default=None,
                   help="generator threads (default: every core; the trace is the same for any number)")
    p.add_argument("--write-bound", action="store_true",
                   help="also time writing the same bytes with numpy.tofile (+fsync) next to the output")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5); with --ray a new directory")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="generate as parts, Ray tasks on a cluster (HOST:PORT or auto), into the directory -o, "
                        "which must be at the same path on every node; read as one trace (docs/cluster.md)")
    p.add_argument("--parts", type=int, default=None, help="with --ray: table groups (default: the cluster's CPUs)")
    p.add_argument("--batch-parts", type=int, default=1,
                   help="with --ray: batch ranges per table group (default 1; more needs --reuse 0)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the figures as JSON: bare to stdout, or written to FILE")
    p.set_defaults(func=cmd_gen)

    p = subparsers.add_parser("stats", help="lookup and locality statistics of a trace",
                              description="Per-table lookups, unique rows, pooling and fitted skew, and the two "
                                          "locality histograms in the layout of Meta's locality_stats.txt.",
                              epilog=STATS_EXAMPLE, formatter_class=fmt)
    p.add_argument("trace", nargs="?", default=None, help="trace file (HDF5)")
    p.add_argument("--batches", type=int, default=None, help="read only the first N batches")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the figures as JSON: bare to stdout, or written to FILE")
    p.add_argument("--mrc", action="store_true",
                   help="LRU miss-ratio curves: the whole trace's (one shared cache) and each --tables table's")
    p.add_argument("--mrc-rate", type=float, default=None,
                   help="SHARDS sampling rate of the keys (default: exact up to 16M lookups, else sampled to that)")
    p.add_argument("--tables", default=None, help="tables for --mrc, or for --model: a slice (0::4) or names")
    p.add_argument("--model", default=None,
                   help="instead of a trace: expected locality of one batch of this preset or spec (any size)")
    p.add_argument("--scale", type=float, default=1.0, help="with --model: multiply every table's rows")
    p.add_argument("--batch-size", type=int, default=None, help="with --model: override the batch size")
    p.add_argument("--params", default=None, help="with --model: generator parameters JSON (e.g. from trace fit)")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser("presets", help="list the built-in model presets",
                              description="List the built-in model presets with their size.",
                              epilog=PRESETS_EXAMPLE, formatter_class=fmt)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the figures as JSON: bare to stdout, or written to FILE")
    p.set_defaults(func=cmd_presets)

"""``screc trace gen | stats | presets``: make synthetic lookup traces and look at them."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from rich.table import Table

from bench.common import format_bytes, make_progress, stdout_console, write_json
from tracegen.errors import InputError

GEN_EXAMPLE = """example:
  screc trace gen --model tiny --batches 20 -o traces/tiny.h5
  screc trace gen --model criteo-kaggle --scale 0.01 --batch-size 4096 --batches 100 --seed 7 --reuse 0.2 \\
      -o traces/kaggle.h5
  screc trace gen --model my_model.toml --batches 10 --alpha 0.9 -o traces/mine.h5
"""
STATS_EXAMPLE = """example:
  screc trace stats traces/tiny.h5
  screc trace stats traces/kaggle.h5 --batches 10 --json > runs/kaggle_stats.json
"""
PRESETS_EXAMPLE = """example:
  screc trace presets
  screc trace presets --json
"""


def _positive_int(what: str, value: int) -> int:
    if value < 1:
        raise InputError(f"{what} must be >= 1, got {value}")
    return value


def cmd_gen(args: argparse.Namespace) -> int:
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import load_model

    _positive_int("--batches", args.batches)
    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    params = GeneratorParams(seed=args.seed, num_batches=args.batches, reuse=args.reuse, zipf_alpha=args.alpha)
    out = Path(args.output)
    t0 = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task(f"trace {spec.name}", total=args.batches)
        trace_id = generate_trace(spec, params, out, progress=lambda done, total: progress.update(task, completed=done))
    elapsed_s = time.perf_counter() - t0
    from tracegen.trace_io import TraceReader

    with TraceReader(out, validate=False) as reader:
        lookups = reader.num_lookups
    size = out.stat().st_size
    rate = lookups / elapsed_s if elapsed_s > 0 else math.inf
    rate_text = f"{rate / 1e6:.2f} M" if rate >= 1e5 else f"{rate:,.0f}"
    stdout_console().print(
        f"wrote {out}: {args.batches} batches, {lookups:,} lookups, {format_bytes(size)}, {elapsed_s:.2f} s, "
        f"{rate_text} lookups/s, trace_id {trace_id}", soft_wrap=True, markup=False, highlight=False)
    return 0


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
    with TraceReader(args.trace) as reader:
        stats = trace_stats(reader, args.batches)
    if args.json:
        write_json("-", stats.to_dict())
        return 0
    con = stdout_console()
    con.print(_stats_table(stats))
    con.print(format_locality_stats(str(args.trace), stats.locality), soft_wrap=True, markup=False)
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
    if args.json:
        write_json("-", rows)
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
    p = subparsers.add_parser("gen", help="generate a synthetic Zipf lookup trace",
                              description="Generate a synthetic trace: Zipf rows over a seeded permutation, "
                                          "per-bag pooling from the spec, optional reuse between batches.",
                              epilog=GEN_EXAMPLE, formatter_class=fmt)
    p.add_argument("--model", required=True, help="a preset (see `screc trace presets`) or a .json/.toml spec file")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every table's rows (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="override the spec's batch size")
    p.add_argument("--batches", type=int, required=True, help="number of batches to generate")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    p.add_argument("--reuse", type=float, default=0.0,
                   help="probability that a lookup repeats a lookup of the previous batch (default 0)")
    p.add_argument("--alpha", type=float, default=None, help="override every table's Zipf skew")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    p.set_defaults(func=cmd_gen)

    p = subparsers.add_parser("stats", help="lookup and locality statistics of a trace",
                              description="Per-table lookups, unique rows, pooling and fitted skew, and the two "
                                          "locality histograms in the layout of Meta's locality_stats.txt.",
                              epilog=STATS_EXAMPLE, formatter_class=fmt)
    p.add_argument("trace", help="trace file (HDF5)")
    p.add_argument("--batches", type=int, default=None, help="read only the first N batches")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser("presets", help="list the built-in model presets",
                              description="List the built-in model presets with their size.",
                              epilog=PRESETS_EXAMPLE, formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_presets)

"""``screc trace gen | stats | presets | calibrate | import-dlrm | export-dlrm | import-criteo``.

Make synthetic lookup traces, fit them to Meta's published locality
statistics, bring real traces in (dlrm_datasets ``.pt``, Criteo text) and send
them back out (``.pt``), and look at them.
"""

from __future__ import annotations

import argparse
import math
import re
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
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --batches 1 -o traces/meta2021.h5
"""
STATS_EXAMPLE = """example:
  screc trace stats traces/tiny.h5
  screc trace stats traces/kaggle.h5 --batches 10 --json > runs/kaggle_stats.json
  screc trace stats --model meta-2021 --params runs/meta2021_fit.json     (expected, no trace: full size in ms)
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
    params = _params(args, num_batches=args.batches)
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


def _params(args: argparse.Namespace, num_batches: int = 1):
    """GeneratorParams from ``--params`` (a calibration or parameters JSON) with the flags given on top."""
    import json

    from tracegen.calibrate import load_params_file
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
    for flag, field in (("seed", "seed"), ("reuse", "reuse"), ("alpha", "zipf_alpha"), ("batch_size", "batch_size")):
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
    if args.model is not None:
        return _expected_stats(args)
    with TraceReader(args.trace) as reader:
        stats = trace_stats(reader, args.batches)
    if args.json:
        write_json("-", stats.to_dict())
        return 0
    con = stdout_console()
    con.print(_stats_table(stats))
    con.print(format_locality_stats(str(args.trace), stats.locality), soft_wrap=True, markup=False)
    return 0


def _expected_stats(args: argparse.Namespace) -> int:
    from tracegen.locality import LocalityStats, format_locality_stats
    from tracegen.locality_model import spec_locality
    from tracegen.presets import load_model

    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    params = _params(args)
    eff = params.effective_spec(spec)
    e = spec_locality(eff)
    stats = LocalityStats.from_shares(1, eff.batch_size, e.lookups, e.unique, e.unique_share, e.lookup_share)
    if args.json:
        write_json("-", {"model": eff.name, "expected": True, "tables": eff.num_tables, "bytes": eff.total_bytes,
                         "locality": stats.to_dict()})
        return 0
    con = stdout_console()
    con.print(f"{eff.name}: {eff.num_tables} tables, {format_bytes(eff.total_bytes)}, batch {eff.batch_size:,}; "
              f"expected statistics of one batch (tracegen.locality_model, no trace generated)",
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


CALIBRATE_EXAMPLE = """example:
  screc trace calibrate --target ../shared/data/dlrm_datasets_2021_locality_stats.txt \\
      --block fbgemm_t856_bs65536.pt --spec meta-2021 -o runs/meta2021_fit.json
  screc trace calibrate --target locality_stats.txt --all --spec meta-2021 -o runs/fits/     (one file per block)
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --batches 1 -o traces/meta2021.h5
"""
IMPORT_DLRM_EXAMPLE = """example:
  screc trace import-dlrm fbgemm_t856_bs65536_0.pt.gz --batch-size 4096 -o traces/meta_0.h5
  screc trace import-dlrm exported.pt --spec runs/spec.json -o traces/back.h5
"""
EXPORT_DLRM_EXAMPLE = """example:
  screc trace export-dlrm traces/tiny.h5 -o runs/tiny.pt          (all batches as one batch of N*B samples)
  screc trace export-dlrm traces/kaggle.h5 --batches 4 -o runs/kaggle.pt.gz
"""
IMPORT_CRITEO_EXAMPLE = """example:
  screc trace import-criteo train.txt --rows 1048576 --batch-size 2048 -o traces/criteo.h5
  screc trace import-criteo day_0.gz --max-samples 1000000 -o traces/day0.h5 --spec-out runs/day0_spec.json
"""


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tracegen.calibrate import CalibrationConfig, alpha_summary, calibrate, load_targets
    from tracegen.presets import load_model

    if args.all == bool(args.block):
        raise InputError("choose the blocks with --block NAME (repeatable) or --all")
    if args.check_tables < 0:
        raise InputError(f"--check-tables must be >= 0, got {args.check_tables}")
    if not (0 < args.alpha_step <= 0.5):
        raise InputError(f"--alpha-step must be in (0, 0.5], got {args.alpha_step}")
    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    targets = load_targets(args.target, None if args.all else args.block, args.tables)
    spec = load_model(args.spec, scale=args.scale)
    cfg = CalibrationConfig(alpha_step=args.alpha_step, check_tables=args.check_tables, seed=args.seed,
                            reuse=args.reuse, batch_size=args.batch_size)
    out = Path(args.output)
    many = len(targets) > 1
    if many:
        out.mkdir(parents=True, exist_ok=True)
    t = Table(title=f"{spec.name} ({spec.num_tables} tables) fitted to {Path(args.target).name}: L1 of a generated "
                    f"check batch ({args.check_tables or 'all'} tables) and of the expected full batch")
    t.add_column("block", no_wrap=True)
    for col in ("check lookups", "L1 u", "L1 l", "ratio err", "full L1 u/l", "alpha", "fit s", "check s"):
        t.add_column(col, justify="right", no_wrap=True)
    con = stdout_console()
    docs = []
    with make_progress() as progress:
        task = progress.add_task("calibrate", total=len(targets))
        for target in targets:
            res = calibrate(spec, target, cfg, measure=not args.no_check)
            doc = res.to_dict()
            docs.append(doc)
            path = out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", target.name.removesuffix(".pt")) + ".json") if many else out
            write_json(path, doc)
            d = res.check_measured or res.check_model or res.full
            a = alpha_summary(res.params)
            t.add_row(target.name, f"{d.lookups / 1e6:,.1f}M", f"{d.unique_l1:.3f}", f"{d.lookup_l1:.3f}",
                      f"{d.ratio_error:.2%}", f"{res.full.unique_l1:.3f}/{res.full.lookup_l1:.3f}",
                      f"{a['mean']:.2f}±{a['sd']:.2f}", f"{res.fit_s:.1f}", f"{res.check_s:.1f}")
            progress.update(task, advance=1)
    con.print(t)
    kind = "measured on generated check batches" if not args.no_check else "expected (no batch generated)"
    con.print(f"wrote {out}{' (one file per block)' if many else ''}; distances {kind}", markup=False,
              highlight=False, soft_wrap=True)
    return 0


def cmd_import_dlrm(args: argparse.Namespace) -> int:
    from tracegen.dlrm_io import import_dlrm
    from tracegen.presets import load_model

    spec = load_model(args.spec) if args.spec else None
    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    _positive_int("--dim", args.dim)
    t0 = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("import", total=None)
        trace_id, spec = import_dlrm(args.file, args.output, spec=spec, batch_size=args.batch_size, dim=args.dim,
                                     progress=lambda d, n: progress.update(task, completed=d, total=n))
    from tracegen.trace_io import TraceReader

    with TraceReader(args.output, validate=False) as r:
        nb, lookups = r.num_batches, r.num_lookups
    stdout_console().print(f"wrote {args.output}: {spec.num_tables} tables, {nb} batches of {spec.batch_size}, "
                           f"{lookups:,} lookups, {time.perf_counter() - t0:.2f} s, trace_id {trace_id}",
                           soft_wrap=True, markup=False, highlight=False)
    return 0


def cmd_export_dlrm(args: argparse.Namespace) -> int:
    from tracegen.dlrm_io import export_dlrm

    if args.batches is not None:
        _positive_int("--batches", args.batches)
    if args.start < 0:
        raise InputError(f"--start must be >= 0, got {args.start}")
    stop = None if args.batches is None else args.start + args.batches
    info = export_dlrm(args.trace, args.output, start=args.start, stop=stop)
    stdout_console().print(f"wrote {args.output}: (indices, offsets, lengths) for {info['tables']} tables x "
                           f"{info['samples']:,} samples ({info['batches']} batches), {info['lookups']:,} lookups",
                           soft_wrap=True, markup=False, highlight=False)
    return 0


def cmd_import_criteo(args: argparse.Namespace) -> int:
    from tracegen.criteo_io import NUM_CATEGORICAL, import_criteo
    from tracegen.presets import load_model

    _positive_int("--batch-size", args.batch_size)
    if args.max_samples is not None:
        _positive_int("--max-samples", args.max_samples)
    rows = args.rows
    if args.model:
        m = load_model(args.model)
        if m.num_tables != NUM_CATEGORICAL:
            raise InputError(f"--model {args.model} has {m.num_tables} tables, Criteo has {NUM_CATEGORICAL}")
        rows = [t.rows for t in m.tables]
    else:
        _positive_int("--rows", rows)
    t0 = time.perf_counter()
    trace_id, spec, counts = import_criteo(args.file, args.output, rows=rows, batch_size=args.batch_size,
                                           dim=args.dim, max_samples=args.max_samples)
    spec_out = Path(args.spec_out) if args.spec_out else Path(args.output).with_suffix(".spec.json")
    write_json(spec_out, spec.to_dict())
    stdout_console().print(f"wrote {args.output} and {spec_out}: {counts['samples']:,} samples, {counts['batches']} "
                           f"batches of {args.batch_size} ({counts['dropped']} samples of a partial batch dropped), "
                           f"{time.perf_counter() - t0:.2f} s, trace_id {trace_id}",
                           soft_wrap=True, markup=False, highlight=False)
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
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0); same seed, same bytes")
    p.add_argument("--reuse", type=float, default=None,
                   help="probability that a lookup repeats a lookup of the previous batch (default 0)")
    p.add_argument("--alpha", type=float, default=None, help="override every table's Zipf skew")
    p.add_argument("--params", default=None,
                   help="generator parameters JSON, e.g. from `screc trace calibrate` (flags given override it)")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    p.set_defaults(func=cmd_gen)

    p = subparsers.add_parser("stats", help="lookup and locality statistics of a trace",
                              description="Per-table lookups, unique rows, pooling and fitted skew, and the two "
                                          "locality histograms in the layout of Meta's locality_stats.txt.",
                              epilog=STATS_EXAMPLE, formatter_class=fmt)
    p.add_argument("trace", nargs="?", default=None, help="trace file (HDF5)")
    p.add_argument("--batches", type=int, default=None, help="read only the first N batches")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    p.add_argument("--model", default=None,
                   help="instead of a trace: expected locality of one batch of this preset or spec (any size)")
    p.add_argument("--scale", type=float, default=1.0, help="with --model: multiply every table's rows")
    p.add_argument("--batch-size", type=int, default=None, help="with --model: override the batch size")
    p.add_argument("--params", default=None, help="with --model: generator parameters JSON (e.g. a calibration)")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser("presets", help="list the built-in model presets",
                              description="List the built-in model presets with their size.",
                              epilog=PRESETS_EXAMPLE, formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_presets)

    p = subparsers.add_parser("calibrate", help="fit the generator to a block of Meta's locality_stats.txt",
                              description="Fit per-table Zipf skew and the pooling scale of a spec so that a batch "
                                          "reproduces both locality histograms and the unique-rows-per-lookup ratio of "
                                          "a locality_stats.txt block; report L1 distances on a generated check batch "
                                          "(a subset of the tables at the published batch size) and for the whole "
                                          "batch (expected).", epilog=CALIBRATE_EXAMPLE, formatter_class=fmt)
    p.add_argument("--target", required=True, help="a locality_stats.txt file (dlrm_datasets layout)")
    p.add_argument("--block", action="append", default=[], help="block name (repeatable)")
    p.add_argument("--all", action="store_true", help="every block of the file (-o is then a directory)")
    p.add_argument("--spec", required=True, help="a preset (e.g. meta-2021) or a .json/.toml spec file")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the spec's rows (default 1)")
    p.add_argument("--tables", type=int, default=None,
                   help="tables of the published trace (default: from the block name, e.g. _t856_)")
    p.add_argument("--batch-size", type=int, default=None, help="fit at this batch size (default: the block's)")
    p.add_argument("--check-tables", type=int, default=64,
                   help="tables in the generated check batch (default 64; 0 = all tables)")
    p.add_argument("--alpha-step", type=float, default=0.05, help="grid step of the per-table skew (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the check batch and of the parameters written")
    p.add_argument("--reuse", type=float, default=0.0, help="reuse to write into the parameters (not fitted)")
    p.add_argument("--no-check", action="store_true", help="do not generate the check batch (expected figures only)")
    p.add_argument("-o", "--output", required=True, help="parameters JSON to write (a directory with --all)")
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser("import-dlrm", help="import a dlrm_datasets .pt[.gz] file as a trace",
                              description="Import Meta's dlrm_datasets layout (a tuple indices, offsets, lengths; "
                                          "offsets table-major of length T*B+1), table by table. Needs torch.",
                              epilog=IMPORT_DLRM_EXAMPLE, formatter_class=fmt)
    p.add_argument("file", help=".pt or .pt.gz file")
    p.add_argument("--batch-size", type=int, default=None, help="cut into batches of this size (must divide B)")
    p.add_argument("--spec", default=None, help="spec to record (table count must match); default: from the file")
    p.add_argument("--dim", type=int, default=128, help="embedding dim of the tables made from the file")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    p.set_defaults(func=cmd_import_dlrm)

    p = subparsers.add_parser("export-dlrm", help="export a trace to the dlrm_datasets .pt layout",
                              description="Write batches of a trace as one dlrm_datasets batch (indices, offsets, "
                                          "lengths) that FBGEMM-style tools replay. Needs torch.",
                              epilog=EXPORT_DLRM_EXAMPLE, formatter_class=fmt)
    p.add_argument("trace", help="trace file (HDF5)")
    p.add_argument("--start", type=int, default=0, help="first batch (default 0)")
    p.add_argument("--batches", type=int, default=None, help="number of batches (default: to the end)")
    p.add_argument("-o", "--output", required=True, help=".pt file to write (.pt.gz: gzip-compressed)")
    p.set_defaults(func=cmd_export_dlrm)

    p = subparsers.add_parser("import-criteo", help="import Criteo-layout text as a spec plus a trace",
                              description="Hash the 26 categorical tokens of Criteo-layout lines (label, 13 dense, "
                                          "26 categorical, tab separated) to rows: one table per feature, one lookup "
                                          "per table per sample.", epilog=IMPORT_CRITEO_EXAMPLE, formatter_class=fmt)
    p.add_argument("file", help="text file (may be gzip-compressed)")
    p.add_argument("--rows", type=int, default=1 << 20, help="rows of every table (default 1048576)")
    p.add_argument("--model", default=None, help="take the 26 tables' rows from this preset or spec instead")
    p.add_argument("--dim", type=int, default=16, help="embedding dim (default 16)")
    p.add_argument("--batch-size", type=int, default=2048, help="samples per batch (default 2048)")
    p.add_argument("--max-samples", type=int, default=None, help="read at most this many samples")
    p.add_argument("--spec-out", default=None, help="spec JSON to write (default: OUTPUT with .spec.json)")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    p.set_defaults(func=cmd_import_criteo)

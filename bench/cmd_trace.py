"""``screc trace gen | stats | presets | fit | import-dlrm | export-dlrm | import-criteo``.

Make synthetic lookup traces, fit them to Meta's published locality
statistics, bring real traces in (dlrm_datasets ``.pt``, Criteo text) and send
them back out (``.pt``), and look at them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import signal
import threading
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
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --tables 0::4 --batches 1 -o traces/q.h5 \\
      --json runs/q_gen.json --write-bound                 (every 4th table; lookups/s vs numpy.tofile)
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


def _positive_int(what: str, value: int) -> int:
    if value < 1:
        raise InputError(f"{what} must be >= 1, got {value}")
    return value


@contextlib.contextmanager
def _stop_flag():
    """Ctrl-C sets a flag that the generator checks after every table (a KeyboardInterrupt raised at an
    arbitrary point could be lost inside HDF5 or numba code); a second Ctrl-C interrupts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def cmd_gen(args: argparse.Namespace) -> int:
    from tracegen.atomic import check_writable
    from tracegen.fit_check import write_bound
    from tracegen.generate import generate_trace
    from tracegen.presets import load_model
    from tracegen.selection import select

    _positive_int("--batches", args.batches)
    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    params = _params(args, num_batches=args.batches)
    spec, params = select(spec, params, args.tables)
    out = Path(args.output)
    check_writable(out)
    if args.json not in (None, "-"):
        check_writable(args.json)
    t0 = time.perf_counter()
    with make_progress() as progress, _stop_flag() as stop:
        task = progress.add_task(f"trace {spec.name}", total=args.batches)
        trace_id = generate_trace(spec, params, out, progress=lambda done, total: progress.update(task, completed=done),
                                  should_stop=stop.is_set)
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


FIT_EXAMPLE = """example:
  screc trace fit --target tests/data/dlrm_datasets_2021_locality_stats.txt \\
      --block fbgemm_t856_bs65536.pt --model meta-2021 -o runs/meta2021_fit.json
  screc trace fit --target locality_stats.txt --all --model meta-2021 --transfer --out-dir runs/fits/
  screc trace fit --target locality_stats.txt --block fbgemm_t856_bs65536_0.pt --model meta-2021 \\
      --full-batch -o runs/fit0.json --json runs/fit0_report.json   (also measure a generated full batch)
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --batches 1 -o traces/meta2021.h5
"""
IMPORT_DLRM_EXAMPLE = """example:
  screc trace import-dlrm fbgemm_t856_bs65536_0.pt.gz --batch-size 4096 -o traces/meta_0.h5
  screc trace import-dlrm exported.pt --model runs/spec.json -o traces/back.h5
"""
EXPORT_DLRM_EXAMPLE = """example:
  screc trace export-dlrm traces/tiny.h5 -o runs/tiny.pt   (one batch of N*B samples; the batch size and spec
                                                            go to runs/tiny.pt.screc.json for import-dlrm)
  screc trace export-dlrm traces/kaggle.h5 --batches 4 -o runs/kaggle.pt.gz
"""
IMPORT_CRITEO_EXAMPLE = """example:
  screc trace import-criteo train.txt --rows 1048576 --batch-size 2048 -o traces/criteo.h5
  screc trace import-criteo day_0.gz --max-samples 1000000 -o traces/day0.h5 --spec-out runs/day0_spec.json
"""


def _fit_config(args: argparse.Namespace):
    from tracegen.fit import FitConfig

    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    return FitConfig(kind=args.kind, knots=args.knots, seed=args.seed, batch_size=args.batch_size)


def _fit_outputs(args: argparse.Namespace, targets) -> list[Path]:
    from tracegen.atomic import check_writable

    many = len(targets) > 1
    if many and args.output:
        raise InputError("several blocks: give --out-dir DIR (one parameters file per block), not -o")
    if not many and not args.output:
        raise InputError("give -o FILE for the parameters of the block")
    if many:
        out_dir = Path(args.out_dir or "runs/fits")
        check_writable(out_dir, "dir")
        paths = [out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", t.name.removesuffix(".pt")) + ".json") for t in targets]
    else:
        paths = [Path(args.output)]
    for path in paths:
        check_writable(path)
    if args.json not in (None, "-"):
        check_writable(args.json)
    return paths


def _dist(d) -> str:
    return "-" if d is None else f"{d.unique_l1:.3f} {d.lookup_l1:.3f} {d.ratio_error:.1%}"


def cmd_fit(args: argparse.Namespace) -> int:
    from tracegen.fit import fit, load_targets, model_summary, transfer
    from tracegen.fit_check import full_batch_check
    from tracegen.presets import load_model

    if args.all == bool(args.block):
        raise InputError("choose the blocks with --block NAME (repeatable) or --all")
    targets = load_targets(args.target, None if args.all else args.block, args.num_tables)
    spec = load_model(args.model, scale=args.scale)
    cfg = _fit_config(args)
    paths = _fit_outputs(args, targets)
    others = load_targets(args.target) if args.transfer else []
    t = Table(title=f"{spec.name} ({spec.num_tables} tables) fitted to {Path(args.target).name} ({cfg.kind}): "
                    f"L1 unique, L1 lookups, unique/lookup error")
    for col in ("block", "params", "in-sample (expected)", "held-out tables (expected)", "full batch (measured)",
                "fit s", "gen s"):
        t.add_column(col, justify="left" if col == "block" else "right", no_wrap=col != "block",
                     overflow="fold" if col == "block" else "ellipsis", min_width=12 if col == "block" else None)
    docs, notes = [], []
    with make_progress() as progress, _stop_flag() as stop:
        task = progress.add_task("fit", total=len(targets))
        previous = _start_fit(args.start, spec, cfg) if args.start else None
        for target, path in zip(targets, paths):
            res = fit(spec, target, cfg, start=None if args.cold_start else previous)
            previous = res
            if stop.is_set():
                raise KeyboardInterrupt
            check = None
            if args.full_batch:
                check = full_batch_check(spec, res.params, target, path.parent, should_stop=stop.is_set)
                res = _with_check(res, check)
            doc = res.to_dict()
            if others:
                doc["transfer"] = [{"to": o.name, "kind": "expected, this block's model on another block",
                                    **transfer(res.model, spec, o, cfg.batch_size).to_dict()}
                                   for o in others if o.name != target.name]
            write_json(path, doc)
            docs.append(doc)
            t.add_row(target.name, str(res.model.num_parameters), _dist(res.in_sample), _dist(res.held_out),
                      _dist(None if check is None else check.distances), f"{res.fit_s:.1f}",
                      "-" if check is None else f"{check.generate_s:.1f}")
            notes.append(f"{target.name}: {model_summary(res.model)}")
            progress.update(task, advance=1)
    if args.json is not None:
        write_json(args.json, {"fits": docs, "outputs": [str(p) for p in paths]})
        if args.json == "-":
            return 0
    con = stdout_console()
    con.print(t)
    for line in notes:
        con.print(line, markup=False, highlight=False, soft_wrap=True)
    if others:
        con.print(_transfer_summary(docs), markup=False, highlight=False, soft_wrap=True)
    con.print(f"wrote {paths[0] if len(paths) == 1 else paths[0].parent} ({len(paths)} parameters file(s))",
              markup=False, highlight=False, soft_wrap=True)
    return 0


def _start_fit(path, spec, cfg):
    """A FitResult-like start from a fit document (its model and held-out model)."""
    import json
    import types

    from tracegen.fit import load_fit_document
    from tracegen.group_model import GroupModel

    p = Path(path)
    if not p.is_file():
        raise InputError("fit document not found", p)
    try:
        doc = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a JSON file ({e})", p) from None
    _, model = load_fit_document(doc, p)
    if model is None or model.kind != cfg.kind:
        raise InputError(f"holds no {cfg.kind} model to start from", p)
    held = doc.get("held_out_model")
    return types.SimpleNamespace(model=model, held_out_model=GroupModel.from_dict(held) if held else None)


def _with_check(res, check):
    import dataclasses

    return dataclasses.replace(res, full_batch=check.distances, full_batch_info=check.to_dict())


def _transfer_summary(docs) -> str:
    worst = [max(max(x["unique_l1"], x["lookup_l1"]) for x in d["transfer"]) for d in docs if d.get("transfer")]
    ratio = [max(x["ratio_error"] for x in d["transfer"]) for d in docs if d.get("transfer")]
    if not worst:
        return "transfer: the file has one block"
    return (f"transfer (expected; each block's model on every other block, only the pooling scale refitted): "
            f"worst L1 {max(worst):.3f}, median of the per-block worst {sorted(worst)[len(worst) // 2]:.3f}, "
            f"worst unique/lookup error {max(ratio):.1%}")


def cmd_import_dlrm(args: argparse.Namespace) -> int:
    from tracegen.dlrm_io import import_dlrm
    from tracegen.presets import load_model

    spec = load_model(args.model) if args.model else None
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
    from tracegen.dlrm_io import sidecar_path

    stdout_console().print(f"wrote {args.output}: (indices, offsets, lengths) for {info['tables']} tables x "
                           f"{info['samples']:,} samples ({info['batches']} batches, recorded in "
                           f"{sidecar_path(args.output)}), {info['lookups']:,} lookups",
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
    p.add_argument("--write-bound", action="store_true",
                   help="also time writing the same bytes with numpy.tofile (+fsync) next to the output")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
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

    p = subparsers.add_parser("fit", help="fit the locality model to a block of Meta's locality_stats.txt",
                              description="Fit a locality model with a few parameters shared through the tables' "
                                          "lookup density (tracegen.group_model) and the pooling scale of a spec to "
                                          "a locality_stats.txt block; report L1 distances of both histograms and "
                                          "the unique-rows-per-lookup error in sample (expected), on held-out "
                                          "tables (fitted on tables 0::2, measured on 1::2, expected), on a "
                                          "generated full batch (--full-batch, measured from its trace file) and "
                                          "on the other blocks (--transfer). Replaces `trace calibrate`.",
                              epilog=FIT_EXAMPLE, formatter_class=fmt)
    p.add_argument("--target", required=True, help="a locality_stats.txt file (dlrm_datasets layout)")
    p.add_argument("--block", action="append", default=[], help="block name (repeatable)")
    p.add_argument("--all", action="store_true", help="every block of the file (writes to --out-dir)")
    p.add_argument("--model", required=True, help="a preset (e.g. meta-2021) or a .json/.toml spec file")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the spec's rows (default 1)")
    from tracegen.group_model import DEFAULT_KIND, DEFAULT_KNOTS, KINDS

    p.add_argument("--kind", default=DEFAULT_KIND,
                   help=f"candidate locality model (default {DEFAULT_KIND}; {', '.join(KINDS)})")
    p.add_argument("--knots", type=int, default=DEFAULT_KNOTS,
                   help=f"density knots per parameter (default {DEFAULT_KNOTS})")
    p.add_argument("--num-tables", type=int, default=None,
                   help="tables of the published trace (default: from the block name, e.g. _t856_)")
    p.add_argument("--batch-size", type=int, default=None, help="fit at this batch size (default: the block's)")
    p.add_argument("--full-batch", action="store_true",
                   help="generate a full batch per block next to the output, count it from the file, report its "
                        "distances and the generation speed against numpy.tofile (about a minute per 500M lookups)")
    p.add_argument("--transfer", action="store_true", help="evaluate each block's model on every other block")
    p.add_argument("--start", default=None,
                   help="a fit document (-o of an earlier fit) whose model starts the search (refine a fit)")
    p.add_argument("--cold-start", action="store_true",
                   help="with several blocks, search each from scratch (default: from the previous block's model)")
    p.add_argument("--seed", type=int, default=0, help="seed written into the parameters (and the full batch)")
    p.add_argument("-o", "--output", default=None, help="parameters JSON to write (one block)")
    p.add_argument("--out-dir", default=None, help="directory for one parameters file per block (default runs/fits)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the report as JSON: bare to stdout, or written to FILE")
    p.set_defaults(func=cmd_fit)

    p = subparsers.add_parser("import-dlrm", help="import a dlrm_datasets .pt[.gz] file as a trace",
                              description="Import Meta's dlrm_datasets layout (a tuple indices, offsets, lengths; "
                                          "offsets table-major of length T*B+1), table by table. Needs torch.",
                              epilog=IMPORT_DLRM_EXAMPLE, formatter_class=fmt)
    p.add_argument("file", help=".pt or .pt.gz file")
    p.add_argument("--batch-size", type=int, default=None, help="cut into batches of this size (must divide B)")
    p.add_argument("--model", default=None, help="spec to record (table count must match); default: from the file")
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

"""``screc accuracy``: how far TT-served embeddings (and the model's predictions) are from the raw ones."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Group
from rich.table import Table

from bench.common import (add_engine_arg, add_json_arg, add_out_dir_arg, ensure_writable_dir, ensure_writable_file,
                          stdout_console, write_json)
from emulator.accuracy import accuracy_report, format_plan
from emulator.dense import DenseConfig, DenseModel
from emulator.plan import Plan
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def render_tables(payload: dict[str, Any]) -> Group:
    """Per table: tier, TT rank, compression and lookups served from TT; then the pooled-embedding differences
    (two tables, to fit 80 columns; pure)."""
    served = Table(title=f"pooled embeddings: {payload['tt_planner']} vs {payload['raw_policy']} "
                         f"({payload['batches']} batches, {payload['samples']:,} samples)")
    for col in ("table", "dim", "tier", "TT rank", "compression", "TT lookups"):
        served.add_column(col, justify="left" if col in ("table", "tier") else "right", overflow="fold")
    diff = Table(title="differences of the pooled embeddings, TT run - raw run")
    for col in ("table", "mean |diff|", "max |diff|", "rel. Frobenius"):
        diff.add_column(col, justify="left" if col == "table" else "right", overflow="fold")
    for t in payload["tables"]:
        tier = t["cold_tier"] if t["hot_rows"] == 0 else f"dram {t['hot_rows']:,} + {t['cold_tier']}"
        served.add_row(t["table"], str(t["dim"]), tier, _fmt(t["tt_rank"], "d"),
                       _fmt(t["compression_ratio"], ".1f") + ("x" if t["compression_ratio"] else ""),
                       f"{t['tt_lookups']:,}")
        diff.add_row(t["table"], f"{t['mean_abs_diff']:.3e}", f"{t['max_abs_diff']:.3e}", f"{t['rel_fro_diff']:.4f}")
    o = payload["overall"]
    served.add_row("[bold]all[/]", "", "", "", "", f"{payload['tt_lookups']:,}")
    diff.add_row("[bold]all[/]", f"{o['mean_abs_diff']:.3e}", f"{o['max_abs_diff']:.3e}", f"{o['rel_fro_diff']:.4f}")
    return Group(served, diff)


def render_dense(d: dict[str, Any]) -> Table:
    """Prediction differences, AUC and log-loss of the raw and the TT run."""
    seed = f" seed {d['weights_seed']}" if d["weights_seed"] is not None else ""
    table = Table(title=f"predictions: raw vs TT ({d['samples']:,} samples)",
                  caption=f"dense model: bottom MLP {d['bottom_mlp']}, top MLP {d['top_mlp']}, weights "
                          f"{d['weights']}{seed}; labels ~ Bernoulli(p_raw), {d['positive_rate']:.1%} positive")
    for col in ("metric", "raw", "TT", "difference"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    table.add_row("mean p", f"{d['mean_p_raw']:.4f}", f"{d['mean_p_tt']:.4f}", "")
    table.add_row("|p_tt - p_raw|", "", "", f"mean {d['mean_abs_pred_diff']:.2e}, max {d['max_abs_pred_diff']:.2e}")
    table.add_row("AUC", _fmt(d["auc_raw"], ".4f"), _fmt(d["auc_tt"], ".4f"),
                  _fmt(None if d["auc_raw"] is None or d["auc_tt"] is None else d["auc_tt"] - d["auc_raw"], "+.4f"))
    table.add_row("log-loss", f"{d['log_loss_raw']:.4f}", f"{d['log_loss_tt']:.4f}",
                  f"{d['log_loss_tt'] - d['log_loss_raw']:+.4f}")
    return table


def format_summary(fmt: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One row of the row-format comparison: the format's tables and its embedding and prediction differences."""
    d, o = payload["dense"], payload["overall"]
    row = {"format": fmt, "tables": sum(t["row_format"] == fmt for t in payload["tables"]),
           "max_manifest_rel_fro_error": max((t["format_rel_fro_error"] or 0.0) for t in payload["tables"]),
           "rel_fro_diff": o["rel_fro_diff"], "max_abs_diff": o["max_abs_diff"]}
    if d is not None:
        auc_diff = None if d["auc_raw"] is None or d["auc_tt"] is None else d["auc_tt"] - d["auc_raw"]
        row.update(mean_abs_pred_diff=d["mean_abs_pred_diff"], max_abs_pred_diff=d["max_abs_pred_diff"],
                   auc_diff=auc_diff, log_loss_diff=d["log_loss_tt"] - d["log_loss_raw"])
    return row


def render_formats(rows: list[dict[str, Any]], batches: int, samples: int) -> Table:
    """Each row format against the raw rows (measured on the same batches; 80 columns; pure)."""
    from bench.tables import fit_table

    cells = [[r["format"], str(r["tables"]), f"{r['rel_fro_diff']:.2e}", f"{r['max_abs_diff']:.2e}",
              _fmt(r.get("mean_abs_pred_diff"), ".1e"), _fmt(r.get("max_abs_pred_diff"), ".1e"),
              _fmt(r.get("auc_diff"), "+.4f"), _fmt(r.get("log_loss_diff"), "+.4f")] for r in rows]
    return fit_table(f"row formats vs raw rows (measured; {batches} batches, {samples:,} samples)",
                     ["fmt", "tables", "rel Frob", "max |d|", "mean |dp|", "max |dp|", "dAUC", "dlog-loss"], cells)


def _tt_plan(store: Store, reader: TraceReader, args: argparse.Namespace) -> Plan:
    from plans.planner import all_tt_plan, load_plan

    if args.tt_rank is not None and args.tt_rank < 1:
        raise InputError(f"--tt-rank must be >= 1, got {args.tt_rank}")
    return load_plan(args.plan, store) if args.plan else all_tt_plan(store, reader.trace_id, args.tt_rank)


def _row_formats(text: str | None, store: Store) -> tuple[str, ...]:
    from emulator.store.quant import STORED_FORMATS

    names = tuple(x.strip() for x in (text or "").split(",") if x.strip())
    bad = [n for n in names if n not in STORED_FORMATS]
    if bad or len(set(names)) != len(names):
        raise InputError(f"--row-formats {text!r}: give distinct names among {','.join(STORED_FORMATS)}")
    return names


def cmd_accuracy(args: argparse.Namespace) -> int:
    from bench.results import to_jsonable, write_run

    if args.batches is not None and args.batches < 1:
        raise InputError(f"--batches must be >= 1, got {args.batches}")
    ensure_writable_file(args.json)  # every output checked before any work
    ensure_writable_dir(args.out_dir)
    if args.engine == "null":
        raise InputError("--engine null reads nothing, so there are no raw rows to compare TT rows with; "
                         "use --engine uring or pread")
    store = Store.open(args.store)
    dims = [lay.dim for lay in store.layouts]
    dense = None
    if not args.no_dense:
        config = DenseConfig(seed=args.dense_seed)
        dense = DenseModel.load(args.dense_weights, config, dims) if args.dense_weights else DenseModel(config, dims)
    formats = _row_formats(args.row_formats, store)
    with TraceReader(args.trace) as reader:
        trace_id = reader.trace_id
        if formats:
            per_format = {f: accuracy_report(store, reader, format_plan(store, f, trace_id=trace_id),
                                             batches=args.batches, engine=args.engine, dense=dense, seed=args.seed)
                          for f in formats}
            first = next(iter(per_format.values()))
            payload = {"formats": per_format, "summary": [format_summary(f, r) for f, r in per_format.items()],
                       "batches": first["batches"], "samples": first["samples"],
                       "tables": [t for r in per_format.values() for t in r["tables"]]}
        else:
            payload = accuracy_report(store, reader, _tt_plan(store, reader, args), batches=args.batches,
                                      engine=args.engine, dense=dense, seed=args.seed)
    payload.update({"store": str(store.path), "trace": str(reader.path), "plan": args.plan})
    payload = to_jsonable(payload)  # NaN (an AUC over one class) -> None
    run_dir = write_run("accuracy", sys.argv, payload, store_id=store.store_id, trace_id=trace_id,
                        tables={"tables": payload["tables"]}, store_path=store.path, runs_dir=args.out_dir)
    if args.json:
        write_json(args.json, payload)
    out = stdout_console()
    if args.json != "-" and formats:
        out.print(render_formats(payload["summary"], payload["batches"], payload["samples"]))
        out.print(f"result in {run_dir}")
    elif args.json != "-":
        out.print(render_tables(payload))
        if payload["dense"] is not None:
            out.print(render_dense(payload["dense"]))
        out.print(f"result in {run_dir}")
    return 0


EXAMPLE = """example:
  screc accuracy --store stores/tiny --trace traces/tiny.h5 --tt-rank 8
  screc accuracy --store stores/ck --trace traces/ck.h5 --plan plan.json --batches 4 --json
  screc accuracy --store stores/ck --trace traces/ck.h5 --no-dense --json runs/acc.json --out-dir /tmp/runs
  screc accuracy --store stores/ck-q --trace traces/ck.h5 --row-formats fp16,int8,int4 --batches 4

columns (pooled embeddings, per table; TT run against the raw run of the same batches):
  tier            where the plan serves the table's rows (dram N + ssd_tt: N hot rows, the rest from TT cores)
  TT rank         rank of the TT cores used; compression: raw bytes / TT core bytes
  TT lookups      lookups served from TT cores
  mean |diff|     mean absolute difference of the pooled embeddings' elements
  max |diff|      largest absolute difference of one element
  rel. Frobenius  ||pooled_TT - pooled_raw|| / ||pooled_raw|| over all bags of the table
predictions: the dense model's click probabilities p from both runs, their AUC and log-loss against labels
drawn from the raw run's probabilities (synthetic labels: the AUC measures agreement, not model quality).
with --row-formats, one line per format (fmt): the tables stored in it, rel Frob and max |d| of the pooled
embeddings over all tables (format run - raw run), mean and max |dp| of the predictions' differences, dAUC
and dlog-loss (format run - raw run).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accuracy", help="compare TT-served embeddings and predictions with the raw ones",
                       description="Replay the same batches under an all-raw plan and under a TT plan, and report\n"
                                   "per table how far the pooled embeddings differ; with the dense model (on by\n"
                                   "default) also the predictions, the AUC and the log-loss of both runs against\n"
                                   "labels drawn from the raw run's probabilities.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="store directory")
    p.add_argument("--trace", required=True, help="trace file (HDF5)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tt-rank", type=int, default=None,
                   help="serve every table that has TT cores from rank R (default: each table's smallest rank)")
    g.add_argument("--plan", default=None, help="judge this plan (from `screc plan solve`) instead of all-tt")
    g.add_argument("--row-formats", default=None, metavar="LIST",
                   help="judge each row format instead (fp16,int8,int4: every table the store holds in it, "
                        "served from that format's rows; the store needs `store build --row-formats`)")
    p.add_argument("--batches", type=int, default=None, help="compare at most this many batches (default all)")
    add_engine_arg(p)
    p.add_argument("--no-dense", action="store_true", help="only compare pooled embeddings")
    p.add_argument("--dense-seed", type=int, default=0, help="seed of the dense model's weights (default 0)")
    p.add_argument("--dense-weights", default=None, metavar="NPZ",
                   help="load the dense model's weights from an .npz instead of seeding them")
    p.add_argument("--seed", type=int, default=0, help="seed of the dense features and the labels (default 0)")
    add_json_arg(p, "the result payload")
    add_out_dir_arg(p)
    p.set_defaults(func=cmd_accuracy)

"""``screc demo``: generate -> build -> verify -> replay under each policy with --verify, on a small default."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.table import Table

from bench.replay_run import make_plan, run_replay
from bench.common import ProgressAdapter as _ProgressAdapter
from bench.common import format_bytes, is_live, make_progress, stdout_console, write_json
from emulator.replay.engine import ReplayConfig
from emulator.store.store import StoreBuildConfig
from emulator.store.build import build_store, verify_store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

DEMO_POLICIES = ("all-dram", "all-ssd", "all-tt")


def cmd_demo(args: argparse.Namespace) -> int:
    from bench.results import write_run
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import load_model

    if args.batches < 1:
        raise InputError(f"--batches must be >= 1, got {args.batches}")
    out = stdout_console()
    work = Path(args.dir)
    spec = load_model(args.model, scale=args.scale, batch_size=args.batch_size)
    out.print(f"[bold]screc demo[/]: model {spec.name}, {spec.num_tables} tables, "
              f"{format_bytes(spec.total_bytes)} of embeddings, batch {spec.batch_size}, {args.batches} batches "
              f"-> {work}/")
    t0 = time.perf_counter()
    trace_path = work / "trace.h5"
    with make_progress() as progress:
        task = progress.add_task("trace", total=args.batches)
        trace_id = generate_trace(spec, GeneratorParams(seed=args.seed, num_batches=args.batches), trace_path,
                                  progress=lambda d, t: progress.update(task, completed=d, total=t))
    out.print(f"1. trace  {trace_path} ({format_bytes(trace_path.stat().st_size)}, id {trace_id[:12]}) "
              f"in {time.perf_counter() - t0:.1f} s")
    t1 = time.perf_counter()
    with make_progress() as progress:
        store = build_store(spec, work / "store", StoreBuildConfig(weights_seed=args.seed, tt_ranks=(8, 16)),
                            progress=_ProgressAdapter(progress))
    tt_tables = sum(1 for t in store.tables if t.tt)
    out.print(f"2. store  {store.path} ({format_bytes(store.raw_bytes)} raw, TT cores for {tt_tables} tables) "
              f"in {time.perf_counter() - t1:.1f} s")
    report = verify_store(store.path)
    if not report.ok:
        raise InputError(report.problems[0], store.path)
    out.print(f"3. verify {report.files} files, {format_bytes(report.bytes)}: all checksums match")
    rows = []
    with TraceReader(trace_path) as reader:
        for policy in DEMO_POLICIES:
            plan = make_plan(store, reader, policy, None)
            config = ReplayConfig(engine=args.engine, queue_depth=128, verify=True, allow_buffered=args.buffered_io)
            payload = run_replay(store, reader, plan, config, live=is_live())
            rows.append(payload)
            out.print(f"4. replay {policy:8s} verified: {payload['verify']['exact_bags']} exact bags, "
                      f"{payload['verify']['tt_bags']} TT bags within the manifest's bound")
    table = Table(title="replay of the demo trace (every batch verified against NumPy)")
    for col in ("policy", "queries/s", "M lookups/s", "p50 ms", "p99 ms", "IOs", "read", "DRAM", "max TT err"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for p in rows:
        lat = p["latency_s"]
        table.add_row(p["policy"], f"{p['qps']:,.0f}", f"{p['lookups_per_s'] / 1e6:.2f}", f"{lat['p50'] * 1e3:.2f}",
                      f"{lat['p99'] * 1e3:.2f}", f"{p['ios']:,}", format_bytes(p["bytes_read"]),
                      format_bytes(p["dram_used_bytes"]), f"{p['verify']['max_tt_abs_diff']:.2e}")
    out.print(table)
    payload = {"model": spec.name, "batches": args.batches, "store_raw_bytes": store.raw_bytes, "rows": rows,
               "seconds": time.perf_counter() - t0}
    run_dir = write_run("demo", sys.argv, payload, store_id=store.store_id, trace_id=trace_id)
    if args.json:
        write_json(args.json, payload)
    out.print(f"done in {time.perf_counter() - t0:.1f} s; result in {run_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on a small built-in default",
                       description="Generate a trace, build a store (raw + TT), verify it, and replay the trace under\n"
                                   "all-dram, all-ssd and all-tt with every batch verified.\n\n"
                                   "example: screc demo",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="runs/demo", help="working directory (default runs/demo)")
    p.add_argument("--model", default="criteo-kaggle", help="preset or spec file (default criteo-kaggle)")
    p.add_argument("--scale", type=float, default=0.02, help="row scale (default 0.02)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=("uring", "pread"), default="uring")
    p.add_argument("--buffered-io", action="store_true", help="allow page-cache reads if O_DIRECT is refused")
    p.add_argument("--json", default=None, metavar="FILE")
    p.set_defaults(func=cmd_demo)

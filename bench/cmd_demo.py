"""``screc demo``: generate -> build -> verify -> replay under each policy, every batch verified, then measured.

The verification pass replays every batch of the trace once per policy with ``--verify`` (not timed). The
figures come from a separate measurement (bench/measure.py): per policy, a fresh replayer warmed up on a
few batches that are not measured, then at least ``--min-batches`` batches and ``--min-seconds`` seconds
(the trace looped if shorter), in ``--rounds`` interleaved rounds; steady state (first batch excluded),
median of the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType

from bench.common import (ProgressAdapter, add_batch_size_arg, add_engine_arg, add_json_arg, add_model_arg,
                          add_out_dir_arg, add_qd_arg, ensure_writable_dir, ensure_writable_file, format_bytes,
                          is_live, make_progress, stderr_console, stdout_console, write_json)
from bench.measure import BatchRange, add_measure_args, measure_config, measure_rounds, notes
from bench.replay_run import check_engine_verify, run_replay
from bench.tables import fit_table, ms_cell, num
from emulator.replay.engine import ReplayConfig
from emulator.store.build import build_store, verify_store
from emulator.store.store import StoreBuildConfig
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

DEMO_POLICIES = ("all-dram", "all-ssd", "all-tt")
EXAMPLE = """example:
  screc demo
  screc demo --model tiny --scale 1 --batches 8 --rounds 1 --json demo.json --out-dir /tmp/screc

columns: queries/s and M lookups/s are steady-state rates (first measured batch excluded), the median of
the rounds; spread = (fastest - slowest round) / median; p50/p99 = per-batch latency; cold 1st ms = the
first batch of a fresh replayer before warm-up (page faults, first touches), never in the rates; IOs and
read are per batch; max TT err = the largest |TT - raw| of a pooled value seen while verifying."""


def render(rows: list[dict[str, Any]], rounds: int) -> RenderableType:
    """Two tables that fit 80 columns: throughput, then IO, memory and verification."""
    speed = fit_table(f"throughput: steady state, median of {rounds} round(s)",
                      ("policy", "queries/s", "spread", "M lookups/s", "p50 ms", "p99 ms", "cold 1st ms"),
                      [(r["policy"], num(r.get("steady_qps"), ",.0f"), num(r.get("qps_spread"), ".0%"),
                        num(r.get("steady_lookups_per_s"), ".2f", 1e-6), ms_cell(r["latency_s"].get("p50")),
                        ms_cell(r["latency_s"].get("p99")), ms_cell(r.get("cold_first_batch_s"))) for r in rows])
    res = fit_table("per batch, and the verification pass (every batch checked against NumPy)",
                    ("policy", "IOs", "read", "DRAM", "exact bags", "TT bags", "max TT err"),
                    [(r["policy"], f"{r['ios_per_batch']:,.0f}", format_bytes(r["bytes_read_per_batch"]),
                      format_bytes(r["dram_used_bytes"]), f"{r['verify']['exact_bags']:,}",
                      f"{r['verify']['tt_bags']:,}", f"{r['verify']['max_tt_abs_diff']:.2e}") for r in rows])
    return Group(speed, res)


def _build(args, out, work: Path):
    """Steps 1-3: the trace, the store, the store's checksums. Returns (spec, trace path, trace id, store)."""
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import load_model

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
                            progress=ProgressAdapter(progress))
    tt_tables = sum(1 for t in store.tables if t.tt)
    out.print(f"2. store  {store.path} ({format_bytes(store.raw_bytes)} raw, TT cores for {tt_tables} tables) "
              f"in {time.perf_counter() - t1:.1f} s")
    report = verify_store(store.path)
    if not report.ok:
        raise InputError(report.problems[0], store.path)
    out.print(f"3. verify {report.files} files, {format_bytes(report.bytes)}: all checksums match")
    return spec, trace_path, trace_id, store


def _check_args(args) -> Path:
    if args.batches < 1:
        raise InputError(f"--batches must be >= 1, got {args.batches}")
    if args.qd < 1:
        raise InputError(f"--qd must be >= 1, got {args.qd}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_engine_verify(args.engine, True)
    work = Path(args.out_dir) / "demo"
    ensure_writable_dir(work)
    ensure_writable_file(args.json)
    return work


def cmd_demo(args: argparse.Namespace) -> int:
    from bench.live import LiveView
    from bench.results import write_run
    from plans.planner import preset_plan

    work = _check_args(args)
    mcfg = measure_config(args)
    err = stderr_console()
    out = err if args.json == "-" else stdout_console()  # bare --json: stdout holds the JSON only
    live = is_live()
    t0 = time.perf_counter()
    spec, trace_path, trace_id, store = _build(args, out, work)
    base = ReplayConfig(engine=args.engine, queue_depth=args.qd, allow_buffered=args.buffered_io)
    with TraceReader(trace_path) as reader:
        plans = [(p, preset_plan(p, store, reader).plan) for p in DEMO_POLICIES]
        verified = {}
        for policy, plan in plans:
            payload = run_replay(store, reader, plan, dataclasses.replace(base, verify=True), live=live)
            verified[policy] = payload["verify"]
            out.print(f"4. replay {policy:8s} verified: {payload['verify']['exact_bags']} exact bags, "
                      f"{payload['verify']['tt_bags']} TT bags within their bound")
        out.print(f"5. measure: {mcfg.rounds} round(s) over the policies, each run warmed up on "
                  f"{mcfg.warmup_batches} batches, then >= {mcfg.min_batches} batches and >= {mcfg.min_seconds:g} s")
        ms = measure_rounds(store, reader, plans, BatchRange(0, reader.num_batches), base, mcfg,
                            watch=lambda stats: LiveView(stats.snapshot, err, live=live, transient=True),
                            on_step=lambda s: err.print(f"[dim]{s}[/]", highlight=False))
    rows = []
    for m in ms:
        row = m.row()
        row["verify"] = verified[m.name]
        rows.append(row)
    out.print(render(rows, mcfg.rounds))
    for line in notes(ms, mcfg):
        out.print(f"note: {line}", markup=False, highlight=False)
    payload = {"model": spec.name, "batches": args.batches, "store_raw_bytes": store.raw_bytes, "rows": rows,
               "measure": dataclasses.asdict(mcfg), "notes": notes(ms, mcfg), "seconds": time.perf_counter() - t0,
               "throughput": "steady state, median of rounds", "store": str(store.path), "trace": str(trace_path)}
    run_dir = write_run("demo", sys.argv, payload, store_id=store.store_id, trace_id=trace_id,
                        store_path=str(store.path), runs_dir=args.out_dir)
    if args.json:
        write_json(args.json, payload)
    out.print(f"done in {time.perf_counter() - t0:.1f} s; result in {run_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on a small built-in default",
                       description="Generate a trace, build a store (raw + TT), verify it, replay the trace under\n"
                                   "all-dram, all-ssd and all-tt with every batch verified, then measure each\n"
                                   "policy warm, in interleaved rounds.\n\n" + EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_out_dir_arg(p, what="result directory; the trace and store go to OUT_DIR/demo")
    add_model_arg(p, default="criteo-kaggle", extra=" (default criteo-kaggle)")
    p.add_argument("--scale", type=float, default=0.02, help="row scale (default 0.02)")
    add_batch_size_arg(p, default=1024)
    p.add_argument("--batches", type=int, default=20, help="batches in the trace (default 20)")
    p.add_argument("--seed", type=int, default=0)
    add_engine_arg(p)
    add_qd_arg(p)
    p.add_argument("--buffered-io", action="store_true", help="allow page-cache reads if O_DIRECT is refused")
    add_json_arg(p)
    add_measure_args(p)
    p.set_defaults(func=cmd_demo)

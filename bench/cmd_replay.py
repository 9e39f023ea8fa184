"""``screc replay``: serve a trace from a store under a plan or a simple policy, live."""

from __future__ import annotations

import argparse
import sys

from bench.common import format_bytes, is_live, stderr_console, stdout_console, write_json
from emulator.plan import Plan, TablePlacement, uniform_plan
from emulator.replay.engine import Replayer, ReplayConfig
from emulator.replay.counters import ReplayStats
from emulator.store.store import Store
from tracegen.atomic import check_writable
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

POLICIES = ("all-dram", "all-ssd", "all-tt")


def make_plan(store: Store, reader: TraceReader, policy: str | None, plan_path: str | None,
              tt_rank: int | None = None) -> Plan:
    if plan_path:
        plan = Plan.load(plan_path)
        plan.check_store(store.store_id, plan_path)
        return plan
    rows = {t["name"]: t["rows"] for t in store.tables}
    if policy != "all-tt":
        return uniform_plan(store.store_id, rows, policy or "all-ssd", trace_id=reader.trace_id)
    # all-tt: every table that has TT cores is rebuilt from them (rank tt_rank, or its smallest); the rest raw
    tables = []
    for t in store.tables:
        ranks = sorted(v["rank"] for v in t["tt"])
        if tt_rank is not None and ranks and tt_rank not in ranks:
            raise InputError(f"table {t['name']} has no TT rank {tt_rank} (has {ranks})", store.path)
        if ranks:
            tables.append(TablePlacement(t["name"], 0, "ssd_tt", tt_rank if tt_rank is not None else ranks[0]))
        else:
            tables.append(TablePlacement(t["name"], 0, "ssd_raw"))
    if not any(tp.cold_tier == "ssd_tt" for tp in tables):
        raise InputError("all-tt: no table of this store has TT cores (build with --tt-ranks)", store.path)
    return Plan(store_id=store.store_id, tables=tuple(tables), trace_id=reader.trace_id, planner="all-tt")


def prediction_check(plan: Plan, payload: dict) -> dict | None:
    """The plan's predicted batch time against the measured one of this replay: the steady-state interval
    per batch after the first batch (which alone pays first-touch costs; ``elapsed_s / batches`` is kept
    beside it as ``measured_with_first_batch_s``)."""
    perf = (plan.predicted or {}).get("perf") or {}
    predicted = perf.get("total_s") if isinstance(perf, dict) else None
    batches = payload.get("batches") or 0
    if isinstance(predicted, bool) or not isinstance(predicted, (int, float)) or not predicted > 0 or not batches:
        return None  # no prediction (or a malformed one: it is only reported, never used)
    with_first = payload["elapsed_s"] / batches
    measured = payload.get("steady_batch_s") or with_first
    return {"predicted_batch_s": predicted, "measured_batch_s": measured, "measured_with_first_batch_s": with_first,
            "relative_error": measured / predicted - 1.0, "bottleneck": perf.get("bottleneck"),
            "calibration": plan.predicted.get("calibration_source"), "verify_serialised": bool(payload.get("verify"))}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def replay_config(args: argparse.Namespace) -> ReplayConfig:
    if args.qd < 1:
        raise InputError(f"--qd must be >= 1, got {args.qd}")
    if args.batches is not None and args.batches < 1:
        raise InputError(f"--batches must be >= 1, got {args.batches}")
    if args.start_batch < 0:
        raise InputError(f"--start-batch must be >= 0, got {args.start_batch}")
    return ReplayConfig(engine=args.engine, queue_depth=args.qd, allow_buffered=args.buffered_io,
                        pipeline=not args.no_pipeline, verify=args.verify, max_batches=args.batches,
                        start_batch=args.start_batch)


def run_replay(store: Store, reader: TraceReader, plan: Plan, config: ReplayConfig, *, live: bool) -> dict:
    """Replay with the live view; returns the ``replay`` result payload."""
    from bench.live import LiveView

    stats = ReplayStats()
    rss_before = peak_rss_bytes()
    with Replayer(store, plan, config, stats=stats) as rep:
        with LiveView(stats.snapshot, stderr_console(), live=live):
            totals = rep.run(reader)
        payload = stats.summary()
        payload.update({
            "policy": plan.planner, "engine": config.engine, "queue_depth": config.queue_depth,
            "pipeline": config.pipeline and not config.verify, "ios": totals["ios"], "bytes_read": totals["bytes_read"],
            "dram_used_bytes": rep.dram_bytes, "dram_budget_bytes": plan.dram_budget_bytes,
            "verify": totals.get("verify"), "store": str(store.path), "trace": str(reader.path),
            "first_batch_s": totals.get("first_batch_s"), "steady_batch_s": totals.get("steady_batch_s"),
        })
    payload["prediction"] = prediction_check(plan, payload)
    peak = peak_rss_bytes()
    # Memory: the process's peak resident set against the DRAM the plan holds. The overhead is what the
    # process needed besides the DRAM tier: interpreter, libraries and JIT code (rss_before), IO buffers,
    # one batch of lookups, and (with --verify) the pages of the reference reads.
    payload["memory"] = {"peak_rss_bytes": peak, "rss_before_replay_bytes": rss_before,
                         "dram_tier_bytes": payload["dram_used_bytes"],
                         "overhead_bytes": peak - payload["dram_used_bytes"]}
    return payload


def cmd_replay(args: argparse.Namespace) -> int:
    from bench.results import write_run

    if args.json and args.json != "-":
        check_writable(args.json)  # fail now, not after the run has written its result directory
    store = Store.open(args.store)
    with TraceReader(args.trace) as reader:
        plan = make_plan(store, reader, args.policy, args.plan, args.tt_rank)
        payload = run_replay(store, reader, plan, replay_config(args), live=is_live() and not args.no_live)
    run_dir = write_run("replay", sys.argv, payload, store_id=store.store_id, trace_id=reader.trace_id)
    if args.json:
        write_json(args.json, payload)
    lat = payload["latency_s"]
    v = payload.get("verify")
    stdout_console().print(
        f"{payload['policy']}: {payload['batches']} batches, {payload['qps']:.0f} queries/s, "
        f"{payload['lookups_per_s'] / 1e6:.2f} M lookups/s, latency p50 {lat['p50'] * 1e3:.2f} ms "
        f"p99 {lat['p99'] * 1e3:.2f} ms, {payload['ios']} IOs ({format_bytes(payload['bytes_read'])}), "
        f"DRAM {format_bytes(payload['dram_used_bytes'])}"
        + (f", verify ok ({v['exact_bags']} exact bags, {v['tt_bags']} TT bags)" if v else "")
        + (f", batch {pr['measured_batch_s'] * 1e3:.2f} ms vs {pr['predicted_batch_s'] * 1e3:.2f} ms predicted "
           f"({pr['relative_error']:+.0%})" if (pr := payload.get("prediction")) else "")
        + f"; result in {run_dir}")
    return 0


def add_replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("uring", "liburing", "pread", "null"), default="uring",
                   help="IO engine for SSD reads (default uring; null only for overhead measurement)")
    p.add_argument("--qd", type=int, default=128, help="queue depth per device (default 128)")
    p.add_argument("--batches", type=int, default=None, help="replay at most this many batches")
    p.add_argument("--buffered-io", action="store_true",
                   help="allow page-cache reads where the filesystem refuses O_DIRECT (numbers are then not SSD numbers)")
    p.add_argument("--no-pipeline", action="store_true", help="do not overlap the next batch's IO with pooling")
    p.add_argument("--no-live", action="store_true", help="plain periodic lines instead of the live dashboard")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a trace against a store under a policy or plan",
                       description="Serve every lookup of a trace from the tier a plan puts it in, with live stats.\n\n"
                                   "example: screc replay --store stores/tiny --trace traces/tiny.h5 --policy all-ssd --verify",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--trace", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--policy", choices=POLICIES, default=None, help="simple placement (default all-ssd)")
    g.add_argument("--plan", default=None, help="a plan from `screc plan solve`")
    p.add_argument("--tt-rank", type=int, default=None, help="TT rank for --policy all-tt")
    p.add_argument("--verify", action="store_true", help="check every batch against a NumPy reference")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result payload to FILE ('-' = stdout)")
    p.add_argument("--start-batch", type=int, default=0,
                   help="first batch to replay (e.g. after the batches a plan was profiled on)")
    add_replay_args(p)
    p.set_defaults(func=cmd_replay)

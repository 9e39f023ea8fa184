"""``screc compare``: the same trace under each policy, with the same DRAM budget, devices, queue depth and engine.

Policies (rows of the tables):

* all-dram    every row in host DRAM: the CPU-DRAM reference (only when the store fits in memory);
* all-ssd     every lookup read raw from the SSD;
* lru         an LRU row cache in DRAM in front of raw SSD rows (FBGEMM SSD-TBE / HugeCTR HPS style),
              the budget split across tables by their share of lookups;
* static-topk the hottest rows pinned in DRAM up to the budget, the rest raw from the SSD, no TT;
* screc       the MIP plan (hot sets, raw or TT tiers, devices, core split).

Statistics (and the remap the plans use) come from the first ``--profile-batches``
batches; every policy then replays the same later batches, so nothing is measured
on the data it was planned from. The baselines get the planned policies' devices
(tables spread over ``--devices``) and queue depth. Policies are measured in
interleaved rounds after a warm-up (see bench/measure.py); figures are steady
state (first batch excluded), the median of the rounds, with their spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from bench.common import (add_dram_budget_arg, add_json_arg, add_out_dir_arg, ensure_writable_dir,
                          ensure_writable_file, format_bytes, is_live, parse_size_or_share, size_arg,
                          stderr_console, stdout_console, write_json)
from bench.measure import BatchRange, Measurement, add_measure_args, measure_config, measure_rounds, notes
from bench.replay_run import add_replay_args, check_engine_verify, device_clock_args
from bench.tables import fit_table, ms_cell, num
from emulator.plan import Plan
from emulator.replay.engine import ReplayConfig
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

POLICIES = ("all-dram", "all-ssd", "lru", "static-topk", "screc")
OPTIONAL_POLICIES = ("all-tt",)  # on request (--policies): every cold row on TT, rebuilt by the devices
BASELINES = ("all-dram", "all-ssd", "lru")
EXAMPLE = """example:
  screc compare --store stores/ck --trace traces/ck.h5 --dram-budget 5%
  screc compare --store stores/ck --trace traces/ck.h5 --dram-budget 64MiB --devices 2 --rounds 5
  screc compare --store stores/ck --trace traces/ck.h5 --sweep dram-budget=16MiB,64MiB,256MiB --json c.json
  screc compare --store stores/ck --trace traces/ck.h5 --sweep dram-budget=1%,5%,10% --ray auto

columns: queries/s and M lookups/s are steady-state rates (first measured batch excluded), the median of
the rounds; spread = (fastest - slowest round) / median; p50/p99 = per-batch latency over every measured
batch; x all-ssd / x lru = throughput ratios; read and IOs are per batch; TT rel err = the plan's
lookup-weighted TT relative error (from the store's measured errors); predicted ms = the planner's cost
model (modelled), measured ms = the steady-state interval per batch."""


def policy_plans(store: Store, reader: TraceReader, budget_bytes: int, policies: list[str], args,
                 plan_dir: Path) -> tuple[list[tuple[str, Plan]], dict[str, list[str]]]:
    """Every policy's plan (baselines on the planned policies' devices) and the notes of how each was made."""
    from plans.planner import PlanningConfig, PresetRequest, preset_plan, spread_over_devices

    planning = PlanningConfig(dram_budget_bytes=budget_bytes, devices=args.devices, device_dram_bytes=args.device_dram,
                              accuracy_budget=args.accuracy_budget, time_limit_s=args.time_limit, queue_depth=args.qd,
                              calibration=args.calibration, store=str(store.path), trace=str(reader.path),
                              device_profile=args.device_profile, cores=args.cores)
    request = PresetRequest(dram_budget_bytes=budget_bytes, profile_batches=args.profile_batches, planning=planning,
                            plan_dir=str(plan_dir))
    plans, plan_notes = [], {}
    for policy in policies:
        if policy == "all-dram" and store.raw_bytes > args.max_dram_reference:
            plan_notes[policy] = [f"skipped: the model ({format_bytes(store.raw_bytes)}) is larger than "
                                  f"--max-dram-reference ({format_bytes(args.max_dram_reference)})"]
            continue
        result = preset_plan(policy, store, reader, request)
        plan = result.plan
        if policy in BASELINES or policy == "all-tt":
            plan = spread_over_devices(plan, store, args.devices)
            if policy == "all-tt":  # its devices rebuild and pool TT rows: every core compute-centric
                plan = dataclasses.replace(plan, devices=tuple(
                    dataclasses.replace(d, mem_cores=0, compute_cores=_profile_cores(args)) for d in plan.devices))
        plans.append((policy, plan))
        plan_notes[policy] = [str(n) for n in result.notes]
    return plans, plan_notes


def _profile_cores(args) -> int:
    """Cores per device: ``--cores``, else the device profile's count (``auto``: this machine's CPUs)."""
    from emulator.device.profile import load_profile

    return int(args.cores) if args.cores else int(load_profile(args.device_profile).core_count)


def _prediction(plan: Plan, row: dict[str, Any]) -> dict[str, Any] | None:
    """The planner's predicted batch time (modelled) against the measured steady-state interval."""
    perf = (plan.predicted or {}).get("perf") or {}
    predicted = perf.get("total_s") if isinstance(perf, dict) else None
    steady_qps = row.get("steady_qps")
    if not isinstance(predicted, (int, float)) or isinstance(predicted, bool) or not predicted > 0 or not steady_qps:
        return None
    measured = row["samples"] / row["batches"] / steady_qps if row.get("batches") else None
    if not measured:
        return None
    return {"predicted_batch_s": predicted, "basis": "modelled", "measured_batch_s": measured,
            "relative_error": measured / predicted - 1.0, "bottleneck": perf.get("bottleneck")}


def compare_rows(store: Store, measurements: list[Measurement], budget_bytes: int,
                 plan_notes: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for m in measurements:
        row = m.row()
        pred = m.plan.predicted or {}
        rows_of = {t.name: t.rows for t in store.tables}
        row.update({
            "dram_budget_bytes": budget_bytes, "notes": plan_notes.get(m.name, []),
            "tt_weighted_rel_error": pred.get("weighted_rel_error", 0.0 if m.name != "screc" else None),
            "tt_tables": sum(1 for t in m.plan.tables if t.cold_tier == "ssd_tt" and t.hot_rows < rows_of[t.table]),
        })
        row["prediction"] = _prediction(m.plan, row)
        rows.append(row)
    for key in ("all-dram", "all-ssd", "lru"):
        base = next((r for r in rows if r["policy"] == key), None)
        for r in rows:
            ok = base and base.get("steady_qps") and r.get("steady_qps")
            r[f"speedup_vs_{key.replace('-', '_')}"] = r["steady_qps"] / base["steady_qps"] if ok else None
            be, re_ = (base or {}).get("emulated") or {}, r.get("emulated") or {}
            ok = be.get("emulated_qps") and re_.get("emulated_qps")
            r[f"emulated_speedup_vs_{key.replace('-', '_')}"] = re_["emulated_qps"] / be["emulated_qps"] if ok else None
    return rows


SCREC_PAPER_SPEEDUP = 55.77  # SCRec (arXiv 2504.00520): over a CPU-DRAM server (partly simulated)


def screc_paper_note(row: dict[str, Any], profile: str) -> str:
    """SCRec's reported speed-up beside ours, with what differs (the emulated figure is labelled emulated)."""
    e = row["emulated"]
    return (f"SCRec reports {SCREC_PAPER_SPEEDUP}x over a CPU-DRAM server; here screc is "
            f"{row['emulated_speedup_vs_all_dram']:.2f}x all-dram (emulated, {profile} profile). What differs: the "
            f"all-dram reference is this machine's {row.get('host_threads') or 'every'} host thread(s), not a "
            f"multi-core server; the host's serial work per batch (this emulator's Python preparation, "
            f"{e.get('serial_s', 0) * 1e3:.1f} ms median) is emulated as measured; the devices' core rates are "
            f"the profile's assumptions; SCRec's models, traces and device count are not these.")


def render(rows: list[dict[str, Any]], budget_bytes: int, raw_bytes: int, rounds: int) -> RenderableType:
    """Tables that fit 80 columns for one budget: throughput; resources per batch; the plans' predictions."""
    head = Text(f"DRAM budget {format_bytes(budget_bytes)} ({budget_bytes / raw_bytes:.1%} of the "
                f"{format_bytes(raw_bytes)} model)", style="bold")
    speed = fit_table(f"throughput: steady state, median of {rounds} round(s)",
                      ("policy", "queries/s", "spread", "M lookups/s", "p50 ms", "p99 ms", "x all-ssd", "x lru"),
                      [(r["policy"], num(r.get("steady_qps"), ",.0f"), num(r.get("qps_spread"), ".0%"),
                        num(r.get("steady_lookups_per_s"), ".2f", 1e-6), ms_cell(r["latency_s"].get("p50")),
                        ms_cell(r["latency_s"].get("p99")), num(r.get("speedup_vs_all_ssd"), ".2f"),
                        num(r.get("speedup_vs_lru"), ".2f")) for r in rows])
    res = fit_table("resources per batch",
                    ("policy", "DRAM used", "read", "IOs", "TT tables", "TT rel err"),
                    [(r["policy"], format_bytes(r["dram_used_bytes"]), format_bytes(r["bytes_read_per_batch"]),
                      f"{r['ios_per_batch']:,.0f}", str(r["tt_tables"]),
                      "-" if not r.get("tt_weighted_rel_error") else f"{r['tt_weighted_rel_error']:.4f}")
                     for r in rows])
    parts: list[RenderableType] = [head, speed, res]
    emu = [r for r in rows if (r.get("emulated") or {}).get("emulated_qps")]
    if emu:
        prof = emu[0]["emulated"]["profile"]
        parts.append(fit_table(f"emulated under the {prof} profile (device clock); energy modelled",
                               ("policy", "queries/s", "x all-dram", "x all-ssd", "x lru", "link/batch", "q/J"),
                               [(r["policy"], num(r["emulated"]["emulated_qps"], ",.0f"),
                                 num(r.get("emulated_speedup_vs_all_dram"), ".2f"),
                                 num(r.get("emulated_speedup_vs_all_ssd"), ".2f"),
                                 num(r.get("emulated_speedup_vs_lru"), ".2f"),
                                 format_bytes(r["emulated"].get("link_bytes_per_batch") or 0),
                                 num(r["emulated"].get("queries_per_joule"), ",.0f")) for r in emu]))
        sc = next((r for r in emu if r["policy"] == "screc"), None)
        if sc is not None and sc.get("emulated_speedup_vs_all_dram"):
            parts.append(Text(screc_paper_note(sc, prof), style="dim"))
    pred = [(r["policy"], r["prediction"]) for r in rows if r.get("prediction")]
    if pred:
        parts.append(fit_table("batch time: the planner's prediction (modelled) against the measured one",
                               ("policy", "predicted ms (modelled)", "measured ms", "error"),
                               [(name, ms_cell(p["predicted_batch_s"]), ms_cell(p["measured_batch_s"]),
                                 f"{p['relative_error']:+.0%}") for name, p in pred]))
    return Group(*parts)


def render_notes(rows: list[dict[str, Any]], measure_notes: list[str], skipped: dict[str, list[str]]) -> list[str]:
    """The measurement notes, then each plan note once, led by the policies it applies to."""
    lines = [f"note: {n}" for n in measure_notes]
    by_note: dict[str, list[str]] = {}
    for r in rows:
        for n in r.get("notes", []):
            by_note.setdefault(n, []).append(r["policy"])
    for policy, ns in skipped.items():
        if not any(r["policy"] == policy for r in rows):
            for n in ns:
                by_note.setdefault(n, []).append(policy)
    return lines + [f"{', '.join(policies)}: {n}" for n, policies in by_note.items()]


def _budgets(args, model_bytes: int) -> list[int]:
    if args.sweep:
        key, sep, values = args.sweep.partition("=")
        if key != "dram-budget" or not sep or not values:
            raise InputError(f"--sweep {args.sweep!r} is not dram-budget=SIZE,SIZE,...")
        return [parse_size_or_share(v, "--sweep").resolve(model_bytes) for v in values.split(",") if v.strip()]
    if not args.dram_budget:
        raise InputError("compare needs --dram-budget SIZE or --sweep dram-budget=SIZE,...")
    return [args.dram_budget.resolve(model_bytes)]


def _measure_on_cluster(args, store, reader, budgets, policies, plan_dir, measured, replay, mcfg, err) -> list:
    """Every budget's plans made here, then each budget's interleaved rounds measured as one Ray task on a node
    with a free replay slot: [((plans, plan notes), emulator.cluster.sweep.NodeResult)] in budget order."""
    from emulator.cluster.connect import connect
    from emulator.cluster.sweep import ReplayJob, replay_on_cluster

    connect(args.ray)
    planned = [policy_plans(store, reader, budget, policies, args, plan_dir) for budget in budgets]
    jobs = [ReplayJob(f"dram-budget={b}", (plans, measured, replay, mcfg)) for b, (plans, _) in zip(budgets, planned)]
    done = replay_on_cluster(measure_rounds, store.path, reader.path, jobs, on_done=lambda r: err.print(
        f"[dim]{r.key}: measured on {r.node['address']} ({r.node['hostname']}) in {r.seconds:.1f} s[/]"))
    return list(zip(planned, done))


def _check_args(args) -> tuple[list[str], Path]:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES + OPTIONAL_POLICIES]
    if bad or not policies:
        raise InputError(f"unknown policies {', '.join(bad) or '(none)'} (choose from "
                         f"{', '.join(POLICIES + OPTIONAL_POLICIES)})")
    if args.devices < 1:
        raise InputError(f"--devices must be >= 1, got {args.devices}")
    if args.qd < 1:
        raise InputError(f"--qd must be >= 1, got {args.qd}")
    if args.batches is not None and args.batches < 2:
        raise InputError(f"--batches must be >= 2 (the first batch is not steady state), got {args.batches}")
    check_engine_verify(args.engine, False)
    plan_dir = Path(args.plan_dir) if args.plan_dir else Path(args.out_dir) / "plans"
    for d in (args.out_dir, plan_dir):
        ensure_writable_dir(d)
    ensure_writable_file(args.json)
    return policies, plan_dir


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.live import LiveView
    from bench.results import write_run

    policies, plan_dir = _check_args(args)
    mcfg = measure_config(args)
    store = Store.open(args.store)
    budgets = _budgets(args, store.raw_bytes)
    err = stderr_console()
    out = err if args.json == "-" else stdout_console()  # bare --json: stdout holds the JSON only
    live = is_live() and not args.no_live
    profile, rates = device_clock_args(args)
    if args.host_threads is not None and args.host_threads < 1:
        raise InputError(f"--host-threads must be >= 1, got {args.host_threads}")
    replay = ReplayConfig(engine=args.engine, queue_depth=args.qd, allow_buffered=args.buffered_io,
                          pipeline=not args.no_pipeline, host_threads=args.host_threads, offload=args.offload,
                          device_profile=profile, host_rates=rates)
    with TraceReader(args.trace) as reader:
        if args.profile_batches is None:
            args.profile_batches = max(1, reader.num_batches // 2)
        if not 1 <= args.profile_batches < reader.num_batches:
            raise InputError(f"--profile-batches must leave batches to replay (trace has {reader.num_batches})",
                             args.trace)
        count = reader.num_batches - args.profile_batches
        measured = BatchRange(args.profile_batches, min(count, args.batches) if args.batches else count)
        plan_dir.mkdir(parents=True, exist_ok=True)
        sweep = []
        on_nodes = _measure_on_cluster(args, store, reader, budgets, policies, plan_dir, measured, replay, mcfg, err) \
            if args.ray else None
        for i, budget in enumerate(budgets):
            if on_nodes is not None:  # measured as Ray tasks, one budget per task (see emulator.cluster.sweep)
                (plans, plan_notes), done = on_nodes[i]
                ms = done.value
            else:
                plans, plan_notes = policy_plans(store, reader, budget, policies, args, plan_dir)
                ms = measure_rounds(store, reader, plans, measured, replay, mcfg,
                                    watch=lambda stats: LiveView(stats.snapshot, err, live=live, transient=True),
                                    on_step=lambda s: err.print(f"[dim]{s}[/]", highlight=False))
            rows = compare_rows(store, ms, budget, plan_notes)
            mnotes = notes(ms, mcfg)
            sweep.append({"dram_budget_bytes": budget, "rows": rows, "notes": mnotes})
            if on_nodes is not None:
                sweep[-1]["measured_on"] = on_nodes[i][1].record()
                mnotes.append(f"measured on node {on_nodes[i][1].node['address']} "
                              f"({on_nodes[i][1].node['hostname']}) as a Ray task holding its replay slot [measured]")
            out.print(render(rows, budget, store.raw_bytes, mcfg.rounds))
            for line in render_notes(rows, mnotes, plan_notes):
                out.print(line, markup=False, highlight=False)  # notes end in [measured] / [modelled]
        trace_id = reader.trace_id
    payload: dict[str, Any] = sweep[0] if len(sweep) == 1 else {"sweep": sweep}
    payload.update({"store_raw_bytes": store.raw_bytes, "profile_batches": args.profile_batches,
                    "replayed_batches": [measured.start, measured.start + measured.count], "engine": args.engine,
                    "queue_depth": args.qd, "devices": args.devices, "measure": dataclasses.asdict(mcfg),
                    "store": str(store.path), "trace": str(args.trace), "throughput": "steady state, median of rounds"})
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for e in sweep for r in e["rows"]]
    run_dir = write_run("compare", sys.argv, payload, store_id=store.store_id, trace_id=trace_id,
                        tables={"compare": flat}, store_path=str(store.path), runs_dir=args.out_dir)
    if args.json:
        write_json(args.json, payload)
    out.print(f"result in {run_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="replay one trace under every policy with the same DRAM budget",
                       description=__doc__.replace("``", "").replace("screc compare: t", "T", 1) + "\n" + EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--trace", required=True)
    add_dram_budget_arg(p)
    p.add_argument("--sweep", help="dram-budget=SIZE,SIZE,... (one comparison per budget)")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help=f"comma-separated subset of {', '.join(POLICIES + OPTIONAL_POLICIES)} (default: all but "
                        f"{', '.join(OPTIONAL_POLICIES)})")
    p.add_argument("--profile-batches", type=int, default=None,
                   help="batches used for statistics and plans; the rest are replayed (default: half)")
    p.add_argument("--devices", type=int, default=1, help="emulated devices, for every policy (default 1)")
    p.add_argument("--cores", type=int, default=None,
                   help="cores per device for the planned policies and all-tt (default: the device profile's)")
    p.add_argument("--device-dram", type=size_arg("--device-dram"), default=4 << 30,
                   help="device memory for TT cores (default 4GiB)")
    p.add_argument("--accuracy-budget", type=float, default=None, help="bound on the lookup-weighted TT error")
    p.add_argument("--calibration", default=None,
                   help="calibration JSON from `screc calibrate` (without it the plans use modelled rates)")
    p.add_argument("--time-limit", type=float, default=30.0, help="MIP time limit in seconds (default 30)")
    p.add_argument("--max-dram-reference", type=size_arg("--max-dram-reference"),
                   default=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3,
                   help="run all-dram only when the model is at most this big (default a third of RAM)")
    p.add_argument("--plan-dir", default=None, help="where the policies' plans are written (default OUT_DIR/plans)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="measure each budget of the sweep as a Ray task on a cluster node with a free replay slot "
                        "(HOST:PORT or auto; the store and trace must be at the same paths on every node; "
                        "docs/cluster.md)")
    add_json_arg(p)
    add_out_dir_arg(p)
    add_replay_args(p)
    add_measure_args(p)
    p.set_defaults(func=cmd_compare)

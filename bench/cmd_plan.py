"""``screc plan solve | show``: decide where every row lives, and look at the decision."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from bench.common import (emit_json, add_dram_budget_arg, add_json_arg, add_model_arg, add_qd_arg, ensure_writable_file,
                          format_bytes, size_arg, stdout_console, write_json)
from bench.plan_explain import EXPLAIN_HELP, add_explain_args, explain_payload, render_explain
from bench.plan_sizing import add_size_parser
from emulator.plan import Plan
from plans.planner import DEVICE_PROFILES, PLANNER_NAMES, PlanningConfig, run_planning, save_planned
from tracegen.errors import InputError

PLAN_COLUMNS = """columns of the plan table (per batch, predicted by the planner's cost model, so modelled):
  hot rows      rows kept in host DRAM (the most-accessed rows after remapping); hot share: share of the
                table's lookups they serve
  tier, rank    where the other (cold) rows are served from: ssd_raw (raw rows read from the SSD) or ssd_tt
                (rebuilt from TT cores of that rank); dram when every row is hot; a row format after it
                (fp16, int8, int4) when the table's DRAM and raw rows are stored in that format
  device        the emulated device (dev0, dev1, ...) that serves the cold rows
  DRAM lookups, cold lookups   lookups per batch served from DRAM / from the cold tier
  IO pages      4 KiB pages read per batch; TT rows: unique rows rebuilt from TT cores per batch
"""
SOLVE_EXAMPLE = """example:
  screc calibrate --store stores/tiny -o runs/cal.json
  screc plan solve --store stores/tiny --trace traces/tiny.h5 --profile-batches 50 --calibration runs/cal.json \\
      --dram-budget 64KiB --devices 2 --cores 4 --accuracy-budget 0.02 -o runs/plan.json
  screc plan solve --model meta-2021 --modelled --dram-budget 5% --devices 4 --device-profile smartssd \\
      -o runs/meta.json --json

With --device-profile local (the default) the plan is costed as the emulator runs on this machine: one host
thread does every core's work, overlapped only with the devices' reads (host costs from `screc calibrate`;
without --calibration, modelled ones). host, smartssd or a profile file: devices whose cores and IO all work in
parallel, their figures from the device profile (`screc plan profiles` lists them with their sources).
Every note printed before the plan ends in [measured] or [modelled]: what that part of the plan rests on.
--dram-budget takes a size with a unit (64KiB, 2GB) or a share of the model (5%); a bare number is refused.

""" + PLAN_COLUMNS
SHOW_EXAMPLE = """example:
  screc plan show runs/plan.json
  screc plan show runs/plan.json --store stores/tiny     (refuses a plan made for another store or a hand-edited
                                                          entry the store does not match)
  screc plan show runs/plan.json --json runs/plan-copy.json
  screc plan show runs/plan.json --explain --store stores/tiny --trace traces/tiny.h5 --profile-batches 50

""" + PLAN_COLUMNS + "\n" + EXPLAIN_HELP


def planning_config(args: argparse.Namespace) -> PlanningConfig:
    """The parsed ``plan solve`` flags as a :class:`PlanningConfig` (the budget resolved against the model)."""
    if args.modelled:
        if not args.model:
            raise InputError("--modelled needs --model (a preset name, a spec file, or meta-2021)")
    elif not (args.store and args.trace):
        raise InputError("plan solve needs --store and --trace (or --model NAME --modelled)")
    if args.devices < 1:
        raise InputError(f"--devices must be >= 1, got {args.devices}")
    if args.cores is not None and args.cores < 1:
        raise InputError(f"--cores must be >= 1, got {args.cores}")
    if args.accuracy_budget is not None and not (0 <= args.accuracy_budget < math.inf):
        raise InputError(f"--accuracy-budget must be a finite number >= 0, got {args.accuracy_budget}")
    if not (0 < args.time_limit < math.inf):
        raise InputError(f"--time-limit must be a finite number of seconds > 0, got {args.time_limit}")
    if args.profile_batches is not None and args.profile_batches < 1:
        raise InputError(f"--profile-batches must be >= 1, got {args.profile_batches}")
    if args.folds < 1:
        raise InputError(f"--folds must be >= 1, got {args.folds}")
    if args.qd < 1:
        raise InputError(f"--qd must be >= 1, got {args.qd}")
    return PlanningConfig(dram_budget_bytes=args.dram_budget.resolve(_model_bytes(args)), planner=args.planner,
                          store=args.store, trace=args.trace, model=args.model if args.modelled else None,
                          profile_batches=args.profile_batches, folds=args.folds, calibration=args.calibration,
                          devices=args.devices, cores=args.cores, device_profile=args.device_profile,
                          device_dram_bytes=args.device_dram, accuracy_budget=args.accuracy_budget,
                          accuracy_mode=args.accuracy_mode, time_limit_s=args.time_limit, solver=args.solver,
                          queue_depth=args.qd, formulation=args.formulation)


def _model_bytes(args: argparse.Namespace) -> int:
    """The model's embedding bytes, for a ``--dram-budget`` given as a share (opens nothing otherwise)."""
    if args.dram_budget.share is None:
        return 0
    if args.modelled:
        from tracegen.presets import load_model

        return int(load_model(args.model).total_bytes)
    from emulator.store.store import Store

    return Store.open(args.store).raw_bytes


def _table_rows(plan: Plan, label: str) -> tuple[Table, Table]:
    """Per table: where its rows live, then its predicted load per batch (two tables, to fit 80 columns)."""
    per = dict(plan.predicted).get("tables", {})
    place = Table(title=f"plan by {plan.planner} for store {plan.store_id[:12]}{label}")
    load = Table(title=f"predicted load per batch{label}")
    for col in ("table", "rows", "hot rows", "hot share", "tier", "rank", "device"):
        place.add_column(col, justify="left" if col in ("table", "tier") else "right", overflow="fold")
    for col in ("table", "DRAM lookups", "cold lookups", "IO pages", "TT rows"):
        load.add_column(col, justify="left" if col == "table" else "right", overflow="fold")
    for p in plan.tables:
        d = per.get(p.table, {})
        rows = d.get("rows")
        looks = d.get("lookups_per_batch") or 0.0
        hot_looks = d.get("dram_lookups", 0.0)
        all_hot = rows is not None and p.hot_rows >= rows
        place.add_row(p.table, "?" if rows is None else f"{rows:,}", f"{p.hot_rows:,}",
                      f"{hot_looks / looks:.1%}" if looks else "-",
                      ("dram" if all_hot else p.cold_tier) + ("" if p.row_format == "fp32" else f" {p.row_format}"),
                      "-" if p.tt_rank is None or all_hot else str(p.tt_rank), "-" if all_hot else f"dev{p.device}")
        load.add_row(p.table, f"{hot_looks:,.0f}", f"{looks - hot_looks:,.0f}", f"{d.get('io_pages', 0.0):,.0f}",
                     f"{d.get('tt_rebuild_rows', 0.0):,.0f}")
    return place, load


def _totals(pred: dict[str, Any], label: str) -> Table:
    perf, storage = pred.get("perf", {}), pred.get("storage", {})
    tot = Table(title=f"predicted per batch{label}")
    tot.add_column("resource")
    tot.add_column("seconds", justify="right")
    tot.add_column("bytes used", justify="right")
    if perf and perf.get("execution") == "host-serial":
        tot.add_row("host thread (every core, serial)", f"{perf['host_s']:.6f}",
                    format_bytes(storage.get("host_dram_bytes", 0)))
        tot.add_row("  of which shared (batch, tables, lookups)", f"{perf['dram_s']:.6f}", "")
    elif perf:
        tot.add_row("host DRAM", f"{perf['dram_s']:.6f}", format_bytes(storage.get("host_dram_bytes", 0)))
    if perf:
        tot.add_row("batch (max)", f"{perf['total_s']:.6f}", f"bottleneck {perf.get('bottleneck', '?')}")
        tot.add_row("weighted TT error", f"{pred.get('weighted_rel_error', 0.0):.4f}", "")
    drift = pred.get("drift") or {}
    if drift.get("hit_ratio") is not None:
        b = drift.get("batches", ["?", "?"])
        tot.add_row(f"hot-set hits on later batches [{b[0]}, {b[1]})",
                    f"{drift['hit_ratio']:.1%} of {drift['oracle_hit_ratio']:.1%}",
                    f"{drift['new_row_share']:.1%} new rows")
    return tot


def _devices(plan: Plan, pred: dict[str, Any]) -> Table:
    perf, storage = pred.get("perf", {}), pred.get("storage", {})
    dev = Table(title="devices (per batch, ms)", caption="mem / compute: memory- and compute-centric cores")
    serial = perf.get("execution") == "host-serial"
    core_cols = ("host raw", "host TT") if serial else ("mem ms", "compute ms")
    for col in ("device", "mem", "compute", "IO ms", *core_cols, "dev DRAM", "SSD"):
        dev.add_column(col, justify="left" if col == "device" else "right", overflow="fold")
    for i, dp in enumerate(plan.devices):
        get = (lambda k: perf[k][i] * 1e3 if perf and i < len(perf.get(k, [])) else float("nan"))
        getb = (lambda k: storage[k][i] if storage and i < len(storage.get(k, [])) else 0)
        dev.add_row(f"dev{i}", str(dp.mem_cores), str(dp.compute_cores), f"{get('io_s'):.3f}",
                    f"{get('mem_core_s'):.3f}", f"{get('compute_core_s'):.3f}", format_bytes(getb("device_dram_bytes")),
                    format_bytes(getb("ssd_bytes")))
    return dev


def _solver_lines(solver: dict[str, Any]) -> list[str]:
    if not solver:
        return []
    s = solver
    gap = "unknown" if s.get("gap") is None else f"{s['gap']:.2e}"
    lines = [f"solver {s.get('solver')}: {s.get('status')}, gap {gap} ({s.get('gap_source')}), "
             f"{s.get('solve_time_s', 0):.2f} s, {s.get('variables')} variables, {s.get('constraints')} constraints"]
    tb = s.get("tie_break")
    if tb:
        lines.append(f"tie-break (least total work at that batch time): {tb.get('status')}"
                     + (f", {tb['solve_time_s']:.2f} s" if tb.get("solve_time_s") is not None else "")
                     + (f" ({tb['reason']})" if tb.get("reason") else ""))
    return lines


def render_plan(plan: Plan) -> Group:
    """Per-table placement and predicted load, then totals and each device's core split (pure)."""
    pred: dict[str, Any] = dict(plan.predicted)
    label = " (modelled)" if pred.get("modelled") else ""
    place, load = _table_rows(plan, label)
    return Group(place, load, _totals(pred, label), _devices(plan, pred), *_solver_lines(dict(plan.solver)))


def cmd_solve(args: argparse.Namespace) -> int:
    ensure_writable_file(args.output)  # before solving: a bad -o must not leave the remap file behind
    ensure_writable_file(args.json)
    cfg = planning_config(args)
    result = run_planning(cfg)
    plan = save_planned(result, args.output)
    if emit_json(args.json, {**plan.to_dict(), "notes": [dataclasses.asdict(n) for n in result.notes]}):
        return 0
    con = stdout_console()
    for n in result.notes:
        con.print(f"note: {n}", markup=False)  # "[modelled]" is text, not rich markup
    con.print(render_plan(plan))
    con.print(f"wrote {args.output}" + (f" and {Path(plan.remap).name}" if plan.remap else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    if args.store:
        from emulator.store.store import Store
        from plans.planner import load_plan

        plan = load_plan(args.plan, Store.open(args.store))
    if args.explain:
        return _show_explained(args, plan)
    if args.json:
        write_json(args.json, plan.to_dict())
    if args.json != "-":
        try:
            view = render_plan(plan)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise InputError(f"the plan's 'predicted' or 'solver' section is malformed ({e.__class__.__name__}: {e})",
                             args.plan) from None
        stdout_console().print(view)
    return 0


def _show_explained(args: argparse.Namespace, plan: Plan) -> int:
    """``plan show --explain``: the plan, then why (``bench/plan_explain.py``)."""
    if not args.store:
        raise InputError("--explain needs --store and --trace (the statistics the plan was made on)")
    from emulator.store.store import Store

    ensure_writable_file(args.json)
    payload = explain_payload(args, plan, Store.open(args.store))
    if emit_json(args.json, {"plan": plan.to_dict(), "explain": payload}):
        return 0
    stdout_console().print(render_plan(plan))
    stdout_console().print(render_explain(payload))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("solve", help="choose hot sets, tiers, devices and core splits (MIP or a baseline)",
                              description="Measure access statistics, then plan placement under budgets.",
                              epilog=SOLVE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="store directory (TT variants and the store id come from it)")
    p.add_argument("--trace", help="trace file (HDF5) to measure statistics on")
    p.add_argument("--profile-batches", type=int, help="use the first N batches (default: all)")
    p.add_argument("--folds", type=int, default=10,
                   help="cross-fit the statistics: measure each of N blocks of the profile under a remap ranked "
                        "on the others, so rows unseen while ranking cost what they will cost later (default 10; "
                        "1 = in sample, optimistic)")
    add_model_arg(p, extra="; with --modelled")
    p.add_argument("--modelled", action="store_true", help="plan from Zipf parameters alone (labelled modelled)")
    add_dram_budget_arg(p, required=True)
    p.add_argument("--devices", type=int, default=1, help="computational-storage devices dev0, dev1, ... (default 1)")
    p.add_argument("--cores", type=int, help="cores per device (default: this machine's CPUs; a device profile's "
                                              "own count, e.g. smartssd: 8)")
    p.add_argument("--device-profile", default="local", metavar="NAME|FILE",
                   help=f"{' | '.join(DEVICE_PROFILES)} | a .toml/.json device profile file. local (default): the "
                        "emulator on this machine, one host thread; host: this machine as a device whose cores and "
                        "IO work in parallel (speed 1, cores = host threads, the measured disk); smartssd: "
                        "SmartSSD-like devices (modelled). `screc plan profiles` lists every figure and its source")
    p.add_argument("--device-dram", default=4 << 30, type=size_arg("--device-dram"), metavar="SIZE",
                   help="device memory for TT cores (local profile; default 4GiB)")
    p.add_argument("--planner", choices=PLANNER_NAMES, default="screc",
                   help="screc: the MIP; greedy, static-topk, all-ssd: baselines (default screc)")
    p.add_argument("--accuracy-budget", type=float,
                   help="max lookup-weighted mean relative TT error (0: no TT; default: unconstrained)")
    p.add_argument("--accuracy-mode", choices=("weighted", "per-table"), default="weighted")
    p.add_argument("--calibration", help="calibration JSON from `screc calibrate` (default: modelled rates)")
    p.add_argument("--time-limit", type=float, default=60.0, help="MIP time limit in seconds (default 60)")
    p.add_argument("--solver", choices=("cbc", "highs"), default="cbc")
    p.add_argument("--formulation", choices=("auto", "exact", "pooled"), default="auto",
                   help="MIP form: exact (devices and core splits in the MIP), pooled (identical devices pooled, "
                        "then assigned; gap against the pooled bound); auto: pooled above 32 tables x devices")
    add_qd_arg(p)
    p.add_argument("-o", "--output", required=True, help="plan JSON to write (the remap goes beside it)")
    add_json_arg(p, "the plan and the notes on how it was made")
    p.set_defaults(func=cmd_solve)

    s = subparsers.add_parser("show", help="show a plan: placement per table, predicted times, core splits",
                              description="Show a plan file.", epilog=SHOW_EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("plan", help="plan JSON")
    s.add_argument("--store", help="refuse the plan unless it was made for this store")
    add_json_arg(s, "the plan (with --explain: and the explanation)")
    add_explain_args(s)
    s.set_defaults(func=cmd_show)
    add_size_parser(subparsers)

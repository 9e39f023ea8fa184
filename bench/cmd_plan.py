"""``screc plan solve | show``: decide where every row lives, and look at the decision."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from bench.common import format_bytes, parse_size, stdout_console, write_json
from emulator.plan import Plan
from tracegen.atomic import check_writable
from tracegen.errors import InputError

SOLVE_EXAMPLE = """example:
  screc calibrate --store stores/tiny -o runs/cal.json
  screc plan solve --store stores/tiny --trace traces/tiny.h5 --profile-batches 50 --calibration runs/cal.json \\
      --dram-budget 64KiB --devices 2 --cores 4 --accuracy-budget 0.02 -o runs/plan.json
  screc plan solve --model meta-2021 --modelled --dram-budget 64GB --devices 4 --device-profile smartssd -o runs/meta.json

With --device-profile local (the default) the plan is costed as the emulator runs on this machine: one host
thread does every core's work, overlapped only with the devices' reads (host costs from `screc calibrate`;
without --calibration, modelled ones). smartssd: modelled devices whose cores and IO all work in parallel.
"""
SHOW_EXAMPLE = """example:
  screc plan show runs/plan.json
  screc plan show runs/plan.json --store stores/tiny     (refuses a plan made for another store)
"""


@dataclass(frozen=True)
class SolveConfig:
    output: Path
    dram_budget_bytes: int
    planner: str
    devices: int
    cores: int | None
    device_profile: str
    device_dram_bytes: int
    accuracy_budget: float | None
    accuracy_mode: str
    time_limit_s: float
    solver: str
    queue_depth: int
    formulation: str = "auto"
    store: str | None = None
    trace: str | None = None
    profile_batches: int | None = None
    calibration: str | None = None
    model: str | None = None
    folds: int = 10


def _config(args: argparse.Namespace) -> SolveConfig:
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
    return SolveConfig(output=Path(args.output), dram_budget_bytes=parse_size(args.dram_budget, "--dram-budget"),
                       planner=args.planner, devices=args.devices, cores=args.cores, device_profile=args.device_profile,
                       device_dram_bytes=parse_size(args.device_dram, "--device-dram"),
                       accuracy_budget=args.accuracy_budget, accuracy_mode=args.accuracy_mode,
                       time_limit_s=args.time_limit, solver=args.solver, queue_depth=args.queue_depth,
                       formulation=args.formulation, store=args.store, trace=args.trace, profile_batches=args.profile_batches,
                       calibration=args.calibration, model=args.model if args.modelled else None, folds=args.folds)


def solve_plan(cfg: SolveConfig, measured: dict | None = None) -> tuple[Plan, list[str]]:
    """Statistics -> devices -> planner -> plan (saved with its remap). Returns the plan and notes to show.

    ``measured``: a dict shared between calls on the same store, trace, profile and folds (``screc bench predict``
    plans several budgets on one profile): the measured statistics are computed once and kept there."""
    from plans.baselines import make_planner
    from plans.calibration import default_calibration, local_profiles, smartssd_profiles
    from plans.types import Budgets, Calibration, PlannerOptions

    notes: list[str] = []
    remap = None
    counts = later = later_range = None
    if cfg.model:
        from plans.modelled import modelled_stats
        from tracegen.presets import load_model

        stats = modelled_stats(load_model(cfg.model))
        notes.append(f"statistics modelled from the Zipf parameters of {cfg.model}")
    else:
        from emulator.store.store import Store
        from plans.stats import attach_store, trace_stats
        from tracegen.trace_io import TraceReader

        store = Store.open(cfg.store)
        key = (str(cfg.store), str(cfg.trace), cfg.profile_batches, cfg.folds)
        if measured is not None and measured.get("key") == key:
            stats, remap, counts, later, later_range, stop = measured["value"]
        else:
            with TraceReader(cfg.trace) as reader:
                stop = reader.num_batches if cfg.profile_batches is None else min(cfg.profile_batches,
                                                                                  reader.num_batches)
                stats, remap, counts = trace_stats(reader, (0, stop), folds=cfg.folds)
                if stop < reader.num_batches:  # the hot sets' drift on as many later batches as were profiled
                    from plans.stats import count_accesses

                    later_range = (stop, min(reader.num_batches, 2 * stop))
                    later = count_accesses(reader, *later_range)
            stats = attach_store(stats, store)
            if measured is not None:
                measured.update(key=key, value=(stats, remap, counts, later, later_range, stop))
        notes.append(f"statistics measured on batches [0, {stop}) of {cfg.trace}: {stats.notes[0]}")
    if cfg.calibration:
        calib = Calibration.load(cfg.calibration)
    else:
        calib = default_calibration()
        notes.append("no --calibration: modelled default rates (run `screc calibrate` to measure)")
    if cfg.device_profile == "smartssd":
        devices = smartssd_profiles(cfg.devices, **({"cores": cfg.cores} if cfg.cores else {}))
        notes.append("devices modelled as SmartSSD-like (plans.calibration.SMARTSSD_*)")
    else:
        devices = local_profiles(calib, cfg.devices, cfg.cores, queue_depth=cfg.queue_depth,
                                 device_dram_bytes=cfg.device_dram_bytes)
        if devices[0].execution == "host-serial":
            notes.append("local devices: the emulator on this machine (one host thread runs every core, "
                         f"overlapped with IO at queue depth {cfg.queue_depth}); host costs "
                         f"{'measured' if calib.host.source == 'measured' else 'modelled'}")
        else:
            notes.append("calibration has no host costs (version 1): local devices costed with the "
                         "parallel-resource model; re-run `screc calibrate`")
    budgets = Budgets(cfg.dram_budget_bytes, cfg.accuracy_budget, cfg.accuracy_mode)
    options = PlannerOptions(queue_depth=cfg.queue_depth, solver=cfg.solver, time_limit_s=cfg.time_limit_s,
                             formulation=cfg.formulation)
    plan = make_planner(cfg.planner, options).plan(stats, calib, budgets, devices)
    if later is not None:
        from plans.remap import plan_drift

        drift = plan_drift(counts, later, [plan.placement(ts.name).hot_rows for ts in stats.tables])
        drift["batches"] = list(later_range)
        plan = dataclasses.replace(plan, predicted={**plan.predicted, "drift": drift})
        if drift["hit_ratio"] is not None:
            notes.append(f"hot-set drift on later batches [{later_range[0]}, {later_range[1]}): the plan's hot rows "
                         f"serve {drift['hit_ratio']:.1%} of the later lookups of the {drift['tables']} partly hot "
                         f"tables, their own top rows would serve {drift['oracle_hit_ratio']:.1%}; "
                         f"{drift['new_row_share']:.1%} of those top rows are new")
    if remap is not None:
        remap_path = cfg.output.with_name(cfg.output.stem + ".remap.h5")
        remap.save(remap_path)
        plan = dataclasses.replace(plan, remap=remap_path.name)
    plan.save(cfg.output)
    return plan, notes


def render_plan(plan: Plan) -> Group:
    """Per-table placement and predicted load, then totals and each device's core split (pure)."""
    pred: dict[str, Any] = dict(plan.predicted)
    per = pred.get("tables", {})
    label = " (modelled)" if pred.get("modelled") else ""
    t = Table(title=f"plan by {plan.planner} for store {plan.store_id[:12]}{label}")
    for col in ("table", "rows", "hot rows", "hot share", "tier", "rank", "device", "DRAM lookups", "cold lookups",
                "IO pages", "TT rows"):
        t.add_column(col, justify="left" if col in ("table", "tier") else "right")
    for p in plan.tables:
        d = per.get(p.table, {})
        rows = d.get("rows")
        looks = d.get("lookups_per_batch") or 0.0
        all_hot = rows is not None and p.hot_rows >= rows
        t.add_row(p.table, "?" if rows is None else f"{rows:,}", f"{p.hot_rows:,}",
                  f"{d.get('dram_lookups', 0.0) / looks:.1%}" if looks else "-",
                  "dram" if all_hot else p.cold_tier, "-" if p.tt_rank is None or all_hot else str(p.tt_rank),
                  "-" if all_hot else str(p.device), f"{d.get('dram_lookups', 0.0):,.0f}",
                  f"{looks - d.get('dram_lookups', 0.0):,.0f}", f"{d.get('io_pages', 0.0):,.0f}",
                  f"{d.get('tt_rebuild_rows', 0.0):,.0f}")
    perf, storage = pred.get("perf", {}), pred.get("storage", {})
    tot = Table(title=f"predicted per batch{label}")
    tot.add_column("resource")
    tot.add_column("seconds", justify="right")
    tot.add_column("bytes used", justify="right")
    serial = perf.get("execution") == "host-serial"
    if perf and serial:
        tot.add_row("host thread (every core, serial)", f"{perf['host_s']:.6f}",
                    format_bytes(storage.get("host_dram_bytes", 0)))
        tot.add_row("  of which shared (batch, tables, lookups)", f"{perf['dram_s']:.6f}", "")
    elif perf:
        tot.add_row("host DRAM", f"{perf['dram_s']:.6f}", format_bytes(storage.get("host_dram_bytes", 0)))
    dev = Table(title="devices")
    core_cols = ("host s raw", "host s TT") if serial else ("mem-core s", "compute-core s")
    for col in ("device", "mem cores", "compute cores", "IO s", *core_cols, "device DRAM", "SSD"):
        dev.add_column(col, justify="left" if col == "device" else "right")
    for i, dp in enumerate(plan.devices):
        get = (lambda k: perf[k][i] if perf and i < len(perf.get(k, [])) else float("nan"))
        getb = (lambda k: storage[k][i] if storage and i < len(storage.get(k, [])) else 0)
        dev.add_row(f"{i} {dp.name}", str(dp.mem_cores), str(dp.compute_cores), f"{get('io_s'):.6f}",
                    f"{get('mem_core_s'):.6f}", f"{get('compute_core_s'):.6f}", format_bytes(getb("device_dram_bytes")),
                    format_bytes(getb("ssd_bytes")))
    if perf:
        tot.add_row("batch (max)", f"{perf['total_s']:.6f}", f"bottleneck {perf.get('bottleneck', '?')}")
        tot.add_row("weighted TT error", f"{pred.get('weighted_rel_error', 0.0):.4f}", "")
    drift = pred.get("drift") or {}
    if drift.get("hit_ratio") is not None:
        b = drift.get("batches", ["?", "?"])
        tot.add_row(f"hot-set hits on later batches [{b[0]}, {b[1]})",
                    f"{drift['hit_ratio']:.1%} of {drift['oracle_hit_ratio']:.1%}",
                    f"{drift['new_row_share']:.1%} new rows")
    parts: list[Any] = [t, tot, dev]
    if plan.solver:
        s = plan.solver
        gap = "unknown" if s.get("gap") is None else f"{s['gap']:.2e}"
        parts.append(f"solver {s.get('solver')}: {s.get('status')}, gap {gap} ({s.get('gap_source')}), "
                     f"{s.get('solve_time_s', 0):.2f} s, {s.get('variables')} variables, "
                     f"{s.get('constraints')} constraints")
        tb = s.get("tie_break")
        if tb:
            parts.append(f"tie-break (least total work at that batch time): {tb.get('status')}"
                         + (f", {tb['solve_time_s']:.2f} s" if tb.get("solve_time_s") is not None else "")
                         + (f" ({tb['reason']})" if tb.get("reason") else ""))
    return Group(*parts)


def cmd_solve(args: argparse.Namespace) -> int:
    cfg = _config(args)
    check_writable(cfg.output)  # before solving: a bad -o must not leave the remap file behind
    plan, notes = solve_plan(cfg)
    if args.json:
        write_json("-", plan.to_dict())
        return 0
    con = stdout_console()
    for n in notes:
        con.print(f"note: {n}")
    con.print(render_plan(plan))
    con.print(f"wrote {cfg.output}" + (f" and {plan.remap}" if plan.remap else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    if args.store:
        from emulator.store.store import Store

        plan.check_store(Store.open(args.store).store_id, args.plan)
    if args.json:
        write_json("-", plan.to_dict())
    else:
        try:
            view = render_plan(plan)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise InputError(f"the plan's 'predicted' or 'solver' section is malformed ({e.__class__.__name__}: {e})",
                             args.plan) from None
        stdout_console().print(view)
    return 0


def register(subparsers) -> None:
    from plans.baselines import PLANNERS

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
    p.add_argument("--model", help="with --modelled: a preset name, a spec file, or meta-2021")
    p.add_argument("--modelled", action="store_true", help="plan from Zipf parameters alone (labelled modelled)")
    p.add_argument("--dram-budget", required=True, help="host DRAM for hot rows, e.g. 512MiB, 64GB")
    p.add_argument("--devices", type=int, default=1, help="computational-storage devices (default 1)")
    p.add_argument("--cores", type=int, help="cores per device (default: this machine's CPUs; smartssd: 8)")
    p.add_argument("--device-profile", choices=("local", "smartssd"), default="local",
                   help="local: measured rates of this machine; smartssd: modelled SmartSSD-like devices")
    p.add_argument("--device-dram", default="4GiB", help="device memory for TT cores (local profile; default 4GiB)")
    p.add_argument("--planner", choices=tuple(PLANNERS), default="mip")
    p.add_argument("--accuracy-budget", type=float,
                   help="max lookup-weighted mean relative TT error (0: no TT; default: unconstrained)")
    p.add_argument("--accuracy-mode", choices=("weighted", "per-table"), default="weighted")
    p.add_argument("--calibration", help="calibration JSON from `screc calibrate` (default: modelled rates)")
    p.add_argument("--time-limit", type=float, default=60.0, help="MIP time limit in seconds (default 60)")
    p.add_argument("--solver", choices=("cbc", "highs"), default="cbc")
    p.add_argument("--formulation", choices=("auto", "exact", "pooled"), default="auto",
                   help="MIP form: exact (devices and core splits in the MIP), pooled (identical devices pooled, "
                        "then assigned; gap against the pooled bound); auto: pooled above 32 tables x devices")
    p.add_argument("--queue-depth", type=int, default=128,
                   help="IO queue depth per device the plan assumes (default 128, as `screc replay --qd`)")
    p.add_argument("-o", "--output", required=True, help="plan JSON to write (the remap goes beside it)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_solve)

    s = subparsers.add_parser("show", help="show a plan: placement per table, predicted times, core splits",
                              description="Show a plan file.", epilog=SHOW_EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("plan", help="plan JSON")
    s.add_argument("--store", help="refuse the plan unless it was made for this store")
    s.add_argument("--json", action="store_true", help="print the plan as JSON")
    s.set_defaults(func=cmd_show)

"""``screc bench predict``: the planner's predicted batch time against replays of its plans on this machine.

For every planner x DRAM budget a plan is solved on the first ``--profile-batches``
batches of the trace (cross-fitted statistics, this machine's calibration), then
the later batches are replayed ``--repeats`` times with the real engine (rounds
interleaved, so a drift of the machine's speed touches every plan alike). The
reference is the plan's own prediction: error = measured / predicted - 1, where
measured is the steady-state interval per batch (from the first batch's
completion on). Without ``--calibration`` the calibration is measured first, in
the same run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from bench.common import check_out, emit_result, format_bytes, parse_size
from tracegen.errors import InputError

EXAMPLE = """example:
  screc bench predict --store stores/ck --trace traces/ck.h5 --profile-batches 50 \\
      --budgets 0,256KiB,1MiB,4MiB,16MiB --planners mip,greedy,static-topk --repeats 3
  screc bench predict --store stores/ck --trace traces/ck.h5 --calibration runs/cal.json --json
"""
GOAL = 0.25  # the goal: predicted within 25% of measured


@dataclass(frozen=True)
class PredictConfig:
    store: str
    trace: str
    calibration: str | None = None
    budgets: tuple[str, ...] = ("0", "1MiB", "4MiB", "16MiB")
    planners: tuple[str, ...] = ("mip", "greedy", "static-topk", "all-ssd")
    devices: int = 2
    cores: int | None = None
    profile_batches: int | None = None
    batches: int | None = None
    repeats: int = 3
    calibration_seconds: float = 10.0
    accuracy_budget: float | None = 0.02
    queue_depth: int = 128
    folds: int = 10
    engine: str = "uring"

    def check(self, num_batches: int, trace_path) -> tuple[int, list[int]]:
        """(profile batches, budgets in bytes); raises InputError on bad settings."""
        from plans.baselines import PLANNERS

        for name in self.planners:
            if name not in PLANNERS:
                raise InputError(f"--planners: unknown planner {name!r} (one of {', '.join(PLANNERS)})")
        if not self.planners or not self.budgets:
            raise InputError("--planners and --budgets must each name at least one")
        if self.repeats < 1 or self.devices < 1 or self.folds < 1 or self.queue_depth < 1:
            raise InputError("--repeats, --devices, --folds and --qd must be >= 1")
        if self.batches is not None and self.batches < 2:
            raise InputError(f"--batches must be >= 2 (the first batch is not steady state), got {self.batches}")
        if not (0 < self.calibration_seconds < math.inf):
            raise InputError(f"--calibration-seconds must be a finite number > 0, got {self.calibration_seconds}")
        profile = self.profile_batches if self.profile_batches is not None else max(1, num_batches // 4)
        if not 1 <= profile <= num_batches - 2:
            raise InputError(f"--profile-batches must leave at least 2 batches to replay (trace has {num_batches})",
                             trace_path)
        return profile, [parse_size(b, "--budgets") for b in self.budgets]


def _replay_steady_s(store, reader, plan, cfg: PredictConfig, profile: int) -> tuple[float, float]:
    """(steady-state seconds per batch, seconds per batch including the first) of one replay."""
    from emulator.replay.engine import Replayer, ReplayConfig

    rc = ReplayConfig(engine=cfg.engine, queue_depth=cfg.queue_depth, start_batch=profile, max_batches=cfg.batches)
    with Replayer(store, plan, rc) as rep:
        totals = rep.run(reader)
    return totals["steady_batch_s"], totals["elapsed_s"] / totals["batches"]


def run_bench_predict(cfg: PredictConfig, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Solve every planner x budget, replay each plan ``repeats`` times; returns a JSON-ready dict."""
    from plans.planner import PlanningConfig, measure_profile, plan_from_profile, save_planned
    from emulator.store.store import Store
    from plans.calibration import measure_calibration
    from tracegen.trace_io import TraceReader

    step = on_step or (lambda _msg: None)
    store = Store.open(cfg.store)
    with TraceReader(cfg.trace) as reader:
        profile, budgets = cfg.check(reader.num_batches, cfg.trace)
        replayed = reader.num_batches - profile if cfg.batches is None else min(cfg.batches,
                                                                                 reader.num_batches - profile)
    with tempfile.TemporaryDirectory(prefix="screc-predict-") as tmp:
        cal_path = cfg.calibration
        t0 = time.perf_counter()
        if cal_path is None:
            step(f"calibrating this machine ({cfg.calibration_seconds:g} s of IO, then the host-cost replays)")
            cal_path = str(Path(tmp) / "calibration.json")
            measure_calibration(store, cfg.calibration_seconds, queue_depth=cfg.queue_depth).save(cal_path)
        calibration_s = time.perf_counter() - t0
        from plans.types import Calibration

        calib = Calibration.load(cal_path).to_dict()
        plans = []
        measured = None  # the statistics, measured once for every planner and budget
        for planner in cfg.planners:
            for budget, label in zip(budgets, cfg.budgets):
                step(f"solving {planner} at {label}")
                sc = PlanningConfig(dram_budget_bytes=budget, planner=planner, devices=cfg.devices, cores=cfg.cores,
                                    accuracy_budget=cfg.accuracy_budget, queue_depth=cfg.queue_depth,
                                    store=cfg.store, trace=cfg.trace, profile_batches=profile, calibration=cal_path,
                                    folds=cfg.folds)
                measured = measured or measure_profile(sc)
                plan = save_planned(plan_from_profile(measured, sc), Path(tmp) / f"{planner}-{budget}.json")
                plans.append((planner, label, budget, plan))
        steady: list[list[float]] = [[] for _ in plans]
        with_first: list[list[float]] = [[] for _ in plans]
        with TraceReader(cfg.trace) as reader:
            for r in range(cfg.repeats):
                for i, (planner, label, _, plan) in enumerate(plans):
                    step(f"round {r + 1}/{cfg.repeats}: replaying {planner} at {label}")
                    s, first = _replay_steady_s(store, reader, plan, cfg, profile)
                    steady[i].append(s)
                    with_first[i].append(first)
    rows = []
    for (planner, label, budget, plan), m, mf in zip(plans, steady, with_first):
        perf = plan.predicted["perf"]
        med = statistics.median(m)
        rows.append({"planner": planner, "budget": label, "budget_bytes": budget,
                     "bottleneck": perf.get("bottleneck"), "predicted_batch_s": perf["total_s"],
                     "measured_batch_s": med, "measured_runs_s": m, "measured_with_first_batch_s": mf,
                     "relative_error": med / perf["total_s"] - 1.0, "run_spread": max(m) / min(m) - 1.0,
                     "tiers": _tier_summary(plan)})
    errors = [abs(r["relative_error"]) for r in rows]
    return {
        "config": {**asdict(cfg), "profile_batches": profile, "replayed_batches": replayed},
        "store_id": store.store_id, "calibration": cfg.calibration or "measured in this run",
        "calibration_s": calibration_s, "calibration_used": calib, "plans": rows,
        "summary": {"plans": len(rows), "within_goal": sum(e <= GOAL for e in errors), "goal": GOAL,
                    "median_abs_error": statistics.median(errors), "max_abs_error": max(errors),
                    "mean_abs_error": sum(errors) / len(errors),
                    # the machine's own noise: how far the slowest replay of a plan is above its fastest
                    "median_run_spread": statistics.median(r["run_spread"] for r in rows)},
    }


def _tier_summary(plan) -> str:
    """Which tiers a plan uses, e.g. "dram+ssd_raw+ssd_tt"."""
    tiers = set()
    for p in plan.tables:
        rows = (plan.predicted.get("tables", {}).get(p.table) or {}).get("rows")
        if p.hot_rows > 0:
            tiers.add("dram")
        if rows is None or p.hot_rows < rows:
            tiers.add(p.cold_tier)
    order = ("dram", "ssd_raw", "ssd_tt")
    return "+".join(t for t in order if t in tiers)


def render(result: dict[str, Any]) -> Table:
    s = result["summary"]
    c = result["config"]
    t = Table(title=f"predicted vs measured batch time ({c['replayed_batches']} batches after {c['profile_batches']} "
                    f"profiled, {c['repeats']} rounds, median)")
    for col in ("planner", "DRAM budget", "tiers", "bottleneck", "predicted ms", "measured ms", "runs ms", "error"):
        t.add_column(col, justify="left" if col in ("planner", "tiers", "bottleneck") else "right")
    for r in result["plans"]:
        err = r["relative_error"]
        colour = "green" if abs(err) <= s["goal"] else "red"
        t.add_row(r["planner"], format_bytes(r["budget_bytes"]), r["tiers"], str(r["bottleneck"]),
                  f"{r['predicted_batch_s'] * 1e3:.3f}", f"{r['measured_batch_s'] * 1e3:.3f}",
                  " ".join(f"{x * 1e3:.2f}" for x in r["measured_runs_s"]), f"[{colour}]{err:+.0%}[/]")
    t.caption = (f"{s['within_goal']} of {s['plans']} plans within {s['goal']:.0%}; |error| median "
                 f"{s['median_abs_error']:.0%}, mean {s['mean_abs_error']:.0%}, worst {s['max_abs_error']:.0%}; "
                 f"slowest replay of a plan above its fastest: median {s['median_run_spread']:.0%} "
                 f"(calibration: {result['calibration']})")
    return t


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="the planner's predicted batch time vs replays of its plans",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    d = PredictConfig(store="", trace="")
    p.add_argument("--store", required=True)
    p.add_argument("--trace", required=True)
    p.add_argument("--calibration", default=None, help="calibration JSON (default: measure it now, in this run)")
    p.add_argument("--calibration-seconds", type=float, default=d.calibration_seconds,
                   help=f"IO seconds of the calibration measured in this run (default {d.calibration_seconds:g})")
    p.add_argument("--budgets", default=",".join(d.budgets), help=f"DRAM budgets (default {','.join(d.budgets)})")
    p.add_argument("--planners", default=",".join(d.planners), help=f"planners (default {','.join(d.planners)})")
    p.add_argument("--devices", type=int, default=d.devices, help=f"devices (default {d.devices})")
    p.add_argument("--cores", type=int, default=None, help="cores per device (default: this machine's CPUs)")
    p.add_argument("--profile-batches", type=int, default=None,
                   help="batches the plans are made on (default: the first quarter); the rest are replayed")
    p.add_argument("--batches", type=int, default=None, help="replay at most this many batches per run")
    p.add_argument("--repeats", type=int, default=d.repeats, help=f"rounds of replays (default {d.repeats})")
    p.add_argument("--accuracy-budget", type=float, default=d.accuracy_budget,
                   help=f"weighted TT error budget of the plans (default {d.accuracy_budget})")
    p.add_argument("--folds", type=int, default=d.folds, help=f"cross-fitting folds (default {d.folds})")
    p.add_argument("--qd", type=int, default=d.queue_depth, help=f"queue depth per device (default {d.queue_depth})")
    p.add_argument("--engine", choices=("uring", "liburing", "pread"), default=d.engine)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bench.common import is_live, stderr_console

    split = (lambda s: tuple(x.strip() for x in s.split(",") if x.strip()))
    cfg = PredictConfig(store=args.store, trace=args.trace, calibration=args.calibration,
                        budgets=split(args.budgets), planners=split(args.planners), devices=args.devices,
                        cores=args.cores, profile_batches=args.profile_batches, batches=args.batches,
                        repeats=args.repeats, calibration_seconds=args.calibration_seconds,
                        accuracy_budget=args.accuracy_budget, queue_depth=args.qd, folds=args.folds,
                        engine=args.engine)
    check_out(args)
    con = stderr_console()
    result = run_bench_predict(cfg, on_step=(lambda m: con.print(f"[dim]{m}[/]")) if is_live() else None)
    emit_result("bench-predict", result, args, render)
    return 0

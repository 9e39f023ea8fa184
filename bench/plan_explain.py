"""``screc plan show PLAN --explain``: why each table is where it is, and what limits the plan (modelled).

Registered by ``bench/cmd_plan.py``. Re-measures the statistics the plan was made on (``--store``,
``--trace``, ``--profile-batches`` as given to ``plan solve``), costs the plan with ``plans.cost``, and
re-solves at the plan's budget and at the budget plus ``--dram-step`` for the marginal value of DRAM
(``plans.explain``). Renders 80-column tables.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rich.console import Group

from bench.common import format_bytes, parse_size_or_share, size_arg
from bench.tables import fit_table, ms_cell
from emulator.plan import Plan
from plans.planner import DEVICE_PROFILES, PlanningConfig, measure_profile, plan_from_profile
from tracegen.errors import InputError

EXPLAIN_HELP = """--explain (needs --store and --trace; modelled): per table its tier, hot rows, TT rank, the share of its
lookups served from DRAM, the ms per batch it adds to the host thread (or host DRAM), its device's IO and
cores, and "saves us/MiB": batch time saved per MiB if its hot set grew to the planner's next candidate size,
the rest fixed (cost-model finite difference). The summary's DRAM figure re-solves at the budget and at the
budget + --dram-step (finite difference of re-solves); capacities and accuracy are "tight" with < 1% left.
"""


def add_explain_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--explain", action="store_true", help="why each table is where it is (needs --store, --trace)")
    s.add_argument("--trace", help="--explain: the trace the plan was solved on")
    s.add_argument("--profile-batches", type=int, help="--explain: the profile the plan was solved on (default all)")
    s.add_argument("--folds", type=int, default=10, help="--explain: cross-fitting blocks, as in plan solve")
    s.add_argument("--calibration", help="--explain: calibration JSON (default: modelled rates)")
    s.add_argument("--device-profile", choices=DEVICE_PROFILES, default="local")
    s.add_argument("--device-dram", default=4 << 30, type=size_arg("--device-dram"), metavar="SIZE")
    s.add_argument("--accuracy-budget", type=float, help="--explain: the accuracy budget the plan was solved with")
    s.add_argument("--dram-step", default="1%", metavar="SIZE|PCT%",
                   help="--explain: DRAM added for the re-solve (default 1%% of the model; 0: no re-solve)")
    s.add_argument("--top", type=int, default=20, help="--explain: tables shown, most loaded first (0: all)")
    s.add_argument("--time-limit", type=float, default=60.0, help="--explain: MIP time limit per re-solve")


def explain_payload(args: argparse.Namespace, plan: Plan, store) -> dict[str, Any]:
    """The explanation of ``plan`` as a JSON-ready dict (re-measures statistics, re-solves twice)."""
    from plans.explain import explain_plan
    from plans.planner import planning_machine
    from plans.types import Budgets

    if not args.trace:
        raise InputError("--explain needs --store and --trace (the statistics the plan was made on)")
    if args.top < 0:
        raise InputError(f"--top must be >= 0, got {args.top}")
    budget = int(plan.dram_budget_bytes or 0)
    cores = plan.devices[0].mem_cores + plan.devices[0].compute_cores
    cfg = PlanningConfig(budget, store=str(store.path), trace=args.trace, profile_batches=args.profile_batches,
                         folds=args.folds, calibration=args.calibration, devices=len(plan.devices), cores=cores,
                         device_profile=args.device_profile, device_dram_bytes=args.device_dram,
                         accuracy_budget=args.accuracy_budget, time_limit_s=args.time_limit)
    profile = measure_profile(cfg)
    calib, devices, _ = planning_machine(cfg)
    step = parse_size_or_share(args.dram_step, "--dram-step").resolve(store.raw_bytes)

    def resolve(b: int) -> float:
        return plan_from_profile(profile, dataclasses.replace(cfg, dram_budget_bytes=b)).plan.predicted["perf"][
            "total_s"]

    exp = explain_plan(plan, profile.stats, calib, devices, Budgets(budget, args.accuracy_budget),
                       resolve if step > 0 else None, step or None)
    out = exp.to_dict()
    recorded = (plan.predicted or {}).get("perf", {}).get("total_s")
    out["recorded_batch_s"] = recorded
    out["top"] = args.top
    return out


def _seconds(t: dict, prefix: str) -> float:
    return sum(v for k, v in t["seconds"].items() if k.startswith(prefix))


def render_explain(payload: dict[str, Any]) -> Group:
    tables = sorted(payload["tables"], key=lambda t: -sum(t["seconds"].values()))
    n = payload.get("top") or len(tables)
    shown = tables[:n]
    serial = payload["perf"]["execution"] == "host-serial"
    place = [[t["name"], t["tier"], f"{t['hot_rows']:,}", f"{t['rows']:,}", "-" if t["tt_rank"] is None
              else str(t["tt_rank"]), "-" if t["device"] is None else f"dev{t['device']}", f"{t['dram_share']:.1%}",
              f"{t['cold_share']:.1%}"] for t in shown]
    times = [[t["name"], ms_cell(_seconds(t, "host" if serial else "dram")), ms_cell(_seconds(t, "io")),
              ms_cell(_seconds(t, "mem_core") + _seconds(t, "compute_core")),
              "-" if t["grow_saves_s_per_mib"] is None else f"{t['grow_saves_s_per_mib'] * 1e6:,.1f}"]
             for t in shown]
    more = f" ({n} of {len(tables)} tables, most loaded first)" if n < len(tables) else ""
    parts: list[Any] = [
        fit_table(f"where each table lives{more}", ["table", "tier", "hot rows", "rows", "rank", "device",
                                                    "DRAM share", "cold share"], place),
        fit_table("what each table adds per batch (modelled)",
                  ["table", "host ms" if serial else "DRAM ms", "IO ms", "cores ms", "saves us/MiB"], times),
    ]
    cons = [[c["name"], _amount(c["used"], c["unit"]), _amount(c["limit"], c["unit"]),
             "binds" if c["binds"] else "-", c["how"]] for c in payload["constraints"]]
    parts.append(fit_table("constraints", ["constraint", "used", "limit", "", "decided by"], cons))
    rec, res = payload.get("recorded_batch_s"), payload.get("resolved_batch_s")
    if rec is not None and res is not None and abs(rec - res) > 0.02 * max(rec, res):
        parts.append(f"note: the plan records {rec * 1e3:.4g} ms; re-solved now at its budget: {res * 1e3:.4g} ms "
                     "(other rates, statistics or options than it was made with?)")
    parts.append(payload["summary"])
    return Group(*parts)


def _amount(v: float, unit: str) -> str:
    return format_bytes(v) if unit == "bytes" else f"{v:.4f}"

"""``screc compare``: the same trace under each policy, with the same DRAM budget and IO engine.

Policies (rows of the table):

* ``all-dram``    every row in host DRAM: the CPU-DRAM reference (only when the store fits in memory);
* ``all-ssd``     every lookup read raw from the SSD;
* ``lru``         an LRU row cache in DRAM in front of raw SSD rows (FBGEMM SSD-TBE / HugeCTR HPS style),
                  the budget split across tables by their share of lookups;
* ``static-topk`` the hottest rows pinned in DRAM up to the budget, the rest raw from the SSD, no TT;
* ``screc``       the MIP plan (hot sets, raw or TT tiers, devices, core split).

Statistics (and the remap the plans use) come from the first ``--profile-batches``
batches; every policy then replays the same later batches, so nothing is measured
on the data it was planned from.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from bench.cmd_replay import add_replay_args, run_replay
from bench.common import format_bytes, is_live, parse_size, stdout_console, write_json
from emulator.plan import Plan, TablePlacement, uniform_plan
from emulator.replay.engine import ReplayConfig
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

POLICIES = ("all-dram", "all-ssd", "lru", "static-topk", "screc")
_PLANNER = {"static-topk": "static-topk", "screc": "mip"}


def lru_plan(store: Store, reader: TraceReader, budget_bytes: int, profile: int) -> Plan:
    """Cache rows per table in proportion to the table's lookups in the profiling batches."""
    from emulator.replay.cache import cache_bytes_per_row

    lookups = np.zeros(len(store.tables))
    for b in reader.batches(0, profile):
        lookups += np.diff(b.table_bounds())
    per_row = np.array([cache_bytes_per_row(t["row_bytes"]) for t in store.tables], dtype=np.float64)
    cap = np.array([t["rows"] for t in store.tables], dtype=np.float64) * per_row  # a cache never exceeds its table
    alloc = np.zeros(len(store.tables))
    left = float(budget_bytes)
    open_ = (lookups > 0) & (cap > 0)
    while left > 0 and open_.any():  # water-filling: share by lookups, give what a full table leaves to the others
        give = left * lookups * open_ / lookups[open_].sum()
        take = np.minimum(give, cap - alloc)
        alloc += take
        left -= take.sum()
        open_ &= alloc < cap
        if take.sum() < 1:
            break
    tables = [TablePlacement(t["name"], 0, "ssd_raw", lru_rows=int(a // b))
              for t, a, b in zip(store.tables, alloc, per_row)]
    return Plan(store_id=store.store_id, tables=tuple(tables), trace_id=reader.trace_id,
                dram_budget_bytes=budget_bytes, planner="lru")


def planned(store_path: str, trace_path: str, policy: str, budget_bytes: int, profile: int, args, out_dir: Path) -> Plan:
    from bench.cmd_plan import SolveConfig, solve_plan

    cfg = SolveConfig(output=out_dir / f"{policy}-{budget_bytes}.json", dram_budget_bytes=budget_bytes,
                      planner=_PLANNER[policy], devices=args.devices, cores=None, device_profile="local",
                      device_dram_bytes=parse_size(args.device_dram, "--device-dram"),
                      accuracy_budget=args.accuracy_budget, accuracy_mode="weighted", time_limit_s=args.time_limit,
                      solver="cbc", queue_depth=args.qd, store=store_path, trace=trace_path,
                      profile_batches=profile, calibration=args.calibration)
    plan, _ = solve_plan(cfg)
    return Plan.load(cfg.output)  # resolves the remap path beside the plan


def compare_one_budget(store: Store, reader: TraceReader, budget_bytes: int, policies: list[str], args,
                       out_dir: Path) -> list[dict[str, Any]]:
    profile = args.profile_batches
    replay_batches = reader.num_batches - profile
    if args.batches:
        replay_batches = min(replay_batches, args.batches)
    config = ReplayConfig(engine=args.engine, queue_depth=args.qd, allow_buffered=args.buffered_io,
                          pipeline=not args.no_pipeline, start_batch=profile, max_batches=replay_batches)
    rows = []
    for policy in policies:
        if policy == "all-dram":
            if store.raw_bytes > args.max_dram_reference:
                continue  # does not fit: no CPU-DRAM reference at this size
            plan = uniform_plan(store.store_id, {t["name"]: t["rows"] for t in store.tables}, "all-dram",
                                trace_id=reader.trace_id)
        elif policy == "all-ssd":
            plan = uniform_plan(store.store_id, {t["name"]: t["rows"] for t in store.tables}, "all-ssd",
                                trace_id=reader.trace_id)
        elif policy == "lru":
            plan = lru_plan(store, reader, budget_bytes, profile)
        else:
            plan = planned(str(store.path), str(reader.path), policy, budget_bytes, profile, args, out_dir)
        payload = run_replay(store, reader, plan, config, live=is_live() and not args.no_live)
        payload["policy"] = policy
        payload["dram_budget_bytes"] = budget_bytes
        pred = plan.predicted or {}
        payload["tt_weighted_rel_error"] = pred.get("weighted_rel_error", 0.0 if policy != "screc" else None)
        payload["tt_tables"] = sum(1 for t in plan.tables if t.cold_tier == "ssd_tt" and t.hot_rows < _rows(store, t))
        rows.append(payload)
    for key in ("all-ssd", "lru"):
        base = next((r for r in rows if r["policy"] == key), None)
        for r in rows:
            r[f"speedup_vs_{key.replace('-', '_')}"] = r["qps"] / base["qps"] if base and base["qps"] else None
    return rows


def _rows(store: Store, placement: TablePlacement) -> int:
    return store.tables[store.table_index(placement.table)]["rows"]


def render(rows: list[dict[str, Any]], budget_bytes: int, raw_bytes: int) -> Table:
    t = Table(title=f"policies on one trace, DRAM budget {format_bytes(budget_bytes)} "
                    f"({budget_bytes / raw_bytes:.1%} of the {format_bytes(raw_bytes)} model)")
    for col in ("policy", "queries/s", "M lookups/s", "p50 ms", "p99 ms", "DRAM used", "read", "TT tables",
                "TT rel err", "x all-ssd", "x lru"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    fx = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    for r in rows:
        lat = r["latency_s"]
        err = r.get("tt_weighted_rel_error")
        t.add_row(r["policy"], f"{r['qps']:,.0f}", f"{r['lookups_per_s'] / 1e6:.2f}", f"{lat['p50'] * 1e3:.2f}",
                  f"{lat['p99'] * 1e3:.2f}", format_bytes(r["dram_used_bytes"]), format_bytes(r["bytes_read"]),
                  str(r["tt_tables"]), "-" if not err else f"{err:.4f}", fx(r.get("speedup_vs_all_ssd")),
                  fx(r.get("speedup_vs_lru")))
    return t


def _budget(text: str, model_bytes: int, what: str) -> int:
    """A size (``64MiB``) or a share of the model (``5%``)."""
    text = text.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise InputError(f"{what} {text!r} is not a size like 64MiB or a share like 5%") from None
        if not 0 < pct <= 100:
            raise InputError(f"{what} {text!r} must be a share in (0, 100]%")
        return int(model_bytes * pct / 100)
    return parse_size(text, what)


def _budgets(args, model_bytes: int) -> list[int]:
    if args.sweep:
        key, sep, values = args.sweep.partition("=")
        if key != "dram-budget" or not sep or not values:
            raise InputError(f"--sweep {args.sweep!r} is not dram-budget=SIZE,SIZE,...")
        return [_budget(v, model_bytes, "--sweep") for v in values.split(",") if v.strip()]
    if not args.dram_budget:
        raise InputError("compare needs --dram-budget SIZE or --sweep dram-budget=SIZE,...")
    return [_budget(args.dram_budget, model_bytes, "--dram-budget")]


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.results import write_run

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise InputError(f"unknown policies {', '.join(bad)} (choose from {', '.join(POLICIES)})")
    store = Store.open(args.store)
    budgets = _budgets(args, store.raw_bytes)
    out = stdout_console()
    with TraceReader(args.trace) as reader:
        if args.profile_batches is None:
            args.profile_batches = max(1, reader.num_batches // 2)
        if not 1 <= args.profile_batches < reader.num_batches:
            raise InputError(f"--profile-batches must leave batches to replay (trace has {reader.num_batches})",
                             args.trace)
        plan_dir = Path(args.plan_dir)
        plan_dir.mkdir(parents=True, exist_ok=True)
        sweep = []
        for budget in budgets:
            rows = compare_one_budget(store, reader, budget, policies, args, plan_dir)
            sweep.append({"dram_budget_bytes": budget, "rows": rows})
            out.print(render(rows, budget, store.raw_bytes))
        trace_id = reader.trace_id
    payload: dict[str, Any] = sweep[0] if len(sweep) == 1 else {"sweep": sweep}
    payload.update({"store_raw_bytes": store.raw_bytes, "profile_batches": args.profile_batches,
                    "engine": args.engine, "queue_depth": args.qd})
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for e in sweep for r in e["rows"]]
    run_dir = write_run("compare", sys.argv, payload, store_id=store.store_id, trace_id=trace_id,
                        tables={"compare": flat}, store_path=str(store.path))
    if args.json:
        write_json(args.json, payload)
    out.print(f"result in {run_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="replay one trace under every policy with the same DRAM budget",
                       description=__doc__.split("\n\n")[0] + "\n\nexample:\n"
                       "  screc compare --store stores/ck --trace traces/ck.h5 --dram-budget 5%%\n"
                       "  screc compare --store stores/ck --trace traces/ck.h5 --dram-budget 64MiB\n"
                       "  screc compare --store stores/ck --trace traces/ck.h5 --sweep dram-budget=16MiB,64MiB,256MiB",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--trace", required=True)
    p.add_argument("--dram-budget", help="host DRAM for hot rows / caches: a size (64MiB) or a share of the model (5%%)")
    p.add_argument("--sweep", help="dram-budget=SIZE,SIZE,... (one comparison per budget)")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated subset of {', '.join(POLICIES)}")
    p.add_argument("--profile-batches", type=int, default=None,
                   help="batches used for statistics and plans; the rest are replayed (default: half)")
    p.add_argument("--devices", type=int, default=1, help="emulated devices for the planned policies")
    p.add_argument("--device-dram", default="4GiB", help="device memory for TT cores (default 4GiB)")
    p.add_argument("--accuracy-budget", type=float, default=None, help="bound on the lookup-weighted TT error")
    p.add_argument("--calibration", default=None, help="calibration JSON from `screc calibrate`")
    p.add_argument("--time-limit", type=float, default=30.0, help="MIP time limit in seconds (default 30)")
    p.add_argument("--max-dram-reference", type=lambda s: parse_size(s, "--max-dram-reference"),
                   default=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3,
                   help="run all-dram only when the model is at most this big (default a third of RAM)")
    p.add_argument("--plan-dir", default="runs/plans", help="where the policies' plans are written")
    p.add_argument("--json", default=None, metavar="FILE")
    add_replay_args(p)
    p.set_defaults(func=cmd_compare)

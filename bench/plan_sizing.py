"""``screc plan size``: the smallest DRAM (then devices, cores) whose plan meets a target, and an LRU's size.

Registered by ``bench/cmd_plan.py``. Parse -> ``plans.sizing`` / ``plans.lru_sizing`` -> render; with
``--check`` the plans found are replayed warm in interleaved rounds (``bench.measure``) and the measured
figures are set against the target. Everything the planner predicts is labelled modelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Group

from bench.common import (emit_json, add_engine_arg, add_json_arg, add_qd_arg, ensure_writable_file, format_bytes,
                          parse_size_or_share, size_arg, stdout_console)
from bench.tables import fit_table, ms_cell
from plans.planner import DEVICE_PROFILES, PlanningConfig, measure_profile, plan_from_profile, save_planned
from plans.sizing import P99_OVER_MEAN, Shape, Target, parse_range, size_dram, size_dram_over
from tracegen.errors import InputError

SIZE_EXAMPLE = """example:
  screc plan size --store stores/tiny --trace traces/tiny.h5 --profile-batches 8 --target-batch-ms 5
  screc plan size --store stores/meta --trace traces/meta.h5 --profile-batches 8 --calibration runs/cal.json \\
      --target-qps 400 --check -o runs/size.json --json runs/size-result.json
  screc plan size --store stores/tiny --trace traces/tiny.h5 --target-p99-ms 8 --devices 1-2 --cores 2,4

The search is a bisection over MIP solves: each budget on a grid of --resolution steps (0 to all-DRAM) is
planned by the full pipeline and its predicted batch time (modelled) compared with the target; it finds the
smallest grid budget that meets it (exact when the predicted time does not rise with the budget, as for
optimal solves). "needed" is the DRAM the found plan holds. --target-p99-ms is modelled as --p99-factor
(default %g) times the predicted mean; --check measures the real p99. The LRU line sizes one LRU cache per
table (the budget shared by lookups, as the lru policy does) from the trace's exact miss-ratio curve
(batch-granular stack distances over the profiled batches), its batch time from the cost model (modelled).
Unreachable or non-positive targets exit 2 with one line.
""" % P99_OVER_MEAN


def add_size_parser(subparsers) -> None:
    p = subparsers.add_parser("size", help="the smallest DRAM (then devices, cores) whose plan meets a target",
                              description="Size host DRAM for a batch-time, throughput or p99 target (modelled), "
                                          "and the LRU cache that would reach the same target.",
                              epilog=SIZE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="store directory")
    p.add_argument("--trace", required=True, help="trace file (HDF5)")
    p.add_argument("--profile-batches", type=int, help="plan on the first N batches (default: all)")
    p.add_argument("--folds", type=int, default=10, help="cross-fitting blocks of the statistics (default 10)")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--target-batch-ms", type=float, metavar="MS", help="predicted mean batch time at most MS")
    t.add_argument("--target-qps", type=float, metavar="QPS", help="predicted queries per second at least QPS")
    t.add_argument("--target-p99-ms", type=float, metavar="MS", help="modelled p99 batch time at most MS")
    t.add_argument("--target-hit-ratio", type=float, metavar="H", help="LRU only: cache hit ratio at least H")
    p.add_argument("--p99-factor", type=float, default=P99_OVER_MEAN,
                   help=f"modelled p99 / mean batch time (default {P99_OVER_MEAN:g})")
    p.add_argument("--resolution", default="0.5%", metavar="SIZE|PCT%",
                   help="budget grid step: a size with a unit or a share of the model (default 0.5%%)")
    p.add_argument("--devices", default="1", metavar="N|A-B|LIST", help="device counts to try (default 1)")
    p.add_argument("--cores", metavar="N|A-B|LIST", help="cores per device to try (default: the profile's)")
    p.add_argument("--device-profile", choices=DEVICE_PROFILES, default="local")
    p.add_argument("--device-dram", default=4 << 30, type=size_arg("--device-dram"), metavar="SIZE",
                   help="device memory for TT cores (default 4GiB)")
    p.add_argument("--accuracy-budget", type=float, help="max lookup-weighted mean relative TT error")
    p.add_argument("--calibration", help="calibration JSON from `screc calibrate` (default: modelled rates)")
    p.add_argument("--time-limit", type=float, default=60.0, help="MIP time limit per solve (default 60 s)")
    p.add_argument("--no-lru", action="store_true", help="skip the LRU sizing")
    p.add_argument("--lru-warmup-batches", type=int, default=3,
                   help="profiled batches that only fill the LRU caches (default 3)")
    p.add_argument("--check", action="store_true",
                   help="replay the plans found (warm, interleaved rounds) and report measured vs target")
    p.add_argument("--rounds", type=int, default=3, help="--check: interleaved rounds (default 3)")
    p.add_argument("--min-batches", type=int, default=20, help="--check: measured batches per round (default 20)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="--check: measured seconds per round (default 2)")
    add_engine_arg(p)
    add_qd_arg(p)
    p.add_argument("-o", "--output", help="write the plan found here (its remap beside it)")
    add_json_arg(p, "the sizing: target, the explored curves (modelled), the plans found and --check figures")
    p.set_defaults(func=cmd_size)


def _target(args) -> Target | None:
    for kind in ("batch_ms", "qps", "p99_ms"):
        v = getattr(args, f"target_{kind}")
        if v is not None:
            return Target(kind.replace("_", "-"), v, args.p99_factor)
    h = args.target_hit_ratio
    if h is not None and not (0 < h <= 1):
        raise InputError(f"--target-hit-ratio must be in (0, 1], got {h}")
    if h is not None and args.no_lru:
        raise InputError("--target-hit-ratio sizes the LRU cache only: drop --no-lru")
    return None


def _check_args(args) -> None:
    for name in ("time_limit", "min_seconds"):
        v = getattr(args, name)
        if not (0 <= v < math.inf) or (name == "time_limit" and v == 0):
            raise InputError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")
    for name, low in (("folds", 1), ("rounds", 1), ("min_batches", 2), ("qd", 1), ("lru_warmup_batches", 0)):
        if getattr(args, name) < low:
            raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.profile_batches is not None and args.profile_batches < 1:
        raise InputError(f"--profile-batches must be >= 1, got {args.profile_batches}")
    if args.check and args.engine == "null":
        raise InputError("--check measures replays: --engine null reads nothing; use uring or pread")


def cmd_size(args: argparse.Namespace) -> int:
    target = _target(args)
    _check_args(args)
    ensure_writable_file(args.output)
    ensure_writable_file(args.json)
    shapes = [Shape(d, c) for d in parse_range(args.devices, "--devices")
              for c in (parse_range(args.cores, "--cores") if args.cores else [None])]
    from emulator.store.store import Store

    store = Store.open(args.store)
    resolution = parse_size_or_share(args.resolution, "--resolution").resolve(store.raw_bytes)
    base = PlanningConfig(0, store=args.store, trace=args.trace, profile_batches=args.profile_batches,
                          folds=args.folds, calibration=args.calibration, device_profile=args.device_profile,
                          device_dram_bytes=args.device_dram, accuracy_budget=args.accuracy_budget,
                          time_limit_s=args.time_limit, queue_depth=args.qd)
    profile = measure_profile(base)
    stats = profile.stats
    max_bytes = int(sum(t.table_bytes for t in stats.tables))
    payload: dict[str, Any] = {"store": str(args.store), "trace": str(args.trace), "batch_size": stats.batch_size,
                               "all_dram_bytes": max_bytes, "notes": [str(n) for n in profile.notes]}
    best = None
    if target is not None:
        def search(shape: Shape):
            cfg = dataclasses.replace(base, devices=shape.devices, cores=shape.cores)
            s = size_dram(lambda b: plan_from_profile(profile, dataclasses.replace(cfg, dram_budget_bytes=b)),
                          lambda r: r.plan.predicted, target, stats.batch_size, max_bytes, max(1, resolution))
            return dataclasses.replace(s, devices=shape.devices, cores=shape.cores)

        best, outcomes = size_dram_over(shapes, search)
        payload["target"] = target.to_dict()
        payload["screc"] = best.to_dict()
        payload["shapes"] = [{"devices": s.devices, "cores": s.cores,
                              **({"needed_bytes": r.needed_bytes, "solves": r.solves} if not isinstance(r, str)
                                 else {"unreachable": r})} for s, r in outcomes]
        payload["notes"] += [str(n) for n in best.result.notes if str(n) not in payload["notes"]]
    lru = None
    if not args.no_lru:
        lru = _size_lru(args, store, target, stats.batch_size, best)
        payload["lru"] = lru.to_dict()
    plans_out = _save(best, args, payload)
    if args.check:
        payload["check"] = _check(args, store, target, plans_out, lru, profile.stats.batch_size)
    if emit_json(args.json, payload):
        return 0
    stdout_console().print(render_size(payload))
    return 0


def _size_lru(args, store, target, batch_size: int, best):
    from plans.lru_sizing import lru_profile, size_lru
    from plans.planner import planning_machine
    from tracegen.trace_io import TraceReader

    cfg = PlanningConfig(0, store=args.store, trace=args.trace, calibration=args.calibration,
                         device_profile=args.device_profile, device_dram_bytes=args.device_dram, queue_depth=args.qd)
    calib, devices, _ = planning_machine(cfg)  # one device: the lru policy puts every table on dev0
    with TraceReader(args.trace) as reader:
        nb = reader.num_batches if args.profile_batches is None else min(args.profile_batches, reader.num_batches)
        prof = lru_profile(store, reader, nb, args.lru_warmup_batches)
    return size_lru(prof, calib, devices[0], target, batch_size,
                    hit_ratio=args.target_hit_ratio if target is None else None)


def _save(best, args, payload) -> dict[str, Any]:
    """The found plan written to -o (or a temporary directory for --check); its path in the payload."""
    if best is None or not (args.output or args.check):
        return {}
    out = args.output or str(Path(tempfile.mkdtemp(prefix="screc-size-")) / "plan.json")
    plan = save_planned(best.result, out)
    if args.output:
        payload["plan_file"] = args.output
    return {"screc": plan}


def _check(args, store, target, plans_out: dict, lru, batch_size: int) -> dict[str, Any]:
    from bench.measure import BatchRange, MeasureConfig, measure_rounds, notes
    from emulator.replay.engine import ReplayConfig
    from plans.planner import lru_plan
    from tracegen.trace_io import TraceReader

    with TraceReader(args.trace) as reader:
        nb = reader.num_batches
        prof = nb if args.profile_batches is None else min(args.profile_batches, nb)
        measured = BatchRange(prof, nb - prof) if prof < nb else BatchRange(0, nb)
        plans = list(plans_out.items())
        if lru is not None and lru.found is not None:
            plans.append(("lru", lru_plan(store, reader, lru.found.budget_bytes, prof)))
        if not plans:
            raise InputError("--check: nothing to replay (no plan was found)")
        cfg = MeasureConfig(min_batches=args.min_batches, min_seconds=args.min_seconds, rounds=args.rounds)
        ms = measure_rounds(store, reader, plans, measured, ReplayConfig(engine=args.engine, queue_depth=args.qd),
                            cfg)
    rows = []
    for m in ms:
        row = m.row()
        qps = row.get("steady_qps")
        lat = row.get("latency_s") or {}
        batch_s = batch_size / qps if qps else None
        pred = (m.plan.predicted or {}).get("perf", {}).get("total_s")
        if m.name == "lru":
            pred = lru.found.batch_s
        rows.append({"policy": m.name, "measured_batch_s": batch_s, "measured_qps": qps,
                     "measured_p99_s": lat.get("p99"), "measured_mean_latency_s": lat.get("mean"),
                     "latency_batches": m.latency().count, "spread": row.get("qps_spread"),
                     "ios_per_batch": row.get("ios_per_batch"), "bytes_read_per_batch": row.get("bytes_read_per_batch"),
                     "meets": _meets(target, batch_s, qps, lat.get("p99")), "predicted_batch_s": pred,
                     "measured_over_predicted": batch_s / pred if batch_s and pred else None})
    in_sample = measured.start == 0
    return {"rows": rows, "batches": [measured.start, measured.start + measured.count], "in_sample": in_sample,
            "notes": notes(ms, cfg), "basis": "measured"}


def _meets(target, batch_s, qps, p99_s) -> bool | None:
    if target is None or batch_s is None:
        return None
    if target.kind == "batch-ms":
        return batch_s <= target.value * 1e-3
    if target.kind == "qps":
        return qps >= target.value
    return None if p99_s is None else p99_s <= target.value * 1e-3


# --- rendering ------------------------------------------------------------------------------------------


def _curve_table(title: str, pts: list[dict], found_b: int | None, extra: str | None) -> Any:
    cells = []
    for p in pts:
        mark = "<-" if p["budget_bytes"] == found_b else ""
        cells.append([format_bytes(p["budget_bytes"]), format_bytes(p.get("dram_used_bytes", p.get("cache_bytes", 0))),
                      ms_cell(p["predicted_batch_s"]),
                      *( [f"{p[extra]:.3f}"] if extra else []), p["bottleneck"], mark])
    cols = ["budget", "DRAM held", "batch ms", *(["hit ratio"] if extra else []), "bottleneck", ""]
    return fit_table(title, cols, cells)


def render_size(payload: dict[str, Any]) -> Group:
    """The sizing answer first, then the explored curves (modelled), then the --check figures (measured)."""
    parts: list[Any] = [f"note: {n}" for n in payload.get("notes", [])]
    s = payload.get("screc")
    if s:
        f = s["found"]
        parts.append(f"target: {s['target']['text']} (predicted mean batch time <= "
                     f"{s['limit_batch_s'] * 1e3:.4g} ms)")
        shape = f"{s['devices']} device(s)" + (f", {s['cores']} cores each" if s.get("cores") else "")
        parts.append(f"screc needs {format_bytes(s['needed_bytes'])} of DRAM (budget {format_bytes(f['budget_bytes'])}"
                     f", grid step {format_bytes(s['resolution_bytes'])}; {shape}): predicted "
                     f"{f['predicted_batch_s'] * 1e3:.4g} ms, {f['bottleneck']} (modelled; {s['solves']} solves)")
        if not s["monotone"]:
            parts.append("warning: the explored curve rises with the budget somewhere (a time-limited solve?): "
                         "the bisection's answer may not be the smallest")
        parts.append(_curve_table("screc: predicted batch time vs DRAM budget (modelled)", s["curve"],
                                  f["budget_bytes"], None))
        shapes = payload.get("shapes", [])
        if len(shapes) > 1:
            parts.append(fit_table("DRAM needed per device configuration (modelled)", ["devices", "cores", "needs"],
                                   [[str(x["devices"]), str(x["cores"] or "default"),
                                     format_bytes(x["needed_bytes"]) if "needed_bytes" in x else "unreachable"]
                                    for x in shapes]))
    lru = payload.get("lru")
    if lru:
        lf = lru["found"]
        if lf is None:
            parts.append(f"lru: {lru['reason']}")
        else:
            more = ""
            if s and s["needed_bytes"] > 0:
                more = f", {lf['cache_bytes'] / s['needed_bytes']:.2f}x what screc needs"
            parts.append(f"lru needs {format_bytes(lf['cache_bytes'])} of cache for {lru['target']}{more}: hit "
                         f"ratio {lf['hit_ratio']:.3f}, predicted {lf['predicted_batch_s'] * 1e3:.4g} ms (modelled)")
        parts.append(_curve_table(f"lru: hit ratio and batch time vs cache budget (modelled; hits counted on "
                                  f"{lru['counted_batches']} batches after {lru['warmup_batches']} warm-up)",
                                  lru["curve"], lf["budget_bytes"] if lf else None, "hit_ratio"))
    chk = payload.get("check")
    if chk:
        cells = [[r["policy"], ms_cell(r["predicted_batch_s"]), ms_cell(r["measured_batch_s"]),
                  "-" if r.get("measured_over_predicted") is None else f"{r['measured_over_predicted']:.2f}",
                  ms_cell(r["measured_p99_s"]), "-" if r["measured_qps"] is None else f"{r['measured_qps']:,.0f}",
                  "-" if r["spread"] is None else f"{r['spread']:.0%}",
                  {True: "yes", False: "no", None: "-"}[r["meets"]]] for r in chk["rows"]]
        b = chk["batches"]
        parts.append(fit_table(f"--check: replayed batches [{b[0]}, {b[1]}) (measured; predicted modelled)"
                               + (" - in sample" if chk["in_sample"] else ""),
                               ["policy", "pred. ms", "batch ms", "x pred", "p99 ms", "queries/s", "spread", "meets"],
                               cells))
        parts.append(f"note: batch ms = batch size / steady queries/s (median of the rounds); p99 ms = the 99th "
                     f"percentile of the batches' latencies over every round ({chk['rows'][0]['latency_batches']} "
                     f"batches, the first of each run included; a batch's latency spans its reads and pooling, "
                     f"which overlap the previous batch's, so it exceeds the batch interval)")
        parts += [f"note: {n}" for n in chk["notes"]]
    return Group(*parts)

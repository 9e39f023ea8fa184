"""``screc bench emulate``: the device clock against real execution, under the ``host`` profile.

With the ``host`` profile the emulated devices are this machine: their cores are threads on its CPUs and their
SSD is its disk as measured. The clock composes each batch only from the host's serial CPU time, the core tasks'
thread-CPU durations (list-scheduled on this machine's CPUs, after the reads they wait for) and the reads' real
submission and completion times: it never reads the batch's wall time. If the model of the work is complete, the
emulated batch time matches the measured one. This command replays all-ssd, all-tt and the MIP plan (``screc``,
planned for the host profile) at 1 and 2 devices, in interleaved rounds, and prints emulated / measured per
policy: the median over steady-state batches (the first batch of each run excluded) of the per-batch ratio,
and the median of the rounds (goal: within 10%).
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tracegen.errors import InputError

POLICIES = ("all-ssd", "all-tt", "screc")
GOAL = 0.10
EXAMPLE = """example:
  screc bench emulate --store runs/demo/store --trace runs/demo/trace.h5
  screc bench emulate --store stores/meta --trace traces/meta.h5 --dram-budget 5% --devices 1,2 --rounds 3 --json

columns: measured ms = the median steady-state batch interval (measured, wall clock); emulated ms = the device
clock's batch time from task CPU times and IO records (emulated, host profile); ratio = median over batches of
emulated / measured (median of the rounds), within 10% is the goal; host serial / parallel = the emulated
batch's parts (host main thread; devices and host pooling threads on the CPUs)."""


@dataclass(frozen=True)
class EmulateBenchConfig:
    policies: tuple[str, ...] = POLICIES
    devices: tuple[int, ...] = (1, 2)
    dram_budget: Any = None  # bench.common.SizeOrShare (default 5% of the model)
    engine: str = "uring"
    queue_depth: int = 128
    host_threads: int | None = None
    calibration: str | None = None
    profile_batches: int | None = None
    rounds: int = 3
    min_batches: int = 20
    min_seconds: float = 2.0
    warmup_batches: int = 3
    plan_dir: str | None = None


def _plans(store, reader, n_dev: int, budget: int, cfg: EmulateBenchConfig) -> list:
    from plans.planner import PlanningConfig, PresetRequest, preset_plan, spread_over_devices

    planning = PlanningConfig(dram_budget_bytes=budget, devices=n_dev, device_profile="host",
                              calibration=cfg.calibration, queue_depth=cfg.queue_depth, store=str(store.path),
                              trace=str(reader.path), profile_batches=cfg.profile_batches)
    request = PresetRequest(dram_budget_bytes=budget, profile_batches=cfg.profile_batches, planning=planning,
                            plan_dir=str(Path(cfg.plan_dir) / f"devices{n_dev}"))
    out = []
    for policy in cfg.policies:
        plan = preset_plan(policy, store, reader, request).plan
        if policy != "screc":
            plan = spread_over_devices(plan, store, n_dev)
        out.append((policy, plan))
    return out


def run_bench_emulate(store, reader, cfg: EmulateBenchConfig,
                      on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every policy at every device count on both clocks; returns the result (rows per run)."""
    from bench.measure import BatchRange, MeasureConfig, measure_rounds
    from emulator.device.profile import host_threads, load_profile
    from emulator.replay.engine import ReplayConfig

    n = reader.num_batches
    profile_batches = cfg.profile_batches or max(1, n // 2)
    if not 1 <= profile_batches < n:
        raise InputError(f"--profile-batches must leave batches to replay (trace has {n})", reader.path)
    cfg = EmulateBenchConfig(**{**cfg.__dict__, "profile_batches": profile_batches})
    measured = BatchRange(profile_batches, n - profile_batches)
    budget = cfg.dram_budget.resolve(store.raw_bytes) if cfg.dram_budget is not None else int(0.05 * store.raw_bytes)
    mcfg = MeasureConfig(min_batches=cfg.min_batches, min_seconds=cfg.min_seconds,
                         warmup_batches=cfg.warmup_batches, rounds=cfg.rounds)
    replay = ReplayConfig(engine=cfg.engine, queue_depth=cfg.queue_depth, host_threads=cfg.host_threads,
                          device_profile=load_profile("host"))
    rows = []
    for n_dev in cfg.devices:
        plans = _plans(store, reader, n_dev, budget, cfg)
        for m in measure_rounds(store, reader, plans, measured, replay, mcfg, on_step=on_step):
            ems = [r.payload["emulated"] for r in m.rounds if r.payload.get("emulated", {}).get("steady_batches")]
            if not ems:
                continue
            med = lambda k: statistics.median(e[k] for e in ems)  # noqa: E731
            ratio = med("ratio_median")
            cores = [(d.mem_cores, d.compute_cores) for d in m.plan.devices]
            rows.append({
                "policy": m.name, "devices": n_dev, "cores": cores,
                "pooled_by": m.rounds[0].payload.get("pooled_by"),
                "host_threads": m.rounds[0].payload.get("host_threads"),
                "measured_batch_s": med("measured_batch_s"), "emulated_batch_s": med("emulated_batch_s"),
                "ratio": ratio, "round_ratios": [e["ratio_median"] for e in ems],
                "ratio_p10": med("ratio_p10"), "ratio_p90": med("ratio_p90"),
                "serial_s": med("serial_s"), "parallel_s": med("parallel_s"), "after_s": med("after_s"),
                "steady_batches": min(e["steady_batches"] for e in ems), "within_goal": abs(ratio - 1) <= GOAL,
                "measured_qps": med("measured_qps"), "emulated_qps": med("emulated_qps"),
            })
    return {"profile": "host", "goal": f"emulated / measured within {GOAL:.0%} (median over batches)",
            "dram_budget_bytes": budget, "store": str(store.path), "trace": str(reader.path),
            "measured_batches": [measured.start, measured.start + measured.count], "rounds": cfg.rounds,
            "engine": cfg.engine, "queue_depth": cfg.queue_depth, "cpus": host_threads(),
            "load_average": list(os.getloadavg()), "rows": rows}


def render(result: dict[str, Any]):
    from rich.console import Group
    from rich.table import Table

    t = Table(title=f"device clock vs wall clock, profile {result['profile']} (emulated vs measured)",
              title_justify="left")
    for col in ("policy", "dev", "pooled by", "measured ms", "emulated ms", "ratio", "p10-p90", "serial ms",
                "parallel ms"):
        t.add_column(col, justify="left" if col in ("policy", "pooled by") else "right")
    for r in result["rows"]:
        t.add_row(r["policy"], str(r["devices"]), r["pooled_by"] or "", f"{r['measured_batch_s'] * 1e3:.2f}",
                  f"{r['emulated_batch_s'] * 1e3:.2f}", f"{r['ratio']:.2f}" + ("" if r["within_goal"] else " !"),
                  f"{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}", f"{(r['serial_s'] + r['after_s']) * 1e3:.2f}",
                  f"{r['parallel_s'] * 1e3:.2f}")
    ok = sum(r["within_goal"] for r in result["rows"])
    la = result["load_average"]
    note = (f"{ok} of {len(result['rows'])} runs within {GOAL:.0%} (! = outside); {result['rounds']} interleaved "
            f"round(s); {result['cpus']} CPUs; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return Group(t, note)


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_dram_budget_arg, add_engine_arg, add_json_arg, add_out_dir_arg, add_qd_arg

    p = subparsers.add_parser("emulate", help="the device clock against real execution (host profile)",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="store directory (from `screc store build`)")
    p.add_argument("--trace", required=True, help="trace file (HDF5)")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated subset of {','.join(POLICIES)}")
    p.add_argument("--devices", default="1,2", help="device counts, comma-separated (default 1,2)")
    add_dram_budget_arg(p, extra=" (default 5%% of the model; the screc plan's budget)")
    add_engine_arg(p)
    add_qd_arg(p)
    p.add_argument("--host-threads", type=int, default=None, help="host pooling threads (default: every CPU)")
    p.add_argument("--calibration", default=None, help="calibration JSON for the planner (default: modelled)")
    p.add_argument("--profile-batches", type=int, default=None,
                   help="batches the screc plan is profiled on; the rest are replayed (default: half)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--min-batches", type=int, default=20, help="measured batches per run (default 20)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="measured seconds per run (default 2)")
    p.add_argument("--warmup-batches", type=int, default=3, help="unmeasured batches before each run (default 3)")
    add_json_arg(p)
    add_out_dir_arg(p)
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bench.common import check_out, emit_result, stderr_console
    from emulator.store.store import Store
    from tracegen.trace_io import TraceReader

    policies = tuple(x.strip() for x in args.policies.split(",") if x.strip())
    bad = [x for x in policies if x not in POLICIES]
    if bad or not policies:
        raise InputError(f"--policies: unknown {', '.join(bad) or '(none)'} (choose from {', '.join(POLICIES)})")
    try:
        devices = tuple(int(x) for x in args.devices.split(","))
    except ValueError:
        raise InputError(f"--devices {args.devices!r} is not a comma-separated list of counts") from None
    if not devices or min(devices) < 1:
        raise InputError(f"--devices {args.devices!r}: counts must be >= 1")
    if args.host_threads is not None and args.host_threads < 1:
        raise InputError(f"--host-threads must be >= 1, got {args.host_threads}")
    check_out(args)
    cfg = EmulateBenchConfig(policies=policies, devices=devices, dram_budget=args.dram_budget, engine=args.engine,
                             queue_depth=args.qd, host_threads=args.host_threads, calibration=args.calibration,
                             profile_batches=args.profile_batches, rounds=args.rounds, min_batches=args.min_batches,
                             min_seconds=args.min_seconds, warmup_batches=args.warmup_batches,
                             plan_dir=str(Path(args.out_dir) / "emulate-plans"))
    err = stderr_console()
    store = Store.open(args.store)
    with TraceReader(args.trace) as reader:
        result = run_bench_emulate(store, reader, cfg, on_step=lambda s: err.print(f"[dim]{s}[/]"))
    emit_result("bench-emulate", result, args, render)
    return 0

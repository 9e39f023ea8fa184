"""``screc replay``: serve a trace from a store under a plan or a simple policy, live."""

from __future__ import annotations

import argparse
import sys

from bench.common import (add_json_arg, add_out_dir_arg, ensure_writable_dir, ensure_writable_file, format_bytes,
                          is_live, stdout_console, write_json)
from bench.replay_run import (add_remote_args, add_replay_args, check_batch_range, network_line, remote_devices,
                              replay_config, run_replay)
from emulator.store.store import Store
from plans.planner import PresetRequest, load_plan, preset_plan
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

POLICIES = ("all-dram", "all-ssd", "all-tt")
EXAMPLE = """example:
  screc replay --store stores/tiny --trace traces/tiny.h5 --policy all-ssd --verify
  screc replay --store stores/ck --trace traces/ck.h5 --plan plan.json --start-batch 50 --qd 32 --json
  screc replay --store stores/ck --trace traces/ck.h5 --policy all-tt --tt-rank 8 --out-dir /tmp/runs --json r.json
  screc replay --store stores/ck --trace traces/ck.h5 --plan plan.json --ray auto --remote-devices \
      --remote-store stores/ck     (each device a Ray actor on a node, reading <SCREC_DISK>/stores/ck there)

The summary (plain lines when the output is not a terminal):
  policy     all-dram, all-ssd, all-tt, or the plan's planner (screc = the MIP plan)
  steady state  samples (queries) and lookups served per second after the first batch, which pays the
             first-touch costs and is reported apart (measured); fewer than 10 such batches is flagged
  latency    per-batch latency percentiles p50 / p99 (measured)
  IOs, read  SSD read requests and bytes (measured)
  DRAM       bytes of hot rows held in host memory
  verify     with --verify: bags equal to the NumPy reference bit for bit (DRAM and raw rows), and bags
             rebuilt from TT cores within the bound from the manifest's measured TT error
  batch ... predicted  the steady-state batch time (after the first batch) against the plan's prediction
             (modelled by the planner's cost model)
  network    with --remote-devices: array bytes each way per batch and the time in Ray and on the wire
             (round trip minus the device's own serve time), measured, apart from the emulated device link
"""


def summary_line(payload: dict, run_dir) -> str:
    """The summary of a replay payload (pure): steady-state throughput first (the first batch, which pays the
    first-touch costs, apart), then latency, IO, DRAM, verification and the plan's (modelled) prediction."""
    from bench.measure import FEW_BATCHES

    lat = payload["latency_s"]
    v = payload.get("verify")
    pr = payload.get("prediction")
    steady = payload.get("steady_batches") or 0
    first = payload.get("first_batch_s")
    head = (f"{payload['policy']}: {payload['batches']} batches; steady state {payload['steady_qps']:,.0f} queries/s, "
            f"{payload['steady_lookups_per_s'] / 1e6:.2f} M lookups/s over {steady} batches"
            if steady else f"{payload['policy']}: {payload['batches']} batch; {payload['qps']:,.0f} queries/s")
    head += (f" (first batch {first * 1e3:.2f} ms apart; whole run {payload['qps']:,.0f} queries/s)"
             if steady and first is not None else "")
    if steady < FEW_BATCHES:
        head += f"; only {steady} steady-state batches: a rough figure (replay more with --batches)"
    return (head + "\n"
            + f"  latency p50 {lat['p50'] * 1e3:.2f} ms p99 {lat['p99'] * 1e3:.2f} ms, {payload['ios']:,} IOs "
              f"({format_bytes(payload['bytes_read'])}), DRAM {format_bytes(payload['dram_used_bytes'])}"
            + (f", verify ok ({v['exact_bags']} exact bags, {v['tt_bags']} TT bags)" if v else "")
            + (f"\n  batch {pr['measured_batch_s'] * 1e3:.2f} ms measured vs {pr['predicted_batch_s'] * 1e3:.2f} ms "
               f"predicted (modelled) ({pr['relative_error']:+.0%})" if pr else "")
            + network_line(payload)
            + f"\n  result in {run_dir}")


def with_cores(plan, cores: int):
    """``plan`` with ``cores`` cores per device, split between memory- and compute-centric as the plan splits
    them (all compute-centric for a device whose plan has no memory-centric core, and vice versa)."""
    import dataclasses

    if cores < 1:
        raise InputError(f"--cores must be >= 1, got {cores}")
    devs = []
    for d in plan.devices:
        total = d.mem_cores + d.compute_cores
        mem = round(cores * d.mem_cores / total) if total else cores // 2
        mem = min(max(mem, 1 if d.mem_cores and cores > 1 else 0), cores - (1 if d.compute_cores and cores > 1 else 0))
        devs.append(dataclasses.replace(d, mem_cores=mem, compute_cores=cores - mem))
    return dataclasses.replace(plan, devices=tuple(devs))


def cmd_replay(args: argparse.Namespace) -> int:
    from bench.results import write_run

    ensure_writable_file(args.json)  # every output checked before any work
    ensure_writable_dir(args.out_dir)
    config = replay_config(args)
    store = Store.open(args.store)
    with TraceReader(args.trace) as reader:
        check_batch_range(config, reader)
        if args.plan:
            plan = load_plan(args.plan, store)
            if args.devices is not None and args.devices != len(plan.devices):
                raise InputError(f"--devices {args.devices}: the plan places its tables on {len(plan.devices)} "
                                 f"device(s); --devices applies to --policy", args.plan)
        else:
            from plans.planner import spread_over_devices

            plan = preset_plan(args.policy or "all-ssd", store, reader, PresetRequest(tt_rank=args.tt_rank)).plan
            plan = spread_over_devices(plan, store, args.devices or 1)
            if (args.policy or "all-ssd") == "all-tt":  # its devices rebuild and pool: compute-centric cores
                import dataclasses

                plan = dataclasses.replace(plan, devices=tuple(dataclasses.replace(d, mem_cores=0, compute_cores=1)
                                                               for d in plan.devices))
        if args.cores is not None:
            plan = with_cores(plan, args.cores)
        remote = remote_devices(args, store, plan)
        if remote is not None:
            import dataclasses

            config = dataclasses.replace(config, device_factory=remote)
        try:
            payload = run_replay(store, reader, plan, config, live=is_live() and not args.no_live)
        finally:
            if remote is not None:
                remote.close()  # the devices' actors end with the replay, whatever happened
        if remote is not None:
            payload["network"] = remote.summary()
    run_dir = write_run("replay", sys.argv, payload, store_id=store.store_id, trace_id=reader.trace_id,
                        runs_dir=args.out_dir)
    if args.json:
        write_json(args.json, payload)
    if args.json != "-":
        stdout_console().print(summary_line(payload, run_dir), markup=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a trace against a store under a policy or plan",
                       description="Serve every lookup of a trace from the tier a plan puts it in, with live stats.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="store directory (from `screc store build`)")
    p.add_argument("--trace", required=True, help="trace file (HDF5)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--policy", choices=POLICIES, default=None, help="simple placement (default all-ssd)")
    g.add_argument("--plan", default=None, help="a plan from `screc plan solve`")
    p.add_argument("--tt-rank", type=int, default=None, help="TT rank for --policy all-tt")
    p.add_argument("--devices", type=int, default=None, help="devices the --policy's tables are spread over "
                                                              "(default 1; a plan names its own)")
    p.add_argument("--cores", type=int, default=None,
                   help="cores per device (threads), split as the plan splits them (default: the plan's)")
    p.add_argument("--verify", action="store_true", help="check every batch against a NumPy reference")
    p.add_argument("--start-batch", type=int, default=0,
                   help="first batch to replay (e.g. after the batches a plan was profiled on)")
    add_replay_args(p)
    add_remote_args(p)
    add_json_arg(p, "the result payload")
    add_out_dir_arg(p)
    p.set_defaults(func=cmd_replay)

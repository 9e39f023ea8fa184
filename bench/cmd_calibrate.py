"""``screc calibrate``: measure this machine's IO, DRAM and core rates, and the replay host thread's costs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.table import Table

from bench.common import (emit_json, add_json_arg, add_qd_arg, ensure_writable_dir, ensure_writable_file, format_bytes,
                          stdout_console)
from tracegen.errors import InputError

EXAMPLE = """example:
  screc calibrate --store stores/tiny --seconds 10 -o runs/calibration.json
  screc calibrate --dir /mnt/nvme --seconds 20 --qd 32 -o runs/calibration.json --json
  screc plan solve --store stores/tiny --trace traces/tiny.h5 --dram-budget 4MiB --calibration runs/calibration.json \\
      -o runs/plan.json

The host costs come from replaying synthetic batches of the store (or of a scratch store built in --dir) under
several plans with the real engine; calibrate close in time to the replays you compare with (a loaded machine
shifts every number).
"""

HOST_ROWS = (("batch_s", "per batch"), ("table_s", "per table"), ("lookup_s", "per lookup"),
             ("raw_table_s", "per table with cold raw lookups"), ("raw_lookup_s", "per lookup served from SSD pages"),
             ("read_s", "per read request"), ("tt_table_s", "per table with TT lookups"),
             ("tt_lookup_s", "per TT lookup"), ("tt_row_s", "per unique TT row"), ("tt_flop_s", "per TT rebuild flop"),
             ("io_device_s", "per device with reads"))


def render_calibration(calib) -> Table:
    """The measured rates as one table (pure)."""
    t = Table(title=f"calibration ({calib.source})")
    t.add_column("what")
    t.add_column("value", justify="right")
    for qd in sorted(calib.io_iops_by_qd):
        lat = calib.io_latency_s_by_qd.get(qd, float("nan"))
        t.add_row(f"4 KiB random reads, QD {qd}", f"{calib.io_iops_by_qd[qd]:,.0f} IOPS, {lat * 1e6:,.0f} us")
    t.add_row("large random reads", f"{format_bytes(calib.read_bytes_per_s)}/s")
    t.add_row("host DRAM gather+pool (1 thread)",
              f"{calib.dram_lookups_per_s:,.0f} lookups/s + {format_bytes(calib.dram_bytes_per_s)}/s")
    t.add_row("memory-centric core", f"{calib.mem_core_lookups_per_s:,.0f} rows/s")
    for r in sorted(calib.tt_rows_per_s_by_rank):
        t.add_row(f"compute-centric core, TT rank {r}", f"{calib.tt_rows_per_s_by_rank[r]:,.0f} rows/s")
    t.add_row("compute-centric core", f"{calib.compute_core_flops_per_s / 1e9:,.2f} GFLOP/s")
    h = calib.host
    if h is not None:
        label = "" if h.source == "measured" else f" ({h.source})"
        for key, what in HOST_ROWS:
            v = getattr(h, key)
            t.add_row(f"host thread{label}, {what}", f"{v * 1e9:,.1f} ns" if v < 1e-6 else f"{v * 1e6:,.2f} us")
        t.add_row(f"device IO{label}", f"{h.io_read_s * 1e6:.2f} us/read + {h.io_page_s * 1e6:.2f} us/page + "
                                       f"{h.io_other_page_s * 1e6:.2f} us/page of the other devices")
        t.add_row(f"IO hand-off between batches{label}", f"{h.io_handoff_s * 1e3:.2f} ms")
        if "rms_rel_error" in h.fit:
            t.add_row("host-time fit", f"rms {h.fit['rms_rel_error']:.0%}, worst {h.fit['max_abs_rel_error']:.0%} "
                                       f"over {len(h.fit.get('samples', []))} replays")
    return t


def cmd_calibrate(args: argparse.Namespace) -> int:
    from plans.calibration import measure_calibration

    if args.store and args.dir:
        raise InputError("give --store or --dir, not both")
    if not (0 < args.seconds < math.inf):
        raise InputError(f"--seconds must be a finite number > 0, got {args.seconds}")
    ensure_writable_file(args.output)  # before measuring for seconds
    ensure_writable_file(args.json)
    if args.qd < 1:
        raise InputError(f"--qd must be >= 1, got {args.qd}")
    if args.store:
        from emulator.store.store import Store

        target = Store.open(args.store)
    else:
        target = Path(args.dir or ".")
        if not target.is_dir():
            raise InputError("is a file, not a directory" if target.exists() else "directory not found", target)
        ensure_writable_dir(target)  # the scratch file goes here
    if args.replay_batches < 2:
        raise InputError(f"--replay-batches must be >= 2, got {args.replay_batches}")
    calib = measure_calibration(target, args.seconds, host_costs=not args.no_host_costs,
                                replay_batches=args.replay_batches, queue_depth=args.qd)
    calib.save(args.output)
    if emit_json(args.json, calib.to_dict()):
        return 0
    con = stdout_console()
    con.print(render_calibration(calib))
    for n in calib.notes:
        con.print(f"note: {n}", markup=False)
    load = calib.machine.get("load_average")
    con.print(f"wrote {args.output} (measured on this machine, possibly under contention from other processes"
              + (f"; load average {load[0]:.2f} before, {calib.machine['load_average_after'][0]:.2f} after"
                 if load and calib.machine.get("load_average_after") else "") + ")")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="measure IO, DRAM and core rates for the planner's cost model",
                              description="Measure this machine (O_DIRECT random reads by queue depth, DRAM gather, "
                                          "page extraction, TT rebuild by rank).",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="measure IO on this store's raw files")
    p.add_argument("--dir", help="measure IO on a scratch file in this directory (default: current directory)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="about how long to measure the rates (default 10; the host-cost replays come on top)")
    p.add_argument("--replay-batches", type=int, default=16,
                   help="batches per calibration replay (default 16; each plan is replayed 5 times; shorter "
                        "replays stay in the CPU caches and under-predict long replays)")
    add_qd_arg(p)
    p.add_argument("--no-host-costs", action="store_true",
                   help="skip the replays (the local profile then falls back to the parallel-resource model)")
    p.add_argument("-o", "--output", required=True, help="calibration JSON to write")
    add_json_arg(p, "the calibration")
    p.set_defaults(func=cmd_calibrate)

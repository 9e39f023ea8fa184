"""``screc calibrate``: measure this machine's IO, DRAM and core rates for the cost model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from bench.common import format_bytes, stdout_console, write_json
from tracegen.errors import InputError

EXAMPLE = """example:
  screc calibrate --store stores/tiny --seconds 10 -o runs/calibration.json
  screc calibrate --dir /mnt/nvme --seconds 20 -o runs/calibration.json
"""


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
    return t


def cmd_calibrate(args: argparse.Namespace) -> int:
    from plans.calibration import measure_calibration

    if args.store and args.dir:
        raise InputError("give --store or --dir, not both")
    if args.store:
        from emulator.store import Store

        target = Store.open(args.store)
    else:
        target = Path(args.dir or ".")
    calib = measure_calibration(target, args.seconds)
    calib.save(args.output)
    if args.json:
        write_json("-", calib.to_dict())
        return 0
    con = stdout_console()
    con.print(render_calibration(calib))
    for n in calib.notes:
        con.print(f"note: {n}")
    con.print(f"wrote {args.output} (measured on this machine, possibly under contention from other processes)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="measure IO, DRAM and core rates for the planner's cost model",
                              description="Measure this machine (O_DIRECT random reads by queue depth, DRAM gather, "
                                          "page extraction, TT rebuild by rank).",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="measure IO on this store's raw files")
    p.add_argument("--dir", help="measure IO on a scratch file in this directory (default: current directory)")
    p.add_argument("--seconds", type=float, default=10.0, help="about how long to measure (default 10)")
    p.add_argument("-o", "--output", required=True, help="calibration JSON to write")
    p.add_argument("--json", action="store_true", help="print the calibration as JSON")
    p.set_defaults(func=cmd_calibrate)

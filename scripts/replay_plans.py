"""Replay several plans (each on its own store) warm and in interleaved rounds; ratios against the first.

    python scripts/replay_plans.py --trace traces/meta.h5 --start-batch 8 --batches 8 \\
        stores/meta-q:runs/plan_fp32.json stores/meta-q:runs/plan_formats.json stores/meta:runs/plan_tt.json

Each plan is measured with bench/measure.py's ``measure_once`` (a fresh replayer, warm-up batches before the
clock, the range looped to at least 20 batches and 2 s), round-robin with the order reversed every other
round; printed per plan: the median steady-state queries/s of the rounds, the slowest and fastest round, the
IO per batch, and the ratio of the medians to the first plan's (measured in the same run). Stores may differ
(e.g. one built with ``--row-formats``, one without) as long as they hold the same tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from bench.measure import BatchRange, MeasureConfig, measure_once
from emulator.replay.engine import ReplayConfig
from emulator.store.store import Store
from plans.planner import load_plan
from tracegen.trace_io import TraceReader


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", metavar="STORE:PLAN")
    p.add_argument("--trace", required=True)
    p.add_argument("--start-batch", type=int, default=0)
    p.add_argument("--batches", type=int, required=True, help="distinct batches measured from --start-batch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="write the figures here too")
    args = p.parse_args(argv)
    cfg = MeasureConfig(rounds=args.rounds)
    pairs = [tuple(x.split(":", 1)) for x in args.pairs]
    qps: dict[str, list[float]] = {plan: [] for _, plan in pairs}
    io: dict[str, float] = {}
    with TraceReader(args.trace) as reader:
        for r in range(args.rounds):
            for store_path, plan_path in (pairs if r % 2 == 0 else pairs[::-1]):
                store = Store.open(store_path)
                res = measure_once(store, reader, load_plan(plan_path, store), BatchRange(args.start_batch, args.batches),
                                   ReplayConfig(), cfg)
                qps[plan_path].append(res.steady_qps)
                io[plan_path] = res.payload["bytes_read"] / res.batches
                print(f"round {r + 1}: {plan_path}: {res.steady_qps:,.0f} queries/s", file=sys.stderr, flush=True)
    ref = statistics.median(qps[pairs[0][1]])
    rows = [{"plan": plan, "store": store, "median_qps": statistics.median(qps[plan]), "min_qps": min(qps[plan]),
             "max_qps": max(qps[plan]), "read_bytes_per_batch": io[plan],
             "ratio": statistics.median(qps[plan]) / ref} for store, plan in pairs]
    print(f"measured, {args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'plan':44} {'queries/s':>10} {'range':>15} {'MiB read/b':>10} {'ratio':>6}")
    for x in rows:
        print(f"{x['plan'][-44:]:44} {x['median_qps']:>10,.0f} {x['min_qps']:>7,.0f}-{x['max_qps']:<7,.0f} "
              f"{x['read_bytes_per_batch'] / 2**20:>10.1f} {x['ratio']:>6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "loadavg": os.getloadavg(), "rounds": args.rounds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the per-table figures cost a replay: ``table_counters`` against the engine's ``finish`` of the same batch.

A mixed plan over two devices (every table half hot; the cold rest of every third table TT at the store's
smallest rank, of the next ones raw behind a 64-row LRU cache, of the others raw) serves the first batches of a
trace one at a time; per batch it times ``Replayer.finish`` and then ``table_counters`` on its result, and
prints the medians (first batch excluded) and their ratio. Measured; state the load average with the figures.

Run: ``python scripts/table_stats_cost.py STORE TRACE [BATCHES]``
(e.g. ``python scripts/table_stats_cost.py stores/f15meta traces/f15meta.h5 6``: 856 tables, 3.5M lookups a batch)
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from emulator.plan import DevicePlan, Plan, TablePlacement
from emulator.replay.engine import ReplayConfig, Replayer
from emulator.replay.table_stats import table_counters
from emulator.store.store import Store
from tracegen.trace_io import TraceReader


def mixed_plan(store: Store) -> Plan:
    ranks = sorted({int(v.rank) for t in store.tables for v in t.tt})
    pls = []
    for i, t in enumerate(store.tables):
        tt = bool(ranks) and i % 3 == 0 and ranks[0] in {int(v.rank) for v in t.tt}
        pls.append(TablePlacement(t.name, int(t.rows) // 2, "ssd_tt" if tt else "ssd_raw", ranks[0] if tt else None,
                                  i % 2, lru_rows=64 if i % 3 == 1 else 0))
    return Plan(store.store_id, tuple(pls), (DevicePlan("d0", 1, 1), DevicePlan("d1", 1, 1)), planner="mixed")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    store = Store.open(argv[0])
    n = int(argv[2]) if len(argv) == 3 else 6
    finish_s, counters_s = [], []
    with Replayer(store, mixed_plan(store), ReplayConfig(pipeline=False)) as rep, TraceReader(argv[1]) as r:
        for b in r.batches(0, min(n, r.num_batches)):
            p = rep.prepare(b)
            rep.start_io(p)
            t0 = time.perf_counter()
            _, work = rep.finish(p)
            finish_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c = table_counters(p, work, rep.tables)
            counters_s.append(time.perf_counter() - t0)
            if int(c.served.sum()) != b.num_lookups:
                raise AssertionError("per-table lookups do not add up to the batch's")
    f, c = np.median(finish_s[1:]), np.median(counters_s[1:])
    print(f"{b.num_lookups:,} lookups a batch, {len(rep.tables)} tables, {len(finish_s) - 1} batches after the "
          f"first (measured): finish {f * 1e3:.1f} ms, table_counters {c * 1e3:.2f} ms = {c / f:.3f}x of finish; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

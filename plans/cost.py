"""The cost model: pure functions of statistics, calibration and device profiles.

Every function states its unit in its name. The planners (MIP, greedy,
baselines) only consume these numbers; none computes a cost itself.

Model of one batch (all resources work in parallel, the batch takes the slowest):

* host DRAM: hot lookups gather + pool, ``lookups / dram_lookups_per_s +
  lookups * row_bytes / dram_bytes_per_s`` on ``host_threads`` threads;
* device IO: the distinct cold 4 KiB pages of its ``ssd_raw`` tables, at
  ``max(1 / iops, page_bytes / read_bytes_per_s)`` seconds per page (the engine
  reads each page once per batch);
* memory-centric cores: the cold lookups of its ``ssd_raw`` tables, extracted
  and pooled, divided over ``mem_cores``;
* compute-centric cores: the distinct cold rows of its ``ssd_tt`` tables,
  each rebuilt at ``flops_per_row`` (rebuilt once per batch), over ``compute_cores``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from plans.types import (Budgets, Calibration, DeviceProfile, Estimator, Perf, PlannerOptions, Storage,
                         TableLoad, TableOption, TableStats, WorkloadStats)

COLD_NONE = "none"


# --- unit costs --------------------------------------------------------------------------------


def dram_time_s(lookups: float, row_bytes: int, calib: Calibration, threads: int = 1) -> float:
    """Seconds for the host to gather and pool ``lookups`` rows of ``row_bytes`` from DRAM."""
    per_thread = lookups / calib.dram_lookups_per_s + lookups * row_bytes / calib.dram_bytes_per_s
    return per_thread / max(1, threads)


def io_seconds_per_page(device: DeviceProfile) -> float:
    """Seconds one device needs per 4 KiB page: bounded by IOPS or by bandwidth."""
    return max(1.0 / device.iops, device.page_bytes / device.read_bytes_per_s)


def io_time_s(pages: float, calib: Calibration, queue_depth: int) -> float:
    """Seconds to read ``pages`` random pages of ``calib.io_read_bytes`` at ``queue_depth``."""
    per_page = max(1.0 / calib.iops_at(queue_depth), calib.io_read_bytes / calib.read_bytes_per_s)
    return pages * per_page


def device_io_time_s(pages: float, device: DeviceProfile) -> float:
    return pages * io_seconds_per_page(device)


def _split_time_s(work_core_s: float, n_cores: int) -> float:
    if work_core_s <= 0:
        return 0.0
    return math.inf if n_cores <= 0 else work_core_s / n_cores


def mem_core_time_s(lookups: float, device: DeviceProfile, n_cores: int) -> float:
    """Seconds for ``n_cores`` memory-centric cores to extract and pool ``lookups`` rows."""
    return _split_time_s(lookups / device.mem_core_lookups_per_s, n_cores)


def compute_core_time_s(flops: float, device: DeviceProfile, n_cores: int) -> float:
    """Seconds for ``n_cores`` compute-centric cores to do ``flops`` of TT rebuilding."""
    return _split_time_s(flops / device.compute_core_flops_per_s, n_cores)


def tt_rebuild_time_s(rows: float, rank: int, calib: Calibration, n_cores: int) -> float:
    """Seconds to rebuild ``rows`` rows of the calibration's reference TT shape at ``rank``
    (nearest measured rank), on ``n_cores`` cores."""
    if rows <= 0:
        return 0.0
    ranks = sorted(calib.tt_rows_per_s_by_rank)
    if not ranks:
        raise ValueError("calibration has no TT rebuild rates")
    r = min(ranks, key=lambda x: abs(x - rank))
    return _split_time_s(rows / calib.tt_rows_per_s_by_rank[r], n_cores)


def tt_flops_per_row(q_shapes: Sequence[int], ranks: Sequence[int]) -> float:
    """Flops to rebuild one row by left-to-right contraction of its core slices.

    Step k multiplies the (Q_{k-1} x r_{k-1}) partial product by the
    (r_{k-1} x q_k r_k) slice: 2 Q_{k-1} r_{k-1} q_k r_k flops, Q_k = q_1...q_k.
    """
    if len(ranks) != len(q_shapes) + 1:
        raise ValueError("tt_ranks must have one more entry than tt_q_shapes")
    flops, q_prod = 0.0, 1
    for k, q in enumerate(q_shapes):
        flops += 2.0 * q_prod * ranks[k] * q * ranks[k + 1]
        q_prod *= q
    return flops


# --- options and their loads -------------------------------------------------------------------


def table_load(ts: TableStats, hot_rows: int, cold_tier: str, tt_rank: int | None,
               total_lookups_per_batch: float) -> TableLoad:
    """The work a placement of table ``ts`` puts on each resource, per batch."""
    mass, cold_rows, cold_pages = ts.at(hot_rows)
    lookups = ts.lookups_per_batch
    cold_lookups = lookups * (1.0 - mass) if hot_rows < ts.rows else 0.0
    host_bytes = int(hot_rows) * ts.row_bytes
    if cold_tier == COLD_NONE or hot_rows >= ts.rows:
        return TableLoad(lookups, ts.row_bytes, 0.0, 0.0, 0.0, 0.0, ts.rows * ts.row_bytes, 0, 0, 0.0)
    if cold_tier == "ssd_raw":
        return TableLoad(lookups - cold_lookups, ts.row_bytes, cold_lookups, cold_pages, 0.0, 0.0, host_bytes, 0,
                         ts.ssd_raw_bytes(hot_rows), 0.0)
    if cold_tier == "ssd_tt":
        v = ts.tt_variant(int(tt_rank))
        share = cold_lookups / total_lookups_per_batch if total_lookups_per_batch > 0 else 0.0
        return TableLoad(lookups - cold_lookups, ts.row_bytes, 0.0, 0.0, cold_rows,
                         cold_rows * v.flops_per_row, host_bytes, v.core_bytes, v.core_bytes,
                         share * v.rel_fro_error)
    raise ValueError(f"unknown cold tier {cold_tier!r}")


def candidate_hot_rows(ts: TableStats, levels: Sequence[float]) -> list[int]:
    """0, the smallest grid size reaching each access-mass level, and every row."""
    out = {0, ts.rows}
    for level in levels:
        idx = np.nonzero(ts.mass >= level - 1e-12)[0]
        if idx.size:
            out.add(int(ts.hot_rows[idx[0]]))
    return sorted(k for k in out if 0 <= k <= ts.rows)


def allowed_tt_ranks(ts: TableStats, budgets: Budgets) -> list[int]:
    if budgets.max_rel_error is not None and budgets.max_rel_error <= 0:
        return []
    if budgets.accuracy_mode == "per-table" and budgets.max_rel_error is not None:
        return [v.rank for v in ts.tt if v.rel_fro_error <= budgets.max_rel_error]
    return [v.rank for v in ts.tt]


class StatsEstimator(Estimator):
    """Candidate options per table: hot size from the mass levels x cold tier (raw or an allowed TT rank)."""

    def table_options(self, stats: WorkloadStats, budgets: Budgets,
                      options: PlannerOptions) -> list[list[TableOption]]:
        total = stats.lookups_per_batch
        out = []
        for t, ts in enumerate(stats.tables):
            opts = []
            ranks = allowed_tt_ranks(ts, budgets)
            for k in candidate_hot_rows(ts, options.hot_mass_levels):
                if k >= ts.rows:
                    opts.append(TableOption(t, ts.rows, COLD_NONE, None, table_load(ts, ts.rows, COLD_NONE, None, total)))
                    continue
                opts.append(TableOption(t, k, "ssd_raw", None, table_load(ts, k, "ssd_raw", None, total)))
                for r in ranks:
                    opts.append(TableOption(t, k, "ssd_tt", r, table_load(ts, k, "ssd_tt", r, total)))
            out.append(opts)
        return out


def option_device_times(load: TableLoad, device: DeviceProfile) -> tuple[float, float, float]:
    """(IO seconds, memory-core seconds on one core, compute-core seconds on one core) of one option."""
    return (device_io_time_s(load.io_pages, device), mem_core_time_s(load.mem_core_lookups, device, 1),
            compute_core_time_s(load.tt_flops, device, 1))


def option_dram_time_s(load: TableLoad, calib: Calibration, threads: int = 1) -> float:
    return dram_time_s(load.dram_lookups, load.dram_row_bytes, calib, threads)


# --- whole plans -------------------------------------------------------------------------------


def plan_loads(plan, stats: WorkloadStats) -> list[TableLoad]:
    """The load of every table under ``plan`` (an ``emulator.plan.Plan``), in ``stats`` order."""
    total = stats.lookups_per_batch
    loads = []
    for ts in stats.tables:
        p = plan.placement(ts.name)
        tier = COLD_NONE if p.hot_rows >= ts.rows else p.cold_tier
        loads.append(table_load(ts, min(p.hot_rows, ts.rows), tier, p.tt_rank, total))
    return loads


def predict_batch_time(plan, stats: WorkloadStats, calib: Calibration, devices: Sequence[DeviceProfile],
                       host_threads: int = 1) -> Perf:
    """Predicted seconds per batch of every resource under ``plan``."""
    if len(plan.devices) != len(devices):
        raise ValueError(f"plan has {len(plan.devices)} devices, {len(devices)} profiles given")
    n = len(devices)
    io, mem, comp = [0.0] * n, [0.0] * n, [0.0] * n
    dram = 0.0
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        d = plan.placement(ts.name).device
        dram += option_dram_time_s(load, calib, host_threads)
        io_s, mem_s, comp_s = option_device_times(load, devices[d])
        io[d] += io_s
        mem[d] += mem_s
        comp[d] += comp_s
    mem_t = tuple(_split_time_s(w, dp.mem_cores) for w, dp in zip(mem, plan.devices))
    comp_t = tuple(_split_time_s(w, dp.compute_cores) for w, dp in zip(comp, plan.devices))
    return Perf(dram, tuple(io), mem_t, comp_t)


def memory_use(plan, stats: WorkloadStats) -> Storage:
    """Host DRAM, device DRAM and SSD bytes ``plan`` needs."""
    n = len(plan.devices)
    dev, ssd = [0] * n, [0] * n
    host = 0
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        d = plan.placement(ts.name).device
        host += load.host_dram_bytes
        dev[d] += load.device_dram_bytes
        ssd[d] += load.ssd_bytes
    return Storage(host, tuple(dev), tuple(ssd))


def weighted_error(plan, stats: WorkloadStats) -> float:
    """Lookup-weighted mean relative error of the rows served (0 when nothing is approximated)."""
    return float(sum(load.error_weight for load in plan_loads(plan, stats)))


def max_table_error(plan, stats: WorkloadStats) -> float:
    worst = 0.0
    for ts in stats.tables:
        p = plan.placement(ts.name)
        if p.cold_tier == "ssd_tt" and p.hot_rows < ts.rows:
            worst = max(worst, ts.tt_variant(p.tt_rank).rel_fro_error)
    return worst


def best_core_split(mem_work_core_s: float, compute_work_core_s: float, cores: int) -> tuple[int, float]:
    """Memory-core count (of ``cores``) minimising max(mem, compute) time, and that time."""
    best = (cores, math.inf)
    for m in range(cores + 1):
        t = max(_split_time_s(mem_work_core_s, m), _split_time_s(compute_work_core_s, cores - m))
        if t < best[1] - 1e-15:
            best = (m, t)
    return best

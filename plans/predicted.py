"""A plan with the cost model's prediction attached: the last step of every planner."""

from __future__ import annotations

from typing import Sequence

from emulator.plan import Plan, TablePlacement
from plans.cost import memory_use, plan_loads, predict_batch_time, weighted_error
from plans.types import Budgets, Calibration, DeviceProfile, TableOption, WorkloadStats


def placements(stats: WorkloadStats, chosen: Sequence[TableOption], device_of: Sequence[int]
               ) -> tuple[TablePlacement, ...]:
    """The plan's table placements: option ``chosen[t]`` of table t on device ``device_of[t]`` (< 0: none)."""
    return tuple(TablePlacement(ts.name, int(o.hot_rows), o.plan_tier, o.tt_rank, max(int(d), 0),
                                row_format=o.row_format) for ts, o, d in zip(stats.tables, chosen, device_of))


def finish_plan(tables, dplans, stats: WorkloadStats, calib: Calibration, budgets: Budgets,
                devices: Sequence[DeviceProfile], planner: str, solver: dict | None = None,
                remap: str | None = None) -> Plan:
    """A :class:`Plan` with the cost model's prediction and labels attached (shared by every planner)."""
    draft = Plan(store_id=stats.store_id or "modelled", tables=tables, devices=dplans, trace_id=stats.trace_id,
                 dram_budget_bytes=budgets.host_dram_bytes, planner=planner, remap=remap)
    perf = predict_batch_time(draft, stats, calib, devices, budgets.host_threads)
    storage = memory_use(draft, stats)
    per_table = {}
    for ts, load in zip(stats.tables, plan_loads(draft, stats)):
        per_table[ts.name] = {"rows": ts.rows, "row_bytes": ts.row_bytes, "lookups_per_batch": ts.lookups_per_batch,
                              "dram_lookups": load.dram_lookups, "mem_core_lookups": load.mem_core_lookups,
                              "io_pages": load.io_pages, "tt_rebuild_rows": load.tt_rebuild_rows,
                              "host_dram_bytes": load.host_dram_bytes, "device_dram_bytes": load.device_dram_bytes,
                              "ssd_bytes": load.ssd_bytes}
    modelled = stats.source == "modelled" or calib.source != "measured" or any(d.modelled for d in devices)
    predicted = {"perf": perf.to_dict(), "storage": storage.to_dict(),
                 "weighted_rel_error": weighted_error(draft, stats), "batch_size": stats.batch_size, "stats_source": stats.source, "calibration_source": calib.source,
                 "devices": [d.name for d in devices], "modelled": modelled, "tables": per_table}
    return Plan(store_id=draft.store_id, tables=tables, devices=dplans, trace_id=stats.trace_id,
                dram_budget_bytes=budgets.host_dram_bytes, planner=planner, remap=remap, predicted=predicted,
                solver=solver or {})

"""Planners behind one interface: the MIP and the baselines it is compared with.

* :class:`AllSSDPlanner`: nothing hot, every table raw on SSD, tables dealt to
  devices round-robin, every core memory-centric.
* :class:`StaticTopKPlanner`: hot rows pinned by access density (lookups
  served per DRAM byte, best first over every table's candidate hot sizes)
  until the DRAM budget is spent; no TT; round-robin devices; memory cores only.
* :class:`GreedyPlanner`: the same hot sets, then local search on the cold
  parts: tables go to devices longest-first, and the move (switch a table on
  the bottleneck device to TT, or move it to another device) that most lowers
  the predicted batch time is taken until none helps; each device gets its
  best core split. Respects every budget, including accuracy. On host-serial
  (local) devices the moves are judged by max(host thread, IO per device).
* :class:`MIPPlanner`: ``plans.mip`` / ``plans.mip_solve`` (optimal within the candidate lists).

They all ask ``plans.cost`` for every number.
"""

from __future__ import annotations

import heapq
from typing import Sequence

from emulator.plan import DevicePlan, Plan, TablePlacement
from emulator.tiers import NONE, SSD_RAW, SSD_TT
from plans.cost import (StatsEstimator, best_core_split, is_host_serial, option_device_times, option_host_parts_s,
                        option_host_time_s, option_io_linear_s, option_io_other_s)
from plans.mip_solve import plan_mip
from plans.predicted import finish_plan, placements
from plans.types import Budgets, Calibration, DeviceProfile, Planner, PlannerOptions, TableOption, WorkloadStats
from tracegen.errors import InputError


def _options(stats: WorkloadStats, budgets: Budgets, options: PlannerOptions) -> list[list[TableOption]]:
    return StatsEstimator().table_options(stats, budgets, options)


def _hot_by_density(stats: WorkloadStats, opts: list[list[TableOption]], budget_bytes: int) -> list[TableOption]:
    """Per table, the raw option (or all-hot) reached by spending DRAM on the densest steps first."""
    ladders = []
    for table_opts in opts:
        raw = sorted((o for o in table_opts if o.cold_tier in (SSD_RAW, NONE)), key=lambda o: o.hot_rows)
        ladders.append(raw)
    pos = [0] * len(ladders)
    used = sum(lad[0].load.host_dram_bytes for lad in ladders)
    if used > budget_bytes:
        raise InputError("the DRAM budget is too small even for no hot rows")
    heap: list[tuple[float, int, int]] = []

    def push(t: int) -> None:
        lad, i = ladders[t], pos[t]
        if i + 1 < len(lad):
            gain = lad[i + 1].load.dram_lookups - lad[i].load.dram_lookups
            cost = max(lad[i + 1].load.host_dram_bytes - lad[i].load.host_dram_bytes, 1)
            heapq.heappush(heap, (-gain / cost, t, i))

    for t in range(len(ladders)):
        push(t)
    while heap:
        _, t, i = heapq.heappop(heap)
        if pos[t] != i:
            continue
        lad = ladders[t]
        extra = lad[i + 1].load.host_dram_bytes - lad[i].load.host_dram_bytes
        if used + extra <= budget_bytes:
            used += extra
            pos[t] = i + 1
            push(t)
    return [lad[p] for lad, p in zip(ladders, pos)]


class AllSSDPlanner(Planner):
    name = "all-ssd"

    def plan(self, stats, calibration, budgets, devices) -> Plan:
        tables = tuple(TablePlacement(t.name, 0, SSD_RAW, None, i % len(devices)) for i, t in enumerate(stats.tables))
        dplans = tuple(DevicePlan(d.name, mem_cores=d.cores, compute_cores=0) for d in devices)
        return finish_plan(tables, dplans, stats, calibration, budgets, devices, self.name)


class StaticTopKPlanner(Planner):
    name = "static-topk"

    def __init__(self, options: PlannerOptions = PlannerOptions()):
        self.options = options

    def plan(self, stats, calibration, budgets, devices) -> Plan:
        no_tt = Budgets(budgets.host_dram_bytes, 0.0, budgets.accuracy_mode, budgets.host_threads)
        chosen = _hot_by_density(stats, _options(stats, no_tt, self.options), budgets.host_dram_bytes)
        tables = placements(stats, chosen, [i % len(devices) for i in range(len(chosen))])
        dplans = tuple(DevicePlan(d.name, mem_cores=d.cores, compute_cores=0) for d in devices)
        return finish_plan(tables, dplans, stats, calibration, budgets, devices, self.name)


class GreedyPlanner(Planner):
    name = "greedy"

    def __init__(self, options: PlannerOptions = PlannerOptions(), max_moves: int | None = None):
        self.options = options
        self.max_moves = max_moves

    def plan(self, stats, calibration, budgets, devices) -> Plan:
        devices = tuple(devices)
        opts = _options(stats, budgets, self.options)
        chosen = _hot_by_density(stats, opts, budgets.host_dram_bytes)
        if is_host_serial(devices, calibration):
            return self._plan_serial(stats, calibration, budgets, devices, opts, chosen)
        nd = len(devices)
        # TT alternatives at the same hot size
        alts = [[o for o in opts[t] if o.hot_rows == chosen[t].hot_rows and o.cold_tier == SSD_TT]
                for t in range(len(opts))]
        times = {}

        def dev_times(o: TableOption, d: int) -> tuple[float, float, float]:
            key = (id(o), d)
            if key not in times:
                times[key] = option_device_times(o.load, devices[d])
            return times[key]

        # longest first onto the least loaded device (by raw work)
        order = sorted(range(len(chosen)), key=lambda t: -sum(dev_times(chosen[t], 0)))
        load = [[0.0, 0.0, 0.0] for _ in range(nd)]  # io s, mem core-s, compute core-s
        dev_bytes, ssd_bytes = [0] * nd, [0] * nd
        device_of = [0] * len(chosen)

        def dev_time(d: int, l3=None) -> float:
            io, mem, comp = l3 if l3 is not None else load[d]
            return max(io, best_core_split(mem, comp, devices[d].cores)[1])

        def fits(d: int, o: TableOption, sign: int = 1) -> bool:
            return (dev_bytes[d] + sign * o.load.device_dram_bytes <= devices[d].device_dram_bytes
                    and ssd_bytes[d] + sign * o.load.ssd_bytes <= devices[d].ssd_capacity_bytes)

        def apply(t: int, o: TableOption, d: int, sign: int) -> None:
            for i, v in enumerate(dev_times(o, d)):
                load[d][i] += sign * v
            dev_bytes[d] += sign * o.load.device_dram_bytes
            ssd_bytes[d] += sign * o.load.ssd_bytes

        for t in order:
            cands = [d for d in range(nd) if fits(d, chosen[t])] or list(range(nd))
            d = min(cands, key=lambda d: dev_time(d, [a + b for a, b in zip(load[d], dev_times(chosen[t], d))]))
            device_of[t] = d
            apply(t, chosen[t], d, +1)
        err = sum(o.load.error_weight for o in chosen)
        err_budget = budgets.max_rel_error if budgets.accuracy_mode == "weighted" else None
        moves = self.max_moves if self.max_moves is not None else 4 * len(chosen)
        for _ in range(moves):
            cur = [dev_time(d) for d in range(nd)]
            worst = max(range(nd), key=lambda d: cur[d])
            best = None  # (new max time, t, option, device)
            for t in range(len(chosen)):
                if device_of[t] != worst or not chosen[t].needs_device:
                    continue
                for o in [chosen[t]] + [a for a in alts[t] if a is not chosen[t]] + \
                         ([x for x in opts[t] if x.hot_rows == chosen[t].hot_rows and x.cold_tier == SSD_RAW]):
                    if err_budget is not None and err - chosen[t].load.error_weight + o.load.error_weight > err_budget + 1e-12:
                        continue
                    for d in range(nd):
                        if o is chosen[t] and d == worst:
                            continue
                        apply(t, chosen[t], worst, -1)
                        ok = fits(d, o)
                        apply(t, o, d, +1)
                        new = max(dev_time(x) for x in range(nd))
                        apply(t, o, d, -1)
                        apply(t, chosen[t], worst, +1)
                        if ok and new < max(cur) * (1 - 1e-9) and (best is None or new < best[0]):
                            best = (new, t, o, d)
            if best is None:
                break
            _, t, o, d = best
            apply(t, chosen[t], device_of[t], -1)
            err += o.load.error_weight - chosen[t].load.error_weight
            chosen[t], device_of[t] = o, d
            apply(t, o, d, +1)
        dplans = []
        for d, dev in enumerate(devices):
            m, _ = best_core_split(load[d][1], load[d][2], dev.cores)
            dplans.append(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m))
        return finish_plan(placements(stats, chosen, device_of), tuple(dplans), stats, calibration, budgets,
                           devices, self.name)


    def _plan_serial(self, stats, calibration, budgets, devices, opts, chosen) -> Plan:
        """Host-serial devices: the batch takes max(host thread, IO of each device). Tables go to devices
        longest IO first; then the move (another cold tier at the same hot size, or another device) that most
        lowers the predicted time (then the total work) is taken until none helps."""
        host, nd, qd = calibration.host, len(devices), devices[0].queue_depth
        alts = [[o for o in opts[t] if o.hot_rows == chosen[t].hot_rows and o.needs_device] for t in range(len(opts))]
        hs = {id(o): option_host_time_s(o.load, host) for ol in opts for o in ol}
        ios = {id(o): option_io_linear_s(o.load, calibration, qd) for ol in opts for o in ol}
        oth = {id(o): option_io_other_s(o.load, calibration) for ol in opts for o in ol}
        own, other, dev_bytes, ssd_bytes = [0.0] * nd, [0.0] * nd, [0] * nd, [0] * nd
        device_of = [0] * len(chosen)

        def io_times(own_: list[float], other_: list[float]) -> list[float]:  # a device also waits for the others
            tot = sum(other_)
            return [o + tot - x for o, x in zip(own_, other_)]

        for t in sorted(range(len(chosen)), key=lambda t: -ios[id(chosen[t])]):
            d = min(range(nd), key=lambda d: own[d])
            device_of[t] = d
            own[d] += ios[id(chosen[t])]
            other[d] += oth[id(chosen[t])]
            dev_bytes[d] += chosen[t].load.device_dram_bytes
            ssd_bytes[d] += chosen[t].load.ssd_bytes
        host_total = host.batch_s + sum(hs[id(o)] for o in chosen)
        err = sum(o.load.error_weight for o in chosen)
        err_budget = budgets.max_rel_error if budgets.accuracy_mode == "weighted" else None
        for _ in range(self.max_moves if self.max_moves is not None else 4 * len(chosen)):
            io = io_times(own, other)
            cur = (max(host_total, *io), host_total + sum(io))
            best = None
            for t, o0 in enumerate(chosen):
                if not o0.needs_device:
                    continue
                d0 = device_of[t]
                for o in alts[t]:
                    if err_budget is not None and err - o0.load.error_weight + o.load.error_weight > err_budget + 1e-12:
                        continue
                    for d in range(nd):
                        if o is o0 and d == d0:
                            continue
                        new_own, new_other = list(own), list(other)
                        new_own[d0] -= ios[id(o0)]
                        new_own[d] += ios[id(o)]
                        new_other[d0] -= oth[id(o0)]
                        new_other[d] += oth[id(o)]
                        db = [b - (o0.load.device_dram_bytes if i == d0 else 0) + (o.load.device_dram_bytes if i == d
                                                                                  else 0) for i, b in enumerate(dev_bytes)]
                        sb = [b - (o0.load.ssd_bytes if i == d0 else 0) + (o.load.ssd_bytes if i == d else 0)
                              for i, b in enumerate(ssd_bytes)]
                        if any(b > dv.device_dram_bytes for b, dv in zip(db, devices)) or \
                                any(b > dv.ssd_capacity_bytes for b, dv in zip(sb, devices)):
                            continue
                        h = host_total - hs[id(o0)] + hs[id(o)]
                        new_io = io_times(new_own, new_other)
                        val = (max(h, *new_io), h + sum(new_io))
                        if val[0] < cur[0] * (1 - 1e-9) or (val[0] <= cur[0] and val[1] < cur[1] * (1 - 1e-9)):
                            if best is None or val < best[0]:
                                best = (val, t, o, d, new_own, new_other, db, sb, h)
            if best is None:
                break
            _, t, o, d, own, other, dev_bytes, ssd_bytes, host_total = best
            err += o.load.error_weight - chosen[t].load.error_weight
            chosen[t], device_of[t] = o, d
        dplans = []
        for d, dev in enumerate(devices):
            parts = [option_host_parts_s(o.load, host) for o, dd in zip(chosen, device_of) if dd == d]
            m, _ = best_core_split(sum(p[1] for p in parts), sum(p[2] for p in parts), dev.cores)
            dplans.append(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m))
        return finish_plan(placements(stats, chosen, device_of), tuple(dplans), stats, calibration, budgets,
                           devices, self.name)


class MIPPlanner(Planner):
    name = "screc"  # the policy the MIP produces is called screc everywhere

    def __init__(self, options: PlannerOptions = PlannerOptions()):
        self.options = options
        self.last_result = None

    def plan(self, stats: WorkloadStats, calibration: Calibration, budgets: Budgets,
             devices: Sequence[DeviceProfile]) -> Plan:
        plan = plan_mip(stats, calibration, budgets, devices, self.options)
        self.last_result = dict(plan.solver)
        return plan


PLANNERS = {"screc": MIPPlanner, "greedy": GreedyPlanner, "static-topk": StaticTopKPlanner, "all-ssd": AllSSDPlanner}
PLANNER_ALIASES = {"mip": "screc"}  # the MIP policy's old name


def make_planner(name: str, options: PlannerOptions = PlannerOptions()) -> Planner:
    name = PLANNER_ALIASES.get(name, name)
    if name not in PLANNERS:
        raise InputError(f"unknown planner {name!r} (one of {', '.join(PLANNERS)})")
    cls = PLANNERS[name]
    return cls() if cls is AllSSDPlanner else cls(options)

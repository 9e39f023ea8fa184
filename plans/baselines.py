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
from dataclasses import dataclass
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


class _ParallelLoads:
    """Per device (parallel model): IO seconds, memory-core and compute-core seconds, device DRAM and SSD bytes
    of the tables placed on it."""

    def __init__(self, devices: Sequence[DeviceProfile]):
        self.devices = tuple(devices)
        self.load = [[0.0, 0.0, 0.0] for _ in devices]  # io s, mem core-s, compute core-s
        self.dev_bytes, self.ssd_bytes = [0] * len(devices), [0] * len(devices)
        self._times: dict[tuple[int, int], tuple[float, float, float]] = {}

    def option_times(self, o: TableOption, d: int) -> tuple[float, float, float]:
        key = (id(o), d)
        if key not in self._times:
            self._times[key] = option_device_times(o.load, self.devices[d])
        return self._times[key]

    def time(self, d: int, l3: Sequence[float] | None = None) -> float:
        """Device d's batch time: its IO or its cores at their best split, whichever is longer."""
        io, mem, comp = l3 if l3 is not None else self.load[d]
        return max(io, best_core_split(mem, comp, self.devices[d].cores)[1])

    def time_with(self, o: TableOption, d: int) -> float:
        return self.time(d, [a + b for a, b in zip(self.load[d], self.option_times(o, d))])

    def max_time(self) -> float:
        return max(self.time(x) for x in range(len(self.devices)))

    def fits(self, d: int, o: TableOption) -> bool:
        return (self.dev_bytes[d] + o.load.device_dram_bytes <= self.devices[d].device_dram_bytes
                and self.ssd_bytes[d] + o.load.ssd_bytes <= self.devices[d].ssd_capacity_bytes)

    def apply(self, o: TableOption, d: int, sign: int) -> None:
        for i, v in enumerate(self.option_times(o, d)):
            self.load[d][i] += sign * v
        self.dev_bytes[d] += sign * o.load.device_dram_bytes
        self.ssd_bytes[d] += sign * o.load.ssd_bytes

    def device_plans(self) -> tuple[DevicePlan, ...]:
        return tuple(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m) for dev, (m, _) in
                     zip(self.devices, (best_core_split(l3[1], l3[2], dev.cores) for l3, dev in
                                        zip(self.load, self.devices))))


@dataclass(frozen=True)
class _SerialState:
    """Host-serial devices: per device its own IO seconds and the IO it costs the others, its device DRAM and
    SSD bytes; and the host thread's seconds."""

    own: tuple[float, ...]
    other: tuple[float, ...]
    dev_bytes: tuple[int, ...]
    ssd_bytes: tuple[int, ...]
    host_s: float

    def io_times(self) -> list[float]:  # a device also waits for the others' pages (one disk)
        tot = sum(self.other)
        return [o + tot - x for o, x in zip(self.own, self.other)]

    def value(self) -> tuple[float, float]:
        """(predicted batch time, total work): max(host, IO of each device), host + every device's IO."""
        io = self.io_times()
        return max(self.host_s, *io), self.host_s + sum(io)


@dataclass(frozen=True)
class _SerialCosts:
    host_s: dict[int, float]  # by id(option)
    io_s: dict[int, float]
    other_io_s: dict[int, float]

    def moved(self, st: _SerialState, o0: TableOption, d0: int, o: TableOption, d: int,
              devices: Sequence[DeviceProfile]) -> _SerialState | None:
        """``st`` with option ``o0`` on device ``d0`` replaced by ``o`` on ``d``; None if a device overflows."""
        def shift(vals, old: float, new: float):
            return tuple(v - (old if i == d0 else 0) + (new if i == d else 0) for i, v in enumerate(vals))

        db = shift(st.dev_bytes, o0.load.device_dram_bytes, o.load.device_dram_bytes)
        sb = shift(st.ssd_bytes, o0.load.ssd_bytes, o.load.ssd_bytes)
        if any(b > dv.device_dram_bytes for b, dv in zip(db, devices)) or \
                any(b > dv.ssd_capacity_bytes for b, dv in zip(sb, devices)):
            return None
        return _SerialState(shift(st.own, self.io_s[id(o0)], self.io_s[id(o)]),
                            shift(st.other, self.other_io_s[id(o0)], self.other_io_s[id(o)]), db, sb,
                            st.host_s - self.host_s[id(o0)] + self.host_s[id(o)])


def _within_error(err: float, err_budget: float | None, old: TableOption, new: TableOption) -> bool:
    return err_budget is None or err - old.load.error_weight + new.load.error_weight <= err_budget + 1e-12


class GreedyPlanner(Planner):
    name = "greedy"

    def __init__(self, options: PlannerOptions = PlannerOptions(), max_moves: int | None = None):
        self.options = options
        self.max_moves = max_moves

    def _moves(self, chosen: Sequence[TableOption]) -> int:
        return self.max_moves if self.max_moves is not None else 4 * len(chosen)

    def plan(self, stats, calibration, budgets, devices) -> Plan:
        devices = tuple(devices)
        opts = _options(stats, budgets, self.options)
        chosen = _hot_by_density(stats, opts, budgets.host_dram_bytes)
        if is_host_serial(devices, calibration):
            return self._plan_serial(stats, calibration, budgets, devices, opts, chosen)
        loads = _ParallelLoads(devices)
        device_of = [0] * len(chosen)
        # longest first onto the least loaded device (by raw work)
        for t in sorted(range(len(chosen)), key=lambda t: -sum(loads.option_times(chosen[t], 0))):
            cands = [d for d in range(len(devices)) if loads.fits(d, chosen[t])] or list(range(len(devices)))
            device_of[t] = min(cands, key=lambda d: loads.time_with(chosen[t], d))
            loads.apply(chosen[t], device_of[t], +1)
        err = sum(o.load.error_weight for o in chosen)
        err_budget = budgets.max_rel_error if budgets.accuracy_mode == "weighted" else None
        for _ in range(self._moves(chosen)):
            best = self._best_parallel_move(loads, opts, chosen, device_of, err, err_budget)
            if best is None:
                break
            _, t, o, d = best
            loads.apply(chosen[t], device_of[t], -1)
            err += o.load.error_weight - chosen[t].load.error_weight
            chosen[t], device_of[t] = o, d
            loads.apply(o, d, +1)
        return finish_plan(placements(stats, chosen, device_of), loads.device_plans(), stats, calibration, budgets,
                           devices, self.name)

    @staticmethod
    def _best_parallel_move(loads: _ParallelLoads, opts, chosen, device_of, err: float, err_budget: float | None):
        """The move of a table on the bottleneck device (to its TT or raw option at the same hot size, and/or
        to another device) that most lowers the slowest device's time: (new time, t, option, device) or None."""
        nd = len(loads.devices)
        cur = [loads.time(d) for d in range(nd)]
        worst = max(range(nd), key=lambda d: cur[d])
        best = None
        for t in range(len(chosen)):
            if device_of[t] != worst or not chosen[t].needs_device:
                continue
            same_hot = [x for x in opts[t] if x.hot_rows == chosen[t].hot_rows]
            for o in [chosen[t]] + [a for a in same_hot if a.cold_tier == SSD_TT and a is not chosen[t]] + \
                     [x for x in same_hot if x.cold_tier == SSD_RAW]:
                if not _within_error(err, err_budget, chosen[t], o):
                    continue
                for d in range(nd):
                    if o is chosen[t] and d == worst:
                        continue
                    loads.apply(chosen[t], worst, -1)
                    ok = loads.fits(d, o)
                    loads.apply(o, d, +1)
                    new = loads.max_time()
                    loads.apply(o, d, -1)
                    loads.apply(chosen[t], worst, +1)
                    if ok and new < max(cur) * (1 - 1e-9) and (best is None or new < best[0]):
                        best = (new, t, o, d)
        return best

    def _plan_serial(self, stats, calibration, budgets, devices, opts, chosen) -> Plan:
        """Host-serial devices: the batch takes max(host thread, IO of each device). Tables go to devices
        longest IO first; then the move (another cold tier at the same hot size, or another device) that most
        lowers the predicted time (then the total work) is taken until none helps."""
        host, nd, qd = calibration.host, len(devices), devices[0].queue_depth
        every = [o for ol in opts for o in ol]
        costs = _SerialCosts({id(o): option_host_time_s(o.load, host) for o in every},
                             {id(o): option_io_linear_s(o.load, calibration, qd) for o in every},
                             {id(o): option_io_other_s(o.load, calibration) for o in every})
        own, other, dev_bytes, ssd_bytes = [0.0] * nd, [0.0] * nd, [0] * nd, [0] * nd
        device_of = [0] * len(chosen)
        for t in sorted(range(len(chosen)), key=lambda t: -costs.io_s[id(chosen[t])]):
            d = device_of[t] = min(range(nd), key=lambda d: own[d])
            own[d] += costs.io_s[id(chosen[t])]
            other[d] += costs.other_io_s[id(chosen[t])]
            dev_bytes[d] += chosen[t].load.device_dram_bytes
            ssd_bytes[d] += chosen[t].load.ssd_bytes
        state = _SerialState(tuple(own), tuple(other), tuple(dev_bytes), tuple(ssd_bytes),
                             host.batch_s + sum(costs.host_s[id(o)] for o in chosen))
        err = sum(o.load.error_weight for o in chosen)
        err_budget = budgets.max_rel_error if budgets.accuracy_mode == "weighted" else None
        for _ in range(self._moves(chosen)):
            best = self._best_serial_move(state, costs, devices, opts, chosen, device_of, err, err_budget)
            if best is None:
                break
            _, t, o, d, state = best
            err += o.load.error_weight - chosen[t].load.error_weight
            chosen[t], device_of[t] = o, d
        dplans = []
        for d, dev in enumerate(devices):
            parts = [option_host_parts_s(o.load, host) for o, dd in zip(chosen, device_of) if dd == d]
            m, _ = best_core_split(sum(p[1] for p in parts), sum(p[2] for p in parts), dev.cores)
            dplans.append(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m))
        return finish_plan(placements(stats, chosen, device_of), tuple(dplans), stats, calibration, budgets,
                           devices, self.name)

    @staticmethod
    def _best_serial_move(state: _SerialState, costs: _SerialCosts, devices, opts, chosen, device_of, err: float,
                          err_budget: float | None):
        """The move (another option at the same hot size and/or another device) that most lowers the batch
        time, or at equal time the total work: (value, t, option, device, new state) or None."""
        cur = state.value()
        best = None
        for t, o0 in enumerate(chosen):
            if not o0.needs_device:
                continue
            d0 = device_of[t]
            for o in (x for x in opts[t] if x.hot_rows == o0.hot_rows and x.needs_device):
                if not _within_error(err, err_budget, o0, o):
                    continue
                for d in range(len(devices)):
                    if o is o0 and d == d0:
                        continue
                    new = costs.moved(state, o0, d0, o, d, devices)
                    if new is None:
                        continue
                    val = new.value()
                    if val[0] < cur[0] * (1 - 1e-9) or (val[0] <= cur[0] and val[1] < cur[1] * (1 - 1e-9)):
                        if best is None or val < best[0]:
                            best = (val, t, o, d, new)
        return best


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

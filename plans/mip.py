"""The placement MIP (PuLP): hot-set size, cold tier and device per table; core split per device.

Build, solve and read back are separate steps (:func:`build_problem` returns
an unsolved ``pulp.LpProblem``; :func:`solve`; :func:`extract_plan`).

Formulation (all coefficients come from ``plans.cost``):

* ``x[t,o,d]`` binary: table t takes candidate option o (hot size k, cold tier
  ssd_raw or ssd_tt at rank r) on device d; options keeping every row hot need
  no device. ``one_choice_<t>``: exactly one per table.
* ``s[d,m]`` binary: device d runs m memory-centric and C-m compute-centric
  cores. ``core_split_<d>``: exactly one split per device.
* Exact linearisation of time = work / cores: the memory-core work of device d
  is split into ``wm[d,m]`` (m = 1..C) with ``wm[d,m] <= Wmax_d s[d,m]``
  (``mem_work_cap_<d>_<m>``), and ``T >= sum_m wm[d,m] / m``
  (``time_mem_<d>``); with one split chosen, every other ``wm`` is 0, so the
  bound is exactly work / m (and m = 0 admits no memory-core work). The same
  for compute-centric cores with C-m cores (``wc``, ``time_compute_<d>``).
* ``T >= host DRAM time`` (``time_dram``), ``T >= IO time of d`` (``time_io_<d>``).
* ``time_cores_<d>``: C T >= memory work + compute work, implied by the two
  bounds above for any split; it is what makes the LP relaxation tight.
* Budgets: ``host_dram_budget``, ``device_dram_<d>`` (TT cores in device
  memory), ``ssd_capacity_<d>``, ``accuracy_budget`` (lookup-weighted mean TT
  error; in per-table mode the options are filtered instead).
* Optional ``symmetry_<d>``: identical devices ordered by their work.

Objective: minimise T, the predicted batch time. Times are in microseconds and
capacity rows are divided by their budget, to keep the solver well scaled.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import pulp

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.cost import (StatsEstimator, memory_use, option_device_times, option_dram_time_s, plan_loads,
                        predict_batch_time, weighted_error)
from plans.types import Budgets, Calibration, DeviceProfile, Estimator, PlannerOptions, TableOption, WorkloadStats
from tracegen.errors import InputError

TIME_UNIT_S = 1e-6  # the MIP's time variables are in microseconds
MIN_SCALE_BYTES = 1 << 20
NO_DEVICE = -1


@dataclass
class MIPHandles:
    """What :func:`extract_plan` needs to read a solution back."""

    stats: WorkloadStats
    calib: Calibration
    budgets: Budgets
    devices: tuple[DeviceProfile, ...]
    options: list[list[TableOption]]
    x: dict[tuple[int, int, int], pulp.LpVariable]
    split: dict[tuple[int, int], pulp.LpVariable]
    T: pulp.LpVariable
    constraint_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SolveResult:
    """``status``: optimal | feasible (stopped with an incumbent) | infeasible | unbounded | not solved.
    ``gap`` = (objective - best bound) / objective, None when the solver did not say (``gap_source``)."""

    status: str
    objective_s: float | None
    best_bound_s: float | None
    gap: float | None
    gap_source: str
    solve_time_s: float
    solver: str
    time_limit_s: float
    variables: int
    constraints: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _identical(a: DeviceProfile, b: DeviceProfile) -> bool:
    da, db = asdict(a), asdict(b)
    da.pop("name"), db.pop("name")
    return da == db


def build_problem(stats: WorkloadStats, calib: Calibration, budgets: Budgets, devices: Sequence[DeviceProfile],
                  options: PlannerOptions = PlannerOptions(),
                  estimator: Estimator | None = None) -> tuple[pulp.LpProblem, MIPHandles]:
    """The unsolved placement problem and the handles to read its solution."""
    devices = tuple(devices)
    if not devices:
        raise InputError("need at least one device")
    estimator = estimator or StatsEstimator()
    table_opts = estimator.table_options(stats, budgets, options)
    prob = pulp.LpProblem("screc_placement", pulp.LpMinimize)
    T = pulp.LpVariable("T_us", lowBound=0)
    prob += T
    x: dict[tuple[int, int, int], pulp.LpVariable] = {}
    names: list[str] = []
    nd = len(devices)
    dram_terms, host_terms, err_terms = [], [], []
    io_terms = [[] for _ in range(nd)]
    mem_terms = [[] for _ in range(nd)]
    comp_terms = [[] for _ in range(nd)]
    devmem_terms = [[] for _ in range(nd)]
    ssd_terms = [[] for _ in range(nd)]
    work_terms = [[] for _ in range(nd)]
    mem_max, comp_max = [0.0] * nd, [0.0] * nd
    host_scale = max(budgets.host_dram_bytes, MIN_SCALE_BYTES)
    dev_scale = [max(d.device_dram_bytes, MIN_SCALE_BYTES) for d in devices]
    ssd_scale = [max(d.ssd_capacity_bytes, MIN_SCALE_BYTES) for d in devices]
    for t, opts in enumerate(table_opts):
        if not opts:
            raise InputError(f"table {stats.tables[t].name}: no placement option")
        choice = []
        tmax_mem, tmax_comp = [0.0] * nd, [0.0] * nd
        for o, opt in enumerate(opts):
            load = opt.load
            dram_us = option_dram_time_s(load, calib, budgets.host_threads) / TIME_UNIT_S
            for d in (range(nd) if opt.needs_device else (NO_DEVICE,)):
                v = pulp.LpVariable(f"x_{t}_{o}_{d if d >= 0 else 'h'}", cat="Binary")
                x[(t, o, d)] = v
                choice.append(v)
                if dram_us:
                    dram_terms.append((v, dram_us))
                if load.host_dram_bytes:
                    host_terms.append((v, load.host_dram_bytes / host_scale))
                if load.error_weight:
                    err_terms.append((v, load.error_weight))
                if d == NO_DEVICE:
                    continue
                io_s, mem_s, comp_s = option_device_times(load, devices[d])
                for terms, val in ((io_terms, io_s), (mem_terms, mem_s), (comp_terms, comp_s)):
                    if val:
                        terms[d].append((v, val / TIME_UNIT_S))
                if io_s + mem_s + comp_s:
                    work_terms[d].append((v, (io_s + mem_s + comp_s) / TIME_UNIT_S))
                if load.device_dram_bytes:
                    devmem_terms[d].append((v, load.device_dram_bytes / dev_scale[d]))
                if load.ssd_bytes:
                    ssd_terms[d].append((v, load.ssd_bytes / ssd_scale[d]))
                tmax_mem[d] = max(tmax_mem[d], mem_s / TIME_UNIT_S)
                tmax_comp[d] = max(tmax_comp[d], comp_s / TIME_UNIT_S)
        for d in range(nd):
            mem_max[d] += tmax_mem[d]
            comp_max[d] += tmax_comp[d]
        prob += pulp.lpSum(choice) == 1, f"one_choice_{t}"
        names.append(f"one_choice_{t}")

    def add(expr, name: str) -> None:
        nonlocal prob
        prob += expr, name
        names.append(name)

    add(pulp.LpAffineExpression(host_terms) <= budgets.host_dram_bytes / host_scale, "host_dram_budget")
    if budgets.max_rel_error is not None and budgets.accuracy_mode == "weighted" and err_terms:
        add(pulp.LpAffineExpression(err_terms) <= budgets.max_rel_error, "accuracy_budget")
    add(T >= pulp.LpAffineExpression(dram_terms), "time_dram")
    split: dict[tuple[int, int], pulp.LpVariable] = {}
    for d, dev in enumerate(devices):
        C = dev.cores
        add(pulp.LpAffineExpression(devmem_terms[d]) <= dev.device_dram_bytes / dev_scale[d], f"device_dram_{d}")
        add(pulp.LpAffineExpression(ssd_terms[d]) <= dev.ssd_capacity_bytes / ssd_scale[d], f"ssd_capacity_{d}")
        add(T >= pulp.LpAffineExpression(io_terms[d]), f"time_io_{d}")
        for m in range(C + 1):
            split[(d, m)] = pulp.LpVariable(f"s_{d}_{m}", cat="Binary")
        add(pulp.lpSum(split[(d, m)] for m in range(C + 1)) == 1, f"core_split_{d}")
        wm = {m: pulp.LpVariable(f"wm_{d}_{m}", lowBound=0) for m in range(1, C + 1)}
        wc = {m: pulp.LpVariable(f"wc_{d}_{m}", lowBound=0) for m in range(0, C)}
        add(pulp.LpAffineExpression(mem_terms[d]) == pulp.lpSum(wm.values()), f"mem_work_{d}")
        add(pulp.LpAffineExpression(comp_terms[d]) == pulp.lpSum(wc.values()), f"compute_work_{d}")
        for m, w in wm.items():
            add(w <= mem_max[d] * split[(d, m)], f"mem_work_cap_{d}_{m}")
        for m, w in wc.items():
            add(w <= comp_max[d] * split[(d, m)], f"compute_work_cap_{d}_{m}")
        add(T >= pulp.lpSum(w * (1.0 / m) for m, w in wm.items()), f"time_mem_{d}")
        add(T >= pulp.lpSum(w * (1.0 / (C - m)) for m, w in wc.items()), f"time_compute_{d}")
        # valid cut: W/m <= T and V/(C-m) <= T imply W + V <= C T (tightens the LP relaxation)
        add(C * T >= pulp.LpAffineExpression(mem_terms[d] + comp_terms[d]), f"time_cores_{d}")
        if options.symmetry_breaking and d > 0 and _identical(devices[d - 1], dev):
            add(pulp.LpAffineExpression(work_terms[d - 1]) >= pulp.LpAffineExpression(work_terms[d]),
                f"symmetry_{d}")
    return prob, MIPHandles(stats, calib, budgets, devices, table_opts, x, split, T, names)


# --- solving -----------------------------------------------------------------------------------

_STATUS = {1: "optimal", 2: "feasible", -1: "infeasible", -2: "unbounded", 0: "not solved", -3: "not solved"}
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def _cbc_bound(log: str) -> tuple[float | None, str]:
    """Best bound from a CBC log ("Lower bound:" on a stopped search, else the last "best possible")."""
    m = re.findall(r"Lower bound:\s*" + _NUM, log)
    if m:
        return float(m[-1]), "solver log"
    m = re.findall(r"best possible " + _NUM, log)
    if m:
        return float(m[-1]), "solver log"
    if re.search(r"Search completed|Optimal solution found", log):
        return None, "proven optimal"
    return None, "unknown"


def solve(problem: pulp.LpProblem, solver: str = "cbc", time_limit_s: float = 60.0, gap: float = 1e-4,
          threads: int | None = None) -> SolveResult:
    """Solve ``problem`` in place, quietly; the gap comes from the solver's best bound."""
    if time_limit_s <= 0:
        raise InputError(f"time limit must be > 0 s, got {time_limit_s}")
    log_text, bound, source = "", None, "unknown"
    t0 = time.perf_counter()
    if solver == "cbc":
        fd, log_path = tempfile.mkstemp(prefix="screc-cbc-", suffix=".log")
        os.close(fd)
        try:
            cmd = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads, logPath=log_path)
            problem.solve(cmd)
            with open(log_path, errors="replace") as f:
                log_text = f.read()
        finally:
            os.unlink(log_path)
        bound, source = _cbc_bound(log_text)
    elif solver == "highs":
        if not pulp.HiGHS().available():
            raise InputError("solver 'highs' needs the highspy package (pip install highspy); use --solver cbc")
        cmd = pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads)
        problem.solve(cmd)
        try:
            bound, source = float(problem.solverModel.getInfo().mip_dual_bound), "solver"
        except Exception:  # noqa: BLE001 - older highspy: no bound exposed
            bound, source = None, "unknown"
    else:
        raise InputError(f"unknown solver {solver!r} (cbc or highs)")
    elapsed = time.perf_counter() - t0
    status = _STATUS.get(problem.sol_status, "not solved")
    if status == "optimal" and problem.status != 1:
        status = "feasible"
    obj = pulp.value(problem.objective) if status in ("optimal", "feasible") else None
    if obj is not None and source == "proven optimal":
        bound = obj
    g = None
    if obj is not None and bound is not None and math.isfinite(bound):
        g = max(0.0, (obj - bound) / abs(obj)) if abs(obj) > 1e-12 else 0.0
    if status == "optimal" and source == "unknown":
        source = "proven optimal (within the gap tolerance)"
    return SolveResult(status, None if obj is None else obj * TIME_UNIT_S,
                       None if bound is None else bound * TIME_UNIT_S, g, source, elapsed, solver, float(time_limit_s),
                       len(problem.variables()), len(problem.constraints))


def extract_plan(problem: pulp.LpProblem, handles: MIPHandles, result: SolveResult | None = None, *,
                 planner: str = "mip", remap: str | None = None) -> Plan:
    """The plan the solution describes, with the cost model's prediction of it."""
    if result is not None and result.status not in ("optimal", "feasible"):
        raise InputError(f"the placement problem is {result.status}: no plan (loosen a budget)")
    stats, devices = handles.stats, handles.devices
    tables = []
    for t, ts in enumerate(stats.tables):
        chosen = [(o, d) for (tt, o, d), v in handles.x.items() if tt == t and (v.varValue or 0) > 0.5]
        if len(chosen) != 1:
            raise InputError(f"table {ts.name}: the solution picks {len(chosen)} options (not solved?)")
        o, d = chosen[0]
        opt = handles.options[t][o]
        tier = "ssd_raw" if opt.cold_tier == "none" else opt.cold_tier
        tables.append(TablePlacement(ts.name, int(opt.hot_rows), tier, opt.tt_rank, max(d, 0)))
    dplans = []
    for d, dev in enumerate(devices):
        ms = [m for m in range(dev.cores + 1) if (handles.split[(d, m)].varValue or 0) > 0.5]
        m = ms[0] if ms else dev.cores
        dplans.append(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m))
    return finish_plan(tuple(tables), tuple(dplans), stats, handles.calib, handles.budgets, devices, planner,
                       solver=None if result is None else result.to_dict(), remap=remap)


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
    predicted = {"perf": perf.to_dict(), "storage": storage.to_dict(), "weighted_rel_error": weighted_error(draft, stats),
                 "batch_size": stats.batch_size, "stats_source": stats.source, "calibration_source": calib.source,
                 "devices": [d.name for d in devices], "modelled": modelled, "tables": per_table}
    return Plan(store_id=draft.store_id, tables=tables, devices=dplans, trace_id=stats.trace_id,
                dram_budget_bytes=budgets.host_dram_bytes, planner=planner, remap=remap, predicted=predicted,
                solver=solver or {})

"""Solving the placement MIP and reading its plan back (the problem comes from :func:`plans.mip.build_problem`).

:func:`solve` runs CBC (bundled with PuLP) or HiGHS quietly and reports the
status, objective, best bound and gap; :func:`solve_placement` adds the
tie-breaking second stage (least total work at the optimal batch time);
:func:`extract_plan` turns the chosen variables into a :class:`Plan` (pooled
problems are finished by ``plans.assign``); :func:`plan_mip` does all three.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pulp

from emulator.plan import DevicePlan, Plan
from plans.assign import assign_devices
from plans.cost import best_core_split, option_device_times, option_host_parts_s, option_io_linear_s
from plans.mip import NO_DEVICE, TIME_UNIT_S, MIPHandles, build_problem
from plans.predicted import finish_plan, placements
from plans.types import Budgets, Calibration, DeviceProfile, PlannerOptions, TableOption, WorkloadStats
from tracegen.errors import InputError


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
    tie_break: dict | None = None  # the second stage (least total work at the optimal batch time), if run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- solving -----------------------------------------------------------------------------------

_STATUS = {1: "optimal", 2: "feasible", -1: "infeasible", -2: "unbounded", 0: "not solved", -3: "not solved"}
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def _cbc_bound(log: str) -> tuple[float | None, str]:
    """Best bound from a CBC log ("Lower bound:" on a stopped search, else the last "best possible")."""
    if re.search(r"Result - Optimal solution found", log):
        return None, "proven optimal (within the gap tolerance)"
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
          threads: int | None = None, warm_start: bool = False) -> SolveResult:
    """Solve ``problem`` in place, quietly; the gap comes from the solver's best bound.
    ``warm_start``: start from the variables' current values (a known feasible solution)."""
    if time_limit_s <= 0:
        raise InputError(f"time limit must be > 0 s, got {time_limit_s}")
    with warnings.catch_warnings():  # PuLP 3.x deprecation notices (PULP_CBC_CMD, constraints as a dict)
        warnings.simplefilter("ignore", DeprecationWarning)
        return _solve(problem, solver, time_limit_s, gap, threads, warm_start)


TIE_BREAK_MIN_S = 0.5  # the second stage runs only with at least this much of the time limit left
TIE_BREAK_FLOOR_S = 2.0  # ... and for at most max(this, the first stage's time)
TIE_BREAK_GAP = 1e-3  # the second stage's relative gap (at least): a tie-break need not be proven to 1e-4
TIE_BREAK_T_SLACK = 1e-7  # relative slack on the optimal batch time in the second stage


def solve_placement(problem: pulp.LpProblem, handles: MIPHandles, options: PlannerOptions) -> SolveResult:
    """Lexicographic solve: (1) minimise the batch time T; (2) with T held at its optimum, minimise the total
    work (``handles.work``: the sum of every resource's seconds), so that ties (e.g. free DRAM left unused)
    go to the plan doing least. Stage 2 is warm-started from stage 1 and gets what is left of the time
    limit, but no more than ``max(TIE_BREAK_FLOOR_S, stage 1's time)``; the returned result is stage 1's
    (objective, bound, gap of T), with ``tie_break`` describing stage 2. If stage 2 finds nothing, stage 1's
    solution is kept."""
    res = solve(problem, options.solver, options.time_limit_s, options.gap, options.threads)
    if not options.tie_break or handles.work is None or res.status not in ("optimal", "feasible"):
        return res
    left = min(options.time_limit_s - res.solve_time_s, max(TIE_BREAK_FLOOR_S, res.solve_time_s))
    if left < TIE_BREAK_MIN_S:
        return dataclasses.replace(res, tie_break={"status": "skipped", "reason": "no time left"})
    t_best = float(handles.T.varValue or 0.0)
    saved = {v.name: v.varValue for v in problem.variables()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        problem += handles.T <= t_best * (1 + TIE_BREAK_T_SLACK) + 1e-9, "tie_break_time"
        problem.setObjective(handles.work)
    res2 = solve(problem, options.solver, left, max(options.gap, TIE_BREAK_GAP), options.threads,
                 warm_start=options.solver == "cbc")
    info = {"status": res2.status, "solve_time_s": res2.solve_time_s, "work_s": res2.objective_s,
            "objective": "total work (sum of every resource's seconds) at the optimal batch time"}
    if res2.status not in ("optimal", "feasible"):
        for v in problem.variables():
            v.varValue = saved.get(v.name)
        info["kept"] = "stage 1 solution"
    return dataclasses.replace(res, tie_break=info)


def _solve(problem, solver, time_limit_s, gap, threads, warm_start=False) -> SolveResult:
    log_text, bound, source = "", None, "unknown"
    t0 = time.perf_counter()
    if solver == "cbc":
        fd, log_path = tempfile.mkstemp(prefix="screc-cbc-", suffix=".log")
        os.close(fd)
        try:
            cmd = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads, logPath=log_path,
                                    warmStart=warm_start)
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
    if obj is not None and source.startswith("proven optimal"):
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
                 planner: str = "screc", remap: str | None = None) -> Plan:
    """The plan the solution describes, with the cost model's prediction of it.

    Pooled problems are finished by ``plans.assign.assign_devices`` (stage 2); the reported gap is then
    measured from the stage-1 bound, a valid lower bound on every plan with these budgets and options.
    """
    if result is not None and result.status not in ("optimal", "feasible"):
        raise InputError(f"the placement problem is {result.status}: no plan (loosen a budget)")
    stats, devices = handles.stats, handles.devices
    picked: list[tuple[TableOption, int]] = []
    for t, ts in enumerate(stats.tables):
        chosen = [(o, d) for (tt, o, d), v in handles.x.items() if tt == t and (v.varValue or 0) > 0.5]
        if len(chosen) != 1:
            raise InputError(f"table {ts.name}: the solution picks {len(chosen)} options (not solved?)")
        o, d = chosen[0]
        picked.append((handles.options[t][o], d))
    if handles.formulation == "pooled":
        picked, dplans = _assign_pooled(handles, picked)
    else:
        dplans = _chosen_splits(handles)
    if handles.serial:  # one host thread runs every core: the split only labels the work (raw vs TT seconds)
        dplans = _serial_splits(handles, picked)
    tables = placements(stats, [o for o, _ in picked], [d for _, d in picked])
    solver = None if result is None else result.to_dict()
    if solver is not None:
        solver["formulation"] = handles.formulation
    plan = finish_plan(tables, dplans, stats, handles.calib, handles.budgets, devices, planner, solver=solver,
                       remap=remap)
    if result is not None and handles.formulation == "pooled":
        final = plan.predicted["perf"]["total_s"]
        bound = result.best_bound_s if result.best_bound_s is not None else result.objective_s
        gap = max(0.0, (final - bound) / final) if final > 0 else 0.0
        solver.update(stage1_status=result.status, stage1_objective_s=result.objective_s, objective_s=final,
                      best_bound_s=bound, gap=gap, status="optimal" if gap <= 1e-9 else "feasible",
                      gap_source="stage-1 pooled bound (valid lower bound) vs the assigned plan")
        plan = dataclasses.replace(plan, solver=solver)
    return plan


def _assign_pooled(handles: MIPHandles, picked: list[tuple[TableOption, int]]
                   ) -> tuple[list[tuple[TableOption, int]], tuple[DevicePlan, ...]]:
    """Stage 2 of the pooled formulation: tables to devices and core splits (``plans.assign``)."""
    devices = handles.devices
    if handles.serial:  # devices differ only by their IO: balance it
        qd = devices[0].queue_depth
        work = np.array([(option_io_linear_s(o.load, handles.calib, qd), 0.0, 0.0) if o.needs_device
                         else (0.0, 0.0, 0.0) for o, _ in picked])
    else:
        work = np.array([option_device_times(o.load, devices[0]) if o.needs_device else (0.0, 0.0, 0.0)
                         for o, _ in picked])
    dev_b = np.array([o.load.device_dram_bytes for o, _ in picked], dtype=np.float64)
    ssd_b = np.array([o.load.ssd_bytes for o, _ in picked], dtype=np.float64)
    device_of, mem_cores, _ = assign_devices(work, dev_b, ssd_b, devices)
    picked = [(o, int(d) if o.needs_device else NO_DEVICE) for (o, _), d in zip(picked, device_of)]
    return picked, tuple(DevicePlan(dev.name, mem_cores=int(m), compute_cores=dev.cores - int(m))
                         for dev, m in zip(devices, mem_cores))


def _chosen_splits(handles: MIPHandles) -> tuple[DevicePlan, ...]:
    """The core split variables ``s[d,m]`` that are set (all memory-centric when the problem has none)."""
    dplans = []
    for d, dev in enumerate(handles.devices):
        ms = [m for m in range(dev.cores + 1) if (d, m) in handles.split and
              (handles.split[(d, m)].varValue or 0) > 0.5]
        m = ms[0] if ms else dev.cores
        dplans.append(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m))
    return tuple(dplans)


def _serial_splits(handles: MIPHandles, picked: list[tuple[TableOption, int]]) -> tuple[DevicePlan, ...]:
    """Host-serial devices: the split that best labels each device's raw vs TT host seconds."""
    devices = handles.devices
    host_work = np.zeros((len(devices), 2))
    for o, d in picked:
        if d >= 0:
            host_work[d] += option_host_parts_s(o.load, handles.calib.host)[1:]
    return tuple(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m) for dev, (m, _) in
                 zip(devices, (best_core_split(w[0], w[1], dev.cores) for w, dev in zip(host_work, devices))))


def plan_mip(stats: WorkloadStats, calib: Calibration, budgets: Budgets, devices: Sequence[DeviceProfile],
             options: PlannerOptions = PlannerOptions(), remap: str | None = None) -> Plan:
    """Build, solve and read back in one call; ``plan.solver`` holds the (final) result."""
    prob, handles = build_problem(stats, calib, budgets, devices, options)
    result = solve_placement(prob, handles, options)
    return extract_plan(prob, handles, result, remap=remap)



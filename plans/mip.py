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
  ``table_io_<t>``, ``table_cores_<t>``: T >= the IO (and core work / C) of
  each single table, valid because a table is never split across devices.
* Budgets: ``host_dram_budget``, ``device_dram_<d>`` (TT cores in device
  memory), ``ssd_capacity_<d>``, ``accuracy_budget`` (lookup-weighted mean TT
  error; in per-table mode the options are filtered instead).
* Optional ``symmetry_<d>``: identical devices ordered by their work.

Host-serial devices (the emulator on this machine, ``plans.cost``): no core
split; ``time_host``: T >= the host thread's time (per-batch constant, every
option's host seconds, and ``io_device_s`` per device that reads, through a
binary ``u_<d>`` forced by ``device_reads_<d>``); ``time_io_<d>``: T >= the
device's linear IO (its reads and pages, and the other devices' pages).

Second stage (``PlannerOptions.tie_break``, :func:`solve_placement`): with T
held at its optimum, minimise the total work (the sum of every resource's
seconds), so that ties go to the plan doing least (free DRAM gets used).

Pooled formulation (``PlannerOptions.formulation``; "auto" picks it for more
than ``POOLED_ABOVE`` tables x devices on identical devices): one ``x[t,o]``
per option, devices pooled (``time_io_pooled``: D T >= IO; ``time_cores_pooled``:
D C T >= core work; pooled capacities), the per-table cuts kept. Its optimum
is a lower bound on the exact problem; :func:`extract_plan` then assigns tables
to devices and splits cores (``plans.assign``) and reports the gap of that
plan against the bound.

Objective: minimise T, the predicted batch time. Times are in microseconds and
capacity rows are divided by their budget, to keep the solver well scaled.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pulp

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.assign import assign_devices
from plans.cost import (StatsEstimator, best_core_split, is_host_serial, memory_use, option_device_times,
                        option_dram_time_s, option_host_parts_s, option_host_time_s, option_io_linear_s, option_io_other_s,
                        option_work_s, plan_loads, predict_batch_time, weighted_error)
from plans.types import Budgets, Calibration, DeviceProfile, Estimator, PlannerOptions, TableOption, WorkloadStats
from tracegen.errors import InputError

TIME_UNIT_S = 1e-6  # the MIP's time variables are in microseconds
MIN_SCALE_BYTES = 1 << 20
NO_DEVICE = -1
POOLED = -2
POOLED_ABOVE = 32  # auto: tables x devices above which identical devices are pooled


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
    formulation: str = "exact"
    work: Any = None  # pulp expression: the second (tie-breaking) objective, total work in microseconds
    serial: bool = False  # host-serial execution model (local devices)


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


def _identical(a: DeviceProfile, b: DeviceProfile) -> bool:
    da, db = asdict(a), asdict(b)
    da.pop("name"), db.pop("name")
    return da == db


def choose_formulation(n_tables: int, devices: Sequence[DeviceProfile], requested: str = "auto") -> str:
    identical = all(_identical(devices[0], d) for d in devices[1:])
    if requested == "auto":
        return "pooled" if len(devices) > 1 and identical and n_tables * len(devices) > POOLED_ABOVE else "exact"
    if requested == "pooled" and not identical:
        raise InputError("the pooled formulation needs identical devices; use the exact one")
    if requested not in ("exact", "pooled"):
        raise InputError(f"unknown formulation {requested!r} (exact, pooled, auto)")
    return requested


def build_problem(stats: WorkloadStats, calib: Calibration, budgets: Budgets, devices: Sequence[DeviceProfile],
                  options: PlannerOptions = PlannerOptions(),
                  estimator: Estimator | None = None) -> tuple[pulp.LpProblem, MIPHandles]:
    """The unsolved placement problem and the handles to read its solution."""
    with warnings.catch_warnings():  # PuLP 3.x announces its 4.0 API on every variable
        warnings.simplefilter("ignore", DeprecationWarning)
        return _build(stats, calib, budgets, devices, options, estimator)


def _build(stats, calib, budgets, devices, options, estimator) -> tuple[pulp.LpProblem, MIPHandles]:
    devices = tuple(devices)
    if not devices:
        raise InputError("need at least one device")
    formulation = choose_formulation(len(stats.tables), devices, options.formulation)
    pooled = formulation == "pooled"
    estimator = estimator or StatsEstimator()
    table_opts = estimator.table_options(stats, budgets, options)
    prob = pulp.LpProblem("screc_placement", pulp.LpMinimize)
    T = pulp.LpVariable("T_us", lowBound=0)
    prob += T
    x: dict[tuple[int, int, int], pulp.LpVariable] = {}
    names: list[str] = []
    slots = [POOLED] if pooled else list(range(len(devices)))
    ns = len(slots)
    dram_terms, host_terms, err_terms = [], [], []
    io_terms, mem_terms, comp_terms = ([[] for _ in range(ns)] for _ in range(3))
    devmem_terms, ssd_terms, work_terms = ([[] for _ in range(ns)] for _ in range(3))
    mem_max, comp_max = [0.0] * ns, [0.0] * ns
    host_scale = max(budgets.host_dram_bytes, MIN_SCALE_BYTES)
    dev_cap = [sum(d.device_dram_bytes for d in devices)] if pooled else [d.device_dram_bytes for d in devices]
    ssd_cap = [sum(d.ssd_capacity_bytes for d in devices)] if pooled else [d.ssd_capacity_bytes for d in devices]
    dev_scale = [max(c, MIN_SCALE_BYTES) for c in dev_cap]
    ssd_scale = [max(c, MIN_SCALE_BYTES) for c in ssd_cap]
    per_table_io, per_table_cores = [], []
    serial = is_host_serial(devices, calib)
    qd = devices[0].queue_depth
    all_work_terms = []
    reading: list[list] = [[] for _ in range(ns)]  # per device slot: the options that read from it
    for t, opts in enumerate(table_opts):
        if not opts:
            raise InputError(f"table {stats.tables[t].name}: no placement option")
        choice, t_io, t_cores = [], [], []
        tmax_mem, tmax_comp = [0.0] * ns, [0.0] * ns
        for o, opt in enumerate(opts):
            load = opt.load
            if serial:  # the host thread's seconds for this table, whichever device it lands on
                dram_us = option_host_time_s(load, calib.host) / TIME_UNIT_S
            else:
                dram_us = option_dram_time_s(load, calib, budgets.host_threads) / TIME_UNIT_S
            for i in (range(ns) if opt.needs_device else (None,)):
                d = NO_DEVICE if i is None else slots[i]
                v = pulp.LpVariable(f"x_{t}_{o}_{'h' if d == NO_DEVICE else 'p' if d == POOLED else d}", cat="Binary")
                x[(t, o, d)] = v
                choice.append(v)
                if dram_us:
                    dram_terms.append((v, dram_us))
                if load.host_dram_bytes:
                    host_terms.append((v, load.host_dram_bytes / host_scale))
                if load.error_weight:
                    err_terms.append((v, load.error_weight))
                dev = None if i is None else devices[0] if pooled else devices[d]
                wk = option_work_s(load, calib, dev, serial=serial, queue_depth=qd, host_threads=budgets.host_threads)
                if wk:
                    all_work_terms.append((v, wk / TIME_UNIT_S))
                if i is None:
                    continue
                if serial:
                    if load.io_reads > 0:
                        reading[i].append(v)
                    io_s, mem_s, comp_s = option_io_linear_s(load, calib, qd), 0.0, 0.0
                    other = option_io_other_s(load, calib) / TIME_UNIT_S  # the disk is shared by every device
                    if other and pooled:
                        io_terms[i].append((v, other * (len(devices) - 1)))
                    elif other:
                        for j in range(ns):
                            if j != i:
                                io_terms[j].append((v, other))
                else:
                    io_s, mem_s, comp_s = option_device_times(load, dev)
                for terms, val in ((io_terms, io_s), (mem_terms, mem_s), (comp_terms, comp_s)):
                    if val:
                        terms[i].append((v, val / TIME_UNIT_S))
                if io_s:
                    t_io.append((v, io_s / TIME_UNIT_S))
                if mem_s + comp_s:
                    t_cores.append((v, (mem_s + comp_s) / dev.cores / TIME_UNIT_S))
                if io_s + mem_s + comp_s:
                    work_terms[i].append((v, (io_s + mem_s + comp_s) / TIME_UNIT_S))
                if load.device_dram_bytes:
                    devmem_terms[i].append((v, load.device_dram_bytes / dev_scale[i]))
                if load.ssd_bytes:
                    ssd_terms[i].append((v, load.ssd_bytes / ssd_scale[i]))
                tmax_mem[i] = max(tmax_mem[i], mem_s / TIME_UNIT_S)
                tmax_comp[i] = max(tmax_comp[i], comp_s / TIME_UNIT_S)
        for i in range(ns):
            mem_max[i] += tmax_mem[i]
            comp_max[i] += tmax_comp[i]
        prob += pulp.lpSum(choice) == 1, f"one_choice_{t}"
        names.append(f"one_choice_{t}")
        per_table_io.append(t_io)
        per_table_cores.append(t_cores)

    def add(expr, name: str) -> None:
        nonlocal prob
        prob += expr, name
        names.append(name)

    add(pulp.LpAffineExpression(host_terms) <= budgets.host_dram_bytes / host_scale, "host_dram_budget")
    if budgets.max_rel_error is not None and budgets.accuracy_mode == "weighted" and err_terms:
        add(pulp.LpAffineExpression(err_terms) <= budgets.max_rel_error, "accuracy_budget")
    if serial:
        # a device with reads costs the host io_device_s (hand-off to its IO thread): u_i = 1 if device i reads
        active = []
        for i, opts_i in enumerate(reading):
            if opts_i and calib.host.io_device_s > 0:
                u = pulp.LpVariable(f"u_{i}", cat="Binary")
                add(pulp.lpSum(opts_i) <= len(table_opts) * u, f"device_reads_{i}")
                active.append((u, calib.host.io_device_s * (len(devices) if pooled else 1) / TIME_UNIT_S))
        add(T >= pulp.LpAffineExpression(dram_terms + active, constant=calib.host.batch_s / TIME_UNIT_S),
            "time_host")
    else:
        add(T >= pulp.LpAffineExpression(dram_terms), "time_dram")
    work = pulp.LpAffineExpression(all_work_terms)
    for t in range(len(table_opts)):  # valid cuts: a table is on one device, which is at least as busy
        if per_table_io[t]:
            add(T >= pulp.LpAffineExpression(per_table_io[t]), f"table_io_{t}")
        if per_table_cores[t]:
            add(T >= pulp.LpAffineExpression(per_table_cores[t]), f"table_cores_{t}")
    split: dict[tuple[int, int], pulp.LpVariable] = {}
    if pooled:
        nd, C = len(devices), devices[0].cores
        add(pulp.LpAffineExpression(devmem_terms[0]) <= dev_cap[0] / dev_scale[0], "device_dram_pooled")
        add(pulp.LpAffineExpression(ssd_terms[0]) <= ssd_cap[0] / ssd_scale[0], "ssd_capacity_pooled")
        add(nd * T >= pulp.LpAffineExpression(io_terms[0]), "time_io_pooled")
        if not serial:
            add(nd * C * T >= pulp.LpAffineExpression(mem_terms[0] + comp_terms[0]), "time_cores_pooled")
        return prob, MIPHandles(stats, calib, budgets, devices, table_opts, x, split, T, names, formulation, work,
                                serial)
    for d, dev in enumerate(devices):
        C = dev.cores
        add(pulp.LpAffineExpression(devmem_terms[d]) <= dev_cap[d] / dev_scale[d], f"device_dram_{d}")
        add(pulp.LpAffineExpression(ssd_terms[d]) <= ssd_cap[d] / ssd_scale[d], f"ssd_capacity_{d}")
        add(T >= pulp.LpAffineExpression(io_terms[d]), f"time_io_{d}")
        if options.symmetry_breaking and d > 0 and _identical(devices[d - 1], dev):
            add(pulp.LpAffineExpression(work_terms[d - 1]) >= pulp.LpAffineExpression(work_terms[d]),
                f"symmetry_{d}")
        if serial:  # one host thread runs every core: no core split to choose
            continue
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
    return prob, MIPHandles(stats, calib, budgets, devices, table_opts, x, split, T, names, formulation, work, serial)


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
                 planner: str = "mip", remap: str | None = None) -> Plan:
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
        dplans = tuple(DevicePlan(dev.name, mem_cores=int(m), compute_cores=dev.cores - int(m))
                       for dev, m in zip(devices, mem_cores))
    else:
        dplans = []
        for d, dev in enumerate(devices):
            ms = [m for m in range(dev.cores + 1) if (d, m) in handles.split and
                  (handles.split[(d, m)].varValue or 0) > 0.5]
            m = ms[0] if ms else dev.cores
            dplans.append(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m))
        dplans = tuple(dplans)
    if handles.serial:  # one host thread runs every core: the split only labels the work (raw vs TT seconds)
        host_work = np.zeros((len(devices), 2))
        for o, d in picked:
            if d >= 0:
                host_work[d] += option_host_parts_s(o.load, handles.calib.host)[1:]
        dplans = tuple(DevicePlan(dev.name, mem_cores=m, compute_cores=dev.cores - m) for dev, (m, _) in
                       zip(devices, (best_core_split(w[0], w[1], dev.cores) for w, dev in zip(host_work, devices))))
    tables = tuple(TablePlacement(ts.name, int(o.hot_rows), "ssd_raw" if o.cold_tier == "none" else o.cold_tier,
                                  o.tt_rank, max(d, 0)) for ts, (o, d) in zip(stats.tables, picked))
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


def plan_mip(stats: WorkloadStats, calib: Calibration, budgets: Budgets, devices: Sequence[DeviceProfile],
             options: PlannerOptions = PlannerOptions(), remap: str | None = None) -> Plan:
    """Build, solve and read back in one call; ``plan.solver`` holds the (final) result."""
    prob, handles = build_problem(stats, calib, budgets, devices, options)
    result = solve_placement(prob, handles, options)
    return extract_plan(prob, handles, result, remap=remap)


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

"""The placement MIP (PuLP): hot-set size, cold tier and device per table; core split per device.

Build, solve and read back are separate steps: :func:`build_problem` (this
module) returns an unsolved ``pulp.LpProblem``; ``plans.mip_solve`` solves it
(:func:`~plans.mip_solve.solve`, :func:`~plans.mip_solve.solve_placement`) and
reads the plan back (:func:`~plans.mip_solve.extract_plan`). The builder only
consumes the cost model's numbers (``plans.cost``): :func:`option_coefficients`
turns one option on one device into the MIP's units, and each constraint
family below is added by its own function in ``plans.mip_constraints``, every
constraint named.

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

Second stage (``PlannerOptions.tie_break``, ``plans.mip_solve.solve_placement``): with T
held at its optimum, minimise the total work (the sum of every resource's
seconds), so that ties go to the plan doing least (free DRAM gets used).

Pooled formulation (``PlannerOptions.formulation``; "auto" picks it for more
than ``POOLED_ABOVE`` tables x devices on identical devices): one ``x[t,o]``
per option, devices pooled (``time_io_pooled``: D T >= IO; ``time_cores_pooled``:
D C T >= core work; pooled capacities), the per-table cuts kept. Its optimum
is a lower bound on the exact problem; ``extract_plan`` then assigns tables
to devices and splits cores (``plans.assign``) and reports the gap of that
plan against the bound.

Objective: minimise T, the predicted batch time. Times are in microseconds and
capacity rows are divided by their budget, to keep the solver well scaled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import pulp

from plans.cost import (StatsEstimator, is_host_serial, option_device_times, option_dram_time_s, option_host_time_s,
                        option_io_linear_s, option_io_other_s, option_work_s)
from plans.mip_constraints import (TIME_UNIT_S, add_budgets, add_core_split, add_device_rows, add_host_time,
                                   add_pooled_devices, add_table_cuts, identical_devices)
from plans.types import Budgets, Calibration, DeviceProfile, Estimator, PlannerOptions, TableOption, WorkloadStats
from tracegen.errors import InputError

MIN_SCALE_BYTES = 1 << 20
NO_DEVICE = -1
POOLED = -2
POOLED_ABOVE = 32  # auto: tables x devices above which identical devices are pooled

LinearTerms = list[tuple[pulp.LpVariable, float]]  # (variable, coefficient) pairs of one linear expression


@dataclass
class MIPHandles:
    """What ``plans.mip_solve.extract_plan`` needs to read a solution back."""

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


def choose_formulation(n_tables: int, devices: Sequence[DeviceProfile], requested: str = "auto") -> str:
    identical = all(identical_devices(devices[0], d) for d in devices[1:])
    if requested == "auto":
        return "pooled" if len(devices) > 1 and identical and n_tables * len(devices) > POOLED_ABOVE else "exact"
    if requested == "pooled" and not identical:
        raise InputError("the pooled formulation needs identical devices; use the exact one")
    if requested not in ("exact", "pooled"):
        raise InputError(f"unknown formulation {requested!r} (exact, pooled, auto)")
    return requested


# --- the problem's frame: slots, scales, execution model ------------------------------------------


@dataclass(frozen=True)
class Frame:
    """What every step of the build shares: the inputs, the device slots and the capacity scales.

    ``slots``: one per device (exact) or a single ``POOLED`` slot; capacities are in units of their budget
    (``*_scale``) so every row of the problem is of order 1."""

    stats: WorkloadStats
    calib: Calibration
    budgets: Budgets
    devices: tuple[DeviceProfile, ...]
    options: PlannerOptions
    formulation: str
    serial: bool
    slots: tuple[int, ...]
    host_scale: float
    device_dram_cap: tuple[float, ...]
    ssd_cap: tuple[float, ...]

    @classmethod
    def of(cls, stats: WorkloadStats, calib: Calibration, budgets: Budgets, devices: Sequence[DeviceProfile],
           options: PlannerOptions) -> "Frame":
        devices = tuple(devices)
        if not devices:
            raise InputError("need at least one device")
        formulation = choose_formulation(len(stats.tables), devices, options.formulation)
        pooled = formulation == "pooled"
        dev_cap = tuple(d.device_dram_bytes for d in devices)
        ssd_cap = tuple(d.ssd_capacity_bytes for d in devices)
        if pooled:
            dev_cap, ssd_cap = (sum(dev_cap),), (sum(ssd_cap),)
        return cls(stats, calib, budgets, devices, options, formulation, is_host_serial(devices, calib),
                   (POOLED,) if pooled else tuple(range(len(devices))), max(budgets.host_dram_bytes, MIN_SCALE_BYTES),
                   dev_cap, ssd_cap)

    @property
    def pooled(self) -> bool:
        return self.formulation == "pooled"

    @property
    def queue_depth(self) -> int:
        return self.devices[0].queue_depth

    def device_at(self, i: int) -> DeviceProfile:
        """The profile behind slot ``i`` (the common one when pooled)."""
        return self.devices[0] if self.pooled else self.devices[self.slots[i]]

    def device_dram_scale(self, i: int) -> float:
        return max(self.device_dram_cap[i], MIN_SCALE_BYTES)

    def ssd_scale(self, i: int) -> float:
        return max(self.ssd_cap[i], MIN_SCALE_BYTES)


# --- coefficients: the cost model's numbers in the MIP's units ----------------------------------


@dataclass(frozen=True)
class Coefficients:
    """One option of a table on one device slot (or on none), in microseconds and budget fractions."""

    host_us: float  # host DRAM time, or the host thread's time (host-serial)
    host_dram: float  # share of the host DRAM budget
    error: float  # lookup-weighted TT error
    work_us: float  # every resource's time (the tie-break objective)
    io_us: float = 0.0  # the device's IO
    mem_us: float = 0.0  # memory-centric core work (all cores)
    compute_us: float = 0.0  # compute-centric core work (all cores)
    other_io_us: float = 0.0  # IO the option costs every other device (host-serial: one disk)
    device_dram: float = 0.0  # share of the slot's device memory
    ssd: float = 0.0  # share of the slot's SSD capacity
    reads: bool = False  # the option reads from the device (host-serial: costs the host a hand-off)
    cores: int = 1  # cores of the slot's device


def option_coefficients(frame: Frame, opt: TableOption, i: int | None) -> Coefficients:
    """The coefficients of ``opt`` on slot ``i`` (None: the option needs no device)."""
    load, calib, qd = opt.load, frame.calib, frame.queue_depth
    threads = frame.budgets.host_threads
    if frame.serial:  # the host thread's seconds for this table, whichever device it lands on
        host_s = option_host_time_s(load, calib.host)
    else:
        host_s = option_dram_time_s(load, calib, threads)
    dev = None if i is None else frame.device_at(i)
    work_s = option_work_s(load, calib, dev, serial=frame.serial, queue_depth=qd, host_threads=threads)
    common = dict(host_us=host_s / TIME_UNIT_S, host_dram=load.host_dram_bytes / frame.host_scale,
                  error=load.error_weight, work_us=work_s / TIME_UNIT_S)
    if dev is None:
        return Coefficients(**common)
    if frame.serial:
        io_s, mem_s, comp_s = option_io_linear_s(load, calib, qd), 0.0, 0.0
        other_us = option_io_other_s(load, calib) / TIME_UNIT_S
    else:
        (io_s, mem_s, comp_s), other_us = option_device_times(load, dev), 0.0
    return Coefficients(**common, io_us=io_s / TIME_UNIT_S, mem_us=mem_s / TIME_UNIT_S,
                        compute_us=comp_s / TIME_UNIT_S, other_io_us=other_us,
                        device_dram=load.device_dram_bytes / frame.device_dram_scale(i),
                        ssd=load.ssd_bytes / frame.ssd_scale(i), reads=frame.serial and load.io_reads > 0,
                        cores=dev.cores)


# --- variables: one binary per (table, option, device slot) ----------------------------------------


@dataclass
class Terms:
    """The linear terms the constraint families are made of, gathered over every choice variable;
    per-slot lists have one entry per device slot, per-table lists one per table."""

    n_slots: int
    host: LinearTerms = field(default_factory=list)
    host_dram: LinearTerms = field(default_factory=list)
    error: LinearTerms = field(default_factory=list)
    work: LinearTerms = field(default_factory=list)
    table_io: list[LinearTerms] = field(default_factory=list)
    table_cores: list[LinearTerms] = field(default_factory=list)
    io: list[LinearTerms] = field(init=False)
    mem: list[LinearTerms] = field(init=False)
    compute: list[LinearTerms] = field(init=False)
    device_dram: list[LinearTerms] = field(init=False)
    ssd: list[LinearTerms] = field(init=False)
    slot_work: list[LinearTerms] = field(init=False)
    reading: list[list[pulp.LpVariable]] = field(init=False)  # the options that read from the slot
    mem_max: list[float] = field(init=False)  # sum over tables of the largest memory work an option puts there
    compute_max: list[float] = field(init=False)

    def __post_init__(self) -> None:
        n = self.n_slots
        self.io, self.mem, self.compute, self.device_dram, self.ssd, self.slot_work, self.reading = (
            [[] for _ in range(n)] for _ in range(7))
        self.mem_max, self.compute_max = [0.0] * n, [0.0] * n


class Rows:
    """The problem and the names of its constraints, in the order they were added."""

    def __init__(self, prob: pulp.LpProblem):
        self.prob = prob
        self.names: list[str] = []

    def add(self, constraint, name: str) -> None:
        self.prob += constraint, name
        self.names.append(name)


def _add_variable_terms(frame: Frame, terms: Terms, v: pulp.LpVariable, c: Coefficients, i: int | None,
                        t_io: LinearTerms, t_cores: LinearTerms) -> None:
    """Append variable ``v``'s coefficients ``c`` (slot ``i``) to every family's terms."""
    for lst, val in ((terms.host, c.host_us), (terms.host_dram, c.host_dram), (terms.error, c.error),
                     (terms.work, c.work_us)):
        if val:
            lst.append((v, val))
    if i is None:
        return
    if c.reads:
        terms.reading[i].append(v)
    if c.other_io_us and frame.pooled:
        terms.io[i].append((v, c.other_io_us * (len(frame.devices) - 1)))
    elif c.other_io_us:
        for j in range(len(frame.slots)):
            if j != i:
                terms.io[j].append((v, c.other_io_us))
    for lst, val in ((terms.io[i], c.io_us), (terms.mem[i], c.mem_us), (terms.compute[i], c.compute_us),
                     (t_io, c.io_us), (t_cores, (c.mem_us + c.compute_us) / c.cores),
                     (terms.slot_work[i], c.io_us + c.mem_us + c.compute_us), (terms.device_dram[i], c.device_dram),
                     (terms.ssd[i], c.ssd)):
        if val:
            lst.append((v, val))


def add_choice_variables(frame: Frame, rows: Rows, table_opts: list[list[TableOption]]
                         ) -> tuple[dict[tuple[int, int, int], pulp.LpVariable], Terms]:
    """``x[t,o,d]`` for every table, option and device slot (options keeping every row hot: no device), with
    ``one_choice_<t>``; returns the variables and the terms of every other family."""
    x: dict[tuple[int, int, int], pulp.LpVariable] = {}
    terms = Terms(len(frame.slots))
    for t, opts in enumerate(table_opts):
        if not opts:
            raise InputError(f"table {frame.stats.tables[t].name}: no placement option")
        choice, t_io, t_cores = [], [], []
        tmax_mem, tmax_comp = [0.0] * len(frame.slots), [0.0] * len(frame.slots)
        for o, opt in enumerate(opts):
            for i in (range(len(frame.slots)) if opt.needs_device else (None,)):
                d = NO_DEVICE if i is None else frame.slots[i]
                v = pulp.LpVariable(f"x_{t}_{o}_{'h' if d == NO_DEVICE else 'p' if d == POOLED else d}", cat="Binary")
                x[(t, o, d)] = v
                choice.append(v)
                c = option_coefficients(frame, opt, i)
                _add_variable_terms(frame, terms, v, c, i, t_io, t_cores)
                if i is not None:
                    tmax_mem[i], tmax_comp[i] = max(tmax_mem[i], c.mem_us), max(tmax_comp[i], c.compute_us)
        for i in range(len(frame.slots)):
            terms.mem_max[i] += tmax_mem[i]
            terms.compute_max[i] += tmax_comp[i]
        rows.add(pulp.lpSum(choice) == 1, f"one_choice_{t}")
        terms.table_io.append(t_io)
        terms.table_cores.append(t_cores)
    return x, terms


# --- the whole problem -----------------------------------------------------------------------------


def build_problem(stats: WorkloadStats, calib: Calibration, budgets: Budgets, devices: Sequence[DeviceProfile],
                  options: PlannerOptions = PlannerOptions(),
                  estimator: Estimator | None = None) -> tuple[pulp.LpProblem, MIPHandles]:
    """The unsolved placement problem and the handles to read its solution."""
    with warnings.catch_warnings():  # PuLP 3.x announces its 4.0 API on every variable
        warnings.simplefilter("ignore", DeprecationWarning)
        return _build(Frame.of(stats, calib, budgets, devices, options), estimator or StatsEstimator())


def _build(frame: Frame, estimator: Estimator) -> tuple[pulp.LpProblem, MIPHandles]:
    table_opts = estimator.table_options(frame.stats, frame.budgets, frame.options)
    prob = pulp.LpProblem("screc_placement", pulp.LpMinimize)
    T = pulp.LpVariable("T_us", lowBound=0)
    prob += T  # objective: the predicted batch time
    rows = Rows(prob)
    x, terms = add_choice_variables(frame, rows, table_opts)
    add_budgets(frame, rows, terms)
    add_host_time(frame, rows, terms, T, len(table_opts))
    add_table_cuts(rows, terms, T)
    split: dict[tuple[int, int], pulp.LpVariable] = {}
    if frame.pooled:
        add_pooled_devices(frame, rows, terms, T)
    else:
        for d, dev in enumerate(frame.devices):
            add_device_rows(frame, rows, terms, T, d)
            if not frame.serial:  # host-serial: one host thread runs every core, no split to choose
                add_core_split(rows, terms, T, d, dev.cores, split)
    return prob, MIPHandles(frame.stats, frame.calib, frame.budgets, frame.devices, table_opts, x, split, T,
                            rows.names, frame.formulation, pulp.LpAffineExpression(terms.work), frame.serial)

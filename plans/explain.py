"""Why a plan is what it is: per table, per resource and per constraint. Every figure is modelled.

For each table: its tier, hot rows, TT rank, the share of its lookups served from DRAM and from its cold
tier, the seconds per batch it adds to each resource (``plans.cost``: the host thread or host DRAM, its
device's IO, memory-centric and compute-centric cores), and what growing its hot set to the planner's next
candidate size would save in batch time per MiB of DRAM, the rest of the plan fixed (a finite difference of
the cost model, not a re-solve).

For the plan: which resource sets the batch time, and which named constraints bind. Host DRAM's marginal
value is a **finite difference of re-solves**: the pipeline is solved again at the plan's budget and at the
budget plus a step, and the batch times of the two are compared (both solved now, so a plan made with other
rates or options does not distort the difference). Host DRAM binds when that step saves time; device
memory, SSD capacity and the accuracy budget are reported as tight when less than ``TIGHT_SHARE`` of
their limit is left (slack, not a dual: a tight constraint may still not limit the batch time).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from emulator.plan import Plan
from plans.cost import (candidate_hot_rows, is_host_serial, max_table_error, memory_use, option_device_times,
                        option_dram_time_s, option_host_time_s, option_io_linear_s, plan_loads, predict_batch_time,
                        weighted_error)
from plans.types import Budgets, Calibration, DeviceProfile, Perf, PlannerOptions, WorkloadStats

MIB = 1 << 20
TIGHT_SHARE = 0.01  # a capacity or accuracy constraint with less than 1% of its limit left is "tight"
SAVES_EPS_S = 1e-9  # a step saving less than this (seconds per batch) saves nothing
TIGHT_HOW = "slack: tight if < 1% left"


def _bytes_text(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


def resource_label(name: str) -> str:
    """``io[1]`` -> ``IO on dev1`` (the names of :class:`plans.types.Perf` items, for people)."""
    base, _, idx = name.partition("[")
    dev = f"dev{idx.rstrip(']')}" if idx else ""
    return {"host": "the host thread", "dram": "host DRAM", "io": f"IO on {dev}",
            "mem_core": f"memory-centric cores of {dev}", "compute_core": f"compute-centric cores of {dev}"}.get(
        base, name)


@dataclass(frozen=True)
class TableWhy:
    """One table's place and its predicted load (modelled). ``seconds``: (resource, seconds per batch).
    ``grow_to_rows`` / ``grow_saves_s_per_mib``: the next candidate hot size and the batch time it would
    save per MiB of DRAM with the rest of the plan fixed (None when every row is already hot)."""

    name: str
    tier: str  # dram (every row hot) | ssd_raw | ssd_tt
    rows: int
    hot_rows: int
    tt_rank: int | None
    device: int | None
    dram_share: float
    cold_share: float
    seconds: tuple[tuple[str, float], ...]
    grow_to_rows: int | None
    grow_saves_s_per_mib: float | None

    @property
    def total_s(self) -> float:
        return sum(s for _, s in self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": dict(self.seconds)}


@dataclass(frozen=True)
class ConstraintWhy:
    """A named constraint: ``used`` of ``limit`` (``unit``: bytes or relative error); ``binds`` as decided
    by ``how`` (a re-solve or the slack)."""

    name: str
    used: float
    limit: float
    unit: str
    binds: bool
    how: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Explanation:
    """The whole explanation; ``step_*``: the re-solve finite difference (None when not re-solved)."""

    tables: tuple[TableWhy, ...]
    perf: Perf
    constraints: tuple[ConstraintWhy, ...]
    step_bytes: int | None = None
    resolved_s: float | None = None  # the re-solve at the plan's budget
    stepped_s: float | None = None  # ... and at the budget plus the step

    @property
    def step_saves_s(self) -> float | None:
        if self.resolved_s is None or self.stepped_s is None:
            return None
        return max(0.0, self.resolved_s - self.stepped_s)

    @property
    def limited_by(self) -> str:
        return resource_label(self.perf.bottleneck)

    def summary(self) -> str:
        """One line: what limits the plan and what more DRAM would buy (modelled)."""
        text = f"{self.limited_by} limits the plan ({self.perf.total_s * 1e3:.4g} ms per batch)"
        binding = [c.name for c in self.constraints if c.binds]
        if binding:
            text += "; binding: " + ", ".join(binding)
        if self.step_bytes is not None and self.step_saves_s is not None:
            more = _bytes_text(self.step_bytes)
            text += (f"; {more} more DRAM would save {self.step_saves_s * 1e3:.3g} ms"
                     if self.step_saves_s > SAVES_EPS_S else f"; {more} more DRAM would save nothing")
        return text + " (modelled)"

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "limited_by": self.perf.bottleneck, "perf": self.perf.to_dict(),
                "tables": [t.to_dict() for t in self.tables], "constraints": [c.to_dict() for c in self.constraints],
                "dram_step_bytes": self.step_bytes, "resolved_batch_s": self.resolved_s,
                "stepped_batch_s": self.stepped_s, "dram_step_saves_s": self.step_saves_s,
                "marginal_method": "finite difference of two re-solves (the plan's budget and budget + step)",
                "table_marginal_method": "finite difference of the cost model: one table's hot set grown to the "
                                         "next candidate size, the rest of the plan fixed",
                "basis": "modelled"}


def _table_seconds(load, dev: int | None, plan: Plan, calib: Calibration, devices: Sequence[DeviceProfile],
                   serial: bool) -> tuple[tuple[str, float], ...]:
    if serial:
        out = [("host", option_host_time_s(load, calib.host))]
        if dev is not None:
            out.append((f"io[{dev}]", option_io_linear_s(load, calib, devices[dev].queue_depth)))
        return tuple(out)
    out = [("dram", option_dram_time_s(load, calib))]
    if dev is not None:
        io, mem, comp = option_device_times(load, devices[dev])
        dp = plan.devices[dev]
        out += [(f"io[{dev}]", io), (f"mem_core[{dev}]", mem / dp.mem_cores if dp.mem_cores else 0.0),
                (f"compute_core[{dev}]", comp / dp.compute_cores if dp.compute_cores else 0.0)]
    return tuple(out)


def _grow(plan: Plan, stats: WorkloadStats, t: int, calib, devices, base_s: float) -> tuple[int | None, float | None]:
    ts = stats.tables[t]
    p = plan.placement(ts.name)
    bigger = [k for k in candidate_hot_rows(ts, PlannerOptions().hot_mass_levels) if k > p.hot_rows]
    if p.hot_rows >= ts.rows or not bigger:
        return None, None
    k = bigger[0]
    tables = tuple(dataclasses.replace(q, hot_rows=k) if q.table == ts.name else q for q in plan.tables)
    grown = predict_batch_time(dataclasses.replace(plan, tables=tables), stats, calib, devices).total_s
    mib = (k - p.hot_rows) * ts.row_bytes / MIB
    return k, (base_s - grown) / mib if mib > 0 else None


def _constraints(plan: Plan, stats: WorkloadStats, budgets: Budgets, devices: Sequence[DeviceProfile],
                 step_saves_s: float | None) -> tuple[ConstraintWhy, ...]:
    use = memory_use(plan, stats)
    tight = (lambda used, limit: bool(limit - used <= TIGHT_SHARE * limit))
    if step_saves_s is not None:
        dram = ConstraintWhy("host DRAM", use.host_dram_bytes, budgets.host_dram_bytes, "bytes",
                             bool(step_saves_s > SAVES_EPS_S), "re-solve at budget + step")
    else:
        dram = ConstraintWhy("host DRAM", use.host_dram_bytes, budgets.host_dram_bytes, "bytes",
                             tight(use.host_dram_bytes, budgets.host_dram_bytes), TIGHT_HOW)
    out = [dram]
    for d, dev in enumerate(devices):
        out.append(ConstraintWhy(f"device memory dev{d}", use.device_dram_bytes[d], dev.device_dram_bytes, "bytes",
                                 tight(use.device_dram_bytes[d], dev.device_dram_bytes), TIGHT_HOW))
        out.append(ConstraintWhy(f"SSD dev{d}", use.ssd_bytes[d], dev.ssd_capacity_bytes, "bytes",
                                 tight(use.ssd_bytes[d], dev.ssd_capacity_bytes), TIGHT_HOW))
    if budgets.max_rel_error is not None:
        err = weighted_error(plan, stats) if budgets.accuracy_mode == "weighted" else max_table_error(plan, stats)
        out.append(ConstraintWhy(f"accuracy ({budgets.accuracy_mode})", err, budgets.max_rel_error, "rel. error",
                                 tight(err, budgets.max_rel_error), TIGHT_HOW))
    return tuple(out)


def explain_plan(plan: Plan, stats: WorkloadStats, calib: Calibration, devices: Sequence[DeviceProfile],
                 budgets: Budgets, resolve: Callable[[int], float] | None = None,
                 step_bytes: int | None = None) -> Explanation:
    """Explain ``plan`` under ``stats``; ``resolve(budget_bytes)`` (optional) re-plans at a budget and returns
    the predicted batch time, for the DRAM finite difference of ``step_bytes``."""
    serial = is_host_serial(devices, calib)
    perf = predict_batch_time(plan, stats, calib, devices, budgets.host_threads)
    whys = []
    for t, (ts, load) in enumerate(zip(stats.tables, plan_loads(plan, stats))):
        p = plan.placement(ts.name)
        all_hot = p.hot_rows >= ts.rows
        dev = None if all_hot else p.device
        looks = ts.lookups_per_batch
        dram_share = load.dram_lookups / looks if looks > 0 else (1.0 if all_hot else 0.0)
        grow_rows, grow = _grow(plan, stats, t, calib, devices, perf.total_s)
        whys.append(TableWhy(ts.name, "dram" if all_hot else p.cold_tier, ts.rows, p.hot_rows,
                             None if all_hot else p.tt_rank, dev, dram_share, 1.0 - dram_share if looks > 0 else 0.0,
                             _table_seconds(load, dev, plan, calib, devices, serial), grow_rows, grow))
    resolved = stepped = None
    if resolve is not None and step_bytes:
        resolved = resolve(budgets.host_dram_bytes)
        stepped = resolve(budgets.host_dram_bytes + step_bytes)
    saves = None if resolved is None else max(0.0, resolved - stepped)
    return Explanation(tuple(whys), perf, _constraints(plan, stats, budgets, devices, saves),
                       step_bytes if resolved is not None else None, resolved, stepped)

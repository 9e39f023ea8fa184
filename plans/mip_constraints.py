"""The placement MIP's constraint families, one function each, every constraint named.

Each function adds one family to the problem (``Rows``) from the linear terms
gathered over the choice variables (``Terms``, see :func:`plans.mip.add_choice_variables`);
none computes a cost. The formulation is described in :mod:`plans.mip`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import pulp

from plans.types import DeviceProfile

if TYPE_CHECKING:
    from plans.mip import Frame, Rows, Terms

TIME_UNIT_S = 1e-6  # the MIP's time variables are in microseconds


def identical_devices(a: DeviceProfile, b: DeviceProfile) -> bool:
    """Equal profiles but for the name."""
    da, db = asdict(a), asdict(b)
    da.pop("name"), db.pop("name")
    return da == db


def add_budgets(frame: Frame, rows: Rows, terms: Terms) -> None:
    """``host_dram_budget``; ``accuracy_budget`` (weighted mode; per-table mode filters the options instead)."""
    b = frame.budgets
    rows.add(pulp.LpAffineExpression(terms.host_dram) <= b.host_dram_bytes / frame.host_scale, "host_dram_budget")
    if b.max_rel_error is not None and b.accuracy_mode == "weighted" and terms.error:
        rows.add(pulp.LpAffineExpression(terms.error) <= b.max_rel_error, "accuracy_budget")


def add_host_time(frame: Frame, rows: Rows, terms: Terms, T: pulp.LpVariable, n_tables: int) -> None:
    """``time_dram`` (parallel model), or ``time_host`` with ``device_reads_<d>`` (host-serial: a device
    with reads costs the host ``io_device_s``, its hand-off to the device's IO thread, through binary u_d)."""
    if not frame.serial:
        rows.add(T >= pulp.LpAffineExpression(terms.host), "time_dram")
        return
    host = frame.calib.host
    active = []
    for i, opts_i in enumerate(terms.reading):
        if opts_i and host.io_device_s > 0:
            u = pulp.LpVariable(f"u_{i}", cat="Binary")
            rows.add(pulp.lpSum(opts_i) <= n_tables * u, f"device_reads_{i}")
            active.append((u, host.io_device_s * (len(frame.devices) if frame.pooled else 1) / TIME_UNIT_S))
    rows.add(T >= pulp.LpAffineExpression(terms.host + active, constant=host.batch_s / TIME_UNIT_S), "time_host")


def add_table_cuts(rows: Rows, terms: Terms, T: pulp.LpVariable) -> None:
    """``table_io_<t>``, ``table_cores_<t>``: valid cuts, a table is on one device, which is at least as busy."""
    for t, (t_io, t_cores) in enumerate(zip(terms.table_io, terms.table_cores)):
        if t_io:
            rows.add(T >= pulp.LpAffineExpression(t_io), f"table_io_{t}")
        if t_cores:
            rows.add(T >= pulp.LpAffineExpression(t_cores), f"table_cores_{t}")


def add_pooled_devices(frame: Frame, rows: Rows, terms: Terms, T: pulp.LpVariable) -> None:
    """``device_dram_pooled``, ``ssd_capacity_pooled``, ``time_io_pooled`` (D T >= IO) and, parallel model,
    ``time_cores_pooled`` (D C T >= core work)."""
    nd, C = len(frame.devices), frame.devices[0].cores
    rows.add(pulp.LpAffineExpression(terms.device_dram[0]) <= frame.device_dram_cap[0] / frame.device_dram_scale(0),
             "device_dram_pooled")
    rows.add(pulp.LpAffineExpression(terms.ssd[0]) <= frame.ssd_cap[0] / frame.ssd_scale(0), "ssd_capacity_pooled")
    rows.add(nd * T >= pulp.LpAffineExpression(terms.io[0]), "time_io_pooled")
    if not frame.serial:
        rows.add(nd * C * T >= pulp.LpAffineExpression(terms.mem[0] + terms.compute[0]), "time_cores_pooled")


def add_device_rows(frame: Frame, rows: Rows, terms: Terms, T: pulp.LpVariable, d: int) -> None:
    """``device_dram_<d>``, ``ssd_capacity_<d>``, ``time_io_<d>`` and, optionally, ``symmetry_<d>``
    (identical devices ordered by their work)."""
    dev = frame.devices[d]
    rows.add(pulp.LpAffineExpression(terms.device_dram[d]) <= frame.device_dram_cap[d] / frame.device_dram_scale(d),
             f"device_dram_{d}")
    rows.add(pulp.LpAffineExpression(terms.ssd[d]) <= frame.ssd_cap[d] / frame.ssd_scale(d), f"ssd_capacity_{d}")
    rows.add(T >= pulp.LpAffineExpression(terms.io[d]), f"time_io_{d}")
    if frame.options.symmetry_breaking and d > 0 and identical_devices(frame.devices[d - 1], dev):
        rows.add(pulp.LpAffineExpression(terms.slot_work[d - 1]) >= pulp.LpAffineExpression(terms.slot_work[d]),
                 f"symmetry_{d}")


def add_core_split(rows: Rows, terms: Terms, T: pulp.LpVariable, d: int, cores: int,
                   split: dict[tuple[int, int], pulp.LpVariable]) -> None:
    """Device ``d``'s split into m memory-centric and C-m compute-centric cores, time = work / cores exactly:
    ``core_split_<d>``, ``mem_work_<d>``, ``compute_work_<d>``, ``mem_work_cap_<d>_<m>``,
    ``compute_work_cap_<d>_<m>``, ``time_mem_<d>``, ``time_compute_<d>`` and the cut ``time_cores_<d>``."""
    C = cores
    for m in range(C + 1):
        split[(d, m)] = pulp.LpVariable(f"s_{d}_{m}", cat="Binary")
    rows.add(pulp.lpSum(split[(d, m)] for m in range(C + 1)) == 1, f"core_split_{d}")
    wm = {m: pulp.LpVariable(f"wm_{d}_{m}", lowBound=0) for m in range(1, C + 1)}
    wc = {m: pulp.LpVariable(f"wc_{d}_{m}", lowBound=0) for m in range(0, C)}
    rows.add(pulp.LpAffineExpression(terms.mem[d]) == pulp.lpSum(wm.values()), f"mem_work_{d}")
    rows.add(pulp.LpAffineExpression(terms.compute[d]) == pulp.lpSum(wc.values()), f"compute_work_{d}")
    for m, w in wm.items():
        rows.add(w <= terms.mem_max[d] * split[(d, m)], f"mem_work_cap_{d}_{m}")
    for m, w in wc.items():
        rows.add(w <= terms.compute_max[d] * split[(d, m)], f"compute_work_cap_{d}_{m}")
    rows.add(T >= pulp.lpSum(w * (1.0 / m) for m, w in wm.items()), f"time_mem_{d}")
    rows.add(T >= pulp.lpSum(w * (1.0 / (C - m)) for m, w in wc.items()), f"time_compute_{d}")
    # valid cut: W/m <= T and V/(C-m) <= T imply W + V <= C T (tightens the LP relaxation)
    rows.add(C * T >= pulp.LpAffineExpression(terms.mem[d] + terms.compute[d]), f"time_cores_{d}")



"""plans.mip: the optimum equals an exhaustive search; every budget binds when tightened."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.cost import StatsEstimator, memory_use, plan_work_s, predict_batch_time, weighted_error
from plans.mip import Frame, build_problem, option_coefficients
from plans.mip_solve import plan_mip, solve
from plans.types import Budgets, Calibration, DeviceProfile, HostCosts, PlannerOptions, TableStats, TTVariant, \
    WorkloadStats, capacity

EXACT = PlannerOptions(formulation="exact", time_limit_s=30)


def calib() -> Calibration:
    # 1 us per host lookup (bandwidth term negligible)
    return Calibration(dram_lookups_per_s=1e6, dram_bytes_per_s=1e18, io_iops_by_qd={64: 1000.0},
                       io_latency_s_by_qd={64: 1e-3}, read_bytes_per_s=4096e6, mem_core_lookups_per_s=1000.0,
                       tt_rows_per_s_by_rank={4: 1000.0}, compute_core_flops_per_s=1e6, source="measured")


def device(cores=2, dram=1000, ssd=10**9, name="d") -> DeviceProfile:
    # 1 ms per page (1000 IOPS), 1 ms per pooled row per memory core, 1e6 flop/s per compute core
    return DeviceProfile(name, cores, dram, ssd, iops=1000.0, read_bytes_per_s=4096e6, mem_core_lookups_per_s=1000.0,
                         compute_core_flops_per_s=1e6)


def table(name, rows, grid, mass, lookups, cold_rows, cold_pages, tt_bytes, tt_err) -> TableStats:
    return TableStats(name=name, rows=rows, row_bytes=64, rows_per_page=64, pages_per_row=1, lookups_per_batch=lookups,
                      pooling=lookups / 10, hot_rows=grid, mass=mass, cold_unique_rows_per_batch=cold_rows,
                      cold_unique_pages_per_batch=cold_pages,
                      tt=(TTVariant(4, tt_bytes, tt_err, 0.0, 1000.0),) if tt_bytes else ())


def hand_stats() -> WorkloadStats:
    a = table("A", 100, [0, 10, 100], [0, 0.8, 1.0], 10, [8, 2, 0], [2, 1, 0], 400, 0.1)
    b = table("B", 200, [0, 20, 200], [0, 0.5, 1.0], 20, [15, 10, 0], [3, 2, 0], 600, 0.2)
    return WorkloadStats((a, b), batch_size=10, store_id="s")


def mip_T(stats, budgets, devices) -> tuple[float, Plan]:
    plan = plan_mip(stats, calib(), budgets, devices, EXACT)
    assert plan.solver["status"] == "optimal"
    return plan.solver["objective_s"], plan


# Hand arithmetic (1 device, 2 cores; ms per unit: page 1, pooled raw row 1/core, TT row 1/core):
#   A k=10 TT: compute 2 rows = 2 ms, host 640 B, device DRAM 400 B
#   B k=0  TT: compute 15 rows = 15 ms, device DRAM 600 B
#   both TT on 2 compute cores: (2 + 15) / 2 = 8.5 ms  <- the optimum (DRAM 640 <= 1000, device 1000 <= 1000)
#   all raw (A k=10, B k=0): memory work 2 + 20 = 22 ms on 2 cores = 11 ms
def test_hand_instance_optimum():
    T, plan = mip_T(hand_stats(), Budgets(1000), [device()])
    assert T == pytest.approx(8.5e-3, rel=1e-6)
    assert [(p.hot_rows, p.cold_tier) for p in plan.tables] == [(10, "ssd_tt"), (0, "ssd_tt")]
    assert plan.devices[0].mem_cores == 0 and plan.devices[0].compute_cores == 2
    assert predict_batch_time(plan, hand_stats(), calib(), [device()]).total_s == pytest.approx(T, rel=1e-9)


def test_host_dram_budget_binds():
    # budget 0: no hot rows; A k=0 TT (8 ms) + B TT (15 ms) on 2 compute cores = 11.5 ms
    T, plan = mip_T(hand_stats(), Budgets(0), [device()])
    assert T == pytest.approx(11.5e-3, rel=1e-6)
    assert [(p.hot_rows, p.cold_tier) for p in plan.tables] == [(0, "ssd_tt"), (0, "ssd_tt")]
    # host DRAM 0; device DRAM and SSD: both TT cores, 400 + 600 B; error 10/30 * 0.1 + 20/30 * 0.2 = 1/6
    m = memory_use(plan, hand_stats())
    assert (m.host_dram_bytes, m.device_dram_bytes, m.ssd_bytes) == (0, (1000,), (1000,))
    assert weighted_error(plan, hand_stats()) == pytest.approx(1 / 6, rel=1e-12)


def test_device_dram_binds():
    # 999 B cannot hold both TT cores (400 + 600): all raw, 22 ms of memory work on 2 cores = 11 ms
    T, plan = mip_T(hand_stats(), Budgets(1000), [device(dram=999)])
    assert T == pytest.approx(11e-3, rel=1e-6)
    assert [(p.hot_rows, p.cold_tier) for p in plan.tables] == [(10, "ssd_raw"), (0, "ssd_raw")]
    # host: A's 10 hot rows x 64 B; no TT cores; SSD: A's 100 rows in 2 pages + B's 200 rows in 4 pages of 4 KiB
    m = memory_use(plan, hand_stats())
    assert (m.host_dram_bytes, m.device_dram_bytes, m.ssd_bytes) == (640, (0,), (6 * 4096,))


def test_accuracy_budget_binds():
    # B on TT alone adds 20/30 * 0.2 = 0.133 of weighted error > 0.1: all raw again, 11 ms
    T, plan = mip_T(hand_stats(), Budgets(1000, max_rel_error=0.1), [device()])
    assert T == pytest.approx(11e-3, rel=1e-6)
    assert [(p.hot_rows, p.cold_tier) for p in plan.tables] == [(10, "ssd_raw"), (0, "ssd_raw")]
    assert weighted_error(plan, hand_stats()) == 0.0  # no table on TT


def test_ssd_capacity_binds():
    # device DRAM 999 (one TT at most) and SSD 24575 B < 8192 + 16384 (both raw): A raw k=10 + B TT:
    # memory 2 ms on 1 core, compute 15 ms on 1 core -> 15 ms
    T, plan = mip_T(hand_stats(), Budgets(1000), [device(dram=999, ssd=24575)])
    assert T == pytest.approx(15e-3, rel=1e-6)
    assert [(p.hot_rows, p.cold_tier) for p in plan.tables] == [(10, "ssd_raw"), (0, "ssd_tt")]
    assert (plan.devices[0].mem_cores, plan.devices[0].compute_cores) == (1, 1)
    # SSD: A's 2 raw pages (8192 B) + B's TT cores (600 B, also in device DRAM); error 20/30 * 0.2
    m = memory_use(plan, hand_stats())
    assert (m.host_dram_bytes, m.device_dram_bytes, m.ssd_bytes) == (640, (600,), (8192 + 600,))
    assert weighted_error(plan, hand_stats()) == pytest.approx(0.2 * 20 / 30, rel=1e-12)


def test_constraints_are_named_and_problem_unsolved():
    prob, h = build_problem(hand_stats(), calib(), Budgets(1000, 0.1), [device(), device(name="e")], EXACT)
    names = set(h.constraint_names)
    if hasattr(prob, "numConstraints"):  # PuLP >= 3: every constraint is one the builder named
        assert prob.numConstraints() == len(h.constraint_names)
    for n in ("host_dram_budget", "accuracy_budget", "time_dram", "one_choice_0", "one_choice_1", "device_dram_0",
              "ssd_capacity_1", "core_split_0", "time_io_1", "time_mem_0", "time_compute_1", "symmetry_1"):
        assert n in names
    assert prob.status == 0  # not solved yet


def test_one_device_problem_has_exactly_these_rows():
    # 2 tables, 1 device of 2 cores, parallel model: one_choice x 2, the host DRAM budget, time_dram; each table
    # has options with IO and core work (table_io_t, table_cores_t); the device's capacities and IO; the split
    # m = 0..2 with memory work for m = 1, 2 and compute work for m = 0, 1 (a cap each), the two times, the cut
    prob, h = build_problem(hand_stats(), calib(), Budgets(1000), [device()], EXACT)
    assert sorted(h.constraint_names) == sorted([
        "one_choice_0", "one_choice_1", "host_dram_budget", "time_dram", "table_io_0", "table_cores_0",
        "table_io_1", "table_cores_1", "device_dram_0", "ssd_capacity_0", "time_io_0", "core_split_0",
        "mem_work_0", "compute_work_0", "mem_work_cap_0_1", "mem_work_cap_0_2", "compute_work_cap_0_0",
        "compute_work_cap_0_1", "time_mem_0", "time_compute_0", "time_cores_0"])
    assert prob.status == 0  # unsolved


def test_option_coefficients_are_the_cost_models_numbers_in_microseconds():
    stats, budgets = hand_stats(), Budgets(1000)
    frame = Frame.of(stats, calib(), budgets, [device()], EXACT)
    opts = StatsEstimator().table_options(stats, budgets, EXACT)[0]
    tt10 = next(o for o in opts if o.hot_rows == 10 and o.cold_tier == "ssd_tt")
    c = option_coefficients(frame, tt10, 0)
    # table A, 10 rows hot, rest TT rank 4: 2 cold rows x 1000 flop at 1e6 flop/s = 2 ms of compute-core work;
    # no IO, no memory-core work; 8 hot lookups at 1 us = 8 us of host DRAM time; 10 rows x 64 B = 640 B of
    # host DRAM over a scale of max(1000 B, 1 MiB); 400 B of TT cores over max(1000 B, 1 MiB) of device memory
    assert (c.compute_us, c.mem_us, c.io_us) == pytest.approx((2000.0, 0.0, 0.0))
    assert c.host_us == pytest.approx(8.0) and c.cores == 2
    assert c.host_dram == pytest.approx(640 / 2**20) and c.device_dram == pytest.approx(400 / 2**20)
    hot = next(o for o in opts if not o.needs_device)  # every row hot: no device slot, no device terms
    c = option_coefficients(frame, hot, None)
    assert c.host_us == pytest.approx(10.0) and (c.io_us, c.device_dram, c.ssd) == (0.0, 0.0, 0.0)


def test_infeasible_budget_is_reported():
    # a table with no way to fit: SSD 0 and device DRAM 0 leave only "every row hot", which needs 6400 B
    prob, h = build_problem(hand_stats(), calib(), Budgets(100), [device(dram=0, ssd=0)], EXACT)
    res = solve(prob, time_limit_s=10)
    assert res.status == "infeasible"


def brute_force(stats, budgets, devices, cal=None) -> tuple[float, float]:
    """Every option x device per table and every core split: the least feasible predicted batch time, and the
    least total work (``plan_work_s``) among the plans reaching it (the MIP's lexicographic objective)."""
    cal = cal or calib()
    opts = StatsEstimator().table_options(stats, budgets, PlannerOptions())
    cap = capacity(budgets, devices)
    found = []
    per_table = [[(o, d) for o in ol for d in (range(len(devices)) if o.needs_device else [0])] for ol in opts]
    splits = list(itertools.product(*[range(d.cores + 1) for d in devices]))
    for combo in itertools.product(*per_table):
        tables = tuple(TablePlacement(stats.tables[i].name, o.hot_rows, "ssd_raw" if o.cold_tier == "none"
                                      else o.cold_tier, o.tt_rank, d) for i, (o, d) in enumerate(combo))
        for split in splits:
            plan = Plan("s", tables, tuple(DevicePlan(f"d{i}", m, dv.cores - m)
                                           for i, (m, dv) in enumerate(zip(split, devices))))
            if not memory_use(plan, stats).fits_in(cap):
                continue
            if budgets.max_rel_error is not None and weighted_error(plan, stats) > budgets.max_rel_error + 1e-12:
                continue
            found.append((predict_batch_time(plan, stats, cal, devices).total_s, plan_work_s(plan, stats, cal, devices)))
    best = min(t for t, _ in found)
    return best, min(w for t, w in found if t <= best * (1 + 1e-9))


def random_table(rng, name) -> TableStats:
    rows = int(rng.integers(50, 400))
    k1 = int(rng.integers(1, rows))
    m1 = float(rng.uniform(0.3, 0.9))
    lookups = float(rng.integers(5, 40))
    r0 = float(rng.uniform(3, lookups))
    r1 = float(rng.uniform(0, r0 * (1 - m1)))
    return TableStats(name=name, rows=rows, row_bytes=64, rows_per_page=64, pages_per_row=1, lookups_per_batch=lookups,
                      pooling=1.0, hot_rows=[0, k1], mass=[0.0, m1], cold_unique_rows_per_batch=[r0, r1],
                      cold_unique_pages_per_batch=[min(r0, 1 + rows // 64), min(r1, 1 + rows // 64)],
                      tt=(TTVariant(4, int(rng.integers(100, 600)), float(rng.uniform(0, 0.3)), 0.0,
                                    float(rng.uniform(200, 3000))),))


@pytest.mark.parametrize("seed,n_tables,n_devices,cores", [(0, 2, 1, 2), (1, 3, 1, 3), (2, 2, 2, 2), (3, 3, 2, 2),
                                                            (4, 2, 1, 4)])
def test_mip_equals_exhaustive_search(seed, n_tables, n_devices, cores):
    rng = np.random.default_rng(seed)
    stats = WorkloadStats(tuple(random_table(rng, f"t{i}") for i in range(n_tables)), 10, store_id="s")
    total = sum(t.rows * t.row_bytes for t in stats.tables)
    budgets = Budgets(int(total * rng.uniform(0.1, 0.6)), max_rel_error=float(rng.uniform(0.01, 0.1)))
    devices = [device(cores=cores, dram=int(rng.integers(300, 1200)), name=f"d{i}") for i in range(n_devices)]
    want, want_work = brute_force(stats, budgets, devices)
    got, plan = mip_T(stats, budgets, devices)
    assert got == pytest.approx(want, rel=1e-6)
    # second stage: among the plans of that batch time, the least total work (within the solver's gap)
    assert plan.solver["tie_break"]["status"] == "optimal"
    assert predict_batch_time(plan, stats, calib(), devices).total_s <= want * (1 + 1e-6)
    assert plan_work_s(plan, stats, calib(), devices) <= want_work * (1 + 1e-3)


def test_pooled_bound_brackets_the_exact_optimum():
    rng = np.random.default_rng(7)
    stats = WorkloadStats(tuple(random_table(rng, f"t{i}") for i in range(6)), 10, store_id="s")
    budgets = Budgets(2000, 0.05)
    devices = [device(cores=3, name=f"d{i}") for i in range(2)]
    exact, _ = mip_T(stats, budgets, devices)
    pooled = plan_mip(stats, calib(), budgets, devices, PlannerOptions(formulation="pooled", time_limit_s=30))
    s = pooled.solver
    assert s["formulation"] == "pooled"
    assert s["best_bound_s"] <= exact * (1 + 1e-6)
    assert s["objective_s"] >= exact * (1 - 1e-6)
    # the bound lies at or below the exact optimum, so the reported gap covers the objective's distance from it
    assert 0 <= (s["objective_s"] - exact) / s["objective_s"] <= s["gap"] + 1e-6 and s["gap"] < 1


def test_tie_break_uses_free_dram():
    # table B (15 TT rows, no room in DRAM) sets the batch time: 15 ms of compute on device 0's 2 cores = 7.5 ms.
    # C (one row, 10 lookups) is as fast hot (10 us of DRAM) as raw on device 1 (1 page = 1 ms of IO, 10 rows
    # = 5 ms on 2 memory cores < 7.5 ms): only the second objective (least total work) puts its row in the free DRAM
    b = table("B", 200, [0, 200], [0, 1.0], 20, [15, 0], [3, 0], 600, 0.0)
    c = table("C", 1, [0, 1], [0, 1.0], 10, [1, 0], [1, 0], 0, 0.0)
    stats = WorkloadStats((b, c), batch_size=10, store_id="s")
    devs = [device(cores=2, dram=1000, name="d0"), device(cores=2, dram=1000, name="d1")]
    T, plan = mip_T(stats, Budgets(64), devs)
    assert T == pytest.approx(7.5e-3, rel=1e-6)
    assert plan.placement("C").hot_rows == 1  # every row hot
    off = plan_mip(stats, calib(), Budgets(64), devs, PlannerOptions(formulation="exact", time_limit_s=30,
                                                                      tie_break=False))
    assert off.solver.get("tie_break") is None and off.solver["objective_s"] == pytest.approx(T, rel=1e-6)


def serial_calib() -> Calibration:
    # host-serial: 1 ms per batch, 0.1 ms per table, 10 us per lookup, raw 0.5 ms per table + 20 us per lookup
    # + 0.1 ms per read, TT 0.2 ms per table + 0.1 ms per row, 0.3 ms per device with reads; IO 1 ms per read
    # + 0.2 ms per page, 0.1 ms per page of the other device; IOPS so high that the one-latency floor never binds
    host = HostCosts(batch_s=1e-3, table_s=1e-4, lookup_s=1e-5, raw_table_s=5e-4, raw_lookup_s=2e-5, read_s=1e-4,
                     tt_table_s=2e-4, tt_lookup_s=0.0, tt_row_s=1e-4, tt_flop_s=0.0, io_device_s=3e-4, io_read_s=1e-3,
                     io_page_s=2e-4, io_other_page_s=1e-4)
    return Calibration(dram_lookups_per_s=1e6, dram_bytes_per_s=1e18, io_iops_by_qd={1: 1e12}, io_latency_s_by_qd={1: 0.0},
                       read_bytes_per_s=1e18, mem_core_lookups_per_s=1.0, tt_rows_per_s_by_rank={4: 1.0},
                       compute_core_flops_per_s=1.0, host=host)


@pytest.mark.parametrize("seed,n_tables,n_devices", [(10, 2, 1), (11, 3, 2), (12, 3, 2)])
def test_host_serial_mip_equals_exhaustive_search(seed, n_tables, n_devices):
    rng = np.random.default_rng(seed)
    stats = WorkloadStats(tuple(random_table(rng, f"t{i}") for i in range(n_tables)), 10, store_id="s")
    total = sum(t.rows * t.row_bytes for t in stats.tables)
    budgets = Budgets(int(total * rng.uniform(0.1, 0.6)), max_rel_error=float(rng.uniform(0.01, 0.1)))
    devices = [dataclasses.replace(device(cores=2, dram=int(rng.integers(300, 1200)), name=f"d{i}"),
                                   execution="host-serial") for i in range(n_devices)]
    cal = serial_calib()
    want, want_work = brute_force(stats, budgets, devices, cal)
    plan = plan_mip(stats, cal, budgets, devices, EXACT)
    assert plan.solver["status"] == "optimal" and plan.predicted["perf"]["execution"] == "host-serial"
    assert plan.solver["objective_s"] == pytest.approx(want, rel=1e-6)
    assert predict_batch_time(plan, stats, cal, devices).total_s == pytest.approx(want, rel=1e-6)
    assert plan_work_s(plan, stats, cal, devices) <= want_work * (1 + 1e-3)

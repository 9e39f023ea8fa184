"""plans.format_cost: row formats in the cost model and the MIP (hand-derived loads, a hand instance, and the
MIP against an exhaustive search over options that include formats)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.cost import StatsEstimator, memory_use, predict_batch_time, table_load, weighted_error
from plans.format_cost import allowed_formats, format_cold_pages_modelled
from plans.mip_solve import plan_mip
from plans.types import Budgets, FormatVariant, PlannerOptions, TableStats, WorkloadStats, capacity
from tests.plans.test_mip import calib, device

EXACT = PlannerOptions(formulation="exact", time_limit_s=30)
INT8_16 = FormatVariant("int8", 24, 170, 0.01, 0.02)  # dim 16: 16 codes + 8 bytes; 4096 // 24 = 170 a page
INT4_16 = FormatVariant("int4", 12, 341, 0.08, 0.2)  # 8 bytes of nibbles + 4


def table_a(formats=(INT8_16, INT4_16)) -> TableStats:
    # 100 rows of 64 B (fp32 dim 16, 64 a page: 2 page groups), 10 lookups a batch
    return TableStats(name="A", rows=100, row_bytes=64, rows_per_page=64, pages_per_row=1, lookups_per_batch=10,
                      pooling=1, hot_rows=[0, 10, 100], mass=[0, 0.8, 1.0], cold_unique_rows_per_batch=[8, 2, 0],
                      cold_unique_pages_per_batch=[2, 1, 0], formats=tuple(formats))


def test_format_pages_model_hand_derived():
    ts = table_a()
    # same rows per page: the fp32 count
    assert format_cold_pages_modelled(ts, FormatVariant("x", 64, 64, 0, 0), 1.0) == pytest.approx(1.0)
    # 1 of 2 fp32 groups touched (p = 0.5); int8 groups hold c = 170 / 64 = 2.656 fp32 groups' rows, the
    # table has ceil(100 / 170) = 1 of them: 1 * (1 - 0.5 ** 2.656) = 0.8414 pages
    assert format_cold_pages_modelled(ts, INT8_16, 1.0) == pytest.approx(1 - 0.5 ** (170 / 64))
    # never more than the fp32 groups touched: 1000 rows, 16 fp32 groups, 8 touched, 4 int8 groups of 4 ->
    # 4 * (1 - 0.5 ** 4) = 3.75 int8 pages
    big = dataclasses.replace(ts, rows=1024, hot_rows=[0], mass=[0], cold_unique_rows_per_batch=[8],
                              cold_unique_pages_per_batch=[8])
    assert format_cold_pages_modelled(big, FormatVariant("x", 16, 256, 0, 0), 8.0) == pytest.approx(3.75)
    assert format_cold_pages_modelled(ts, INT8_16, 0.0) == 0.0


def test_format_load_hand_derived():
    ts = table_a()
    hot = table_load(ts, 100, "none", None, 20.0, "int8")
    # all hot in int8: 100 x 24 B; every lookup approximated: 10 of 20 lookups x 0.01
    assert hot.host_dram_bytes == 2400 and hot.io_pages == 0 and hot.error_weight == pytest.approx(0.005)
    raw = table_load(ts, 10, "ssd_raw", None, 20.0, "int8")
    # 10 hot rows x 24 B; cold lookups 10 x 0.2 = 2; one int8 page group of 4 KiB holds rows 0..99 (cold part)
    assert raw.host_dram_bytes == 240 and raw.mem_core_lookups == pytest.approx(2.0)
    assert raw.dram_row_bytes == 24 and raw.ssd_bytes == 4096 and raw.error_weight == pytest.approx(0.005)
    assert raw.io_pages == pytest.approx(1 - 0.5 ** (170 / 64)) and raw.io_reads == pytest.approx(raw.io_pages)
    fp32 = table_load(ts, 10, "ssd_raw", None, 20.0)
    assert fp32.host_dram_bytes == 640 and fp32.io_pages == 1 and fp32.error_weight == 0
    with pytest.raises(ValueError, match="ssd_raw rows only"):
        table_load(ts, 10, "ssd_tt", 4, 20.0, "int8")


def test_allowed_formats_follow_the_budget():
    ts = table_a()
    assert allowed_formats(ts, Budgets(0)) == ["int8", "int4"]
    assert allowed_formats(ts, Budgets(0, max_rel_error=0.05, accuracy_mode="per-table")) == ["int8"]
    assert allowed_formats(ts, Budgets(0, max_rel_error=0.0)) == []
    opts = StatsEstimator().table_options(WorkloadStats((ts,), 10, store_id="s"), Budgets(0), PlannerOptions())[0]
    # k = 0 and 10 raw, k = 100 all hot; each in fp32, int8, int4 (no TT variants here)
    assert sorted((o.hot_rows, o.row_format) for o in opts) == sorted(
        (k, f) for k in (0, 10, 100) for f in ("fp32", "int8", "int4"))


# Hand instance (test_mip's calibration and device: 1 us per DRAM lookup, 1 ms per page, 1 ms per pooled
# cold row per memory core, 2 cores):
#   fp32 all hot: 6400 B, does not fit 3000 B;  int8 all hot: 2400 B, 10 lookups = 10 us, error 0.01
#   fp32 k=10 raw: 1 page = 1 ms IO, 2 cold rows on 2 memory cores = 1 ms -> 1 ms
def test_mip_takes_int8_when_the_accuracy_budget_allows():
    stats = WorkloadStats((table_a(formats=(INT8_16,)),), 10, store_id="s")
    plan = plan_mip(stats, calib(), Budgets(3000), [device()], EXACT)
    assert plan.solver["objective_s"] == pytest.approx(1e-5, rel=1e-6)
    assert (plan.tables[0].hot_rows, plan.tables[0].row_format) == (100, "int8")
    assert plan.predicted["weighted_rel_error"] == pytest.approx(0.01)
    plan = plan_mip(stats, calib(), Budgets(3000, max_rel_error=0.005), [device()], EXACT)
    assert plan.solver["objective_s"] == pytest.approx(1e-3, rel=1e-6)
    assert plan.tables[0].row_format == "fp32" and plan.tables[0].hot_rows == 10


def _random_table(rng, name) -> TableStats:
    rows = int(rng.integers(50, 400))
    k1 = int(rng.integers(1, rows))
    m1 = float(rng.uniform(0.3, 0.9))
    lookups = float(rng.integers(5, 40))
    r0 = float(rng.uniform(3, lookups))
    r1 = float(rng.uniform(0, r0 * (1 - m1)))
    pages = lambda r: min(r, 1 + rows // 64)  # noqa: E731
    formats = (FormatVariant("int8", 24, 170, float(rng.uniform(0, 0.05)), 0.0),
               FormatVariant("int4", 12, 341, float(rng.uniform(0.02, 0.2)), 0.0))
    return TableStats(name=name, rows=rows, row_bytes=64, rows_per_page=64, pages_per_row=1, lookups_per_batch=lookups,
                      pooling=1.0, hot_rows=[0, k1], mass=[0.0, m1], cold_unique_rows_per_batch=[r0, r1],
                      cold_unique_pages_per_batch=[pages(r0), pages(r1)], formats=formats)


def _brute_force(stats, budgets, devices) -> float:
    opts = StatsEstimator().table_options(stats, budgets, PlannerOptions())
    cap = capacity(budgets, devices)
    best = math.inf
    per_table = [[(o, d) for o in ol for d in (range(len(devices)) if o.needs_device else [0])] for ol in opts]
    for combo in itertools.product(*per_table):
        tables = tuple(TablePlacement(stats.tables[i].name, o.hot_rows, o.plan_tier, o.tt_rank, d,
                                      row_format=o.row_format) for i, (o, d) in enumerate(combo))
        for split in itertools.product(*[range(d.cores + 1) for d in devices]):
            plan = Plan("s", tables, tuple(DevicePlan(f"d{i}", m, dv.cores - m)
                                           for i, (m, dv) in enumerate(zip(split, devices))))
            if memory_use(plan, stats).fits_in(cap) and weighted_error(plan, stats) <= budgets.max_rel_error + 1e-12:
                best = min(best, predict_batch_time(plan, stats, calib(), devices).total_s)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mip_with_formats_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    stats = WorkloadStats(tuple(_random_table(rng, f"t{i}") for i in range(2)), 10, store_id="s")
    total = sum(t.rows * t.row_bytes for t in stats.tables)
    budgets = Budgets(int(total * rng.uniform(0.1, 0.6)), max_rel_error=float(rng.uniform(0.005, 0.05)))
    devices = [device(cores=2, dram=1000)]
    plan = plan_mip(stats, calib(), budgets, devices, EXACT)
    assert plan.solver["objective_s"] == pytest.approx(_brute_force(stats, budgets, devices), rel=1e-6)
    assert weighted_error(plan, stats) <= budgets.max_rel_error + 1e-9

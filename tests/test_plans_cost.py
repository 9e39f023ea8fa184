"""plans.cost: unit costs, loads and whole-plan predictions with hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.cost import (best_core_split, candidate_hot_rows, compute_core_time_s, device_io_time_s, dram_time_s,
                        io_time_s, mem_core_time_s, memory_use, predict_batch_time, table_load, tt_flops_per_row,
                        tt_rebuild_time_s, weighted_error)
from plans.types import Calibration, DeviceProfile, TableStats, TTVariant, WorkloadStats

CAL = Calibration(dram_lookups_per_s=2e6, dram_bytes_per_s=1e9, io_iops_by_qd={1: 1e4, 16: 1.6e5},
                  io_latency_s_by_qd={1: 1e-4, 16: 1e-4}, read_bytes_per_s=4096e5, mem_core_lookups_per_s=1e5,
                  tt_rows_per_s_by_rank={8: 1e5, 32: 1e4}, compute_core_flops_per_s=1e9)
DEV = DeviceProfile("d", cores=4, device_dram_bytes=10**6, ssd_capacity_bytes=10**9, iops=2e5,
                    read_bytes_per_s=4096e5, mem_core_lookups_per_s=1e5, compute_core_flops_per_s=1e9)


def test_unit_costs_by_hand():
    # 1000 lookups of 100 B: 1000 / 2e6 + 1000 * 100 / 1e9 = 5e-4 + 1e-4 s, on 2 threads half of it
    assert dram_time_s(1000, 100, CAL) == pytest.approx(6e-4)
    assert dram_time_s(1000, 100, CAL, threads=2) == pytest.approx(3e-4)
    # QD 4 lies between QD 1 and 16 (log-log): 1e4 * 16**(1/2) = 4e4 IOPS; 400 pages = 10 ms
    assert CAL.iops_at(4) == pytest.approx(4e4)
    assert io_time_s(400, CAL, 4) == pytest.approx(1e-2)
    # bandwidth-bound: 4096e5 B/s is 1e5 pages/s < 1.6e5 IOPS, so 1e-5 s per page
    assert io_time_s(100, CAL, 16) == pytest.approx(1e-3)
    # device: 2e5 IOPS vs 1e5 pages/s of bandwidth -> 1e-5 s per page
    assert device_io_time_s(10, DEV) == pytest.approx(1e-4)
    assert mem_core_time_s(1000, DEV, 4) == pytest.approx(2.5e-3)  # 1000 / 1e5 / 4
    assert compute_core_time_s(2e9, DEV, 2) == pytest.approx(1.0)
    assert mem_core_time_s(1, DEV, 0) == math.inf and mem_core_time_s(0, DEV, 0) == 0.0
    assert tt_rebuild_time_s(1e4, 30, CAL, 1) == pytest.approx(1.0)  # nearest measured rank 32: 1e4 rows/s


def test_tt_flops_per_row_by_hand():
    # q = (4, 4, 4), ranks (1, 8, 8, 1): 2*1*1*4*8 + 2*4*8*4*8 + 2*16*8*4*1 = 64 + 2048 + 1024
    assert tt_flops_per_row((4, 4, 4), (1, 8, 8, 1)) == 3136
    with pytest.raises(ValueError):
        tt_flops_per_row((4, 4), (1, 8, 1, 1))


def test_best_core_split_by_hand():
    # 6 s of memory work and 2 s of compute on 4 cores: m=3 gives max(2, 2) = 2 s
    assert best_core_split(6.0, 2.0, 4) == (3, pytest.approx(2.0))
    assert best_core_split(0.0, 8.0, 4) == (0, pytest.approx(2.0))


def stats() -> WorkloadStats:
    a = TableStats(name="a", rows=1000, row_bytes=128, rows_per_page=32, pages_per_row=1, lookups_per_batch=100,
                   pooling=1.0, hot_rows=[0, 100, 500], mass=[0, 0.6, 0.9], cold_unique_rows_per_batch=[80, 40, 10],
                   cold_unique_pages_per_batch=[30, 20, 8],
                   tt=(TTVariant(8, 5000, 0.05, 0.1, 1000.0),))
    return WorkloadStats((a,), batch_size=100, store_id="s")


def test_table_load_by_hand():
    ts = stats().tables[0]
    raw = table_load(ts, 100, "ssd_raw", None, 100)
    # 60 hot lookups, 40 cold pooled by memory cores, 20 pages, 100 rows * 128 B in DRAM,
    # SSD holds pages from 100 // 32 = 3 on: (32 - 3) pages * 4096 B
    assert (raw.dram_lookups, raw.mem_core_lookups, raw.io_pages) == (60, 40, 20)
    assert raw.host_dram_bytes == 12800 and raw.ssd_bytes == 29 * 4096
    tt = table_load(ts, 100, "ssd_tt", 8, 100)
    # 40 distinct cold rows rebuilt at 1000 flops; error weight = 40/100 of the lookups * 0.05
    assert (tt.tt_rebuild_rows, tt.tt_flops, tt.device_dram_bytes) == (40, 40000, 5000)
    assert tt.error_weight == pytest.approx(0.02)
    # between grid points the curves are interpolated: k = 300 is halfway from 100 to 500
    mid = table_load(ts, 300, "ssd_raw", None, 100)
    assert mid.dram_lookups == pytest.approx(75) and mid.io_pages == pytest.approx(14)
    assert candidate_hot_rows(ts, (0.5, 0.9)) == [0, 100, 500, 1000]


def test_predict_and_memory_use_by_hand():
    plan = Plan("s", (TablePlacement("a", 100, "ssd_tt", 8, 0),), (DevicePlan("d", 1, 3),))
    perf = predict_batch_time(plan, stats(), CAL, [DEV])
    assert perf.dram_s == pytest.approx(60 / 2e6 + 60 * 128 / 1e9)
    assert perf.io_s == (0.0,) and perf.mem_core_s == (0.0,)
    assert perf.compute_core_s[0] == pytest.approx(40000 / 1e9 / 3)  # 3 compute cores
    assert perf.total_s == pytest.approx(max(perf.dram_s, perf.compute_core_s[0]))
    use = memory_use(plan, stats())
    assert use.host_dram_bytes == 12800 and use.device_dram_bytes == (5000,) and use.ssd_bytes == (5000,)
    assert weighted_error(plan, stats()) == pytest.approx(0.02)
    raw = Plan("s", (TablePlacement("a", 0, "ssd_raw", None, 0),), (DevicePlan("d", 0, 4),))
    assert predict_batch_time(raw, stats(), CAL, [DEV]).total_s == math.inf  # raw work but no memory core

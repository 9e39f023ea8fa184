"""plans.cost: unit costs, loads and whole-plan predictions with hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.cost import (best_core_split, candidate_hot_rows, compute_core_time_s, device_io_time_s, dram_time_s,
                        io_time_s, local_io_times_s, mem_core_time_s, memory_use, plan_work_s, predict_batch_time,
                        table_load, tt_flops_per_row, tt_rebuild_time_s, weighted_error)
from plans.types import Calibration, DeviceProfile, HostCosts, TableStats, TTVariant, WorkloadStats

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


# --- host-serial model (local devices: one host thread, overlapped with IO) --------------------------------------

HOST = HostCosts(batch_s=1e-3, table_s=1e-4, lookup_s=1e-7, raw_table_s=2e-4, raw_lookup_s=1e-7, read_s=1e-5,
                 tt_table_s=3e-4, tt_lookup_s=1e-7, tt_row_s=1e-6, tt_flop_s=1e-9, io_read_s=2e-5, io_page_s=1e-5,
                 io_other_page_s=5e-6)
SERIAL = dataclasses.replace(DEV, execution="host-serial", queue_depth=16)


def test_host_serial_prediction_by_hand():
    cal = dataclasses.replace(CAL, host=HOST)
    raw = Plan("s", (TablePlacement("a", 100, "ssd_raw", None, 0),), (DevicePlan("d", 4, 0),))
    perf = predict_batch_time(raw, stats(), cal, [SERIAL])
    # host: batch 1 ms + table 0.1 ms + 100 lookups x 0.1 us + (cold raw: P(active) ~ 1 x 0.2 ms + 40 x 0.1 us
    #       + 20 reads x 10 us) = 1 + 0.1 + 0.01 + 0.2 + 0.004 + 0.2 = 1.514 ms
    assert perf.host_s == pytest.approx(1.514e-3, rel=1e-6) and perf.execution == "host-serial"
    assert perf.mem_core_s[0] == pytest.approx(0.404e-3, rel=1e-6)  # the raw part of the host's time
    # IO: 20 reads x 20 us + 20 pages x 10 us = 0.6 ms (above the floor 20 / IOPS(16) = 0.125 ms)
    assert perf.io_s[0] == pytest.approx(0.6e-3) and perf.total_s == perf.host_s and perf.bottleneck == "host"
    tt = Plan("s", (TablePlacement("a", 100, "ssd_tt", 8, 0),), (DevicePlan("d", 0, 4),))
    # TT: 1.11 ms + 0.3 ms + 40 lookups x 0.1 us + 40 rows x (1 us + 1000 flops x 1 ns) = 1.494 ms, no IO
    p2 = predict_batch_time(tt, stats(), cal, [SERIAL])
    assert p2.host_s == pytest.approx(1.494e-3, rel=1e-6) and p2.io_s == (0.0,)
    # the floor: with free reads, 20 reads still take 20 / IOPS(16) = 0.125 ms
    free = dataclasses.replace(cal, host=dataclasses.replace(HOST, io_read_s=0.0, io_page_s=0.0))
    assert predict_batch_time(raw, stats(), free, [SERIAL]).io_s[0] == pytest.approx(1.25e-4)
    # the hand-off gap of 1 ms ramps in as IO nears the host time: (0.6 - 1.514 + 1) / 1 of it = 0.086 ms
    gap = dataclasses.replace(cal, host=dataclasses.replace(HOST, io_handoff_s=1e-3))
    assert predict_batch_time(raw, stats(), gap, [SERIAL]).io_s[0] == pytest.approx(0.686e-3)
    # tie-breaking work: the table's host seconds (no batch cost) + its linear IO = 0.514 + 0.6 ms
    assert plan_work_s(raw, stats(), cal, [SERIAL]) == pytest.approx(1.114e-3)
    # handing reads to the device's IO thread: 0.5 ms per device with reads (none for the TT plan)
    hand = dataclasses.replace(cal, host=dataclasses.replace(HOST, io_device_s=5e-4))
    assert predict_batch_time(raw, stats(), hand, [SERIAL]).host_s == pytest.approx(2.014e-3, rel=1e-6)
    assert predict_batch_time(tt, stats(), hand, [SERIAL]).host_s == pytest.approx(1.494e-3, rel=1e-6)


def test_devices_share_the_disk():
    cal = dataclasses.replace(CAL, host=HOST)
    # device 0: 10 reads / 30 pages; device 1: 20 pages; device 0 also waits for the other's 20 pages x 5 us
    io = local_io_times_s([10.0, 20.0], [30.0, 20.0], cal, [16, 16])
    assert io[0] == pytest.approx(10 * 2e-5 + 30 * 1e-5 + 20 * 5e-6)
    assert io[1] == pytest.approx(20 * 2e-5 + 20 * 1e-5 + 30 * 5e-6)
    assert local_io_times_s([0.0, 1.0], [0.0, 1.0], cal, [16, 16])[0] == 0.0


def test_execution_models_must_agree():
    raw = Plan("s", (TablePlacement("a", 100, "ssd_raw", None, 0),), (DevicePlan("d", 4, 0), DevicePlan("e", 4, 0)))
    with pytest.raises(ValueError, match="mix"):
        predict_batch_time(raw, stats(), dataclasses.replace(CAL, host=HOST), [SERIAL, DEV])
    with pytest.raises(ValueError, match="host costs"):
        predict_batch_time(raw, stats(), CAL, [SERIAL, SERIAL])

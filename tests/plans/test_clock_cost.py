"""plans.clock_cost: the device clock's composition predicted with hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.clock_cost import ClockPerf, predict_clock_batch_time
from plans.cost import predict_batch_time
from plans.task_costs import TaskCosts
from tests.plans.test_cost import CAL, DEV, stats

# only a few unit costs, so every figure below can be derived by hand
TASKS = TaskCosts(serial={"batch": 1e-3, "table": 0, "lookup": 0, "cold_lookup": 0, "read": 0, "tt_row": 0,
                          "device": 0, "pool_task": 0, "merge_row": 0},
                  pool={"task": 0, "dram_lookup": 1e-6, "page_lookup": 2e-6, "staged_lookup": 3e-6, "bag": 0},
                  rebuild={"task": 0, "row": 1e-5, "flop": 0},
                  io={"read_s": 1e-4, "read_per_device_s": 0.0, "hidden_per_serial": 0.1, "hidden_s": 5e-5},
                  prep={"device": 0, "raw_lookup": 0, "tt_lookup": 0, "read": 0, "tt_row": 0})
CAL_T = dataclasses.replace(CAL, tasks=TASKS)
# twice this host's per-core rates (speed 2), a 1 MB/s link with 100 us per transfer, this machine's disk
CDEV = dataclasses.replace(DEV, mem_core_lookups_per_s=2e5, compute_core_flops_per_s=2e9, clock=True,
                           link_bytes_per_s=1e6, link_latency_s=1e-4)
# table a at 100 hot rows (stats(): 100 lookups, batch of 100): 60 DRAM lookups, 40 cold, 20 pages (20 reads);
# bags with a cold lookup: 100 (1 - e^-0.4); a partial row is 128 B; pooling a 32-float row counts half of a
# 64-float one (plans.task_costs.DIM_UNIT)
U = 0.5
BAGS = 100 * -math.expm1(-0.4)
LINK_PARTIALS = BAGS * 128 / 1e6 + 1e-4
# 20 reads on this machine's disk: 20 x 100 us, less 0.1 x the 1 ms of serial work and 50 us
DISK = 20 * 1e-4 - 0.1 * 1e-3 - 5e-5


def plan(tier: str, planner: str, rank: int | None = None) -> Plan:
    return Plan("s", (TablePlacement("a", 100, tier, rank, 0),), (DevicePlan("d", 2, 2),), planner=planner)


def test_devices_pooling_raw_rows_by_hand():
    perf = predict_clock_batch_time(plan("ssd_raw", "screc"), stats(), CAL_T, [CDEV], host_threads=2)
    assert perf.serial_s == pytest.approx(1e-3) and perf.after_s == 0.0
    # host DRAM pooling: 60 lookups x 1 us over 2 threads
    assert perf.dram_s == pytest.approx(60 * 1e-6 * U / 2)
    # 40 raw lookups x 2 us on 2 memory-centric cores at speed 2, after the visible reads; then the partials
    mem = 40 * 2e-6 * U / 2 / 2
    assert perf.mem_core_s[0] == pytest.approx(mem) and perf.io_s[0] == pytest.approx(DISK)
    assert perf.link_s[0] == pytest.approx(LINK_PARTIALS)
    assert perf.device_s[0] == pytest.approx(DISK + mem + LINK_PARTIALS)
    assert perf.total_s == pytest.approx(1e-3 + DISK + mem + LINK_PARTIALS)
    d = perf.to_dict()
    # the 4.3 ms link makes the device the bottleneck
    assert d["execution"] == "device-clock" and d["total_s"] == perf.total_s and d["bottleneck"] == "device[0]"


def test_devices_rebuilding_tt_rows_by_hand():
    perf = predict_clock_batch_time(plan("ssd_tt", "screc", 8), stats(), CAL_T, [CDEV], host_threads=2)
    # 40 rows x 10 us over 2 compute-centric cores, then 40 staged lookups x 3 us over 2, all at speed 2
    comp = (40 * 1e-5 / 2 + 40 * 3e-6 * U / 2) / 2
    assert perf.compute_core_s[0] == pytest.approx(comp) and perf.io_s[0] == 0.0
    assert perf.total_s == pytest.approx(1e-3 + comp + LINK_PARTIALS)


def test_plain_ssd_policies_pool_on_the_host_after_the_reads():
    perf = predict_clock_batch_time(plan("ssd_raw", "all-ssd"), stats(), CAL_T, [CDEV], host_threads=2)
    # the host pools every lookup after the devices: (60 x 1 us + 40 x 2 us) / 2 threads
    after = (60 * 1e-6 + 40 * 2e-6) * U / 2
    assert perf.after_s == pytest.approx(after) and perf.dram_s == 0.0 and perf.mem_core_s[0] == 0.0
    # the device only reads and sends its 20 pages over the link
    link = 20 * 4096 / 1e6 + 1e-4
    assert perf.device_s[0] == pytest.approx(DISK + link)
    assert perf.total_s == pytest.approx(1e-3 + DISK + link + after)


def test_a_target_ssd_shows_only_what_outlasts_the_serial_work():
    # 4 reads in flight at 1 ms: 5 waves of the 20 reads, then 20 pages at 4096e5 B/s; pipelined behind the
    # 1 ms of serial work
    target = dataclasses.replace(CDEV, ssd_parallelism=4, ssd_latency_s=1e-3)
    perf = predict_clock_batch_time(plan("ssd_raw", "screc"), stats(), CAL_T, [target], host_threads=2)
    assert perf.io_s[0] == pytest.approx(5e-3 + 20 * 4096 / 4096e5 - 1e-3)
    fast = dataclasses.replace(target, ssd_latency_s=1e-6)  # hidden entirely (a target SSD gets the reads at once)
    assert predict_clock_batch_time(plan("ssd_raw", "screc"), stats(), CAL_T, [fast]).io_s[0] == 0.0


def test_predict_batch_time_takes_the_clock_model_only_with_task_costs():
    p = plan("ssd_raw", "screc")
    assert isinstance(predict_batch_time(p, stats(), CAL_T, [CDEV], 2), ClockPerf)
    assert not isinstance(predict_batch_time(p, stats(), CAL, [CDEV], 2), ClockPerf)  # no task costs
    assert not isinstance(predict_batch_time(p, stats(), CAL_T, [DEV], 2), ClockPerf)  # not a clock device
    with pytest.raises(ValueError, match="task costs"):
        predict_clock_batch_time(p, stats(), CAL, [CDEV])

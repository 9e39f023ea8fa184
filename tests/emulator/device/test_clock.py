"""The device clock against timelines computed by hand (the arithmetic is in each test's comments)."""

from __future__ import annotations

import inspect

import pytest

from emulator.device import clock as clock_module
from emulator.device.clock import (BatchInput, ClockModel, CoreTask, DeviceBatch, IORequest, LinkTransfer, TargetSSD,
                                   clock_model, emulate_batch, emulate_device)
from emulator.device.profile import load_profile

MS, US = 1e-3, 1e-6
NO_LINK = dict(link_bytes_per_s=float("inf"), link_latency_s=0.0)


def model(mem=1.0, compute=1.0, ssd=None, **link) -> ClockModel:
    return ClockModel({"mem": mem, "compute": compute}, ssd, **(link or NO_LINK))


def test_three_tasks_on_two_cores():
    # list scheduling in submission order on the earliest-available core:
    # a (2 ms) -> mem0 [0, 2]; b (3 ms) -> mem1 [0, 3]; c (4 ms) -> mem0 (free at 2) [2, 6]; makespan 6 ms
    dev = DeviceBatch("dev0", mem_cores=2, compute_cores=0,
                      tasks=(CoreTask("a", "mem", 2 * MS), CoreTask("b", "mem", 3 * MS), CoreTask("c", "mem", 4 * MS)))
    t = emulate_device(dev, model())
    assert [(s.core, s.start_s, s.end_s, s.task_id) for s in t.timeline] == [
        ("mem0", 0.0, pytest.approx(2 * MS), "a"), ("mem1", 0.0, pytest.approx(3 * MS), "b"),
        ("mem0", pytest.approx(2 * MS), pytest.approx(6 * MS), "c")]
    assert t.partials_at_host_s == pytest.approx(6 * MS)
    assert t.busy_s["mem"] == pytest.approx(9 * MS) and t.busy_s["compute"] == 0.0  # 2 + 3 + 4 core-ms


def test_pooling_waits_for_its_read():
    # measured SSD: the read submitted at 1 ms with a measured latency of 4 ms completes at 5 ms; the pooling
    # task (1 ms) that needs its page starts at 5 ms on the idle core and ends at 6 ms
    dev = DeviceBatch("dev0", 1, 0, tasks=(CoreTask("pool", "mem", 1 * MS, after=("io0",)),),
                      ios=(IORequest("io0", submit_s=1 * MS, nbytes=4096, latency_s=4 * MS),))
    t = emulate_device(dev, model())
    assert t.read_done_s[0] == pytest.approx(5 * MS) and t.io_done == {"io0": pytest.approx(5 * MS)}
    assert (t.timeline[0].start_s, t.timeline[0].end_s) == (pytest.approx(5 * MS), pytest.approx(6 * MS))
    assert t.io_busy_s == pytest.approx(4 * MS)  # one read in flight from 1 to 5 ms


def test_link_transfer_of_one_megabyte():
    # 1 MB at 1 GB/s = 1 ms on the link, + 10 us latency: the partials of a task ending at 0 arrive at 1.010 ms
    dev = DeviceBatch("dev0", 1, 0, tasks=(CoreTask("pool", "mem", 0.0),),
                      transfers=(LinkTransfer("partials", 1_000_000, after=("pool",)),))
    t = emulate_device(dev, model(link_bytes_per_s=1e9, link_latency_s=10 * US))
    assert t.transfers == (("partials", pytest.approx(1.010 * MS)),)
    assert t.partials_at_host_s == pytest.approx(1.010 * MS)


def test_transfers_share_the_link_one_at_a_time():
    # two 1 MB transfers ready at 0 on a 1 GB/s link with 10 us latency: the first holds the link [0, 1 ms] and
    # arrives at 1.010 ms; the second holds it [1, 2 ms] and arrives at 2.010 ms
    dev = DeviceBatch("dev0", 0, 0, transfers=(LinkTransfer("p0", 1_000_000), LinkTransfer("p1", 1_000_000)))
    t = emulate_device(dev, model(link_bytes_per_s=1e9, link_latency_s=10 * US))
    assert [a for _, a in t.transfers] == [pytest.approx(1.010 * MS), pytest.approx(2.010 * MS)]


def test_the_slower_device_sets_the_batch_time():
    # dev0: one 2 ms task; dev1: one 5 ms compute task; host merge 0.5 ms -> max(2, 5) + 0.5 = 5.5 ms
    batch = BatchInput(7, (DeviceBatch("dev0", 1, 0, tasks=(CoreTask("a", "mem", 2 * MS),)),
                           DeviceBatch("dev1", 0, 1, tasks=(CoreTask("b", "compute", 5 * MS),))), host_merge_s=0.5 * MS)
    out = emulate_batch(batch, model())
    assert out.batch_id == 7 and out.emulated_s == pytest.approx(5.5 * MS)
    assert [d.partials_at_host_s for d in out.devices] == [pytest.approx(2 * MS), pytest.approx(5 * MS)]


def test_host_work_longer_than_the_devices():
    # the host's own DRAM pooling (8 ms) outlasts a 2 ms device: 8 + 1 ms merge = 9 ms
    batch = BatchInput(0, (DeviceBatch("dev0", 1, 0, tasks=(CoreTask("a", "mem", 2 * MS),)),), host_merge_s=1 * MS,
                       host_work_s=8 * MS)
    assert emulate_batch(batch, model()).emulated_s == pytest.approx(9 * MS)


def test_speed_half_doubles_durations():
    # compute speed 0.5: a 3 ms measured rebuild takes 6 ms; mem speed 2: a 4 ms pooling takes 2 ms
    dev = DeviceBatch("dev0", 1, 1, tasks=(CoreTask("r", "compute", 3 * MS), CoreTask("p", "mem", 4 * MS)))
    t = emulate_device(dev, model(mem=2.0, compute=0.5))
    assert [(s.task_id, s.end_s - s.start_s) for s in t.timeline] == [("r", pytest.approx(6 * MS)),
                                                                      ("p", pytest.approx(2 * MS))]
    assert t.busy_s == {"mem": pytest.approx(2 * MS), "compute": pytest.approx(6 * MS)}


def test_target_ssd_parallelism_two_four_reads():
    # target SSD, latency 100 us, parallelism 2, reads of 0 bytes all submitted at 0: reads 0, 1 take the two
    # slots [0, 100 us]; reads 2, 3 take them when they free, [100, 200 us] -> the last completes at 200 us
    ssd = TargetSSD(latency_s=100 * US, read_bytes_per_s=1e9, internal_parallelism=2)
    dev = DeviceBatch("dev0", 1, 0, ios=tuple(IORequest(f"io{i}", 0.0, 0) for i in range(4)),
                      tasks=(CoreTask("pool", "mem", 0.0, after=("io0", "io1", "io2", "io3")),))
    t = emulate_device(dev, model(ssd=ssd))
    assert list(t.read_done_s) == [pytest.approx(x * US) for x in (100, 100, 200, 200)]
    assert t.partials_at_host_s == pytest.approx(200 * US) and t.io_busy_s == pytest.approx(200 * US)


def test_target_ssd_channel_serialises_data():
    # two 1 MB reads at 1 GB/s, latency 10 us, parallelism 2: both reach the channel at 10 us; the first streams
    # [10 us, 1.010 ms], the second waits for the channel and streams [1.010, 2.010 ms]
    ssd = TargetSSD(latency_s=10 * US, read_bytes_per_s=1e9, internal_parallelism=2)
    dev = DeviceBatch("dev0", 0, 0, ios=(IORequest("a", 0.0, 1_000_000), IORequest("b", 0.0, 1_000_000)))
    t = emulate_device(dev, model(ssd=ssd))
    assert list(t.read_done_s) == [pytest.approx(1.010 * MS), pytest.approx(2.010 * MS)]


def test_pipelined_reads_submitted_during_the_previous_batch():
    # a read queued 3 ms before this batch started with a 4 ms measured latency completes at +1 ms: the pooling
    # task waiting for it runs [1, 3] ms instead of [4, 6] ms without the overlap
    dev = DeviceBatch("dev0", 1, 0, ios=(IORequest("io", -3 * MS, 4096, latency_s=4 * MS),),
                      tasks=(CoreTask("pool", "mem", 2 * MS, after=("io",)),))
    assert emulate_device(dev, model()).partials_at_host_s == pytest.approx(3 * MS)


def test_dependencies_between_tasks_and_kinds():
    # rebuild (compute, 3 ms) then pool (mem, 1 ms) after it: pool holds the one mem core from 3 to 4 ms;
    # "other" (mem, 2 ms) needs nothing but comes after pool in submission order, so it gets the mem core when
    # it frees at 4 ms and ends at 6 ms (list scheduling does not reorder)
    dev = DeviceBatch("dev0", 1, 1, tasks=(CoreTask("rebuild", "compute", 3 * MS),
                                          CoreTask("pool", "mem", 1 * MS, after=("rebuild",)),
                                          CoreTask("other", "mem", 2 * MS)))
    t = emulate_device(dev, model())
    assert {s.task_id: (s.start_s, s.end_s) for s in t.timeline} == {
        "rebuild": (0.0, pytest.approx(3 * MS)), "pool": (pytest.approx(3 * MS), pytest.approx(4 * MS)),
        "other": (pytest.approx(4 * MS), pytest.approx(6 * MS))}


def test_shared_core_pool():
    # one shared pool of 1 + 1 = 2 cores: a mem and two compute tasks of 2 ms -> [0,2] core0, [0,2] core1,
    # [2,4] core0
    dev = DeviceBatch("dev0", 1, 1, shared_cores=True,
                      tasks=(CoreTask("a", "mem", 2 * MS), CoreTask("b", "compute", 2 * MS),
                             CoreTask("c", "compute", 2 * MS)))
    t = emulate_device(dev, model())
    assert [(s.core, s.end_s) for s in t.timeline] == [("core0", pytest.approx(2 * MS)),
                                                       ("core1", pytest.approx(2 * MS)),
                                                       ("core0", pytest.approx(4 * MS))]


@pytest.mark.parametrize("dev, match", [
    (DeviceBatch("d", 1, 0, tasks=(CoreTask("a", "mem", 1.0, after=("later",)), CoreTask("later", "mem", 1.0))),
     "not an IO or an earlier task"),
    (DeviceBatch("d", 1, 0, tasks=(CoreTask("a", "compute", 1.0),)), "needs a compute core"),
    (DeviceBatch("d", 1, 0, tasks=(CoreTask("a", "gpu", 1.0),)), "unknown core kind"),
    (DeviceBatch("d", 1, 0, tasks=(CoreTask("a", "mem", -1.0),)), "duration_s"),
    (DeviceBatch("d", 1, 0, ios=(IORequest("x", 0.0, 4096),)), "measured latency"),
])
def test_bad_inputs_are_refused(dev, match):
    with pytest.raises(ValueError, match=match):
        emulate_device(dev, model())


def test_profiles_give_clock_models():
    host = clock_model(load_profile("host"))
    assert host.speed == {"mem": 1.0, "compute": 1.0} and host.ssd is None and host.link_bytes_per_s == float("inf")
    # smartssd gives absolute rates: speed = target rate / this host's measured rate
    # (25e6 lookups/s / 5e6 = 5x; 100e9 flop/s / 50e9 = 2x)
    s = clock_model(load_profile("smartssd"), host_mem_lookups_per_s=5e6, host_compute_flops_per_s=50e9)
    assert s.speed == {"mem": pytest.approx(5.0), "compute": pytest.approx(2.0)}
    assert s.ssd == TargetSSD(85e-6, 3.2e9, 46)
    with pytest.raises(ValueError, match="calibration"):
        clock_model(load_profile("smartssd"))


def test_the_clock_reads_no_clock():
    # the clock composes given durations only: it must not import or call a timer
    src = inspect.getsource(clock_module)
    assert "import time" not in src and "perf_counter" not in src and "monotonic" not in src


# --- against an independent, time-stepped reference (integer microseconds) -------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


def stepped_reference(tasks, cores, reads, latency, parallelism, us_per_byte):
    """Advance a clock 1 us at a time. At each tick, until nothing changes: the read on the channel finishes
    (its flash slot frees); reads whose flash latency ends join the channel queue (FIFO; at the same tick
    the earlier-submitted first, then request order);
    waiting reads take free slots (FIFO); an idle channel takes the next queued read for ``nbytes x
    us_per_byte``. Tasks (all after every read) then start in order on the first free core.
    Returns (read completions, task ends) in microseconds."""
    waiting = sorted(range(len(reads)), key=lambda i: (reads[i][0], i))
    flash_end, queue, channel, done = {}, [], None, {}
    t = 0
    while len(done) < len(reads):
        changed = True
        while changed:
            changed = False
            if channel is not None and channel[1] == t:
                done[channel[0]] = t
                del flash_end[channel[0]]
                channel, changed = None, True
            for i in sorted((i for i, e in flash_end.items() if e == t and i not in queue and i not in done
                             and (channel is None or channel[0] != i)), key=lambda i: (reads[i][0], i)):
                queue.append(i)
                changed = True
            while waiting and reads[waiting[0]][0] <= t and len(flash_end) < parallelism:
                i = waiting.pop(0)
                flash_end[i] = t + latency
                changed = True
            if channel is None and queue:
                i = queue.pop(0)
                channel, changed = (i, t + reads[i][1] * us_per_byte), True
        t += 1
    ready = max(done.values(), default=0)
    free_at, ends = [0] * cores, []
    for d in tasks:
        c = min(range(cores), key=lambda k: (free_at[k], k))
        free_at[c] = max(free_at[c], ready) + d
        ends.append(free_at[c])
    return [done[i] for i in range(len(reads))], ends


@settings(max_examples=60, deadline=None)
@given(tasks=st.lists(st.integers(0, 30), max_size=8), cores=st.integers(1, 3),
       reads=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 4)), max_size=8),
       latency=st.integers(1, 15), parallelism=st.integers(1, 3), us_per_byte=st.integers(1, 5))
def test_matches_the_time_stepped_reference(tasks, cores, reads, latency, parallelism, us_per_byte):
    ssd = TargetSSD(latency_s=latency * US, read_bytes_per_s=1.0 / (us_per_byte * US),
                    internal_parallelism=parallelism)
    ios = tuple(IORequest(f"io{i}", s * US, n) for i, (s, n) in enumerate(reads))
    ids = tuple(r.io_id for r in ios)
    dev = DeviceBatch("dev0", cores, 0, ios=ios, tasks=tuple(CoreTask(f"t{k}", "mem", d * US, after=ids)
                                                              for k, d in enumerate(tasks)))
    got = emulate_device(dev, model(ssd=ssd))
    want_reads, want_ends = stepped_reference(tasks, cores, reads, latency, parallelism, us_per_byte)
    assert [round(x / US, 6) for x in got.read_done_s] == want_reads
    assert [round(s.end_s / US, 6) for s in got.timeline] == want_ends


@settings(max_examples=80, deadline=None)
@given(durations=st.lists(st.floats(0, 10), min_size=1, max_size=12), cores=st.integers(1, 4),
       speed=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
def test_list_schedule_bounds(durations, cores, speed):
    # without dependencies: every core busy until the last start, so makespan <= sum/m + max (Graham's bound),
    # and no schedule beats max(sum/m, max); busy time is the work scaled by 1/speed
    dev = DeviceBatch("d", 0, cores, tasks=tuple(CoreTask(f"t{i}", "compute", d * MS) for i, d in enumerate(durations)))
    t = emulate_device(dev, model(compute=speed))
    work = [d * MS / speed for d in durations]
    lower = max(sum(work) / cores, max(work))
    assert lower - 1e-12 <= t.partials_at_host_s <= sum(work) / cores + max(work) + 1e-12
    assert t.busy_s["compute"] == pytest.approx(sum(work))


# --- reads as arrays (IOGroup), as device workers will hand them over -----------------------------------------

import numpy as np  # noqa: E402

from emulator.device.clock import IOGroup  # noqa: E402
from emulator.device.ssd import busy_union_s  # noqa: E402


def test_group_waits_for_its_last_read():
    # measured SSD: reads of one group submitted at 0, 1, 2 ms with latencies 5, 1, 2 ms complete at 5, 2, 4 ms;
    # the task waiting for the group starts at 5 ms (its last read) and runs 1 ms -> 6 ms
    g = IOGroup("pages:t0", np.array([0, 1, 2]) * MS, np.full(3, 4096), np.array([5, 1, 2]) * MS)
    dev = DeviceBatch("dev0", 1, 0, io_groups=(g,), tasks=(CoreTask("pool:t0", "mem", 1 * MS, after=("pages:t0",)),))
    t = emulate_device(dev, model())
    assert list(t.read_done_s) == [pytest.approx(x * MS) for x in (5, 2, 4)]
    assert t.io_done == {"pages:t0": pytest.approx(5 * MS)} and t.partials_at_host_s == pytest.approx(6 * MS)
    assert t.io_busy_s == pytest.approx(5 * MS)  # [0,5] covers [1,2] and [2,4]


def test_group_and_requests_agree_on_a_target_ssd():
    # the same 6 reads as one group or as 6 requests give the same completions (parallelism 2, 100 us,
    # 4096 B at 4.096 GB/s = 1 us on the channel): r0 slot A flash [0,100] channel [100,101]; r1 slot B
    # flash [0,100], channel free at 101 -> 102; r2 slot A (free 101) flash [101,201] -> 202; r3 slot B (free
    # 102) flash [102,202], channel free at 202 -> 203; r4 slot A (202) -> 303; r5 slot B (203) -> 304
    ssd = TargetSSD(100 * US, 4.096e9, 2)
    g = DeviceBatch("d", 0, 0, io_groups=(IOGroup("g", np.zeros(6), np.full(6, 4096)),))
    r = DeviceBatch("d", 0, 0, ios=tuple(IORequest(f"r{i}", 0.0, 4096) for i in range(6)))
    want = [pytest.approx(x * US) for x in (101, 102, 202, 203, 303, 304)]
    assert list(emulate_device(g, model(ssd=ssd)).read_done_s) == want
    assert list(emulate_device(r, model(ssd=ssd)).read_done_s) == want


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="read group g: submit_s, nbytes"):
        emulate_device(DeviceBatch("d", 0, 0, io_groups=(IOGroup("g", np.zeros(2), np.zeros(3)),)), model())
    with pytest.raises(ValueError, match="read g: a measured SSD"):
        emulate_device(DeviceBatch("d", 0, 0, io_groups=(IOGroup("g", np.zeros(2), np.zeros(2)),)), model())
    with pytest.raises(ValueError, match="unique"):
        emulate_device(DeviceBatch("d", 0, 0, ios=(IORequest("g", 0.0, 1, 0.0),),
                                   io_groups=(IOGroup("g", np.zeros(1), np.zeros(1), np.zeros(1)),)), model())


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(0, 10)), max_size=12))
def test_busy_union_against_counting_microseconds(spans):
    # the union of [s, s + d) on integers: count the microseconds covered by any interval
    start = np.array([s for s, _ in spans], dtype=float)
    done = np.array([s + d for s, d in spans], dtype=float)
    covered = {u for s, d in spans for u in range(s, s + d)}
    assert busy_union_s(start, done) == pytest.approx(len(covered))

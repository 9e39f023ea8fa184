"""The replay's batches on the device clock, against timelines computed by hand (stated in each test)."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.device.emulate import Emulation, list_makespan
from emulator.device.profile import load_profile
from emulator.device.worker import DeviceRequest, DeviceResponse, IORecord, PoolTask, TaskRecord


def _resp(tasks, submit_s=(), latency_s=(), nbytes=(), partial_bytes=0, t0_ns=10**12):
    io = None
    if len(submit_s):
        io = IORecord(np.array([t0_ns + round(s * 1e9) for s in submit_s], np.int64),
                      np.array([round(s * 1e9) for s in latency_s], np.int64), np.array(nbytes, np.int64),
                      len(submit_s), int(sum(nbytes)), 0.0)
    partials = (np.zeros((partial_bytes // 4, 1), np.float32),) if partial_bytes else ()
    return DeviceResponse(0, 0, partials, tuple(tasks), io)


def _req(with_pool=True):
    pool = PoolTask("m0", "mem", 0, 1, "fp32", np.zeros(1, np.int64), np.zeros(2, np.int64), np.zeros(0, np.uint8),
                    np.zeros(0, np.int64))
    return DeviceRequest(0, 0, pools=(pool,) if with_pool else ())


def test_list_makespan():
    assert list_makespan([3, 1, 1, 1], 2) == 3  # 3 | 1+1+1
    assert list_makespan([1, 1, 1], 1) == 3
    assert list_makespan([], 4) == 0


def test_host_profile_shares_this_machines_cpus():
    # 2 CPUs; the device has one memory- and one compute-centric thread, the host 2 pooling threads. Device read:
    # submitted 1 ms before dispatch, 3 ms latency -> in at 2 ms. Tasks in list order, each on the CPU giving
    # the earliest start (ties: the one freed last): r0 (compute, 4 ms) cpu0 0-4; m0 (mem, after io, 1 ms)
    # cpu1 2-3; c0 (after r0, 2 ms; both CPUs free by 4) cpu0 4-6; host0 (3 ms) cpu1 3-6. Parallel phase 6 ms,
    # plus 1 ms serial host work = 7 ms.
    t0 = 10**12
    em = Emulation(load_profile("host"), ["dev0"], [(1, 1)], host_threads=2, n_cpus=2, handoff_s=0.0)
    tasks = [TaskRecord("r0", "compute", 0.004), TaskRecord("m0", "mem", 0.001, ("io",)),
             TaskRecord("c0", "compute", 0.002, ("r0",))]
    resp = _resp(tasks, submit_s=[-0.001], latency_s=[0.003], nbytes=[4096], t0_ns=t0)
    b = em.add(3, 0.001, (t0, [(0, _req(), resp)], [0.003], []), measured_s=0.0085)
    assert b.emulated_s == pytest.approx(0.007)
    assert b.parallel_s == pytest.approx(0.006) and b.after_s == 0 and b.measured_s == 0.0085
    slots = {s.task_id: (s.core, s.start_s, s.end_s) for s in em.last_timing.devices[0].timeline}
    assert slots["dev0:m0"] == ("cpu1", pytest.approx(0.002), pytest.approx(0.003))
    assert slots["host0"] == ("cpu1", pytest.approx(0.003), pytest.approx(0.006))


def test_host_profile_tasks_need_a_thread_of_their_pool_and_a_cpu():
    # 2 CPUs but one compute-centric thread on the device: its two 1 ms rebuilds run one after the other on
    # cpu0 (0-1, 1-2 ms: r1 can start at 1 on either CPU, cpu0 is the one freed last); the host's two 1 ms
    # pooling tasks take cpu1 (0-1, 1-2). Parallel phase: 2 ms.
    em = Emulation(load_profile("host"), ["dev0"], [(1, 1)], host_threads=2, n_cpus=2, handoff_s=0.0)
    tasks = [TaskRecord("r0", "compute", 0.001), TaskRecord("r1", "compute", 0.001)]
    b = em.add(0, 0.0, (0, [(0, _req(), _resp(tasks))], [0.001, 0.001], []), measured_s=0.002)
    slots = {s.task_id: (s.start_s, s.end_s) for s in em.last_timing.devices[0].timeline}
    assert slots["dev0:r1"] == (pytest.approx(0.001), pytest.approx(0.002))
    assert slots["host1"] == (pytest.approx(0.001), pytest.approx(0.002))
    assert b.parallel_s == pytest.approx(0.002)


def test_host_pooling_after_the_reads():
    # A plain SSD: the device only reads (in at 2 ms); the host pools after: two 1 ms tasks on 2 CPUs -> 2-3 ms.
    t0 = 10**12
    em = Emulation(load_profile("host"), ["dev0"], [(1, 1)], host_threads=2, n_cpus=2, handoff_s=0.0)
    resp = _resp([], submit_s=[0.0, 0.0], latency_s=[0.002, 0.001], nbytes=[4096, 4096], t0_ns=t0)
    b = em.add(0, 0.0, (t0, [(0, _req(False), resp)], [], [0.001, 0.001]), measured_s=0.003)
    assert b.parallel_s == pytest.approx(0.002) and b.after_s == pytest.approx(0.001)
    assert b.emulated_s == pytest.approx(0.003) and b.link_bytes == 8192


def test_target_device_with_its_own_cores_and_link():
    # smartssd with this host's rates equal to its cores' (speed 1). One 4 KiB read at 0: 85 us + 4096 B /
    # 3.2 GB/s = 86.28 us. m0 (1 ms) 86.28 us - 1086.28 us; 3,940 B of partials over 3.94 GB/s = 1 us + 2 us
    # latency -> at the host at 1089.28 us. Host DRAM pooling: 2 x 0.5 ms on 1 thread = 1 ms (shorter).
    # Batch: 1089.28 us + 0.2 ms serial = 1289.28 us.
    t0 = 10**12
    em = Emulation(load_profile("smartssd"), ["dev0"], [(1, 1)], host_threads=1, n_cpus=2,
                   host_rates=(25e6, 100e9))
    resp = _resp([TaskRecord("m0", "mem", 0.001, ("io",))], submit_s=[0.0], latency_s=[1.0], nbytes=[4096],
                 partial_bytes=3940, t0_ns=t0)
    b = em.add(0, 0.0002, (t0, [(0, _req(), resp)], [0.0005, 0.0005], []), measured_s=0.01)
    assert b.emulated_s == pytest.approx(1289.28e-6, rel=1e-9)
    assert b.link_bytes == 3940 and b.energy_j > 0


def test_summary_excludes_the_first_batch():
    em = Emulation(load_profile("host"), ["dev0"], [(1, 1)], host_threads=1, n_cpus=1, handoff_s=0.0)
    for k, (serial, measured) in enumerate([(0.5, 9.0), (0.001, 0.002), (0.002, 0.002), (0.003, 0.002)]):
        em.add(k, serial, None, measured)
    s = em.summary()
    assert s["steady_batches"] == 3 and s["emulated_batch_s"] == pytest.approx(0.002)
    assert s["ratio_median"] == pytest.approx(1.0) and s["few_batches"]


def test_device_side_preparation_runs_on_the_device_under_a_target_profile():
    # As the smartssd test, plus 0.5 ms of the device's own preparation (planning its reads, de-duplicating its TT
    # rows) on its one memory-centric core from 0: m0 waits for that core (0.5 ms), not only for the read (86.28
    # us): 0.5 - 1.5 ms; partials at the host 3 us later; + 0.2 ms serial = 1703 us. Under the host profile the
    # preparation stays in the host's serial time (not a task).
    t0 = 10**12
    em = Emulation(load_profile("smartssd"), ["dev0"], [(1, 1)], host_threads=1, n_cpus=2,
                   host_rates=(25e6, 100e9))
    resp = _resp([TaskRecord("m0", "mem", 0.001, ("io",))], submit_s=[0.0], latency_s=[1.0], nbytes=[4096],
                 partial_bytes=3940, t0_ns=t0)
    b = em.add(0, 0.0002, (t0, [(0, _req(), resp)], [], [], np.array([0.0005])), measured_s=0.01)
    assert b.emulated_s == pytest.approx(1703e-6, rel=1e-9)
    assert Emulation(load_profile("host"), ["dev0"], [(1, 1)], 1, 2).device_prep is False


def test_a_target_ssd_gets_the_batchs_reads_at_once():
    # Reads this machine's ring submitted 0, 1 and 2 ms after the first (its disk paced them): a target SSD
    # (smartssd: 46 slots, 85 us, 3.2 GB/s) gets all three at the first submission; each streams 4096 B in
    # 1.28 us over the one channel after its 85 us: done at 86.28, 87.56, 88.84 us. m0 (1 ms) follows the last.
    t0 = 10**12
    em = Emulation(load_profile("smartssd"), ["dev0"], [(1, 1)], host_threads=1, n_cpus=2,
                   host_rates=(25e6, 100e9))
    resp = _resp([TaskRecord("m0", "mem", 0.001, ("io",))], submit_s=[0.0, 0.001, 0.002],
                 latency_s=[1.0, 1.0, 1.0], nbytes=[4096] * 3, t0_ns=t0)
    b = em.add(0, 0.0, (t0, [(0, _req(False), resp)], [], []), measured_s=0.01)
    dev = em.last_timing.devices[0]
    assert dev.read_done_s.tolist() == pytest.approx([86.28e-6, 87.56e-6, 88.84e-6])
    # no partials (a plain request): the pages cross the link, 12,288 B at 3.94 GB/s + 2 us after m0
    assert b.emulated_s == pytest.approx(88.84e-6 + 0.001 + 12288 / 3.94e9 + 2e-6)


def test_host_profile_hand_offs_between_threads():
    # One hand-off h = 0.1 ms (measured on the machine; given here). r0 (no dependency) reaches its core through
    # the device's control thread: starts at 2h = 0.2 ms, ends 1.2 ms; its result goes back core -> control ->
    # main: + 2h. host0 reaches a host thread in h: 0.1-0.6 ms, back + h. Parallel phase: 1.2 + 0.2 = 1.4 ms.
    em = Emulation(load_profile("host"), ["dev0"], [(1, 1)], host_threads=2, n_cpus=2, handoff_s=1e-4)
    b = em.add(0, 0.0, (0, [(0, _req(), _resp([TaskRecord("r0", "compute", 0.001)]))], [0.0005], []),
               measured_s=0.0015)
    slots = {s.task_id: (s.start_s, s.end_s) for s in em.last_timing.devices[0].timeline}
    assert slots["dev0:r0"] == (pytest.approx(2e-4), pytest.approx(1.2e-3))
    assert slots["host0"] == (pytest.approx(1e-4), pytest.approx(6e-4))
    assert b.parallel_s == pytest.approx(1.4e-3)


def test_handoff_is_measured_under_the_host_profile():
    em = Emulation(load_profile("host"), ["dev0"], [(1, 1)], host_threads=1, n_cpus=2)
    assert 0 < em.handoff_s < 0.05  # a thread wakes within 50 ms here, however loaded
    assert Emulation(load_profile("smartssd"), ["dev0"], [(1, 1)], 1, 2, host_rates=(25e6, 100e9)).handoff_s == 0

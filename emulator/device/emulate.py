"""A replay's batches on the device clock: emulated time beside measured time, per batch and in total.

The replay engine hands :class:`Emulation` each batch's record: the host's serial CPU seconds (main thread:
reading the trace, preparing, dispatching, merging), each device's response (core tasks with their measured
thread-CPU seconds and dependencies, its reads with their real submission and completion times), the host's
pooling tasks that ran while the devices worked, and those that ran after them (policies whose host pools every
row). It never reads the batch's wall time for the emulated figure; the measured interval is only stored beside
it, for the validation (``screc bench emulate``).

Two ways to place core tasks, by the profile:

* ``cores.count = "auto"`` (the ``host`` profile: this machine is the device): the devices' cores are threads of
  this machine, so every core task of every device and every host pooling task is list-scheduled on one pool of
  this machine's CPUs (``n_cpus``), after the reads it waits for. This is the validation configuration: the
  emulated time must match the measured one.
* any other profile: each device's tasks on its own cores (speeds and SSD from the profile), partials over its
  link; the host's concurrent tasks on ``host_threads`` threads; the batch ends when the slowest of them is done,
  plus the host's pooling after the devices (plain-SSD policies) and its serial work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from emulator.device.clock import (BatchInput, BatchTiming, ClockModel, CoreTask, DeviceBatch, DeviceTiming, IOGroup,
                                   LinkTransfer, ThreadTask, clock_model, emulate_batch, schedule_on_cpus)
from emulator.device.profile import CORE_KINDS
from emulator.device.ssd import busy_union_s, complete_reads
from emulator.device.energy import batch_device_energy_j
from emulator.device.profile import AUTO, Profile
from emulator.device.worker import CONTROL, IO_GROUP, IO_THREAD, PREPARE

__all__ = ["BatchEmulated", "Emulation", "list_makespan"]


def measure_handoff_s(rounds: int = 64) -> float:
    """This machine's thread hand-off latency: half the median round trip of a no-op task through a one-thread
    pool (submit, the worker wakes and runs it, the caller wakes on its result). Measured, in seconds."""
    from concurrent.futures import ThreadPoolExecutor
    import time

    trips = []
    with ThreadPoolExecutor(1) as ex:
        ex.submit(lambda: None).result()
        for _ in range(rounds):
            t0 = time.perf_counter()
            ex.submit(lambda: None).result()
            trips.append(time.perf_counter() - t0)
    return float(np.median(trips)) / 2


def list_makespan(durations: Sequence[float], cores: int) -> float:
    """Makespan of tasks list-scheduled in order, each on the earliest-free of ``cores`` cores."""
    free = [0.0] * max(1, int(cores))
    for d in durations:
        k = min(range(len(free)), key=free.__getitem__)
        free[k] += d
    return max(free)


@dataclass(frozen=True)
class BatchEmulated:
    """One batch: ``emulated_s`` (emulated, under the profile) and ``measured_s`` (this machine's wall time
    between the previous batch's completion and this one's), with the parts the emulated figure is made of."""
    batch: int
    emulated_s: float
    measured_s: float
    serial_s: float
    parallel_s: float
    after_s: float
    link_bytes: int
    energy_j: float  # modelled: the devices' (profile power figures)
    host_cpu_s: float = 0.0  # host CPU seconds not already counted as device cores (host energy, modelled)


@dataclass
class Emulation:
    """Accumulates a replay's batches on the device clock (see the module docstring)."""
    profile: Profile
    devices: list[str]
    cores: list[tuple[int, int]]
    host_threads: int
    n_cpus: int
    host_rates: tuple[float | None, float | None] = (None, None)  # this host's mem lookups/s, compute flop/s
    handoff_s: float | None = None  # host profile: one thread hand-off (None: measured at start)
    batches: list[BatchEmulated] = field(default_factory=list)
    last_timing: BatchTiming | None = None
    busy_s: dict = field(default_factory=dict)  # (device, kind) -> emulated busy core-seconds

    def __post_init__(self) -> None:
        self.model: ClockModel = clock_model(self.profile, *self.host_rates)
        self.shared = str(self.profile.cores.value) == AUTO
        # the preparation steps that are a device's own work in SCRec (planning its page reads, de-duplicating
        # its TT rows) run on its memory-centric cores under a target profile; under the host profile they stay
        # where they ran (the host's main thread)
        self.device_prep = not self.shared
        if self.shared and self.handoff_s is None:
            self.handoff_s = measure_handoff_s()  # measured: this machine's threads hand work to each other
        self.handoff_s = float(self.handoff_s or 0.0)

    def add(self, batch: int, serial_s: float, record: Any, measured_s: float) -> BatchEmulated:
        """One finished batch (``record``: the engine's ``(t_dispatch_ns, responses, host_cpu, after_cpu)``)."""
        if record is None:
            record = (0, [], [], [], None)
        t0, responses, host_cpu, after_cpu, prep = (tuple(record) + (None,))[:5]
        devs = []
        link = 0
        for d, req, resp in responses:
            # the emulator's own threads (a device's control loop, the thread driving its ring) use this
            # machine's CPUs: tasks under the host profile, not device work under any other
            tasks = tuple(CoreTask(r.task_id, r.core, r.cpu_s, r.after) for r in resp.tasks
                          if self.shared or r.task_id != CONTROL)
            if self.shared and resp.io is not None and resp.io.cpu_s > 0:
                tasks = (CoreTask(IO_THREAD, "mem", resp.io.cpu_s),) + tasks
            if self.device_prep and prep is not None and prep[d] > 0:
                tasks = (CoreTask(PREPARE, "mem", float(prep[d])),) + tasks
            groups = ()
            if resp.io is not None and resp.io.submit_ns is not None and resp.io.submit_ns.size:
                submit = (resp.io.submit_ns - t0) * 1e-9
                if self.model.ssd is not None:
                    # a target SSD gets the batch's reads when the host handed them over (the first submission):
                    # this machine's ring submitted later ones only as fast as its own disk completed reads
                    submit = np.full(submit.shape, float(submit.min()))
                groups = (IOGroup(IO_GROUP, submit, resp.io.nbytes.astype(np.float64), resp.io.latency_ns * 1e-9),)
            # pooled partials cross the link; a plain SSD sends the pages it read
            nbytes = resp.link_bytes if req.pools else (int(resp.io.bytes_read) if resp.io is not None else 0)
            link += nbytes
            after = tuple(t.task_id for t in tasks if t.task_id not in (CONTROL, IO_THREAD, PREPARE)) or \
                ((IO_GROUP,) if groups else ())
            transfers = (LinkTransfer("partials", nbytes, after),) if nbytes else ()
            mem, comp = self.cores[d]
            devs.append(DeviceBatch(self.devices[d], mem, comp, tasks, (), transfers, io_groups=groups))
        if self.shared:
            timing, parallel, after_s = self._shared(batch, devs, host_cpu, after_cpu)
        else:
            host_work = list_makespan(host_cpu, self.host_threads)
            after_s = list_makespan(after_cpu, self.host_threads)
            timing = emulate_batch(BatchInput(batch, tuple(devs), host_merge_s=after_s, host_work_s=host_work),
                                   self.model)
            parallel = timing.emulated_s - after_s
        total = serial_s + parallel + after_s
        energy = batch_device_energy_j(timing, self.profile.power) if timing.devices else 0.0
        # under the host profile the host's pooling tasks ran on the "cpus" device (its energy has them)
        host_cpu = serial_s + (0.0 if self.shared else float(sum(host_cpu) + sum(after_cpu)))
        for dt in timing.devices:
            for kind, s in dt.busy_s.items():
                self.busy_s[(dt.device, kind)] = self.busy_s.get((dt.device, kind), 0.0) + s
        out = BatchEmulated(batch, total, measured_s, serial_s, parallel, after_s, link, energy, host_cpu)
        self.batches.append(out)
        self.last_timing = timing
        return out

    def _shared(self, batch: int, devs: list[DeviceBatch], host_cpu: Sequence[float],
                after_cpu: Sequence[float]) -> tuple[BatchTiming, float, float]:
        """The host profile: the devices' cores, the host's pooling threads and the emulator's own threads (a
        device's control loop, the thread driving its ring) are threads of this machine, so a task needs a
        thread of its pool *and* one of this machine's CPUs (:func:`emulator.device.clock.schedule_on_cpus`)."""
        tasks, pools, ids, done = [], {"host": self.host_threads}, [], {}
        starts, ends = [], []
        for dev in devs:
            pre = f"{dev.device}:"
            pools.update({pre + "mem": dev.mem_cores, pre + "compute": dev.compute_cores, pre + CONTROL: 1,
                          pre + IO_THREAD: 1, pre + PREPARE: 1})
            for g in dev.io_groups:
                lat = np.asarray(g.latency_s, dtype=np.float64)
                st, dn = complete_reads(np.asarray(g.submit_s, dtype=np.float64), g.nbytes, lat, None)
                done[pre + g.group_id] = float(dn.max())
                starts.append(st)
                ends.append(dn)
            h = self.handoff_s  # main -> the device's control thread -> a core (or control relaying a result)
            for t in dev.tasks:
                pool = pre + (t.task_id if t.task_id in (CONTROL, IO_THREAD, PREPARE) else t.kind)
                delay = 0.0 if t.task_id in (IO_THREAD, PREPARE) else (2 * h if not t.after else h)
                if t.task_id == CONTROL:
                    delay = h
                tasks.append(ThreadTask(pre + t.task_id, t.kind, pool, t.duration_s, tuple(pre + a for a in t.after),
                                        delay))
                ids.append(pre + t.task_id)
        tasks += [ThreadTask(f"host{k}", "mem", "host", s, (), self.handoff_s) for k, s in enumerate(host_cpu)]
        waits = tuple(ids) + tuple(k for k in done)
        tasks += [ThreadTask(f"after{k}", "mem", "host", s, waits, 3 * self.handoff_s) for k, s in enumerate(after_cpu)]
        slots = schedule_on_cpus(tasks, pools, self.n_cpus, self.model.speed, done)
        busy = dict.fromkeys(CORE_KINDS, 0.0)
        for sl in slots:
            busy[sl.kind] = busy.get(sl.kind, 0.0) + sl.end_s - sl.start_s
        rs = np.concatenate(starts) if starts else np.zeros(0)
        rd = np.concatenate(ends) if ends else np.zeros(0)
        # results travel back: a core -> its device's control thread -> the host's main thread; a host thread -> main
        h = self.handoff_s
        def back(task_id: str) -> float:
            if task_id.endswith((":" + IO_THREAD, ":" + PREPARE)):
                return 0.0
            return 2 * h if ":" in task_id and not task_id.endswith(":" + CONTROL) else h
        end = max([s.end_s + back(s.task_id) for s in slots] + [0.0])
        timing = DeviceTiming("cpus", end, busy, busy_union_s(rs, rd) if rs.size else 0.0, tuple(slots), (),
                              {}, rs, rd)
        after_end = max([s.end_s for s in slots if s.task_id.startswith("after")] + [0.0])
        after_start = min([s.start_s for s in slots if s.task_id.startswith("after")] + [end])
        bt = BatchTiming(batch, end, (timing,))
        return bt, after_start if after_cpu else end, (after_end - after_start) if after_cpu else 0.0

    # -- summaries ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the batches so far (e.g. a warm-up's)."""
        self.batches.clear()
        self.busy_s.clear()
        self.last_timing = None

    def timeline(self) -> dict[str, Any] | None:
        """The last batch's emulated timeline (per device: each core's tasks, the reads' first start and last
        completion), for ``screc report``; times in seconds from the batch's dispatch (emulated)."""
        if self.last_timing is None or not self.batches:
            return None
        b = self.batches[-1]
        devs = []
        for dt in self.last_timing.devices:
            reads = [float(dt.read_start_s.min()), float(dt.read_done_s.max())] if dt.read_done_s.size else None
            devs.append({"device": dt.device, "reads": reads, "partials_at_host_s": dt.partials_at_host_s,
                         "slots": [[s.core, s.kind, s.start_s, s.end_s, s.task_id] for s in dt.timeline]})
        return {"batch": b.batch, "emulated_s": b.emulated_s, "serial_s": b.serial_s, "parallel_s": b.parallel_s,
                "after_s": b.after_s, "profile": self.profile.name, "devices": devs}

    def steady(self) -> list[BatchEmulated]:
        """Batches after the first (which alone pays first-touch costs)."""
        return self.batches[1:]

    def summary(self, samples_per_batch: int | None = None) -> dict[str, Any]:
        """Emulated and measured steady-state figures (labelled); median emulated/measured per batch; with
        ``samples_per_batch``, steady queries/s emulated and measured (samples over the summed times)."""
        st = self.steady()
        out: dict[str, Any] = {"profile": self.profile.name, "profile_origin": self.profile.origin,
                               "mode": "shared host CPUs" if self.shared else "per-device cores",
                               "batches": len(self.batches), "steady_batches": len(st)}
        if not st:
            return out
        em = np.array([b.emulated_s for b in st])
        me = np.array([b.measured_s for b in st])
        ratio = em / np.maximum(me, 1e-12)
        out.update({
            "emulated_batch_s": float(np.median(em)), "measured_batch_s": float(np.median(me)),
            "emulated_total_s": float(em.sum()), "measured_total_s": float(me.sum()),
            "ratio_median": float(np.median(ratio)), "ratio_p10": float(np.percentile(ratio, 10)),
            "ratio_p90": float(np.percentile(ratio, 90)),
            "serial_s": float(np.median([b.serial_s for b in st])),
            "parallel_s": float(np.median([b.parallel_s for b in st])),
            "after_s": float(np.median([b.after_s for b in st])),
            "link_bytes_per_batch": float(np.mean([b.link_bytes for b in st])),
            "device_energy_j": float(sum(b.energy_j for b in st)),
            "few_batches": len(st) < 10,
            "busy_core_s": {f"{d}/{k}": v for (d, k), v in sorted(self.busy_s.items())},
            "timeline": self.timeline(),
        })
        from emulator.device.energy import HOST_W_PER_CPU, HOST_W_PER_CPU_SOURCE

        host_j = float(sum(b.host_cpu_s for b in st)) * HOST_W_PER_CPU
        out.update({"host_energy_j": host_j, "energy_j": out["device_energy_j"] + host_j,
                    "energy_basis": "modelled: devices from the profile's power figures (busy cores, idle, SSD "
                                    f"active); host CPU seconds x {HOST_W_PER_CPU:g} W ({HOST_W_PER_CPU_SOURCE})"})
        if samples_per_batch:
            queries = samples_per_batch * len(st)
            out["emulated_qps"] = queries / max(float(em.sum()), 1e-12)
            out["measured_qps"] = queries / max(float(me.sum()), 1e-12)
            out["queries_per_joule"] = queries / out["energy_j"] if out["energy_j"] > 0 else None
        return out

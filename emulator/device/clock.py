"""The device clock: one batch's emulated time from task durations, IO completions and link transfers.

Pure and deterministic, the way FEMU and NVMeVirt complete each command at a target time from a timing model.
It never reads a clock: every time it returns is composed from the durations and offsets it is given.

Per batch (times in seconds from the batch's start; reads submitted earlier, during the previous batch's
compute, have negative ``submit_s``: that is how pipelining is expressed):

* **Reads**, one per :class:`IORequest` or many per :class:`IOGroup` (arrays: what a device's ring records for
  one submission), complete at ``submit_s + latency_s`` (the measured completion latency) when the profile's
  SSD is ``measured``; with a target SSD each read holds one of ``internal_parallelism`` flash slots from
  ``max(submit, a slot frees)``, waits ``latency_s``, then streams ``nbytes`` over the SSD's read channel
  (``read_bytes_per_s``, one transfer at a time); its slot frees when its data is out (``emulator.device.ssd``).
  A task waiting for a group waits for its last read.
* **Core tasks** (``mem`` or ``compute``) take their measured thread-CPU duration divided by the profile's speed
  for their kind, and are list-scheduled in submission order: each starts on the earliest-available core of
  its kind (lowest index on ties; one shared pool when ``shared_cores``) once every IO or task it waits for is
  done.
* **Link transfers** (pooled partials to the host) go one at a time over the device's link, each once its
  tasks are done: ``nbytes / bytes_per_s`` on the link, arriving ``latency_s`` later.

A device's partials are at the host when its last transfer arrives (its last task ends, if it sends nothing).
The batch ends at ``max(host_work_s, slowest device) + host_merge_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from emulator.device.profile import CORE_KINDS, Profile
from emulator.device.ssd import TargetSSD, busy_union_s, complete_reads

__all__ = ["BatchInput", "BatchTiming", "ClockModel", "CoreTask", "DeviceBatch", "DeviceTiming", "IOGroup",
           "IORequest", "LinkTransfer", "Slot", "TargetSSD", "ThreadTask", "clock_model", "emulate_batch",
           "emulate_device", "schedule_on_cpus"]


@dataclass(frozen=True)
class CoreTask:
    """``duration_s``: measured thread-CPU seconds on this host; ``after``: ids of IOs or earlier tasks."""
    task_id: str
    kind: str
    duration_s: float
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class IORequest:
    """A read: ``latency_s`` is its measured completion latency (needed with a ``measured`` SSD)."""
    io_id: str
    submit_s: float
    nbytes: int
    latency_s: float | None = None


@dataclass(frozen=True, eq=False)
class IOGroup:
    """Reads a task can wait for as one (``group_id``): per read its ``submit_s``, ``nbytes`` and, with a
    measured SSD, its measured ``latency_s`` (arrays of one length)."""
    group_id: str
    submit_s: np.ndarray
    nbytes: np.ndarray
    latency_s: np.ndarray | None = None


@dataclass(frozen=True)
class LinkTransfer:
    """Bytes of pooled partials sent to the host once the tasks ``after`` are done."""
    transfer_id: str
    nbytes: int
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceBatch:
    """One device's work in one batch, its core split, and whether its cores form one shared pool."""
    device: str
    mem_cores: int
    compute_cores: int
    tasks: tuple[CoreTask, ...] = ()
    ios: tuple[IORequest, ...] = ()
    transfers: tuple[LinkTransfer, ...] = ()
    shared_cores: bool = False
    io_groups: tuple[IOGroup, ...] = ()


@dataclass(frozen=True)
class BatchInput:
    """Every device's work in batch ``batch_id``, the host's own concurrent work and its merge."""
    batch_id: int
    devices: tuple[DeviceBatch, ...]
    host_merge_s: float = 0.0
    host_work_s: float = 0.0


@dataclass(frozen=True)
class ClockModel:
    """What the clock needs from a profile: speeds per core kind, the SSD model (None: measured), the link."""
    speed: Mapping[str, float]
    ssd: TargetSSD | None
    link_bytes_per_s: float
    link_latency_s: float


@dataclass(frozen=True)
class Slot:
    """One task on one core: ``core`` is ``mem0``, ``compute1``, ... (``core0``, ... in a shared pool)."""
    core: str
    kind: str
    start_s: float
    end_s: float
    task_id: str


@dataclass(frozen=True, eq=False)
class DeviceTiming:
    """Emulated: when the device's partials reached the host, busy core-seconds per kind, seconds with reads in
    flight, the per-core timeline, transfer arrivals, when each request or group was complete (``io_done``),
    and per read (requests first, then the groups' reads, in order) its start and completion."""
    device: str
    partials_at_host_s: float
    busy_s: Mapping[str, float]
    io_busy_s: float
    timeline: tuple[Slot, ...] = ()
    transfers: tuple[tuple[str, float], ...] = ()
    io_done: Mapping[str, float] = field(default_factory=dict)
    read_start_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    read_done_s: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True, eq=False)
class BatchTiming:
    """``emulated_s``: the batch's emulated time (labelled emulated wherever shown)."""
    batch_id: int
    emulated_s: float
    devices: tuple[DeviceTiming, ...]


def clock_model(profile: Profile, host_mem_lookups_per_s: float | None = None,
                host_compute_flops_per_s: float | None = None) -> ClockModel:
    """The clock's view of ``profile``; absolute core rates are turned into speeds with this host's measured
    rates (a calibration's ``mem_core_lookups_per_s`` and ``compute_core_flops_per_s``)."""
    speed = {"mem": profile.mem.speed_vs_host(host_mem_lookups_per_s),
             "compute": profile.compute.speed_vs_host(host_compute_flops_per_s)}
    ssd = None
    if profile.ssd.mode == "target":
        ssd = TargetSSD(float(profile.ssd.latency_s.value), float(profile.ssd.read_bytes_per_s.value),
                        int(profile.ssd.internal_parallelism.value))
    return ClockModel(speed, ssd, float(profile.link.bytes_per_s.value), float(profile.link.latency_s.value))


def _reads(dev: DeviceBatch, measured: bool) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every read of ``dev`` as arrays: the request or group ids, and per read its owner (an index into the
    ids), submit time, bytes and measured latency (NaN when not given)."""
    ids = [r.io_id for r in dev.ios] + [g.group_id for g in dev.io_groups]
    if len(set(ids)) != len(ids):
        raise ValueError(f"device {dev.device}: IO ids must be unique")
    parts = [(np.array([r.submit_s for r in dev.ios], dtype=np.float64),
              np.array([r.nbytes for r in dev.ios], dtype=np.float64),
              np.array([np.nan if r.latency_s is None else r.latency_s for r in dev.ios], dtype=np.float64))]
    for g in dev.io_groups:
        sub, nb = np.asarray(g.submit_s, dtype=np.float64), np.asarray(g.nbytes, dtype=np.float64)
        lat = np.full(sub.shape, np.nan) if g.latency_s is None else np.asarray(g.latency_s, dtype=np.float64)
        if not (sub.ndim == 1 and sub.shape == nb.shape == lat.shape):
            raise ValueError(f"read group {g.group_id}: submit_s, nbytes and latency_s must be 1-d of one length")
        parts.append((sub, nb, lat))
    owner = np.repeat(np.arange(len(ids)), [1] * len(dev.ios) + [g.submit_s.size for g in dev.io_groups])
    submit, nbytes, latency = (np.concatenate([p[k] for p in parts]) for k in range(3))
    if measured and not np.all(latency >= 0):
        bad = ids[int(owner[np.flatnonzero(~(latency >= 0))[0]])]
        raise ValueError(f"read {bad}: a measured SSD needs the read's measured latency_s >= 0")
    return ids, owner, submit, nbytes, latency


def _ready_at(after: Sequence[str], done: Mapping[str, float], what: str) -> float:
    t = 0.0
    for dep in after:
        if dep not in done:
            raise ValueError(f"{what} waits for {dep!r}, which is not an IO or an earlier task of this device")
        t = max(t, done[dep])
    return t


def _pools(dev: DeviceBatch) -> dict[str, list[float]]:
    if dev.mem_cores < 0 or dev.compute_cores < 0:
        raise ValueError(f"device {dev.device}: core counts must be >= 0")
    if dev.shared_cores:
        return {"core": [0.0] * (dev.mem_cores + dev.compute_cores)}
    return {"mem": [0.0] * dev.mem_cores, "compute": [0.0] * dev.compute_cores}


def _schedule_tasks(dev: DeviceBatch, speed: Mapping[str, float],
                    done: dict[str, float]) -> tuple[list[Slot], dict[str, float]]:
    pools = _pools(dev)
    busy = dict.fromkeys(CORE_KINDS, 0.0)
    slots = []
    for t in dev.tasks:
        if t.kind not in CORE_KINDS:
            raise ValueError(f"task {t.task_id}: unknown core kind {t.kind!r}")
        if not t.duration_s >= 0:
            raise ValueError(f"task {t.task_id}: duration_s must be >= 0")
        pool_name = "core" if dev.shared_cores else t.kind
        free = pools[pool_name]
        if not free:
            raise ValueError(f"device {dev.device}: task {t.task_id} needs a {pool_name} core and there are none")
        ready = _ready_at(t.after, done, f"task {t.task_id}")
        core = min(range(len(free)), key=lambda c: (free[c], c))  # earliest-available core, lowest index
        start = max(free[core], ready)
        end = start + t.duration_s / speed[t.kind]
        free[core] = end
        busy[t.kind] += end - start
        if t.task_id in done:
            raise ValueError(f"task id {t.task_id!r} is used twice on device {dev.device}")
        done[t.task_id] = end
        slots.append(Slot(f"{pool_name}{core}", t.kind, start, end, t.task_id))
    return slots, busy


def emulate_device(dev: DeviceBatch, model: ClockModel) -> DeviceTiming:
    """One device's emulated timeline in one batch (see the module docstring)."""
    ids, owner, submit, nbytes, latency = _reads(dev, model.ssd is None)
    read_start, read_done = complete_reads(submit, nbytes, latency, model.ssd)
    last = np.full(len(ids), -np.inf)
    np.maximum.at(last, owner, read_done)
    io_done = dict(zip(ids, last.tolist()))
    done = dict(io_done)
    slots, busy = _schedule_tasks(dev, model.speed, done)
    link_free, arrivals = 0.0, []
    for tr in dev.transfers:
        start = max(link_free, _ready_at(tr.after, done, f"transfer {tr.transfer_id}"))
        link_free = start + tr.nbytes / model.link_bytes_per_s
        arrivals.append((tr.transfer_id, link_free + model.link_latency_s))
    at_host = max([a for _, a in arrivals] or [s.end_s for s in slots] or [0.0])
    return DeviceTiming(dev.device, at_host, busy, busy_union_s(read_start, read_done), tuple(slots),
                        tuple(arrivals), io_done, read_start, read_done)


@dataclass(frozen=True)
class ThreadTask:
    """A task of a thread pool (``pool``: e.g. ``dev0:mem``) that also needs one of the machine's CPUs;
    ``delay_s``: hand-offs between threads before it can start (after what it waits for)."""
    task_id: str
    kind: str
    pool: str
    duration_s: float
    after: tuple[str, ...] = ()
    delay_s: float = 0.0


def schedule_on_cpus(tasks: Sequence[ThreadTask], pools: Mapping[str, int], n_cpus: int,
                     speed: Mapping[str, float], done: dict[str, float]) -> list[Slot]:
    """List scheduling with two limits, the host profile's: a task runs on a thread of its pool (a device's
    memory- or compute-centric cores, the host's pooling threads, one control thread...) *and* on one of the
    machine's ``n_cpus`` CPUs. In order, each task starts when what it waits for is done (``done``: ids ->
    times, updated) plus its hand-off delay, the earliest-free thread of its pool is free and a CPU is free: the CPU giving the
    earliest start, on ties the one freed last (best fit), then the lowest index. Slots name the CPU
    (``cpu0``, ...)."""
    if n_cpus < 1:
        raise ValueError("n_cpus must be >= 1")
    cpu_free = [0.0] * n_cpus
    threads = {name: [0.0] * max(1, int(n)) for name, n in pools.items()}
    slots = []
    for t in tasks:
        if t.pool not in threads:
            raise ValueError(f"task {t.task_id}: unknown thread pool {t.pool!r}")
        if not t.duration_s >= 0:
            raise ValueError(f"task {t.task_id}: duration_s must be >= 0")
        ready = _ready_at(t.after, done, f"task {t.task_id}") + t.delay_s
        free = threads[t.pool]
        th = min(range(len(free)), key=lambda c: (free[c], c))
        earliest = max(ready, free[th])
        # the CPU giving the earliest start; on ties the one freed last (best fit), then the lowest index
        cpu = min(range(n_cpus), key=lambda c: (max(earliest, cpu_free[c]), -cpu_free[c], c))
        start = max(earliest, cpu_free[cpu])
        end = start + t.duration_s / speed.get(t.kind, 1.0)
        free[th] = cpu_free[cpu] = end
        if t.task_id in done:
            raise ValueError(f"task id {t.task_id!r} is used twice")
        done[t.task_id] = end
        slots.append(Slot(f"cpu{cpu}", t.kind, start, end, t.task_id))
    return slots


def emulate_batch(batch: BatchInput, model: ClockModel) -> BatchTiming:
    """The batch's emulated time: the slowest device's partials at the host (or the host's own concurrent
    work, if longer) plus the host merge."""
    if not (batch.host_merge_s >= 0 and batch.host_work_s >= 0):
        raise ValueError("host_merge_s and host_work_s must be >= 0")
    devices = tuple(emulate_device(d, model) for d in batch.devices)
    slowest = max([d.partials_at_host_s for d in devices] + [batch.host_work_s])
    return BatchTiming(batch.batch_id, slowest + batch.host_merge_s, devices)

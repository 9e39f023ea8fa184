"""The cost model of the device clock: a plan's batch time as :mod:`emulator.device.emulate` composes it.

The emulator's batch time under a device profile (not ``host``) is

    serial (host main thread) + max(host DRAM pooling on its threads, every device) + host pooling after,

where a device's time is ``max(visible IO + memory-centric pooling, TT rebuilds + TT pooling) + link``: its
memory-centric cores pool raw rows from the pages once its reads are in, its compute-centric cores rebuild the
batch's TT rows and then pool them, and its pooled partials (or, for a plain SSD, the pages it read) cross the
link. Every task's duration is this host's thread-CPU time scaled by the profile's speed, so the model takes
each kind of task's cost per unit of work on this host (:class:`plans.task_costs.TaskCosts`, measured by
``screc calibrate``) times the plan's expected work (its :class:`~plans.types.TableLoad` s), divided by the
cores that share it and by the profile's speed:

* serial: per batch, table, lookup, cold lookup, read, unique TT row, device served, device pooling task and
  partial row merged (and, when the host pools every row, the TT rebuild on the main thread); each device's
  preparation of its reads and TT rows is a task on one of its memory-centric cores;
* host DRAM pooling (``host_threads`` tasks per group of tables, split by lookups) and, for plain-SSD policies
  (:data:`emulator.replay.offload.HOST_POOLED_POLICIES`), the host pooling every lookup after the devices;
* device pooling tasks: one per core per group of its tables with lookups of that kind; bags (output rows) are
  expected from Poisson lookups per bag; pooling work is counted in rows of 64 floats (``DIM_UNIT``);
* reads: pipelined (submitted while the previous batch is served), so only what outlasts the host's serial
  work shows: the profile's target SSD (``internal_parallelism`` reads in flight at ``latency_s`` each, pages
  over ``read_bytes_per_s``; the clock hands a target SSD the batch's reads at once) or, with this machine's
  disk as measured, the part of this disk's time for every device's reads of the batch that shows after the
  dispatch (``TaskCosts.visible_io_s``: fitted on the calibration replays against their reads and serial
  work).

All figures are modelled (a formula on measured coefficients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from plans.types import Calibration, DeviceProfile, Perf, WorkloadStats

__all__ = ["ClockPerf", "predict_clock_batch_time"]


@dataclass(frozen=True)
class ClockPerf(Perf):
    """Predicted seconds of the device clock's parts: ``serial_s`` + max(``dram_s``, ``device_s``) +
    ``after_s``; ``io_s``, ``mem_core_s``, ``compute_core_s`` and ``link_s`` are each device's parts (visible
    IO, memory-centric and compute-centric core time, link)."""
    serial_s: float = 0.0
    after_s: float = 0.0
    device_s: tuple[float, ...] = ()
    link_s: tuple[float, ...] = ()

    def _items(self) -> list[tuple[str, float]]:
        return [("host_pool", self.dram_s)] + [(f"device[{d}]", v) for d, v in enumerate(self.device_s)]

    @property
    def total_s(self) -> float:
        return self.serial_s + max(v for _, v in self._items()) + self.after_s

    @property
    def bottleneck(self) -> str:
        parallel = max(self._items(), key=lambda kv: kv[1])
        return max([("host_serial", self.serial_s), ("host_after", self.after_s), parallel],
                   key=lambda kv: kv[1])[0]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update({"serial_s": self.serial_s, "after_s": self.after_s, "device_s": list(self.device_s),
                  "link_s": list(self.link_s), "execution": "device-clock", "total_s": self.total_s,
                  "bottleneck": self.bottleneck})
        return d


def _bags_with(lookups: float, bags: float) -> float:
    """Expected bags holding at least one of ``lookups`` spread over ``bags`` bags (Poisson)."""
    if lookups <= 0 or bags <= 0:
        return 0.0
    return bags * -math.expm1(-lookups / bags)


def _target_io_s(reads: float, pages: float, dev: DeviceProfile) -> float:
    """The profile's SSD: ``ssd_parallelism`` reads in flight, each ``ssd_latency_s``, then its pages over
    the read channel (one at a time)."""
    if reads <= 0:
        return 0.0
    waves = math.ceil(reads / max(1, dev.ssd_parallelism))
    return waves * dev.ssd_latency_s + pages * dev.page_bytes / dev.read_bytes_per_s


@dataclass
class _DeviceWork:
    raw_lookups: float = 0.0
    raw_bags: float = 0.0
    raw_groups: int = 0
    tt_lookups: float = 0.0
    tt_bags: float = 0.0
    tt_groups: int = 0
    tt_rows: float = 0.0
    tt_flops: float = 0.0
    reads: float = 0.0
    pages: float = 0.0
    dims: float = 0.0  # sum over partial rows of their floats (link bytes / 4)
    # pooling work in rows of DIM_UNIT floats (plans.task_costs)
    raw_units: float = 0.0
    raw_bag_units: float = 0.0
    tt_units: float = 0.0
    tt_bag_units: float = 0.0


def predict_clock_batch_time(plan, stats: WorkloadStats, calib: Calibration, devices: Sequence[DeviceProfile],
                             host_threads: int = 1) -> ClockPerf:
    """The device clock's batch time of ``plan`` (module docstring); ``calib.tasks`` must be measured."""
    from emulator.replay.offload import host_pooled
    from plans.cost import plan_loads
    from plans.task_costs import DIM_UNIT

    tasks = calib.tasks
    if tasks is None:
        raise ValueError("the device-clock model needs task costs in the calibration (run `screc calibrate`)")
    B = float(stats.batch_size)
    threads = max(1, int(host_threads))
    n = len(devices)
    by_host = host_pooled(plan.planner or "")
    work = [_DeviceWork() for _ in range(n)]
    raw_groups: list[set] = [set() for _ in range(n)]
    tt_groups: list[set] = [set() for _ in range(n)]
    groups: set = set()
    counts = dict.fromkeys(("batch", "table", "lookup", "cold_lookup", "read", "tt_row", "device", "pool_task",
                            "merge_row"), 0.0)
    counts["batch"] = 1.0
    dram = page = staged = bag_units = 0.0  # pooling work in rows of DIM_UNIT floats
    tt_rows = tt_flops = 0.0
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        p = plan.placement(ts.name)
        d = p.device
        key = (load.dram_row_bytes, p.row_format)
        groups.add(key)
        counts["table"] += 1
        counts["lookup"] += load.lookups
        cold = load.mem_core_lookups + load.tt_lookups
        counts["cold_lookup"] += cold
        counts["read"] += load.io_reads
        counts["tt_row"] += load.tt_rebuild_rows
        dim = load.dram_row_bytes / 4.0 if p.row_format == "fp32" else load.dram_row_bytes
        u = dim / DIM_UNIT
        dram += u * load.dram_lookups
        page += u * load.mem_core_lookups
        staged += u * load.tt_lookups
        bag_units += u * B
        tt_rows += load.tt_rebuild_rows
        tt_flops += load.tt_flops
        w = work[d]
        w.reads += load.io_reads
        w.pages += load.io_pages
        if load.mem_core_lookups > 0:
            bags = _bags_with(load.mem_core_lookups, B)
            w.raw_lookups += load.mem_core_lookups
            w.raw_bags += bags
            w.raw_units += u * load.mem_core_lookups
            w.raw_bag_units += u * bags
            w.dims += bags * dim
            raw_groups[d].add(key)
        if load.tt_lookups > 0:
            bags = _bags_with(load.tt_lookups, B)
            w.tt_lookups += load.tt_lookups
            w.tt_bags += bags
            w.tt_units += u * load.tt_lookups
            w.tt_bag_units += u * bags
            w.dims += bags * dim
            w.tt_rows += load.tt_rebuild_rows
            w.tt_flops += load.tt_flops
            tt_groups[d].add(key)
    counts["device"] = float(sum(1 for w in work if w.reads or (not by_host and (w.raw_lookups or w.tt_lookups))))
    host_tasks = float(len(groups) * threads)
    if by_host:  # plain SSDs: the host pools every row after the reads, and rebuilds TT rows on its main thread
        serial = tasks.serial_s(counts, host_pooled=True) + \
            (tasks.rebuild_s(1.0, tt_rows, tt_flops) if tt_rows else 0.0)
        after = tasks.pool_s(host_tasks, dram=dram, page=page, staged=staged, bags=bag_units) / threads
        host_pool = 0.0
    else:
        mem_cores = [max(1, dp.mem_cores) for dp in plan.devices]
        comp_cores = [max(1, dp.compute_cores) for dp in plan.devices]
        for d, w in enumerate(work):
            counts["pool_task"] += len(raw_groups[d]) * min(mem_cores[d], max(1.0, w.raw_bags))
            counts["pool_task"] += len(tt_groups[d]) * min(comp_cores[d], max(1.0, w.tt_bags))
            counts["merge_row"] += w.raw_bags + w.tt_bags
        serial = tasks.serial_s(counts)
        host_pool = tasks.pool_s(host_tasks, dram=dram, bags=bag_units) / threads
        after = 0.0
    disk = tasks.visible_io_s(sum(w.reads for w in work), sum(1 for w in work if w.reads > 0), serial)
    io_t, mem_t, comp_t, link_t, dev_t = [], [], [], [], []
    for d, (w, dev) in enumerate(zip(work, devices)):
        speed_mem = dev.mem_core_lookups_per_s / calib.mem_core_lookups_per_s
        speed_comp = dev.compute_core_flops_per_s / calib.compute_core_flops_per_s
        # pipelined: the reads were submitted while the previous batch was served
        target = max(0.0, _target_io_s(w.reads, w.pages, dev) - serial - after) if dev.ssd_parallelism else 0.0
        # a target SSD gets the batch's reads at once (the clock does not replay this disk's pacing)
        io = target if dev.ssd_parallelism else (disk if w.reads else 0.0)
        # the device's own preparation (page reads planned, TT rows de-duplicated) on a memory-centric core
        # (a plain SSD's partials wait only for its reads)
        prep = 0.0 if by_host else tasks.prep_s(w.raw_lookups, w.tt_lookups, w.reads, w.tt_rows) / speed_mem
        mem = comp = 0.0
        if by_host:
            nbytes = w.pages * dev.page_bytes
        else:
            m, c = max(1, plan.devices[d].mem_cores), max(1, plan.devices[d].compute_cores)
            if w.raw_lookups:
                k = len(raw_groups[d]) * min(m, max(1.0, w.raw_bags))
                mem = tasks.pool_s(k, page=w.raw_units, bags=w.raw_bag_units) / min(m, k) / speed_mem
            if w.tt_lookups:
                k = len(tt_groups[d]) * min(c, max(1.0, w.tt_bags))
                comp = (tasks.rebuild_s(len(tt_groups[d]) * c, w.tt_rows, w.tt_flops) / c
                        + tasks.pool_s(k, staged=w.tt_units, bags=w.tt_bag_units) / min(c, k)) / speed_comp
            nbytes = w.dims * 4.0
        link = nbytes / dev.link_bytes_per_s + (dev.link_latency_s if nbytes else 0.0)
        io_t.append(io)
        mem_t.append(mem)
        comp_t.append(comp)
        link_t.append(link)
        dev_t.append(max(max(io, prep) + mem, comp) + link)
    return ClockPerf(host_pool, tuple(io_t), tuple(mem_t), tuple(comp_t), serial_s=serial, after_s=after,
                     device_s=tuple(dev_t), link_s=tuple(link_t))

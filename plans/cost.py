"""The cost model: pure functions of statistics, calibration and device profiles.

Every function states its unit in its name. The planners (MIP, greedy,
baselines) only consume these numbers; none computes a cost itself.

Two execution models, chosen by the devices' ``execution``:

"host-serial" (``local`` profiles: the emulator as it runs on this machine).
One host thread does everything but the reads, batch after batch; the reads
run on each device's IO thread and, pipelined, overlap the host's work, so a
batch takes ``max(host, IO of each device)``:

* host = ``batch_s`` + per table (``table_s`` + ``lookup_s`` x lookups, and for
  its cold part ``raw_table_s`` x P(cold raw lookups) + ``raw_lookup_s`` x cold
  lookups + ``read_s`` x reads, or ``tt_table_s`` x P(TT lookups) +
  ``tt_lookup_s`` x TT lookups + (``tt_row_s`` + ``tt_flop_s`` x flops per
  row) x unique TT rows) + ``io_device_s`` per device with reads
  (``Calibration.host``, fitted on real replays by ``plans.host_fit``);
* IO of a device = ``io_read_s`` x reads + ``io_page_s`` x pages +
  ``io_other_page_s`` x the pages the other devices read (one disk), fitted on
  the engine's busy times in the same replays, but at least one read latency
  at ``min(reads, queue_depth)`` in flight (IOPS by queue depth, measured with
  the engine's ``read_many``), plus, when the IO is the bottleneck,
  ``io_handoff_s`` (the gap between one batch's reads and the next: thread
  wake-ups on a loaded machine; hidden behind the host's work otherwise).

"parallel" (SmartSSD-like devices, modelled: every resource works in parallel,
the batch takes the slowest):

* host DRAM: hot lookups gather + pool, ``lookups / dram_lookups_per_s +
  lookups * row_bytes / dram_bytes_per_s`` on ``host_threads`` threads;
* device IO: the distinct cold 4 KiB pages of its ``ssd_raw`` tables, at
  ``max(1 / iops, page_bytes / read_bytes_per_s)`` seconds per page (the engine
  reads each page once per batch);
* memory-centric cores: the cold lookups of its ``ssd_raw`` tables, extracted
  and pooled, divided over ``mem_cores``;
* compute-centric cores: the distinct cold rows of its ``ssd_tt`` tables,
  each rebuilt at ``flops_per_row`` (rebuilt once per batch), over ``compute_cores``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from emulator.tiers import NONE, SSD_RAW, SSD_TT
from plans.format_cost import allowed_formats, format_cold_pages_modelled, format_load  # noqa: F401 (re-exported)
from plans.types import (Budgets, Calibration, DeviceProfile, Estimator, HostCosts, Perf, PlannerOptions, Storage,
                         TableLoad, TableOption, TableStats, WorkloadStats)


# --- unit costs --------------------------------------------------------------------------------


def serial_io_time_s(reads: float, pages: float, calib: Calibration, queue_depth: float) -> float:
    """Seconds one stream of ``reads`` requests covering ``pages`` 4 KiB pages takes with at most ``queue_depth``
    in flight: ``reads / IOPS(min(reads, queue_depth))`` (about one latency when reads are few) plus the bytes
    beyond one page per read at the large-read bandwidth."""
    if reads <= 0:
        return 0.0
    depth = min(max(float(reads), 1.0), float(queue_depth))
    return reads / calib.iops_at(depth) + max(pages - reads, 0.0) * calib.io_read_bytes / calib.read_bytes_per_s


def io_linear_s_per_read(calib: Calibration, queue_depth: float) -> float:
    """Seconds per read request at a full queue (the linear part of :func:`serial_io_time_s`)."""
    return 1.0 / calib.iops_at(max(1.0, queue_depth))


def local_io_times_s(reads: Sequence[float], pages: Sequence[float], calib: Calibration,
                     queue_depths: Sequence[int], host_s: float | None = None) -> tuple[float, ...]:
    """IO seconds per batch of each host-serial device: ``io_read_s`` x reads + ``io_page_s`` x pages +
    ``io_other_page_s`` x the other devices' pages (one disk), at least one latency at that queue depth
    (``reads / IOPS(min(reads, queue depth))``). Given the host thread's time ``host_s``, a device whose IO
    comes within ``io_handoff_s`` of it also pays the hand-off gap between batches (ramping in linearly, so
    the batch time stays continuous); below that the gap hides behind the host's work.
    Without host costs: the bare stream model :func:`serial_io_time_s`."""
    host = calib.host
    total_pages = float(sum(pages))
    out = []
    for r, p, qd in zip(reads, pages, queue_depths):
        if r <= 0:
            out.append(0.0)
            continue
        floor = r / calib.iops_at(min(max(r, 1.0), qd))
        if host is None:
            out.append(max(floor, serial_io_time_s(r, p, calib, qd)))
            continue
        io = max(floor, host.io_read_s * r + host.io_page_s * p + host.io_other_page_s * (total_pages - p))
        gap = host.io_handoff_s
        if host_s is not None and gap > 0:
            io += gap * min(1.0, max(0.0, (io - host_s + gap) / gap))
        out.append(io)
    return tuple(out)


def option_host_parts_s(load: TableLoad, host: HostCosts) -> tuple[float, float, float]:
    """Host-thread seconds of one table's option: (every table's part: tier split and pooling of every lookup;
    the cold raw part; the TT part)."""
    base = host.table_s + host.lookup_s * load.lookups
    raw = host.raw_table_s * load.raw_active + host.raw_lookup_s * load.mem_core_lookups + host.read_s * load.io_reads
    tt = (host.tt_table_s * load.tt_active + host.tt_lookup_s * load.tt_lookups + host.tt_row_s * load.tt_rebuild_rows
          + host.tt_flop_s * load.tt_flops)
    return base, raw, tt


def option_host_time_s(load: TableLoad, host: HostCosts) -> float:
    return sum(option_host_parts_s(load, host))


def option_io_linear_s(load: TableLoad, calib: Calibration, queue_depth: float) -> float:
    """The linear IO seconds of one option's reads on its own device, as the MIP sees them (no latency floor,
    no hand-off)."""
    if load.io_reads <= 0:
        return 0.0
    if calib.host is None:
        extra = max(load.io_pages - load.io_reads, 0.0) * calib.io_read_bytes / calib.read_bytes_per_s
        return load.io_reads * io_linear_s_per_read(calib, queue_depth) + extra
    return calib.host.io_read_s * load.io_reads + calib.host.io_page_s * load.io_pages


def option_io_other_s(load: TableLoad, calib: Calibration) -> float:
    """IO seconds one option's pages add to every other device (they share the disk)."""
    return calib.host.io_other_page_s * load.io_pages if calib.host is not None and load.io_reads > 0 else 0.0


def is_host_serial(devices: Sequence[DeviceProfile], calib: Calibration | None) -> bool:
    """Whether the host-serial model applies: every device says so and the calibration has host costs."""
    serial = [d.execution == "host-serial" for d in devices]
    if any(serial) and not all(serial):
        raise ValueError("devices mix the host-serial and parallel execution models")
    if all(serial) and (calib is None or calib.host is None):
        raise ValueError("host-serial devices need a calibration with host costs (run `screc calibrate`)")
    return bool(serial) and all(serial)


def dram_time_s(lookups: float, row_bytes: int, calib: Calibration, threads: int = 1) -> float:
    """Seconds for the host to gather and pool ``lookups`` rows of ``row_bytes`` from DRAM."""
    per_thread = lookups / calib.dram_lookups_per_s + lookups * row_bytes / calib.dram_bytes_per_s
    return per_thread / max(1, threads)


def io_seconds_per_page(device: DeviceProfile) -> float:
    """Seconds one device needs per 4 KiB page: bounded by IOPS or by bandwidth."""
    return max(1.0 / device.iops, device.page_bytes / device.read_bytes_per_s)


def io_time_s(pages: float, calib: Calibration, queue_depth: int) -> float:
    """Seconds to read ``pages`` random pages of ``calib.io_read_bytes`` at ``queue_depth``."""
    per_page = max(1.0 / calib.iops_at(queue_depth), calib.io_read_bytes / calib.read_bytes_per_s)
    return pages * per_page


def device_io_time_s(pages: float, device: DeviceProfile) -> float:
    return pages * io_seconds_per_page(device)


def _split_time_s(work_core_s: float, n_cores: int) -> float:
    if work_core_s <= 0:
        return 0.0
    return math.inf if n_cores <= 0 else work_core_s / n_cores


def mem_core_time_s(lookups: float, device: DeviceProfile, n_cores: int) -> float:
    """Seconds for ``n_cores`` memory-centric cores to extract and pool ``lookups`` rows."""
    return _split_time_s(lookups / device.mem_core_lookups_per_s, n_cores)


def compute_core_time_s(flops: float, device: DeviceProfile, n_cores: int) -> float:
    """Seconds for ``n_cores`` compute-centric cores to do ``flops`` of TT rebuilding."""
    return _split_time_s(flops / device.compute_core_flops_per_s, n_cores)


def tt_rebuild_time_s(rows: float, rank: int, calib: Calibration, n_cores: int) -> float:
    """Seconds to rebuild ``rows`` rows of the calibration's reference TT shape at ``rank``
    (nearest measured rank), on ``n_cores`` cores."""
    if rows <= 0:
        return 0.0
    ranks = sorted(calib.tt_rows_per_s_by_rank)
    if not ranks:
        raise ValueError("calibration has no TT rebuild rates")
    r = min(ranks, key=lambda x: abs(x - rank))
    return _split_time_s(rows / calib.tt_rows_per_s_by_rank[r], n_cores)


def tt_flops_per_row(q_shapes: Sequence[int], ranks: Sequence[int]) -> float:
    """Flops to rebuild one row by left-to-right contraction of its core slices.

    Step k multiplies the (Q_{k-1} x r_{k-1}) partial product by the
    (r_{k-1} x q_k r_k) slice: 2 Q_{k-1} r_{k-1} q_k r_k flops, Q_k = q_1...q_k.
    """
    if len(ranks) != len(q_shapes) + 1:
        raise ValueError("tt_ranks must have one more entry than tt_q_shapes")
    flops, q_prod = 0.0, 1
    for k, q in enumerate(q_shapes):
        flops += 2.0 * q_prod * ranks[k] * q * ranks[k + 1]
        q_prod *= q
    return flops


# --- options and their loads -------------------------------------------------------------------


def table_load(ts: TableStats, hot_rows: int, cold_tier: str, tt_rank: int | None,
               total_lookups_per_batch: float, row_format: str = "fp32") -> TableLoad:
    """The work a placement of table ``ts`` puts on each resource, per batch (rows in ``row_format``)."""
    if row_format != "fp32":
        return format_load(ts, hot_rows, cold_tier, row_format, total_lookups_per_batch)
    mass, cold_rows, cold_pages = ts.at(hot_rows)
    lookups = ts.lookups_per_batch
    cold_lookups = lookups * (1.0 - mass) if hot_rows < ts.rows else 0.0
    host_bytes = int(hot_rows) * ts.row_bytes
    active = -math.expm1(-cold_lookups)  # P(at least one cold lookup in a batch), Poisson approximation
    if cold_tier == NONE or hot_rows >= ts.rows:
        return TableLoad(lookups, ts.row_bytes, 0.0, 0.0, 0.0, 0.0, ts.rows * ts.row_bytes, 0, 0, 0.0, lookups=lookups)
    if cold_tier == SSD_RAW:
        reads = min(ts.reads_at(hot_rows), cold_pages) if cold_pages > 0 else 0.0
        return TableLoad(lookups - cold_lookups, ts.row_bytes, cold_lookups, cold_pages, 0.0, 0.0, host_bytes, 0,
                         ts.ssd_raw_bytes(hot_rows), 0.0, lookups=lookups, io_reads=reads, raw_active=active)
    if cold_tier == SSD_TT:
        v = ts.tt_variant(int(tt_rank))
        share = cold_lookups / total_lookups_per_batch if total_lookups_per_batch > 0 else 0.0
        return TableLoad(lookups - cold_lookups, ts.row_bytes, 0.0, 0.0, cold_rows,
                         cold_rows * v.flops_per_row, host_bytes, v.core_bytes, v.core_bytes,
                         share * v.rel_fro_error, lookups=lookups, tt_lookups=cold_lookups, tt_active=active)
    raise ValueError(f"unknown cold tier {cold_tier!r}")


def candidate_hot_rows(ts: TableStats, levels: Sequence[float]) -> list[int]:
    """0, the smallest grid size reaching each access-mass level, and every row."""
    out = {0, ts.rows}
    for level in levels:
        idx = np.nonzero(ts.mass >= level - 1e-12)[0]
        if idx.size:
            out.add(int(ts.hot_rows[idx[0]]))
    return sorted(k for k in out if 0 <= k <= ts.rows)


def allowed_tt_ranks(ts: TableStats, budgets: Budgets) -> list[int]:
    if budgets.max_rel_error is not None and budgets.max_rel_error <= 0:
        return []
    if budgets.accuracy_mode == "per-table" and budgets.max_rel_error is not None:
        return [v.rank for v in ts.tt if v.rel_fro_error <= budgets.max_rel_error]
    return [v.rank for v in ts.tt]


class StatsEstimator(Estimator):
    """Candidate options per table: hot size from the mass levels x cold tier (raw or an allowed TT rank),
    and for each row format the store holds (and the budget allows), all hot or raw in that format."""

    def table_options(self, stats: WorkloadStats, budgets: Budgets,
                      options: PlannerOptions) -> list[list[TableOption]]:
        total = stats.lookups_per_batch
        out = []
        for t, ts in enumerate(stats.tables):
            opts = []
            ranks = allowed_tt_ranks(ts, budgets)
            formats = ["fp32"] + allowed_formats(ts, budgets)
            for k in candidate_hot_rows(ts, options.hot_mass_levels):
                tier = NONE if k >= ts.rows else SSD_RAW
                for f in formats:
                    opts.append(TableOption(t, min(k, ts.rows), tier, None,
                                            table_load(ts, min(k, ts.rows), tier, None, total, f), f))
                if k >= ts.rows:
                    continue
                for r in ranks:
                    opts.append(TableOption(t, k, SSD_TT, r, table_load(ts, k, SSD_TT, r, total)))
            out.append(opts)
        return out


def option_device_times(load: TableLoad, device: DeviceProfile) -> tuple[float, float, float]:
    """(IO seconds, memory-core seconds on one core, compute-core seconds on one core) of one option."""
    return (device_io_time_s(load.io_pages, device), mem_core_time_s(load.mem_core_lookups, device, 1),
            compute_core_time_s(load.tt_flops, device, 1))


def option_dram_time_s(load: TableLoad, calib: Calibration, threads: int = 1) -> float:
    return dram_time_s(load.dram_lookups, load.dram_row_bytes, calib, threads)


# --- whole plans -------------------------------------------------------------------------------


def plan_loads(plan, stats: WorkloadStats) -> list[TableLoad]:
    """The load of every table under ``plan`` (an ``emulator.plan.Plan``), in ``stats`` order."""
    total = stats.lookups_per_batch
    loads = []
    for ts in stats.tables:
        p = plan.placement(ts.name)
        tier = NONE if p.hot_rows >= ts.rows else p.cold_tier
        loads.append(table_load(ts, min(p.hot_rows, ts.rows), tier, p.tt_rank, total, p.row_format))
    return loads


def predict_batch_time(plan, stats: WorkloadStats, calib: Calibration, devices: Sequence[DeviceProfile],
                       host_threads: int = 1) -> Perf:
    """Predicted seconds per batch of every resource under ``plan``."""
    if len(plan.devices) != len(devices):
        raise ValueError(f"plan has {len(plan.devices)} devices, {len(devices)} profiles given")
    if is_host_serial(devices, calib):
        return _predict_host_serial(plan, stats, calib, devices)
    if devices and all(d.clock for d in devices) and calib.tasks is not None:
        from plans.clock_cost import predict_clock_batch_time

        return predict_clock_batch_time(plan, stats, calib, devices, host_threads)
    n = len(devices)
    io, mem, comp = [0.0] * n, [0.0] * n, [0.0] * n
    dram = 0.0
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        d = plan.placement(ts.name).device
        dram += option_dram_time_s(load, calib, host_threads)
        io_s, mem_s, comp_s = option_device_times(load, devices[d])
        io[d] += io_s
        mem[d] += mem_s
        comp[d] += comp_s
    mem_t = tuple(_split_time_s(w, dp.mem_cores) for w, dp in zip(mem, plan.devices))
    comp_t = tuple(_split_time_s(w, dp.compute_cores) for w, dp in zip(comp, plan.devices))
    return Perf(dram, tuple(io), mem_t, comp_t)


def _predict_host_serial(plan, stats: WorkloadStats, calib: Calibration, devices: Sequence[DeviceProfile]) -> Perf:
    host = calib.host
    n = len(devices)
    reads, pages, raw, tt = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    shared = host.batch_s
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        d = plan.placement(ts.name).device
        base, raw_s, tt_s = option_host_parts_s(load, host)
        shared += base
        raw[d] += raw_s
        tt[d] += tt_s
        reads[d] += load.io_reads
        pages[d] += load.io_pages
    shared += host.io_device_s * sum(1 for r in reads if r > 0)  # handing each device's reads to its IO thread
    io = local_io_times_s(reads, pages, calib, [d.queue_depth for d in devices], host_s=shared + sum(raw) + sum(tt))
    return Perf(shared, io, tuple(raw), tuple(tt), host_s=shared + sum(raw) + sum(tt), execution="host-serial")


def option_work_s(load: TableLoad, calib: Calibration, device: DeviceProfile | None, *, serial: bool,
                  queue_depth: float = 128, host_threads: int = 1) -> float:
    """The tie-breaking work of one option: the sum of the seconds it puts on every resource.

    Parallel: DRAM + IO + memory-core + compute-core seconds (on one core; ``device`` None for options
    without a device). Host-serial: host seconds plus the linear IO seconds at ``queue_depth``. The MIP
    minimises it among the plans of the best batch time."""
    if serial:
        return option_host_time_s(load, calib.host) + option_io_linear_s(load, calib, queue_depth)
    work = option_dram_time_s(load, calib, host_threads)
    if device is not None:
        work += sum(option_device_times(load, device))
    return work


def plan_work_s(plan, stats: WorkloadStats, calib: Calibration, devices: Sequence[DeviceProfile],
                host_threads: int = 1) -> float:
    """Sum of :func:`option_work_s` over the tables of ``plan`` (the MIP's second objective)."""
    serial = is_host_serial(devices, calib)
    total = 0.0
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        dev = devices[plan.placement(ts.name).device]
        total += option_work_s(load, calib, dev if plan.placement(ts.name).hot_rows < ts.rows else None,
                               serial=serial, queue_depth=dev.queue_depth, host_threads=host_threads)
    return total


def memory_use(plan, stats: WorkloadStats) -> Storage:
    """Host DRAM, device DRAM and SSD bytes ``plan`` needs."""
    n = len(plan.devices)
    dev, ssd = [0] * n, [0] * n
    host = 0
    for ts, load in zip(stats.tables, plan_loads(plan, stats)):
        d = plan.placement(ts.name).device
        host += load.host_dram_bytes
        dev[d] += load.device_dram_bytes
        ssd[d] += load.ssd_bytes
    return Storage(host, tuple(dev), tuple(ssd))


def weighted_error(plan, stats: WorkloadStats) -> float:
    """Lookup-weighted mean relative error of the rows served (0 when nothing is approximated)."""
    return float(sum(load.error_weight for load in plan_loads(plan, stats)))


def max_table_error(plan, stats: WorkloadStats) -> float:
    worst = 0.0
    for ts in stats.tables:
        p = plan.placement(ts.name)
        if p.cold_tier == SSD_TT and p.hot_rows < ts.rows:
            worst = max(worst, ts.tt_variant(p.tt_rank).rel_fro_error)
        if p.row_format != "fp32":
            worst = max(worst, ts.format_variant(p.row_format).rel_fro_error)
    return worst


def best_core_split(mem_work_core_s: float, compute_work_core_s: float, cores: int) -> tuple[int, float]:
    """Memory-core count (of ``cores``) minimising max(mem, compute) time, and that time."""
    best = (cores, math.inf)
    for m in range(cores + 1):
        t = max(_split_time_s(mem_work_core_s, m), _split_time_s(compute_work_core_s, cores - m))
        if t < best[1] - 1e-15:
            best = (m, t)
    return best

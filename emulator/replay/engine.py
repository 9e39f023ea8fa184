"""The replay engine: serve every lookup of a trace from the tier its plan puts it in.

Per batch and table, lookups are translated through the plan's remap (if any)
and split by tier:

* ``dram``    rows ``[0, hot_rows)`` (new ids), held in host memory;
* ``ssd_raw`` the table's cold rows: the pages they need are de-duplicated,
  coalesced into reads of up to ``max_read_bytes`` and read with O_DIRECT by
  the device's IO engine into one aligned buffer; the memory-centric cores
  extract the rows from those pages while pooling;
* ``ssd_tt``  the table's cold rows rebuilt from TT cores (held in emulated
  device memory) by the compute-centric cores, once per unique row.

Each device of the plan is a :class:`~emulator.device.worker.DeviceWorker` on its own threads (its IO ring,
its TT cores, its memory- and compute-centric cores). Per batch the host splits the work
(:mod:`emulator.replay.offload`): devices pool their raw and TT rows and return partial sums per (table, bag);
the host pools the DRAM rows on its threads meanwhile (:mod:`emulator.replay.host`) and adds the partials.
Plain-SSD policies (all-dram, all-ssd, lru, static-topk) have their devices only read; the host pools every
lookup. Each partial sums its rows in lookup order, so raw and DRAM results equal a NumPy reference summed in
the same grouping bit for bit. With ``pipeline`` on, the reads of batch ``i+1`` are in flight (on the devices'
IO threads) while batch ``i`` is rebuilt and pooled. With a device profile, every batch is placed on the device
clock (:mod:`emulator.device.emulate`) from its tasks' CPU times and its reads' records, beside its measured
interval.

This module holds the engine itself (dispatch, merging, the run loop and its statistics); the tables are opened
in :mod:`emulator.replay.tables`, each batch is planned in :mod:`emulator.replay.prepare` (the batched path's
passes in :mod:`emulator.replay.groups`), remaps read in :mod:`emulator.replay.remap` and ``--verify`` checks
made in :mod:`emulator.replay.verify`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from emulator.io.types import IOFailure
from emulator.plan import Plan
from emulator.replay.counters import CoreCounters, DeviceCounters, ReplayStats, TierCounters
from emulator.replay.prepare import prepare_batch
from emulator.replay.remap import load_remap
from emulator.replay.tables import Table, open_tables
from emulator.replay.types import BatchOutput, BatchWork, DeviceIO, Prepared
from emulator.replay.verify import Verifier
from emulator.tiers import DRAM, LRU, SSD_RAW, SSD_TT
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import Batch, TraceReader

__all__ = ["BatchFailure", "BatchOutput", "ReplayConfig", "Replayer"]


class BatchFailure(InputError):
    """A batch could not be served (a persistent IO error); it names the batch, table and rows.

    No pooled output is returned for it. The CLI reports it in one line with exit code 2.
    """


@dataclass(frozen=True)
class ReplayConfig:
    engine: str = "uring"  # uring | pread | null
    queue_depth: int = 128
    max_read_bytes: int = 128 << 10
    allow_buffered: bool = False  # explicit opt-in to page-cache reads where O_DIRECT is refused
    pipeline: bool = True
    lru_ways: int = 16  # associativity of LRU row caches
    verify: bool = False
    max_batches: int | None = None
    start_batch: int = 0
    host_threads: int | None = None  # threads pooling on the host (None: every CPU this process may use)
    offload: str = "auto"  # who pools SSD rows: "device" (SCRec), "host" (plain SSDs), "auto" (by policy)
    device_profile: Any = None  # emulator.device.profile.Profile: emulate device time under it (None: don't)
    host_rates: tuple = (None, None)  # this host's measured mem lookups/s and compute flop/s (absolute-rate profiles)
    # builds device d's worker: (index, engine, tt_of, mem_cores, compute_cores) -> an object with start_io,
    # submit and close (emulator.device.worker.DeviceWorker's interface); None: local workers on this machine
    device_factory: Any = None


class Replayer:
    """Executes a :class:`Plan` against a :class:`Store` for batches of a trace."""

    def __init__(self, store: Store, plan: Plan, config: ReplayConfig = ReplayConfig(),
                 stats: ReplayStats | None = None, clock: Callable[[], float] = time.perf_counter):
        from emulator.io import aligned_empty, make_engine

        plan.check_store(store.store_id)
        self.store, self.plan, self.config = store, plan, config
        self._base_clock = clock
        self._excluded_s = 0.0  # time spent verifying: excluded from every timing
        self.stats = stats
        self._aligned_empty = aligned_empty
        remap = load_remap(plan) if plan.remap else {}
        self.engines = [make_engine(config.engine, queue_depth=config.queue_depth,
                                    allow_buffered=config.allow_buffered) for _ in plan.devices]
        self.tables: list[Table] = []
        self.groups: list = []  # emulator.replay.groups.Group, tables served with whole-batch passes
        self._slow: list[Table] = []  # tables served one by one (LRU cache, prefix remap, wide raw rows)
        self.dram_bytes = 0
        try:
            opened = open_tables(store, plan, config.lru_ways, remap, self.engines)
            self.tables, self._slow, self.groups = opened.tables, opened.slow, opened.groups
            self._dev_files, self.dram_bytes = opened.dev_files, opened.dram_bytes
        except BaseException:
            self.close()
            raise
        self._buffers = [aligned_empty(1 << 20), aligned_empty(1 << 20)]
        self._next_buffer = 0
        self._start_workers()
        self._warm_up()

    def _start_workers(self) -> None:
        """One device worker per device of the plan (its engine, TT cores and core threads), the host's pool
        threads, and the device clock's view of the profile, if any."""
        from emulator.device.profile import host_threads
        from emulator.device.worker import DeviceWorker
        from emulator.replay.offload import host_pooled

        n_cpu = host_threads()
        self.host_threads = int(self.config.host_threads or n_cpu)
        if self.host_threads < 1:
            raise ValueError("host_threads must be >= 1")
        self.host_pooled = host_pooled(self.plan.planner, self.config.offload)
        self._cores = [(max(1, dp.mem_cores), max(1, dp.compute_cores)) for dp in self.plan.devices]
        make = self.config.device_factory or DeviceWorker
        self.workers = []
        for d, eng in enumerate(self.engines):
            self.workers.append(make(d, eng, lambda t: self.tables[t].tt, *self._cores[d]))
        from emulator.replay.host import HostPooling

        self.host = HostPooling(self.tables, self._slow, self.host_threads, self.host_pooled, self.clock)
        self.emulation = None
        self._prep_moved = 0.0  # CPU seconds of device-side preparation since the last batch completed
        if self.config.device_profile is not None:
            from emulator.device.emulate import Emulation

            self.emulation = Emulation(self.config.device_profile, [dp.name for dp in self.plan.devices],
                                       self._cores, self.host_threads, n_cpu, tuple(self.config.host_rates))

    def _warm_up(self) -> None:
        """Compile (or load from Numba's cache) every kernel this plan uses before any clock starts."""
        from emulator.io import plan_row_reads
        from emulator.kernels.pooling import dtype_code, pool_sources
        from emulator.tt.kernels import tt_rebuild_rows

        from emulator.replay.groups import _locate

        z = np.zeros(1, np.int64)
        _locate(z, z, np.full(1, -1, np.int64), z, z, z, True, np.empty(1, np.int64), np.empty(1, np.int64),
                np.empty(1, np.int64))  # the batched path's locate pass
        from emulator.replay.offload import route_lookups

        route_lookups(np.array([0, 1], np.int64), np.zeros(1, np.uint8), z, 1, 1)  # the device split
        seen = set()
        for tab in self.tables:
            lay = tab.layout
            key = (lay.dtype, tab.tt is not None)
            if key in seen:
                continue
            seen.add(key)
            if lay.dtype in ("int8", "int4", "fp16"):  # a row format's kernel (emulator.kernels.quant)
                from emulator.kernels.quant import pool_sources_quantized

                pool_sources_quantized(np.array([0, 2], np.int64), np.array([0, 1], np.uint8), np.zeros(2, np.int64),
                                       np.zeros((1, lay.row_bytes), np.uint8), self._buffers[0], lay.dtype, lay.dim,
                                       np.empty((1, lay.dim), np.float32))
                if lay.dtype != "fp16":  # fp16 tables with TT rows or on the slow path use pool_sources too
                    continue
            plan_row_reads(np.zeros(1, np.int64), lay.rows_per_page, lay.pages_per_row, lay.row_bytes)
            staged = tt_rebuild_rows(tab.tt, np.zeros(1, np.int64)) if tab.tt is not None else \
                np.zeros((1, lay.dim), np.float32)
            dram = np.zeros((1, lay.dim), lay.np_dtype)
            out = np.empty((1, lay.dim), np.float32)
            pool_sources(np.array([0, 2], np.int64), np.array([0, 2], np.uint8), np.zeros(2, np.int64), dram,
                         self._buffers[0], staged, dtype_code(lay.np_dtype), lay.dim, out)
        cached = [(tab.layout.dim, tab.layout.np_dtype) for tab in self.tables if tab.cache is not None]
        cached += [(g.dim, g.np_dtype) for g in self.groups if g.cache is not None]
        for dim, np_dtype in set(cached):  # compile the cache kernels on a throw-away cache of the same dtype
            from emulator.replay.cache import RowCache, split_hits

            c = RowCache(16, dim, np_dtype, ways=min(16, self.config.lru_ways))
            split_hits(c, np.zeros(1, np.int64), pin=True)
            c.admit(np.zeros(1, np.int64), self._buffers[0], np.zeros(1, np.int64))

    def clock(self) -> float:
        """The replay's clock: wall time minus the time spent in ``--verify`` checks."""
        return self._base_clock() - self._excluded_s

    # --- one batch -------------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> Prepared:
        """Split lookups by tier and plan the page reads (no IO yet)."""
        p = prepare_batch(batch, self._slow, self.groups, self._dev_files, self.config.max_read_bytes,
                          self.clock, self._buffer)
        if self.emulation is not None and self.emulation.device_prep and not self.host_pooled \
                and p.device_prep_s is not None:
            self._prep_moved += float(p.device_prep_s.sum())  # device work under the profile, not host serial
        return p

    def _buffer(self, nbytes: int) -> np.ndarray:
        k = self._next_buffer
        self._next_buffer ^= 1
        if self._buffers[k].size < nbytes:
            self._buffers[k] = self._aligned_empty(max(nbytes, 2 * self._buffers[k].size))
        return self._buffers[k]

    def start_io(self, p: Prepared) -> None:
        """Hand each device its reads for the batch (they run while the previous batch computes)."""
        for dev, r in enumerate(p.reads):
            if r is not None:
                p.handles.append((dev, self.workers[dev].start_io(r.file_ids, r.offsets, r.nbytes, p.dest,
                                                                  r.dest_offsets)))

    def finish(self, p: Prepared) -> tuple[BatchOutput, BatchWork]:
        """Serve a batch: the devices (their own threads) read, rebuild and pool their rows; the host pools its
        DRAM rows meanwhile (``host_threads`` threads) and adds the devices' partials. Policies with plain SSDs
        (:mod:`emulator.replay.offload`) have their devices only read; the host pools everything.

        Time attribution (``BatchWork``): device tasks' thread-CPU time per device and core kind; host tasks'
        to the DRAM tier (or shared by tiers by lookups, when the host pools everything)."""
        from emulator.device.worker import DeviceRequest
        from emulator.replay.offload import split_batch

        n_dev = len(self.engines)
        work = BatchWork(dram_s=0.0, mem_s=[0.0] * n_dev, compute_s=[0.0] * n_dev,
                         devices=[DeviceIO() for _ in range(n_dev)])
        handles = dict(p.handles)
        split = None if self.host_pooled else split_batch(p, p.batch.index, n_dev, self._cores)
        t_dispatch = time.perf_counter_ns()
        futs = []
        for d in range(n_dev):
            req = split.requests[d] if split is not None else DeviceRequest(p.batch.index, d)
            if handles.get(d) is not None or req.pools or req.rebuilds:
                futs.append((d, req, self.workers[d].submit(req, handles.get(d), p.dest)))
        group_out = [np.empty((w.offsets.size - 1, w.group.dim), np.float32) for w in p.works]
        host_futs = []
        if split is not None:  # host partials, while the devices work
            for w, hw, out in zip(p.works, split.host, group_out):
                host_futs += self.host.tasks(w, hw.offsets, hw.lookups, out, p.dest, None)
        responses = self._gather(p, futs, work)
        host_cpu = [f.result() for f in host_futs]
        work.dram_s += sum(host_cpu)
        after_cpu: list[float] = []
        staged, group_staged = self.host.rebuild_tt(p, work, groups=split is None)
        pooled: list = [None] * len(self.tables)
        self.host.pool_slow(p, staged, pooled, work)
        if split is None:
            after_cpu = self.host.pool_groups(p, group_staged, group_out, work)
        else:
            from emulator.device.worker import merge_partials

            for d, req, resp in responses:
                for task, part in zip(req.pools, resp.partials):
                    merge_partials(group_out[task.group], task.bags, part)  # the host adds the device's partials
        from emulator.replay.groups import finish_cache

        B = p.batch.batch_size
        for w, out in zip(p.works, group_out):
            finish_cache(w, p.dest)
            for k, t in enumerate(w.group.tables):
                pooled[int(t)] = out[k * B:(k + 1) * B]
        if self.emulation is not None:
            prep = None if self.host_pooled else p.device_prep_s  # plain SSDs: the host plans its reads
            p.device_record = (t_dispatch, responses, host_cpu, after_cpu, prep)
        return BatchOutput(p.batch.index, pooled), work

    def _gather(self, p: Prepared, futs: list, work: BatchWork) -> list:
        """Wait for every device's response; its IO and core time into ``work``. A failed read names the table
        and rows; a short read (the file shrank) is an error, never zero-filled rows."""
        out = []
        for d, req, f in futs:
            try:
                resp = f.result()
            except IOFailure as e:
                raise self._batch_failure(p, d, e) from None
            if resp.io is not None:
                self._check_short(p, d, resp.io.nbytes)
                inflight = float(resp.io.latency_ns.sum()) * 1e-9
                work.devices[d] = DeviceIO(ios=resp.io.ios, bytes=resp.io.bytes_read, busy_s=resp.io.busy_s,
                                           inflight_s=inflight)
            for r in resp.tasks:
                if r.core == "mem":
                    work.mem_s[d] += r.cpu_s
                else:
                    work.compute_s[d] += r.cpu_s
            out.append((d, req, resp))
        return out

    def _check_short(self, p: Prepared, dev: int, nread: np.ndarray) -> None:
        r = p.reads[dev]
        short = np.flatnonzero(nread != r.nbytes)
        if short.size:
            k = int(short[0])
            tab = self.tables[int(r.tables[k])]
            raise InputError(f"batch {p.batch.index}: short read of table {tab.name} at byte {int(r.offsets[k])} "
                             f"({int(nread[k])} of {int(r.nbytes[k])} bytes); the store file is truncated",
                             self.store.table_path(tab.index))

    # --- a whole trace ---------------------------------------------------------------------------
    def run(self, reader: TraceReader, on_batch: Callable[[BatchOutput], None] | None = None) -> dict[str, Any]:
        """Replay ``reader`` batch by batch; returns totals (the live stats go to ``self.stats``)."""
        self._check_trace(reader)
        start = self.config.start_batch
        stop = reader.num_batches if self.config.max_batches is None else min(reader.num_batches,
                                                                                 start + self.config.max_batches)
        stats = self.stats
        if stats is not None:
            stats.start(stop - start, reader.batch_size, self.plan.planner, self.plan.dram_budget_bytes,
                        clock=self.clock)
            stats.set_dram_used(self.dram_bytes)
        verify = Verifier(self) if self.config.verify else None
        # With --verify, batches run one at a time: the next batch's reads must not be in flight while a
        # (time-excluded) check runs, or IO latencies and queue depths would include the check.
        pipeline = self.config.pipeline and verify is None
        totals = {"batches": 0, "lookups": 0, "ios": 0, "bytes_read": 0, "verified_batches": 0}
        t_begin = self.clock()
        self._marks = (time.thread_time(), t_begin)  # the device clock's per-batch host CPU and wall marks
        pending: Prepared | None = None
        batches: Iterator[Batch] = reader.batches(start, stop)
        while True:
            nxt = next(batches, None)
            p_next = None
            if nxt is not None:
                p_next = self.prepare(nxt)
                if pipeline:
                    self.start_io(p_next)
            if pending is not None:
                self._complete(pending, stats, totals, verify, on_batch)
            if p_next is None:
                break
            if not pipeline:
                self.start_io(p_next)
                self._complete(p_next, stats, totals, verify, on_batch)
                pending = None
            else:
                pending = p_next
            if totals["batches"] >= 1 and "first_batch_s" not in totals:
                totals["first_batch_s"] = self.clock() - t_begin
        totals["elapsed_s"] = self.clock() - t_begin
        # Steady state: from the first batch's completion on (it alone pays first-touch page faults of buffers
        # and tables); the interval per batch is what a long replay converges to.
        if totals["batches"] >= 2:
            totals["steady_batch_s"] = (totals["elapsed_s"] - totals["first_batch_s"]) / (totals["batches"] - 1)
        if stats is not None:
            stats.stop()
        if verify is not None:
            totals["verify"] = verify.summary()
        return totals

    def _complete(self, p: Prepared, stats, totals, verify, on_batch) -> None:
        out, info = self.finish(p)
        latency = self.clock() - p.t_start
        n = p.batch.num_lookups
        totals["batches"] += 1
        totals["lookups"] += n
        totals["ios"] += info.ios
        totals["bytes_read"] += info.bytes_read
        cpu_excluded = 0.0
        if verify is not None:
            t_v, c_v = self._base_clock(), time.thread_time()
            verify.check(p, out)
            totals["verified_batches"] += 1
            self._excluded_s += self._base_clock() - t_v
            cpu_excluded = time.thread_time() - c_v
        if stats is not None:
            self._record(stats, p, info, latency)
        if on_batch is not None:
            on_batch(out)
        if self.emulation is not None:
            # the host's serial work since the last batch completed (reading the trace, preparing the next batch,
            # dispatching, merging, recording): main-thread CPU seconds; and the measured interval beside it
            cpu, wall = time.thread_time() - cpu_excluded, self.clock()
            serial = cpu - self._marks[0] - self._prep_moved
            t_e, c_e = self._base_clock(), time.thread_time()
            self.emulation.add(p.batch.index, max(0.0, serial), p.device_record, wall - self._marks[1])
            # the clock's own bookkeeping is not the emulated system's work: excluded from every timing, as --verify
            self._excluded_s += self._base_clock() - t_e
            self._marks, self._prep_moved = (cpu + time.thread_time() - c_e, wall), 0.0

    def _record(self, stats: ReplayStats, p: Prepared, info: BatchWork, latency: float) -> None:
        """A finished batch's counters into the live stats: per tier, per device, per core pool."""
        tl = p.tier_lookups
        tiers = {
            DRAM: TierCounters(lookups=tl[DRAM], busy_s=info.dram_s),
            SSD_RAW: TierCounters(lookups=tl[SSD_RAW], bytes=info.bytes_read, busy_s=sum(info.mem_s)),
            SSD_TT: TierCounters(lookups=tl[SSD_TT], busy_s=sum(info.compute_s)),
        }
        if tl[LRU]:
            tiers[LRU] = TierCounters(lookups=tl[LRU], hits=p.lru_hits)
        devs, cores = [], []
        for k, (dp, d) in enumerate(zip(self.plan.devices, info.devices)):
            devs.append(DeviceCounters(dp.name, ios=d.ios, bytes=d.bytes, busy_s=d.busy_s, inflight_s=d.inflight_s))
            cores.append(CoreCounters(dp.name, "mem", n_cores=max(1, dp.mem_cores), busy_s=info.mem_s[k],
                                      lookups=int(p.dev_lookups[SSD_RAW][k]), bytes=d.bytes, ios=d.ios))
            cores.append(CoreCounters(dp.name, "compute", n_cores=max(1, dp.compute_cores),
                                      busy_s=info.compute_s[k], lookups=int(p.dev_lookups[SSD_TT][k])))
        from emulator.replay.table_stats import table_counters

        stats.record_batch(latency, samples=p.batch.batch_size, lookups=p.batch.num_lookups, tiers=tiers,
                           devices=devs, cores=cores, tables=table_counters(p, info, self.tables))

    def _batch_failure(self, p: Prepared, dev: int, e: "IOFailure") -> "BatchFailure":
        """Name the table and the rows a failed read was serving; the batch returns nothing."""
        r = p.reads[dev]
        fids = [i for i, f in enumerate(self.engines[dev].files) if f is not None and f.path == e.path]
        hit = np.flatnonzero(np.isin(r.file_ids, fids) & (r.offsets <= e.offset) & (e.offset < r.offsets + r.nbytes))
        if hit.size:
            k = int(hit[0])
            tab = self.tables[int(r.tables[k])]
            lay = tab.layout
            g0 = int(r.offsets[k]) // lay.span_bytes
            g1 = (int(r.offsets[k]) + int(r.nbytes[k]) - 1) // lay.span_bytes
            rows = f"rows {g0 * lay.rows_per_page}..{min(lay.rows, (g1 + 1) * lay.rows_per_page) - 1}"
            return BatchFailure(f"batch {p.batch.index} failed: table {tab.name}, {rows}: {e}")
        return BatchFailure(f"batch {p.batch.index} failed: {e}")

    def _check_trace(self, reader: TraceReader) -> None:
        spec = reader.spec
        if spec.num_tables != len(self.tables):
            raise InputError(f"trace has {spec.num_tables} tables, store has {len(self.tables)}", reader.path)
        for ts, tab in zip(spec.tables, self.tables):
            if ts.rows > tab.layout.rows:
                raise InputError(f"trace table {ts.name} has {ts.rows} rows, store table {tab.name} only "
                                 f"{tab.layout.rows}", reader.path)

    def close(self) -> None:
        for wk in getattr(self, "workers", []):
            wk.close()
        if getattr(self, "host", None) is not None:
            self.host.close()
        for e in getattr(self, "engines", []):
            e.close()

    def __enter__(self) -> "Replayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


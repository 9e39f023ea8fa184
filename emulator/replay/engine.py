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

Pooling (:func:`emulator.kernels.pooling.pool_sources`) then sums every bag in lookup
order from whichever tier each row came from, so raw and DRAM results equal
the NumPy reference bit for bit, whatever the mix. With ``pipeline`` on, the
reads of batch ``i+1`` are in flight (on the engines' IO threads) while batch
``i`` is rebuilt and pooled.

This module holds the engine itself (IO, rebuild, pooling, the run loop and
its statistics); the tables are opened in :mod:`emulator.replay.tables`, each
batch is planned in :mod:`emulator.replay.prepare` (the batched path's passes
in :mod:`emulator.replay.groups`), remaps read in :mod:`emulator.replay.remap`
and ``--verify`` checks made in :mod:`emulator.replay.verify`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from emulator.io.types import IOFailure
from emulator.tiers import KIND_DRAM
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
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile (or load from Numba's cache) every kernel this plan uses before any clock starts."""
        from emulator.io import plan_row_reads
        from emulator.kernels.pooling import dtype_code, pool_sources
        from emulator.tt.kernels import tt_rebuild_rows

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
        return prepare_batch(batch, self._slow, self.groups, self._dev_files, self.config.max_read_bytes,
                             self.clock, self._buffer)

    def _buffer(self, nbytes: int) -> np.ndarray:
        k = self._next_buffer
        self._next_buffer ^= 1
        if self._buffers[k].size < nbytes:
            self._buffers[k] = self._aligned_empty(max(nbytes, 2 * self._buffers[k].size))
        return self._buffers[k]

    def start_io(self, p: Prepared) -> None:
        for dev, r in enumerate(p.reads):
            if r is not None:
                p.handles.append((dev, self.engines[dev].start(r.file_ids, r.offsets, r.nbytes, p.dest,
                                                               r.dest_offsets, latency=True)))

    def finish(self, p: Prepared) -> tuple[BatchOutput, BatchWork]:
        """Rebuild TT rows (compute-centric cores), wait for the reads, pool every table.

        Time attribution: a kernel call's pooling time is shared by the tiers (and, for SSD tiers, the
        devices) of its lookups in proportion to their counts; a group's call covers all its tables."""
        n_dev = len(self.engines)
        work = BatchWork(dram_s=0.0, mem_s=[0.0] * n_dev, compute_s=[0.0] * n_dev, devices=[])
        staged, group_staged = self._rebuild_tt(p, work)
        work.devices = [DeviceIO() for _ in range(n_dev)]  # a device without reads this batch did nothing
        for dev, h in p.handles:
            work.devices[dev] = self._wait_reads(p, dev, h)
        pooled: list = [None] * len(self.tables)
        self._pool_slow(p, staged, pooled, work)
        self._pool_groups(p, group_staged, pooled, work)
        return BatchOutput(p.batch.index, pooled), work

    def _rebuild_tt(self, p: Prepared, work: BatchWork) -> tuple[list, list]:
        """The compute-centric cores' rebuilds: per slow table and per group, rows staged in float32."""
        from emulator.replay.groups import rebuild_group
        from emulator.tt.kernels import tt_rebuild_rows

        staged = []
        for tab, lk in zip(self._slow, p.slow):
            if lk.tt_rows is None:
                staged.append(np.zeros((0, tab.layout.dim), np.float32))
                continue
            t0 = self.clock()
            staged.append(tt_rebuild_rows(tab.tt, lk.tt_rows))
            work.compute_s[tab.device] += self.clock() - t0
        group_staged = []
        for w in p.works:
            g = w.group
            group_staged.append(rebuild_group(w, lambda m, g=g: self.tables[int(g.tables[m])].tt, self.clock,
                                              work.compute_s) if w.tt_rows else np.zeros((0, g.dim), np.float32))
        return staged, group_staged

    def _wait_reads(self, p: Prepared, dev: int, handle) -> DeviceIO:
        """Wait for a device's reads; a short read (the file shrank) is an error, never zero-filled rows."""
        try:
            res = self.engines[dev].wait(handle)
        except IOFailure as e:
            raise self._batch_failure(p, dev, e) from None
        r = p.reads[dev]
        short = np.flatnonzero(res.nread != r.nbytes)
        if short.size:
            k = int(short[0])
            tab = self.tables[int(r.tables[k])]
            raise InputError(f"batch {p.batch.index}: short read of table {tab.name} at byte {int(r.offsets[k])} "
                             f"({int(res.nread[k])} of {int(r.nbytes[k])} bytes); the store file is truncated",
                             self.store.table_path(tab.index))
        inflight = float(res.latency_ns.sum()) * 1e-9 if res.latency_ns is not None else 0.0
        return DeviceIO(ios=res.ios, bytes=res.bytes_read, busy_s=res.elapsed_s, inflight_s=inflight)

    def _pool_slow(self, p: Prepared, staged: list, pooled: list, work: BatchWork) -> None:
        """Pool the slow-path tables one by one (then their LRU caches' release and admission)."""
        from emulator.kernels.pooling import dtype_code, pool_sources

        B = p.batch.batch_size
        for tab, lk, st in zip(self._slow, p.slow, staged):
            out = np.empty((B, tab.layout.dim), dtype=np.float32)
            t0 = self.clock()
            pool_sources(lk.offsets, lk.kind, lk.loc, tab.dram, p.dest, st, dtype_code(tab.layout.np_dtype),
                         tab.layout.dim, out)
            cw = p.cache_work.get(tab.index)
            if cw is not None:  # after pooling: release this batch's hits, admit its misses from the pages
                tab.cache.unpin(cw.hit_slots)
                if cw.admit_rows is not None:
                    tab.cache.admit(cw.admit_rows, p.dest, cw.admit_dest)
            dt = self.clock() - t0
            # the pooling time of a table is shared by the tiers its lookups came from
            n = lk.kind.size or 1
            n_hot = int(np.count_nonzero(lk.kind == KIND_DRAM))
            work.dram_s += dt * n_hot / n
            if tab.tt is None:
                work.mem_s[tab.device] += dt * (n - n_hot) / n
            else:
                work.compute_s[tab.device] += dt * (n - n_hot) / n
            pooled[tab.index] = out

    def _pool_groups(self, p: Prepared, group_staged: list, pooled: list, work: BatchWork) -> None:
        """Pool each group's tables in one kernel call; its time is shared by tiers and devices by lookups."""
        from emulator.kernels.pooling import dtype_code, pool_sources
        from emulator.replay.groups import finish_cache

        B = p.batch.batch_size
        for w, st in zip(p.works, group_staged):
            g = w.group
            out = np.empty((g.size * B, g.dim), dtype=np.float32)
            t0 = self.clock()
            # quantized rows, dequantized as they are pooled; fp16 groups without TT rows too (whole 64-column
            # blocks loaded unmasked: about twice pool_sources' rate on fp16 rows, the same sums bit for bit)
            if g.row_format in ("int8", "int4") or (g.row_format == "fp16" and not g.tt_members):
                from emulator.kernels.quant import pool_sources_quantized

                pool_sources_quantized(w.offsets, w.kind, w.loc, g.dram, p.dest, g.row_format, g.dim, out)
            else:
                pool_sources(w.offsets, w.kind, w.loc, g.dram, p.dest, st, dtype_code(g.np_dtype), g.dim, out)
            finish_cache(w, p.dest)
            dt = self.clock() - t0
            n = w.kind.size or 1
            work.dram_s += dt * (w.kind.size - w.n_cold) / n
            for d in range(len(work.mem_s)):
                work.mem_s[d] += dt * int(w.page_per_dev[d]) / n
                work.compute_s[d] += dt * int(w.tt_per_dev[d]) / n
            for k, t in enumerate(g.tables):
                pooled[int(t)] = out[k * B:(k + 1) * B]

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
        if verify is not None:
            t_v = self._base_clock()
            verify.check(p, out)
            totals["verified_batches"] += 1
            self._excluded_s += self._base_clock() - t_v
        if stats is not None:
            self._record(stats, p, info, latency)
        if on_batch is not None:
            on_batch(out)

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
        stats.record_batch(latency, samples=p.batch.batch_size, lookups=p.batch.num_lookups, tiers=tiers,
                           devices=devs, cores=cores)

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
        for e in getattr(self, "engines", []):
            e.close()

    def __enter__(self) -> "Replayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

Pooling (:func:`emulator.kernels.pool_sources`) then sums every bag in lookup
order from whichever tier each row came from, so raw and DRAM results equal
the NumPy reference bit for bit, whatever the mix. With ``pipeline`` on, the
reads of batch ``i+1`` are in flight (on the engines' IO threads) while batch
``i`` is rebuilt and pooled.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from emulator.io.types import IOFailure
from emulator.layout import RowLayout
from emulator.plan import Plan, TablePlacement
from emulator.stats import CoreCounters, DeviceCounters, ReplayStats, TierCounters
from emulator.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import Batch, TraceReader

KIND_DRAM, KIND_PAGE, KIND_STAGED = 0, 1, 2


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


@dataclass
class _Table:
    index: int
    name: str
    layout: RowLayout
    placement: TablePlacement
    new_ids: Callable[[np.ndarray], np.ndarray] | None  # old -> new id under the remap (None: identity)
    dram: np.ndarray  # (hot_rows [+ cache slots], dim) in the table dtype
    hot: int = 0  # rows [0, hot) (new ids) are the DRAM tier
    tt: Any = None  # TTCores for ssd_tt
    cache: Any = None  # RowCache in front of the raw cold rows (lru)
    tt_error: dict | None = None
    file_id: int = -1
    device: int = 0


@dataclass
class _Prepared:
    batch: Batch
    kinds: list[np.ndarray]
    locs: list[np.ndarray]
    offsets: list[np.ndarray]
    old_ids: list[np.ndarray]
    tt_rows: list[np.ndarray | None]  # unique old ids to rebuild, per table
    reads: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per device
    dest: np.ndarray
    tier_lookups: dict[str, int]
    read_tables: list = field(default_factory=list)  # per device: table index of each read
    cache_work: dict = field(default_factory=dict)  # table -> (hit slots to unpin, (rows, dest offsets) to admit)
    lru_hits: int = 0
    handles: list = field(default_factory=list)
    t_start: float = 0.0


@dataclass
class BatchOutput:
    index: int
    pooled: list[np.ndarray]  # per table, (B, dim) float32


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
        remap = _load_remap(plan) if plan.remap else {}
        self.engines = [make_engine(config.engine, queue_depth=config.queue_depth,
                                    allow_buffered=config.allow_buffered) for _ in plan.devices]
        self.tables: list[_Table] = []
        self.dram_bytes = 0
        try:
            for i, t in enumerate(store.tables):
                try:
                    pl = plan.placement(t["name"])
                except KeyError:
                    raise InputError(f"plan has no placement for table {t['name']}") from None
                lay = store.layouts[i]
                hot = min(pl.hot_rows, lay.rows)
                rmap = remap.get(t["name"])
                if rmap is not None and rmap.rows != lay.rows:
                    raise InputError(f"remap of table {t['name']} is for {rmap.rows} rows, table has {lay.rows}")
                inv = None if rmap is None else rmap.hot_old_ids(hot)
                dram = _load_hot_rows(store, i, hot, inv)
                self.dram_bytes += dram.nbytes
                new_ids = None if rmap is None else rmap.hot_lookup(hot)
                tab = _Table(i, t["name"], lay, pl, new_ids, dram, hot=hot, device=pl.device)
                if hot < lay.rows:
                    if pl.cold_tier == "ssd_raw":
                        tab.file_id = self.engines[pl.device].open(store.table_path(i))
                        if pl.lru_rows:
                            from emulator.cache import RowCache

                            tab.cache = RowCache(pl.lru_rows, lay.dim, lay.np_dtype, ways=config.lru_ways, seed=i,
                                                 prefix=dram)
                            tab.dram = tab.cache.storage  # hot prefix rows, then the cache slots
                            self.dram_bytes += tab.cache.memory_bytes
                    else:
                        tab.tt = store.load_tt(i, pl.tt_rank)
                        tab.tt_error = store.tt_variant(i, pl.tt_rank)
                self.tables.append(tab)
        except BaseException:
            self.close()
            raise
        self._buffers = [aligned_empty(1 << 20), aligned_empty(1 << 20)]
        self._next_buffer = 0
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile (or load from Numba's cache) every kernel this plan uses before any clock starts."""
        from emulator.io import plan_row_reads
        from emulator.kernels import dtype_code, pool_sources
        from emulator.tt_kernels import tt_rebuild_rows

        seen = set()
        for tab in self.tables:
            lay = tab.layout
            key = (lay.np_dtype.str, tab.tt is not None)
            if key in seen:
                continue
            seen.add(key)
            plan_row_reads(np.zeros(1, np.int64), lay.rows_per_page, lay.pages_per_row, lay.row_bytes)
            staged = tt_rebuild_rows(tab.tt, np.zeros(1, np.int64)) if tab.tt is not None else \
                np.zeros((1, lay.dim), np.float32)
            dram = np.zeros((1, lay.dim), lay.np_dtype)
            out = np.empty((1, lay.dim), np.float32)
            pool_sources(np.array([0, 2], np.int64), np.array([0, 2], np.uint8), np.zeros(2, np.int64), dram,
                         self._buffers[0], staged, dtype_code(lay.np_dtype), lay.dim, out)
        for tab in self.tables:
            if tab.cache is not None:  # compile the cache kernels on a throw-away cache of the same dtype
                from emulator.cache import RowCache, split_hits

                c = RowCache(16, tab.layout.dim, tab.layout.np_dtype, ways=min(16, self.config.lru_ways))
                split_hits(c, np.zeros(1, np.int64), pin=True)
                c.admit(np.zeros(1, np.int64), self._buffers[0], np.zeros(1, np.int64))

    def clock(self) -> float:
        """The replay's clock: wall time minus the time spent in ``--verify`` checks."""
        return self._base_clock() - self._excluded_s

    # --- one batch -------------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> _Prepared:
        """Split lookups by tier and plan the page reads (no IO yet)."""
        from emulator.io import plan_row_reads

        t_start = self.clock()
        kinds, locs, offs, olds, tt_rows = [], [], [], [], []
        per_dev: list[list[tuple]] = [[] for _ in self.engines]
        dest_pos = 0
        tiers = {"dram": 0, "ssd_raw": 0, "ssd_tt": 0, "lru": 0}
        lru_hits = 0
        cache_work: dict[int, tuple] = {}
        for tab in self.tables:
            ids, off = batch.table(tab.index)
            new = ids if tab.new_ids is None else tab.new_ids(ids)
            kind = np.zeros(ids.size, dtype=np.uint8)
            loc = new.astype(np.int64, copy=True)
            cold = new >= tab.hot
            n_cold = int(cold.sum()) if tab.hot else ids.size
            tiers["dram"] += ids.size - n_cold
            tt_unique = None
            if n_cold:
                cold_idx = np.flatnonzero(cold)
                cold_old = ids[cold_idx]
                if tab.tt is None:
                    hit_slots = admit = None
                    read_idx, read_rows = cold_idx, cold_old
                    if tab.cache is not None:
                        from emulator.cache import split_hits

                        hit, hit_slots, miss_rows, miss_inv = split_hits(tab.cache, cold_old, pin=True)
                        kind[cold_idx[hit]] = KIND_DRAM
                        loc[cold_idx[hit]] = hit_slots
                        tiers["lru"] += n_cold
                        lru_hits += int(hit_slots.size)
                        read_idx, read_rows = cold_idx[~hit], miss_rows
                    if read_rows.size:
                        plan = plan_row_reads(read_rows, tab.layout.rows_per_page, tab.layout.pages_per_row,
                                              tab.layout.row_bytes, max_read_bytes=self.config.max_read_bytes)
                        kind[read_idx] = KIND_PAGE
                        dest_rows = plan.row_dest_offsets + dest_pos
                        loc[read_idx] = dest_rows if tab.cache is None else dest_rows[miss_inv]
                        per_dev[tab.device].append((tab.file_id, plan.read_offsets, plan.read_nbytes,
                                                    plan.dest_offsets + dest_pos, tab.index))
                        dest_pos += plan.dest_bytes
                        if tab.cache is not None:
                            admit = (read_rows, dest_rows)
                    tiers["ssd_raw"] += read_idx.size
                    if tab.cache is not None:
                        cache_work[tab.index] = (hit_slots, admit)
                else:
                    tt_unique, inverse = np.unique(cold_old, return_inverse=True)
                    kind[cold_idx] = KIND_STAGED
                    loc[cold_idx] = inverse
                    tiers["ssd_tt"] += n_cold
            kinds.append(kind)
            locs.append(loc)
            offs.append(off)
            olds.append(ids)
            tt_rows.append(tt_unique)
        reads = [_concat_reads(reqs) if reqs else None for reqs in per_dev]
        read_tables = [np.concatenate([np.full(r[1].size, r[4], np.int64) for r in reqs]) if reqs else None
                       for reqs in per_dev]
        dest = self._buffer(dest_pos)
        return _Prepared(batch, kinds, locs, offs, olds, tt_rows, reads, dest, tiers, read_tables=read_tables,
                         cache_work=cache_work, lru_hits=lru_hits, t_start=t_start)

    def _buffer(self, nbytes: int) -> np.ndarray:
        k = self._next_buffer
        self._next_buffer ^= 1
        if self._buffers[k].size < nbytes:
            self._buffers[k] = self._aligned_empty(max(nbytes, 2 * self._buffers[k].size))
        return self._buffers[k]

    def start_io(self, p: _Prepared) -> None:
        for dev, r in enumerate(p.reads):
            if r is not None:
                p.handles.append((dev, self.engines[dev].start(r[0], r[1], r[2], p.dest, r[3], latency=True)))

    def finish(self, p: _Prepared) -> tuple[BatchOutput, dict[str, Any]]:
        """Rebuild TT rows (compute-centric cores), wait for the reads, pool every table."""
        from emulator.kernels import dtype_code, pool_sources
        from emulator.tt_kernels import tt_rebuild_rows

        B = p.batch.batch_size
        n_dev = len(self.engines)
        compute_s, mem_s = [0.0] * n_dev, [0.0] * n_dev
        dram_s = 0.0
        staged = []
        for tab, rows in zip(self.tables, p.tt_rows):
            if rows is None:
                staged.append(None)
                continue
            t0 = self.clock()
            staged.append(tt_rebuild_rows(tab.tt, rows))
            compute_s[tab.device] += self.clock() - t0
        devices = [{"ios": 0, "bytes": 0, "busy_s": 0.0, "inflight_s": 0.0} for _ in range(n_dev)]
        for dev, h in p.handles:
            try:
                res = self.engines[dev].wait(h)
            except IOFailure as e:
                raise self._batch_failure(p, dev, e) from None
            r = p.reads[dev]
            short = np.flatnonzero(res.nread != r[2])
            if short.size:  # a raw file shrank under us: never pool zero-filled pages
                k = int(short[0])
                tab = self.tables[int(p.read_tables[dev][k])]
                raise InputError(f"batch {p.batch.index}: short read of table {tab.name} at byte {int(r[1][k])} "
                                 f"({int(res.nread[k])} of {int(r[2][k])} bytes); the store file is truncated",
                                 self.store.table_path(tab.index))
            d = devices[dev]
            d["ios"] += res.ios
            d["bytes"] += res.bytes_read
            d["busy_s"] += res.elapsed_s
            d["inflight_s"] += float(res.latency_ns.sum()) * 1e-9 if res.latency_ns is not None else 0.0
        pooled = []
        for tab, kind, loc, off, st in zip(self.tables, p.kinds, p.locs, p.offsets, staged):
            out = np.empty((B, tab.layout.dim), dtype=np.float32)
            if st is None:
                st = np.zeros((0, tab.layout.dim), np.float32)
            t0 = self.clock()
            pool_sources(off, kind, loc, tab.dram, p.dest, st, dtype_code(tab.layout.np_dtype), tab.layout.dim, out)
            work = p.cache_work.get(tab.index)
            if work is not None:  # after pooling: release this batch's hits, admit its misses from the pages
                hit_slots, admit = work
                tab.cache.unpin(hit_slots)
                if admit is not None:
                    tab.cache.admit(admit[0], p.dest, admit[1])
            dt = self.clock() - t0
            # the pooling time of a table is shared by the tiers its lookups came from
            n = kind.size or 1
            n_hot = int(np.count_nonzero(kind == KIND_DRAM))
            dram_s += dt * n_hot / n
            if tab.tt is None:
                mem_s[tab.device] += dt * (n - n_hot) / n
            else:
                compute_s[tab.device] += dt * (n - n_hot) / n
            pooled.append(out)
        info = {"dram_s": dram_s, "mem_s": mem_s, "compute_s": compute_s, "devices": devices,
                "ios": sum(d["ios"] for d in devices), "bytes_read": sum(d["bytes"] for d in devices)}
        return BatchOutput(p.batch.index, pooled), info

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
        verify = _Verifier(self) if self.config.verify else None
        # With --verify, batches run one at a time: the next batch's reads must not be in flight while a
        # (time-excluded) check runs, or IO latencies and queue depths would include the check.
        pipeline = self.config.pipeline and verify is None
        totals = {"batches": 0, "lookups": 0, "ios": 0, "bytes_read": 0, "verified_batches": 0}
        t_begin = self.clock()
        pending: _Prepared | None = None
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
        totals["elapsed_s"] = self.clock() - t_begin
        if stats is not None:
            stats.stop()
        if verify is not None:
            totals["verify"] = verify.summary()
        return totals

    def _complete(self, p: _Prepared, stats, totals, verify, on_batch) -> None:
        out, info = self.finish(p)
        latency = self.clock() - p.t_start
        n = p.batch.num_lookups
        totals["batches"] += 1
        totals["lookups"] += n
        totals["ios"] += info["ios"]
        totals["bytes_read"] += info["bytes_read"]
        if verify is not None:
            t_v = self._base_clock()
            verify.check(p, out)
            totals["verified_batches"] += 1
            self._excluded_s += self._base_clock() - t_v
        if stats is not None:
            tl = p.tier_lookups
            raw_bytes = sum(d["bytes"] for d in info["devices"])
            tiers = {
                "dram": TierCounters(lookups=tl["dram"], busy_s=info["dram_s"]),
                "ssd_raw": TierCounters(lookups=tl["ssd_raw"], bytes=raw_bytes, busy_s=sum(info["mem_s"])),
                "ssd_tt": TierCounters(lookups=tl["ssd_tt"], busy_s=sum(info["compute_s"])),
            }
            if tl["lru"]:
                tiers["lru"] = TierCounters(lookups=tl["lru"], hits=p.lru_hits)
            devs, cores = [], []
            for k, (dp, d) in enumerate(zip(self.plan.devices, info["devices"])):
                devs.append(DeviceCounters(dp.name, ios=d["ios"], bytes=d["bytes"], busy_s=d["busy_s"],
                                           inflight_s=d["inflight_s"]))
                cores.append(CoreCounters(dp.name, "mem", n_cores=max(1, dp.mem_cores), busy_s=info["mem_s"][k],
                                          lookups=self._dev_lookups(p, k, "ssd_raw"), bytes=d["bytes"], ios=d["ios"]))
                cores.append(CoreCounters(dp.name, "compute", n_cores=max(1, dp.compute_cores),
                                          busy_s=info["compute_s"][k], lookups=self._dev_lookups(p, k, "ssd_tt")))
            stats.record_batch(latency, samples=p.batch.batch_size, lookups=n, tiers=tiers, devices=devs, cores=cores)
        if on_batch is not None:
            on_batch(out)

    def _batch_failure(self, p: _Prepared, dev: int, e: "IOFailure") -> "BatchFailure":
        """Name the table and the rows a failed read was serving; the batch returns nothing."""
        r = p.reads[dev]
        hit = np.flatnonzero((r[1] <= e.offset) & (e.offset < r[1] + r[2]))
        if hit.size:
            tab = self.tables[int(p.read_tables[dev][hit[0]])]
            lay = tab.layout
            g0 = int(r[1][hit[0]]) // lay.span_bytes
            g1 = (int(r[1][hit[0]]) + int(r[2][hit[0]]) - 1) // lay.span_bytes
            rows = f"rows {g0 * lay.rows_per_page}..{min(lay.rows, (g1 + 1) * lay.rows_per_page) - 1}"
            return BatchFailure(f"batch {p.batch.index} failed: table {tab.name}, {rows}: {e}")
        return BatchFailure(f"batch {p.batch.index} failed: {e}")

    def _dev_lookups(self, p: _Prepared, dev: int, tier: str) -> int:
        kind = KIND_PAGE if tier == "ssd_raw" else KIND_STAGED
        return sum(int(np.count_nonzero(k == kind)) for tab, k in zip(self.tables, p.kinds) if tab.device == dev)

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


def _concat_reads(reqs: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(file_id, offsets, nbytes, dest_offsets, table) per table -> one request array set."""
    fids = np.concatenate([np.full(r[1].size, r[0], dtype=np.int64) for r in reqs])
    return fids, np.concatenate([r[1] for r in reqs]), np.concatenate([r[2] for r in reqs]), \
        np.concatenate([r[3] for r in reqs])


def _load_hot_rows(store: Store, i: int, hot: int, inv: np.ndarray | None) -> np.ndarray:
    """Read a table's hot rows into a new array with plain reads of 1 MiB blocks (no memory map, so the
    process's resident set holds the DRAM tier and one block, not every page the rows sit in)."""
    lay = store.layouts[i]
    out = np.empty((hot, lay.dim), dtype=lay.np_dtype)
    if hot == 0:
        return out
    rows = np.arange(hot, dtype=np.int64) if inv is None else np.asarray(inv[:hot], dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    offs = lay.row_offsets(rows[order])
    block = max(1 << 20, lay.span_bytes)
    blocks = offs // block
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    ends = np.r_[starts[1:], offs.size]
    buf = np.empty(block + lay.span_bytes, dtype=np.uint8)
    with open(store.table_path(i), "rb", buffering=0) as f:
        for a, b in zip(starts, ends):
            base = int(blocks[a]) * block
            n = os.preadv(f.fileno(), [memoryview(buf)[: min(buf.size, lay.file_bytes - base)]], base)
            rel = offs[a:b] - base
            if int(rel.max()) + lay.row_bytes > n:
                raise InputError(f"table {store.tables[i]['name']}: short read while loading hot rows",
                                 store.table_path(i))
            idx = rel[:, None] + np.arange(lay.row_bytes)
            out[order[a:b]] = buf[idx].view(lay.np_dtype).reshape(b - a, lay.dim)
    return out


@dataclass(frozen=True)
class _TableRemap:
    """A table's renumbering as the engine needs it: the new id of any old id, and the old ids of the hot prefix.

    ``dense``: a full permutation old -> new. ``prefix``: only the ``m`` hottest rows are renumbered
    (``prefix[j]`` is the old id of new row ``j``); every other row is cold for any hot set <= m.
    """

    rows: int
    perm: np.ndarray | None = None
    prefix: np.ndarray | None = None

    def hot_lookup(self, hot: int) -> Callable[[np.ndarray], np.ndarray]:
        """A function giving the new id of each old id in the hot set ``[0, hot)``, and ``hot`` (cold) elsewhere."""
        if self.perm is not None:
            perm = self.perm
            return lambda old: perm[old]
        order = np.argsort(self.prefix[:hot], kind="stable")  # once per table, not per batch
        sp = self.prefix[:hot][order]
        if sp.size == 0:
            return lambda old: np.full(old.shape, hot, dtype=np.int64)

        def lookup(old: np.ndarray) -> np.ndarray:
            j = np.searchsorted(sp, old)
            jc = np.minimum(j, sp.size - 1)
            return np.where(sp[jc] == old, order[jc], hot)

        return lookup

    def hot_old_ids(self, hot: int) -> np.ndarray:
        if self.perm is not None:
            inv = np.empty_like(self.perm)
            inv[self.perm] = np.arange(self.rows, dtype=self.perm.dtype)
            return inv[:hot]
        if hot > self.prefix.size:
            raise InputError(f"hot set of {hot} rows exceeds the remap's prefix of {self.prefix.size} rows")
        return self.prefix[:hot]


def _load_remap(plan: Plan) -> dict[str, _TableRemap]:
    """Read the planner's remap file (see plans/remap.py for the format)."""
    import h5py

    try:
        with h5py.File(plan.remap, "r") as f:
            if f.attrs.get("format") != "screc-remap":
                raise InputError("not a screc remap file", plan.remap)
            out = {}
            for name in json.loads(str(f.attrs["tables"])):
                ds = f[name]
                kind, rows, data = str(ds.attrs["kind"]), int(ds.attrs["rows"]), ds[:].astype(np.int64)
                if kind == "dense" and data.shape != (rows,):
                    raise InputError(f"remap of table {name} has {data.size} ids, expected {rows}", plan.remap)
                out[name] = _TableRemap(rows, perm=data) if kind == "dense" else _TableRemap(rows, prefix=data)
            return out
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"cannot read the plan's remap file ({e})", plan.remap) from None


class _Verifier:
    """Checks each pooled batch against :func:`emulator.reference.pool_reference`."""

    def __init__(self, rep: Replayer):
        self.rep = rep
        self.exact_bags = 0
        self.tt_bags = 0
        self.max_tt_abs_diff = 0.0
        self.max_tt_bound_used = 0.0

    def check(self, p: _Prepared, out: BatchOutput) -> None:
        from emulator.reference import pool_reference
        from emulator.tt import tt_rebuild_rows_reference

        store = self.rep.store
        for tab, kind, off, ids, got in zip(self.rep.tables, p.kinds, p.offsets, p.old_ids, out.pooled):
            rows = store.read_rows(tab.index, ids).astype(np.float32)
            tt_mask = kind == KIND_STAGED
            if not tt_mask.any():
                want = pool_reference(rows, off)
                if not np.array_equal(got, want):
                    bad = int(np.argwhere((got != want).any(axis=1))[0, 0])
                    raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}, bag {bad}: "
                                     f"pooled embedding differs from the NumPy reference")
                self.exact_bags += got.shape[0]
                continue
            raw_want = pool_reference(rows, off)
            rows_tt = rows.copy()
            rows_tt[tt_mask] = tt_rebuild_rows_reference(tab.tt, ids[tt_mask])
            tt_want = pool_reference(rows_tt, off)
            scale = np.abs(tt_want).max(initial=0.0) + 1e-30
            if not np.allclose(got, tt_want, rtol=1e-4, atol=1e-5 * scale):
                raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}: TT-served embeddings "
                                 f"differ from the NumPy TT reference")
            c = np.concatenate([[0], np.cumsum(tt_mask, dtype=np.int64)])
            n_tt = c[off[1:]] - c[off[:-1]]  # TT lookups per bag
            # the manifest's max abs error is measured on a sample of rows: allow 2x for rows outside it
            bound = 2.0 * tab.tt_error["max_abs_error"] * n_tt[:, None] + 1e-6
            diff = np.abs(got - raw_want)
            if (diff > bound).any():
                raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}: TT error "
                                 f"{float(diff.max()):.3g} exceeds the manifest bound")
            self.tt_bags += got.shape[0]
            self.max_tt_abs_diff = max(self.max_tt_abs_diff, float(diff.max(initial=0.0)))
        store.close()  # unmap the reference's pages: resident memory stays bounded by one batch

    def summary(self) -> dict[str, Any]:
        return {"ok": True, "exact_bags": self.exact_bags, "tt_bags": self.tt_bags,
                "max_tt_abs_diff": self.max_tt_abs_diff}

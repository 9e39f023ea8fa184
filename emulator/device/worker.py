"""Emulated computational-storage devices: device workers that really run in parallel.

A :class:`DeviceWorker` is one device of a plan. It owns its IO engine (its files, its ring), the TT cores of its
tables (its device memory) and two pools of real host threads standing in for its cores: ``mem_cores``
memory-centric threads (extract raw rows from the pages it read and pool them) and ``compute_cores``
compute-centric threads (rebuild TT rows and pool them). Kernels are Numba ``nogil``, so the threads run in
parallel with each other, with other devices and with the host.

The device boundary is narrow and serialisable (arrays and numbers only), so a device could run elsewhere:

* in: a :class:`DeviceRequest` (the batch id, the device's reads, its TT rebuilds and its pooling tasks: the
  device's share of the batch's lookups, located in its pages or its staged TT rows);
* out: a :class:`DeviceResponse` (one pooled partial per pooling task, i.e. per (table, bag) of the device's
  tables: what SCRec moves across PCIe; per-task thread-CPU durations and dependencies; per-read submission and
  completion records of its IO; its IO counters).

Pages are read into the batch's destination buffer (the host's, for a device in this process; a device elsewhere
would allocate ``dest_bytes`` of its own: offsets are relative to that buffer). Each task's duration is the thread
CPU time (``time.thread_time``) of the real kernel calls it made; the device clock (:mod:`emulator.device.clock`)
composes those durations, the reads' real submission and completion times and the link into emulated time.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emulator.io.types import IOFailure

__all__ = ["CONTROL", "IO_THREAD", "PREPARE", "DeviceRequest", "DeviceResponse", "DeviceWorker", "IORecord", "PoolTask", "RebuildTask",
           "TaskRecord", "IO_GROUP"]

#: the id of a device's reads in a batch, as tasks name it in ``after``
IO_GROUP = "io"
#: the device's control loop (dispatching its tasks and waiting), timed as a task of its own
CONTROL = "control"
#: the emulator's other per-device CPU users, placed on the clock as tasks: the thread driving the device's ring
#: and the device's own preparation of a batch (see emulator.device.emulate)
IO_THREAD = "io-thread"
PREPARE = "prepare"


@dataclass(frozen=True, eq=False)
class RebuildTask:
    """Rebuild TT rows into the device's staged rows of one group (one compute-centric task): for each part
    ``(table, rows, start)``, ``rows`` (unique old ids) of ``table`` go to staged rows ``start:start+len``."""
    task_id: str
    group: int
    parts: tuple[tuple[int, np.ndarray, int], ...]


@dataclass(frozen=True, eq=False)
class PoolTask:
    """Pool a subset of one group's bags from the device's rows: ``offsets`` (len(bags)+1, from 0), lookup
    ``kinds`` (``KIND_PAGE``: byte offset into the pages, ``KIND_STAGED``: staged row) and ``locs``.
    ``bags``: the group's bag index (member * B + b) of each output row; ``core``: "mem" or "compute";
    ``row_format``: fp32 / fp16 / int8 / int4 (a page row's encoding); ``after``: ids it waits for."""
    task_id: str
    core: str
    group: int
    dim: int
    row_format: str
    bags: np.ndarray
    offsets: np.ndarray
    kinds: np.ndarray
    locs: np.ndarray
    after: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class DeviceRequest:
    """One device's share of one batch. ``staged_rows[g]`` = rows of group ``g``'s staged array (dim
    ``staged_dims[g]``); ``dest_bytes``: the pages buffer's size. Reads (if any) were started earlier with
    :meth:`DeviceWorker.start_io` (pipelined) and are named by ``IO_GROUP``."""
    batch_id: int
    device: int
    rebuilds: tuple[RebuildTask, ...] = ()
    pools: tuple[PoolTask, ...] = ()
    staged_rows: dict[int, int] = field(default_factory=dict)
    staged_dims: dict[int, int] = field(default_factory=dict)
    dest_bytes: int = 0


@dataclass(frozen=True)
class TaskRecord:
    """A finished core task: measured thread-CPU seconds, its core kind and what it waited for."""
    task_id: str
    core: str
    cpu_s: float
    after: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class IORecord:
    """The device's reads of a batch as its ring recorded them: submission (perf_counter_ns clock), latency and
    bytes per read, and the engine's counters."""
    submit_ns: np.ndarray
    latency_ns: np.ndarray
    nbytes: np.ndarray
    ios: int
    bytes_read: int
    busy_s: float
    cpu_s: float = 0.0  # CPU seconds of the thread that drove the reads (submissions and completions)


@dataclass(frozen=True, eq=False)
class DeviceResponse:
    """What crosses the device link back to the host: ``partials[k]`` for ``request.pools[k]``."""
    batch_id: int
    device: int
    partials: tuple[np.ndarray, ...]
    tasks: tuple[TaskRecord, ...]
    io: IORecord | None

    @property
    def link_bytes(self) -> int:
        return int(sum(p.nbytes for p in self.partials))


def _cpu_timed(fn: Callable[[], None]) -> float:
    c0 = time.thread_time()
    fn()
    return time.thread_time() - c0


class DeviceWorker:
    """One emulated device on real threads (see the module docstring).

    ``tt_of(table)`` gives a table's TT cores (its device memory). A failed read's :class:`IOFailure` is raised
    from the future's ``result()`` (after the batch's rebuilds finished), for the host to name the rows."""

    def __init__(self, index: int, engine, tt_of: Callable[[int], object], mem_cores: int, compute_cores: int):
        self.index = index
        self.engine = engine
        self.tt_of = tt_of
        self.mem_cores = max(1, int(mem_cores))
        self.compute_cores = max(1, int(compute_cores))
        self._mem = ThreadPoolExecutor(self.mem_cores, thread_name_prefix=f"screc-dev{index}-mem")
        self._compute = ThreadPoolExecutor(self.compute_cores, thread_name_prefix=f"screc-dev{index}-compute")
        self._control = ThreadPoolExecutor(1, thread_name_prefix=f"screc-dev{index}")
        self._closed = False

    # -- the host's side of the boundary ---------------------------------------------------------------
    def start_io(self, file_ids, offsets, nbytes, dest: np.ndarray, dest_offsets):
        """Submit the device's reads for a coming batch (they run while the current batch computes)."""
        return self.engine.start(file_ids, offsets, nbytes, dest, dest_offsets, latency=True)

    def submit(self, req: DeviceRequest, io_handle, dest: np.ndarray) -> Future:
        """Run ``req`` on the device's cores; the future's result is a :class:`DeviceResponse`."""
        return self._control.submit(self._serve, req, io_handle, dest)

    # -- the device ------------------------------------------------------------------------------------
    def _serve(self, req: DeviceRequest, io_handle, dest: np.ndarray) -> DeviceResponse:
        """The device's control loop (its own thread): its CPU time is a task too (``CONTROL``)."""
        c0 = time.thread_time()
        resp = self._serve_tasks(req, io_handle, dest)
        ctl = TaskRecord(CONTROL, "mem", time.thread_time() - c0)
        return DeviceResponse(resp.batch_id, resp.device, resp.partials, (ctl,) + resp.tasks, resp.io)

    def _serve_tasks(self, req: DeviceRequest, io_handle, dest: np.ndarray) -> DeviceResponse:
        from emulator.tt.kernels import tt_rebuild_rows

        staged = {g: np.empty((n, req.staged_dims[g]), np.float32) for g, n in req.staged_rows.items()}
        records: list[TaskRecord] = []

        def rebuild(task: RebuildTask) -> TaskRecord:
            def run() -> None:
                st = staged[task.group]
                for table, rows, start in task.parts:
                    tt_rebuild_rows(self.tt_of(table), rows, out=st[start:start + rows.size])
            return TaskRecord(task.task_id, "compute", _cpu_timed(run))

        partials: list = [None] * len(req.pools)

        def pool(k: int, task: PoolTask) -> TaskRecord:
            out = np.empty((task.bags.size, task.dim), np.float32)

            def run() -> None:
                _pool_device_rows(task, dest, staged.get(task.group), out)
            cpu = _cpu_timed(run)
            partials[k] = out
            return TaskRecord(task.task_id, task.core, cpu, task.after)

        # Submission order is the clock's list order: rebuilds (compute cores) at once; raw pooling (memory
        # cores) once the reads are in; TT pooling once every rebuild is done.
        rebuild_futs = [self._compute.submit(rebuild, t) for t in req.rebuilds]
        io = None
        if io_handle is not None:
            try:
                res = self.engine.wait(io_handle)
            except IOFailure:
                for f in rebuild_futs:
                    f.result()
                raise
            io = IORecord(res.submit_ns, res.latency_ns, np.asarray(res.nread, np.int64), res.ios,
                          res.bytes_read, res.elapsed_s, res.cpu_s)
        mem_futs = [self._mem.submit(pool, k, t) for k, t in enumerate(req.pools) if t.core == "mem"]
        records.extend(f.result() for f in rebuild_futs)
        compute_futs = [self._compute.submit(pool, k, t) for k, t in enumerate(req.pools) if t.core != "mem"]
        records.extend(f.result() for f in mem_futs)
        records.extend(f.result() for f in compute_futs)
        return DeviceResponse(req.batch_id, req.device, tuple(partials), tuple(records), io)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ex in (self._control, self._mem, self._compute):
            ex.shutdown(wait=True)


def _pool_device_rows(task: PoolTask, pages: np.ndarray, staged: np.ndarray | None, out: np.ndarray) -> None:
    """One pooling task's kernel call: rows from the pages (raw) or the staged TT rows, in lookup order."""
    from emulator.kernels.pooling import DTYPE_FP16, DTYPE_FP32, pool_sources

    if task.row_format in ("int8", "int4") or (task.row_format == "fp16" and staged is None):
        from emulator.kernels.quant import pool_sources_quantized

        from emulator.store.quant import RowFormat

        empty = np.zeros((0, task.dim), np.float16) if task.row_format == "fp16" else \
            np.zeros((0, RowFormat(task.row_format, task.dim).row_bytes), np.uint8)
        pool_sources_quantized(task.offsets, task.kinds, task.locs, empty, pages, task.row_format, task.dim, out)
        return
    code = DTYPE_FP16 if task.row_format == "fp16" else DTYPE_FP32
    dram = np.zeros((0, task.dim), np.float16 if task.row_format == "fp16" else np.float32)
    st = staged if staged is not None else np.zeros((0, task.dim), np.float32)
    pool_sources(task.offsets, task.kinds, task.locs, dram, pages, st, code, task.dim, out)


def split_by_lookups(offsets: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Bag ranges ``[a, b)`` cutting ``offsets`` (a CSR) into at most ``parts`` pieces of about equal lookups."""
    n_bags = offsets.size - 1
    parts = max(1, min(int(parts), n_bags))
    if parts == 1:
        return [(0, n_bags)] if n_bags else []
    total = int(offsets[-1] - offsets[0])
    targets = offsets[0] + (np.arange(1, parts) * total) // parts
    cuts = np.unique(np.concatenate([[0], np.searchsorted(offsets, targets, side="left"), [n_bags]]))
    cuts = np.clip(cuts, 0, n_bags)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def bag_slice(offsets: np.ndarray, a: int, b: int) -> tuple[np.ndarray, int, int]:
    """Bags ``[a, b)`` of a CSR: their offsets rebased to 0 and the lookup range ``[lo, hi)`` they cover."""
    lo, hi = int(offsets[a]), int(offsets[b])
    return offsets[a:b + 1] - lo, lo, hi


def subset_csr(offsets: np.ndarray, keep: np.ndarray, bags: np.ndarray | None = None,
               bag_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The lookups ``keep`` (bool per lookup) of a CSR's bags ``bags`` (all if None), as a new CSR.

    Returns ``(offsets, lookups)``: new bag ``i`` = old bag ``bags[i]``, holding its kept lookups in order
    (``lookups``: their positions). ``bag_of``: each lookup's bag, if already computed."""
    n_bags = offsets.size - 1
    if bag_of is None:
        bag_of = np.repeat(np.arange(n_bags, dtype=np.int64), np.diff(offsets))
    idx = np.flatnonzero(keep)
    counts = np.bincount(bag_of[idx], minlength=n_bags)
    if bags is not None:
        sel = np.zeros(n_bags, bool)
        sel[bags] = True
        idx = idx[sel[bag_of[idx]]]
        counts = counts[bags]
    new = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=new[1:])
    return new, idx


def merge_partials(out: np.ndarray, bags: np.ndarray, partial: np.ndarray) -> None:
    """The host adds a device's pooled partials to its own: ``out[bags[i]] += partial[i]`` (bags unique)."""
    out[bags] += partial


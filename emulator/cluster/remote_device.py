"""A plan's emulated devices as Ray actors on other nodes, behind the same interface as local device workers.

:class:`RemoteDevices` is a ``device_factory`` for :class:`emulator.replay.engine.ReplayConfig`: for device ``d``
it starts one Ray actor pinned to that device's node (hard node affinity, never restarted), which opens the
node's copy of the store (checked by ``store_id``), opens device ``d``'s files on its own IO engine in the order the
host's :func:`emulator.replay.tables.open_tables` opened them (the host's engine for ``d`` is handed to the factory:
its file list is that order, so the file ids the host plans with are the node's), loads the TT cores of ``d``'s
tables (its device memory), compiles the kernels and builds a local
:class:`~emulator.device.worker.DeviceWorker`. The host keeps a :class:`RemoteDevice` proxy:

* ``start_io`` sends the batch's reads; the actor reads them into its own page-aligned buffer as large as the
  host's ``dest``, so the planned ``dest`` offsets (and the request's page ``locs``) are valid there;
* ``submit`` sends the :class:`~emulator.device.worker.DeviceRequest`; the future's ``result()`` is the
  device's response with its pooled partials (through Ray). Pages the host itself needs come back too and are
  copied into the host's ``dest``: every page for a device that pools nothing (plain-SSD policies), else the
  pages of the tables the host pools or caches (tables on the slow path: LRU cache, prefix remap, rows wider
  than a page; and group tables with an LRU cache, whose missed rows the host admits).

The network is measured apart from the emulated device link: each response is a :class:`RemoteResponse` whose
``net`` (:class:`NetTransfer`) holds the array bytes each way, the host thread's time in the Ray calls, the round
trip and the actor's own serve time (its difference, ``wire_s``, is Ray and network); the device clock's inputs
(tasks' CPU seconds, the reads' records) are the device's own, with its reads' submission times moved onto the
host's clock (the actor's receipt of the reads = the host's call). :meth:`RemoteDevices.summary` totals them.

A device whose actor or node died raises :class:`RemoteDeviceError` (an InputError: one line naming the device
and the node) from ``result()``; a failed read is the device's :class:`~emulator.io.types.IOFailure` with the
host's path of the file, as a local device would raise it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emulator.device.worker import DeviceResponse
from emulator.io.types import IOFailure
from tracegen.errors import InputError

__all__ = ["NetTransfer", "RemoteDevice", "RemoteDeviceError", "RemoteDevices", "RemoteResponse"]

WAIT_S = 0.5  # result() wakes this often (Ctrl-C stops a replay within a second)


class RemoteDeviceError(InputError):
    """A remote device's actor or node is gone (or could not start): names the device and the node."""


@dataclass(frozen=True)
class NetTransfer:
    """One device's share of one batch over the network (measured; not the emulated device link).

    Bytes are array payloads (Ray's pickle adds a few hundred bytes of framing per call)."""

    batch_id: int
    device: int
    request_bytes: int  # host -> node: the reads (file ids, offsets, sizes, dest offsets) and the request's arrays
    response_bytes: int  # node -> host: partials, returned pages, IO records
    pages_bytes: int  # of response_bytes: pages the host pools or caches itself
    send_s: float  # host thread seconds inside the Ray calls (serialising and handing over the reads and request)
    round_trip_s: float  # from the host's submit call to the response's arrival on the host
    device_s: float  # the actor's wall time serving the request (waiting for its reads, its cores' tasks)

    @property
    def wire_s(self) -> float:
        """Round trip minus the device's own serve time: Ray's call overhead and the transfers both ways."""
        return max(0.0, self.round_trip_s - self.device_s)


@dataclass(frozen=True, eq=False)
class RemoteResponse(DeviceResponse):
    """A :class:`DeviceResponse` that crossed the network; ``net`` says what that cost."""

    net: NetTransfer | None = None


def _array_bytes(*objs) -> int:
    """Bytes of the NumPy arrays in ``objs`` (dataclasses, tuples, lists and dicts of them, walked)."""
    n = 0
    stack = list(objs)
    while stack:
        o = stack.pop()
        if isinstance(o, np.ndarray):
            n += o.nbytes
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif hasattr(o, "__dataclass_fields__"):
            stack.extend(getattr(o, f) for f in o.__dataclass_fields__)
    return n


def _segments(dest_offsets: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """The byte ranges of ``dest`` covered by some reads, merged: an (n, 2) array of (start, length)."""
    if dest_offsets.size == 0:
        return np.zeros((0, 2), np.int64)
    order = np.argsort(dest_offsets, kind="stable")
    a = dest_offsets[order].astype(np.int64)
    e = np.maximum.accumulate(a + nbytes[order].astype(np.int64))
    new = np.r_[True, a[1:] > e[:-1]]
    starts = a[new]
    ends = e[np.r_[np.flatnonzero(new)[1:] - 1, a.size - 1]]
    return np.stack([starts, ends - starts], axis=1)


# -- the node's side ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceSetup:
    """What an actor needs to become device ``index`` (sent once, at creation)."""

    index: int
    store_dir: str  # the node's copy of the store
    store_id: str
    engine: str
    queue_depth: int
    allow_buffered: bool
    files: tuple[tuple[str, int], ...]  # (path relative to the store, size in bytes) by host file id
    tt_tables: tuple[tuple[int, str, int], ...]  # (host table index, name, rank) of its TT tables
    formats: tuple[tuple[int, str], ...]  # (dim, row format) its pooling tasks use: kernels to compile
    mem_cores: int
    compute_cores: int


class DeviceActor:
    """(A Ray actor on the device's node.) One emulated device: its store files, TT cores and a DeviceWorker."""

    def __init__(self) -> None:
        self.worker = None
        self._pending: dict[int, tuple] = {}  # read handle key -> (engine handle, buffer, receipt ns)
        self._free: list[np.ndarray] = []

    def setup(self, s: DeviceSetup) -> dict[str, Any]:
        from emulator.cluster.connect import where_am_i
        from emulator.device.worker import DeviceWorker
        from emulator.io import make_engine
        from emulator.store.store import Store

        node = where_am_i()
        root = Path(s.store_dir)
        store = Store.open(root)
        if store.store_id != s.store_id:
            raise InputError(f"the store on node {node['address']} ({store.store_id[:12]}) is not the host's "
                             f"({s.store_id[:12]})", root)
        engine = make_engine(s.engine, queue_depth=s.queue_depth, allow_buffered=s.allow_buffered)
        self.paths = {}
        for rel, size in s.files:
            path = root / rel
            fid = engine.open(path)
            if engine.files[fid].size_bytes != size:
                raise InputError(f"has {engine.files[fid].size_bytes} bytes on node {node['address']}, "
                                 f"{size} on the host", path)
            self.paths[str(engine.files[fid].path)] = rel
        tts = {i: store.load_tt(store.table_index(name), rank) for i, name, rank in s.tt_tables}
        self._warm_up(tts, s.formats)
        self.worker = DeviceWorker(s.index, engine, tts.__getitem__, s.mem_cores, s.compute_cores)
        return node

    @staticmethod
    def _warm_up(tts: dict, formats) -> None:
        """Compile (or load from Numba's cache) the kernels this device runs, before any batch."""
        from emulator.device.worker import PoolTask, _pool_device_rows
        from emulator.tiers import KIND_PAGE, KIND_STAGED
        from emulator.tt.kernels import tt_rebuild_rows

        for tt in tts.values():
            tt_rebuild_rows(tt, np.zeros(1, np.int64))
        pages = np.zeros(1 << 14, np.uint8)
        one = np.array([0, 1], np.int64)
        for dim, fmt in formats:
            for kind, staged in ((KIND_PAGE, None), (KIND_STAGED, np.zeros((1, dim), np.float32))):
                if kind == KIND_STAGED and fmt in ("int8", "int4"):
                    continue
                task = PoolTask("warm", "mem", 0, dim, fmt, np.zeros(1, np.int64), one,
                                np.full(1, kind, np.uint8), np.zeros(1, np.int64))
                _pool_device_rows(task, pages if dim * 4 <= pages.size else np.zeros(dim * 4, np.uint8), staged,
                                  np.empty((1, dim), np.float32))

    def start_io(self, key: int, file_ids, offsets, nbytes, dest_offsets, dest_bytes: int) -> None:
        from emulator.io import aligned_empty

        t_recv = time.perf_counter_ns()
        buf = next((b for b in self._free if b.size >= dest_bytes), None)
        if buf is None:
            buf = aligned_empty(dest_bytes)
        else:
            self._free.remove(buf)
        try:
            handle = self.worker.start_io(file_ids, offsets, nbytes, buf, dest_offsets)
        except Exception as e:  # noqa: BLE001 - raised by the batch's submit, which the host waits for
            handle = e
        self._pending[key] = (handle, buf, t_recv)

    def submit(self, key: int | None, req, dest_bytes: int, segments: np.ndarray):
        """Serve ``req`` (its reads started under ``key``); the response, the pages of ``segments`` and timings."""
        from emulator.io import aligned_empty

        t0 = time.perf_counter()
        handle, buf, t_recv = self._pending.pop(key) if key is not None else (None, aligned_empty(4096), 0)
        try:
            if isinstance(handle, Exception):
                raise handle
            try:
                resp = self.worker.submit(req, handle, buf).result()
            except IOFailure as e:  # returned, not raised (it does not pickle): the host raises it with its path
                return ("io-failure", e.errno, self.paths.get(str(e.path), str(e.path)), e.offset, e.nbytes)
            pages = np.concatenate([buf[s:s + n] for s, n in segments]) if len(segments) else np.zeros(0, np.uint8)
        finally:
            if key is not None:  # keep the two largest buffers (the host double-buffers its batches)
                self._free = sorted(self._free + [buf], key=lambda b: b.size)[-2:]
        return resp, pages, t_recv, time.perf_counter() - t0


# -- the host's side ---------------------------------------------------------------------------------------
@dataclass
class _Reads:
    file_ids: np.ndarray
    dest_offsets: np.ndarray
    nbytes: np.ndarray
    t_call_ns: int
    request_bytes: int
    send_s: float


class _RemoteFuture:
    """``result()``: the device's :class:`RemoteResponse` (pages copied into the host's ``dest`` first)."""

    def __init__(self, device: RemoteDevice, ref, req, reads: _Reads | None, dest: np.ndarray,
                 segments: np.ndarray, t_submit: float, request_bytes: int, send_s: float):
        self._device, self._req, self._reads, self._dest, self._segments = device, req, reads, dest, segments
        self._t_submit, self._request_bytes, self._send_s = t_submit, request_bytes, send_s
        self._arrived: list[float] = []
        self._fut = ref.future()
        self._fut.add_done_callback(lambda _f: self._arrived.append(time.perf_counter()))
        self._value: RemoteResponse | None = None

    def done(self) -> bool:
        return self._fut.done()

    def result(self) -> RemoteResponse:
        import concurrent.futures as cf

        if self._value is not None:
            return self._value
        while True:
            try:
                value = self._fut.result(timeout=WAIT_S)
                break
            except cf.TimeoutError:
                continue
            except Exception as e:  # noqa: BLE001 - Ray's errors, turned into the device's own
                raise self._device.error(e) from None
        arrived = self._arrived[0] if self._arrived else time.perf_counter()
        d = self._device
        if isinstance(value[0], str):  # a failed read on the node, named by the host's path of the file
            _, err, rel, offset, nbytes = value
            raise IOFailure(err, d.host_paths.get(rel, rel), offset, nbytes)
        resp, pages, t_recv, device_s = value
        at = 0
        for s, n in self._segments:  # the pages the host pools or caches itself, where it planned them
            self._dest[s:s + n] = pages[at:at + n]
            at += n
        io = resp.io
        if io is not None and self._reads is not None:  # the node's clock -> the host's: its receipt = our call
            io = replace(io, submit_ns=io.submit_ns - t_recv + self._reads.t_call_ns)
        net = NetTransfer(self._req.batch_id, d.index, self._request_bytes,
                          _array_bytes(resp.partials, resp.io) + pages.nbytes, int(pages.nbytes), self._send_s,
                          arrived - self._t_submit, float(device_s))
        d.transfers.append(net)
        self._value = RemoteResponse(resp.batch_id, resp.device, resp.partials, resp.tasks, io, net)
        return self._value


class RemoteDevice:
    """The host's proxy of one remote device (the :class:`~emulator.device.worker.DeviceWorker` interface)."""

    def __init__(self, index: int, actor, node: dict[str, Any], host_files: np.ndarray, host_paths: dict[str, str],
                 name: str):
        self.index, self.actor, self.node, self.name = index, actor, node, name
        self.host_files = host_files  # bool per file id: the host pools or caches this file's rows
        self.host_paths = host_paths  # a file's path relative to the store -> the host's path of it
        self.transfers: list[NetTransfer] = []
        self._reads: dict[int, _Reads] = {}
        self._next = 0
        self._closed = False

    def where(self) -> str:
        n = self.node
        return f"node {n.get('address')} ({n.get('disk') or 'no disk'}, Ray node {str(n.get('node_id'))[:12]})"

    def error(self, e: BaseException) -> BaseException:
        """Ray's error of a call as the device's: a failed read as itself, anything else names device and node."""
        cause = getattr(e, "cause", None)
        if isinstance(cause, InputError):
            return RemoteDeviceError(f"remote device {self.index} ({self.name}) on {self.where()}: {cause}")
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return RemoteDeviceError(f"remote device {self.index} ({self.name}) on {self.where()} failed: "
                                 f"{type(e).__name__}: {first}")

    def start_io(self, file_ids, offsets, nbytes, dest: np.ndarray, dest_offsets) -> int:
        key = self._next
        self._next += 1
        t_call, c0 = time.perf_counter_ns(), time.perf_counter()
        self.actor.start_io.remote(key, file_ids, offsets, nbytes, dest_offsets, int(dest.size))
        send = time.perf_counter() - c0
        self._reads[key] = _Reads(np.asarray(file_ids), np.asarray(dest_offsets), np.asarray(nbytes), t_call,
                                  _array_bytes(file_ids, offsets, nbytes, dest_offsets), send)
        return key

    def submit(self, req, handle: int | None, dest: np.ndarray) -> _RemoteFuture:
        reads = self._reads.pop(handle) if handle is not None else None
        segments = np.zeros((0, 2), np.int64)
        if reads is not None:
            need = np.ones(reads.file_ids.size, bool) if not req.pools else self.host_files[reads.file_ids]
            segments = _segments(reads.dest_offsets[need], reads.nbytes[need])
        t0 = time.perf_counter()
        ref = self.actor.submit.remote(handle, req, int(dest.size), segments)
        send = time.perf_counter() - t0
        request_bytes = _array_bytes(req, segments) + (reads.request_bytes if reads else 0)
        return _RemoteFuture(self, ref, req, reads, dest, segments, t0, request_bytes,
                             send + (reads.send_s if reads else 0.0))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        import ray

        with contextlib.suppress(Exception):  # an actor already gone; else at once (Ctrl-C stops within a
            ray.kill(self.actor)  # second): the actor's process ends, and its files and ring with it


@dataclass
class RemoteDevices:
    """A ``device_factory`` placing each device of ``plan`` on a node of the Ray cluster (module docstring).

    ``address``: the cluster (``HOST:PORT`` or ``auto``; None: this process is already connected).
    ``node_of_device``: device index -> its node, as a Ray node id, the node's disk directory or its location
    ``ADDRESS:DIRECTORY`` (None, or a device left out: devices spread over the nodes in turn).
    ``store_dir``: the store on every node: a relative path is under each node's disk (``SCREC_DISK``), an
    absolute one the same on every node; None: the host's store path (a shared file system or copies)."""

    address: str | None
    store: Any  # emulator.store.store.Store (the host's)
    plan: Any  # emulator.plan.Plan
    node_of_device: dict[int, str] | None = None
    store_dir: str | None = None
    devices: list[RemoteDevice] = field(default_factory=list, init=False)  # the devices made, in order

    def __post_init__(self) -> None:
        from emulator.cluster.connect import cluster_nodes, connect, import_ray

        ray = import_ray()
        if self.address is not None:
            connect(self.address)
        elif not ray.is_initialized():
            raise InputError("remote devices need a Ray cluster: give its address (--ray ADDRESS)")
        self.plan.check_store(self.store.store_id)
        nodes = cluster_nodes()
        if not nodes:
            raise InputError("the Ray cluster has no alive node")
        relative = self.store_dir is not None and not os.path.isabs(self.store_dir)
        spread = [n for n in nodes if n.disk] if relative else nodes  # a relative store is under a node's disk
        if not spread:
            raise InputError(f"no node of the Ray cluster has a disk (SCREC_DISK) for the store {self.store_dir}")
        self._nodes = {}
        wanted = dict(self.node_of_device or {})
        for d in range(len(self.plan.devices)):
            key = wanted.get(d)
            hit = spread[d % len(spread)] if key is None else \
                next((n for n in nodes if key in (n.node_id, n.disk, n.location)), None)
            if hit is None:
                raise InputError(f"device {d}: no alive node of the Ray cluster is {key!r} (a node id, disk or "
                                 f"ADDRESS:DIRECTORY)")
            self._nodes[d] = hit
        # the actors' processes start now, together (a few seconds each); each becomes its device when called
        self._actors = {d: self._start_actor(n) for d, n in self._nodes.items()}

    @staticmethod
    def _start_actor(node):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(DeviceActor).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote()

    def node_store(self, node) -> str:
        """The store's directory on ``node``."""
        if self.store_dir is None:
            return str(Path(self.store.path).resolve())
        if os.path.isabs(self.store_dir):
            return self.store_dir
        if not node.disk:
            raise InputError(f"node {node.address} has no disk (SCREC_DISK) for the relative store path "
                             f"{self.store_dir}")
        return str(Path(node.disk) / self.store_dir)

    def __call__(self, index: int, engine, tt_of, mem_cores: int, compute_cores: int) -> RemoteDevice:
        from emulator.cluster.connect import import_ray

        ray = import_ray()
        node = self._nodes[index]
        files, host_files, host_paths = self._files(index, engine)
        tts, formats = self._device_tables(index, tt_of)
        setup = DeviceSetup(index, self.node_store(node), self.store.store_id, engine.name, engine.queue_depth,
                            engine.allow_buffered, files, tts, formats, mem_cores, compute_cores)
        actor = self._actors.pop(index, None) or self._start_actor(node)
        dev = RemoteDevice(index, actor, {**node.to_dict(), "store": setup.store_dir}, host_files, host_paths,
                           self.plan.devices[index].name)
        try:
            dev.node = {**ray.get(actor.setup.remote(setup)), "store": setup.store_dir}
        except Exception as e:  # noqa: BLE001 - the replay cannot start: every device's actor ends
            dev.close()
            self.close()
            raise dev.error(e) from None
        self.devices.append(dev)
        return dev

    def close(self) -> None:
        """End every device's actor (the replay closes its devices itself; this also ends those never used)."""
        import ray

        for dev in self.devices:
            dev.close()
        for actor in self._actors.values():
            with contextlib.suppress(Exception):  # an actor already gone
                ray.kill(actor)
        self._actors = {}

    def _files(self, index: int, engine) -> tuple[tuple[tuple[str, int], ...], np.ndarray, dict[str, str]]:
        """Device ``index``'s files as the host opened them (relative path, size) by file id, whether the host
        pools or caches each one's rows itself (see the module docstring), and the host's path of each."""
        from emulator.replay.tables import _row_layout

        root = Path(self.store.path).resolve()
        files, host = [], []
        opened = [f for f in engine.files if f is not None]
        tabs = []
        for i, t in enumerate(self.store.tables):
            pl = self.plan.placement(t.name)
            if pl.device == index and pl.cold_tier == "ssd_raw" and min(pl.hot_rows, t.rows) < t.rows:
                tabs.append((i, pl))
        if len(tabs) != len(opened):
            raise RuntimeError(f"device {index}: the host opened {len(opened)} files for {len(tabs)} raw tables")
        prefix = self._prefix_remapped()
        for f, (i, pl) in zip(opened, tabs):
            lay, path = _row_layout(self.store, i, pl.row_format)
            if Path(f.path).resolve() != Path(path).resolve():
                raise RuntimeError(f"device {index}: file {f.path} is not table {self.store.tables[i].name}'s")
            files.append((str(Path(f.path).resolve().relative_to(root)), int(f.size_bytes)))
            host.append(lay.pages_per_row > 1 or pl.lru_rows > 0 or self.store.tables[i].name in prefix)
        return tuple(files), np.array(host, bool), {rel: f.path for (rel, _), f in zip(files, opened)}

    def _prefix_remapped(self) -> set[str]:
        """Tables the plan's remap renumbers by a hot prefix only (the host serves them one by one)."""
        if not self.plan.remap:
            return set()
        import h5py

        with h5py.File(self.plan.remap, "r") as f:  # a table's remap is dense or a prefix (remap.load_remap)
            return {name for name in f if str(f[name].attrs.get("kind", "dense")) != "dense"}

    def _device_tables(self, index: int, tt_of) -> tuple[tuple, tuple]:
        """Device ``index``'s TT tables (host index, name, rank) and the (dim, row format) of its tables."""
        tts, formats = [], set()
        for i, t in enumerate(self.store.tables):
            pl = self.plan.placement(t.name)
            if pl.device != index:
                continue
            formats.add((int(t.dim), pl.row_format if pl.row_format != "fp32" or t.dtype != "fp16" else "fp16"))
            if pl.cold_tier == "ssd_tt" and min(pl.hot_rows, t.rows) < t.rows and tt_of(i) is not None:
                tts.append((i, t.name, int(pl.tt_rank)))
        return tuple(tts), tuple(sorted(formats))

    # -- what the network cost -----------------------------------------------------------------------------
    def transfers(self) -> list[NetTransfer]:
        return [t for d in self.devices for t in d.transfers]

    def summary(self) -> dict[str, Any]:
        """The network per batch (measured), per device and over all: means over the batches served."""
        per = []
        for d in self.devices:
            ts = d.transfers
            n = max(1, len(ts))
            per.append({
                "device": d.index, "name": d.name, "node": d.node, "batches": len(ts),
                "request_bytes_per_batch": sum(t.request_bytes for t in ts) / n,
                "response_bytes_per_batch": sum(t.response_bytes for t in ts) / n,
                "pages_bytes_per_batch": sum(t.pages_bytes for t in ts) / n,
                "send_s_per_batch": sum(t.send_s for t in ts) / n,
                "round_trip_s_per_batch": sum(t.round_trip_s for t in ts) / n,
                "device_s_per_batch": sum(t.device_s for t in ts) / n,
                "wire_s_per_batch": sum(t.wire_s for t in ts) / n,
            })
        return {"kind": "measured", "what": "Ray transfers between the host and its remote devices (apart from "
                "the emulated device link)", "devices": per,
                "bytes_per_batch": sum(p["request_bytes_per_batch"] + p["response_bytes_per_batch"] for p in per)}

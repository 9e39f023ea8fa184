"""Several devices, one engine (one ring) each, read as one.

A device is a directory (a mount point, or any folder standing in for one)
holding store files. :class:`DeviceSet` opens each file on the engine of the
device whose directory contains it, and :meth:`DeviceSet.read_many` splits a
batch by device and runs every device's ``read_many`` on its own thread: the
io_uring kernels release the GIL, so the rings are driven truly in parallel
and the batch takes as long as the slowest device. It offers the same
``open`` / ``read_many`` / ``start`` / ``wait`` / ``counters`` / ``close``
calls as a single engine, so callers need not care how many devices there are.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from emulator.io.base import IOEngine, ReadHandle
from emulator.io.types import IOCounters, IOResult
from tracegen.errors import InputError


class DeviceSet:
    """``devices``: one directory per device; ``make_engine()`` builds one engine per device."""

    def __init__(self, devices: Sequence[str | os.PathLike], make_engine: Callable[[], IOEngine],
                 clock: Callable[[], float] = time.perf_counter):
        if not devices:
            raise ValueError("a DeviceSet needs at least one device directory")
        self.roots = [Path(d).resolve() for d in devices]
        for d, r in zip(devices, self.roots):
            if not r.is_dir():
                raise InputError("device directory does not exist", d)
        if len(set(self.roots)) != len(self.roots):
            raise InputError(f"the same device directory is listed twice: {[str(d) for d in devices]}")
        self.engines: list[IOEngine] = []
        try:
            for _ in self.roots:
                self.engines.append(make_engine())
        except BaseException:
            self.close()
            raise
        self.clock = clock
        self._file_device = np.zeros(0, dtype=np.int64)  # global file id -> device index
        self._file_local = np.zeros(0, dtype=np.int64)  # global file id -> engine file id
        self._pool = ThreadPoolExecutor(len(self.roots), thread_name_prefix="screc-dev") if len(self.roots) > 1 else None
        self._starter: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._wait_s = 0.0

    @property
    def queue_depth(self) -> int:
        return sum(e.queue_depth for e in self.engines)

    def device_of(self, path: str | os.PathLike) -> int:
        """Index of the device whose directory holds ``path`` (the deepest one if nested)."""
        p = Path(path).resolve()
        best = -1
        for k, root in enumerate(self.roots):
            if p.is_relative_to(root) and (best < 0 or len(root.parts) > len(self.roots[best].parts)):
                best = k
        if best < 0:
            raise InputError(f"file is on none of the devices {[str(r) for r in self.roots]}", path)
        return best

    def open(self, path: str | os.PathLike) -> int:
        """Open ``path`` on its device's engine; returns a file id valid for this set."""
        dev = self.device_of(path)
        local = self.engines[dev].open(path)
        with self._lock:
            self._file_device = np.append(self._file_device, dev)
            self._file_local = np.append(self._file_local, local)
            return int(self._file_device.shape[0] - 1)

    def read_many(self, file_ids, offsets, nbytes, dest: np.ndarray, dest_offsets, *,
                  latency: bool = False) -> IOResult:
        """Read a batch spread over devices; each device's share runs on its own ring, all in parallel."""
        fid = np.ascontiguousarray(file_ids, dtype=np.int64).reshape(-1)
        if fid.shape[0] and (fid.min() < 0 or fid.max() >= self._file_device.shape[0]):
            raise ValueError(f"file ids must be open files of this device set (0..{self._file_device.shape[0] - 1})")
        off, nb, doff = (np.ascontiguousarray(a, dtype=np.int64).reshape(-1) for a in (offsets, nbytes, dest_offsets))
        dev = self._file_device[fid]
        local = self._file_local[fid]
        used = np.unique(dev)
        t0 = self.clock()
        if used.shape[0] <= 1:
            e = self.engines[int(used[0]) if used.shape[0] else 0]
            r = e.read_many(local, off, nb, dest, doff, latency=latency)
            return IOResult(**{**r.__dict__, "elapsed_s": self.clock() - t0})
        parts = [(int(d), np.flatnonzero(dev == d)) for d in used]
        futs = [self._pool.submit(self.engines[d].read_many, local[ix], off[ix], nb[ix], dest, doff[ix],
                                  latency=latency) for d, ix in parts]
        results, first_error = [], None
        for f in futs:  # wait for every device before raising, so nothing writes into dest afterwards
            try:
                results.append(f.result())
            except BaseException as e:  # noqa: BLE001 - re-raised below
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        n = fid.shape[0]
        nread = np.zeros(n, dtype=np.int64)
        lat = np.zeros(n, dtype=np.int64) if latency else None
        for (_, ix), r in zip(parts, results):
            nread[ix] = r.nread
            if latency:
                lat[ix] = r.latency_ns
        return IOResult(
            nread=nread, ios=sum(r.ios for r in results), bytes_read=sum(r.bytes_read for r in results),
            retries=sum(r.retries for r in results), short_reads=sum(r.short_reads for r in results),
            max_in_flight=sum(r.max_in_flight for r in results), syscalls=sum(r.syscalls for r in results),
            elapsed_s=self.clock() - t0, latency_ns=lat,
        )

    def start(self, file_ids, offsets, nbytes, dest: np.ndarray, dest_offsets, *, latency: bool = False) -> ReadHandle:
        """Begin ``read_many`` in the background (see :meth:`IOEngine.start`)."""
        with self._lock:
            if self._starter is None:
                self._starter = ThreadPoolExecutor(1, thread_name_prefix="screc-devset")
        return ReadHandle(self._starter.submit(self.read_many, file_ids, offsets, nbytes, dest, dest_offsets,
                                               latency=latency))

    def wait(self, handle: ReadHandle) -> IOResult:
        t0 = self.clock()
        try:
            return handle.future.result()
        finally:
            with self._lock:
                self._wait_s += self.clock() - t0

    def counters(self) -> list[IOCounters]:
        """Per-device counters (sum them with ``+`` for a total); the set's own wait time goes to device 0."""
        out = [e.counters() for e in self.engines]
        if out:
            c0 = out[0]
            out[0] = IOCounters(**{**c0.__dict__, "wait_s": c0.wait_s + self._wait_s})
        return out

    def close(self) -> None:
        """Close every engine; idempotent."""
        for ex in (getattr(self, "_starter", None), getattr(self, "_pool", None)):
            if ex is not None:
                ex.shutdown(wait=True)
        self._starter = self._pool = None
        for e in self.engines:
            e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

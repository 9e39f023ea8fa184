"""The io_uring engine: O_DIRECT reads driven by a Numba kernel over a raw ring.

Options (each with its default, fio style):

``queue_depth=128``
    Reads kept in flight by ``read_many`` (the ring gets this many SQ slots).
``registered_files=True``
    Register every opened file with the ring (IORING_REGISTER_FILES2 sparse
    table + FILES_UPDATE) and submit with IOSQE_FIXED_FILE, saving the
    per-read file table lookup and reference counting. Silently off on kernels
    without sparse registration.
``registered_buffers=False``
    Register each destination buffer (IORING_REGISTER_BUFFERS_UPDATE into a
    small sparse table, least recently used evicted) and read with
    IORING_OP_READ_FIXED, saving the per-read page pinning. The engine keeps a
    reference to every registered buffer, so memory it read into cannot be
    freed and reused under it. Worth it for buffers reused across batches
    (:class:`~emulator.io.buffers.AlignedBufferPool`); registering costs about
    as much as pinning the buffer once.
``allow_buffered=False``
    Accept files on filesystems that refuse O_DIRECT, read through the page cache.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from emulator.io import _sys
from emulator.io import types as T
from emulator.io._ring import RawRing
from emulator.io._uring_kernels import drive_reads
from emulator.io.base import BatchOutcome, IOEngine, OpenFile, Requests
from emulator.io.types import Completions

MAX_REGISTERED_FILES = 4096
MAX_REGISTERED_BUFFERS = 16


class UringEngine(IOEngine):
    name = "uring"

    def __init__(self, queue_depth: int = 128, registered_files: bool = True, registered_buffers: bool = False,
                 allow_buffered: bool = False, **kw):
        super().__init__(queue_depth, allow_buffered=allow_buffered, **kw)
        ok, why = _sys.ring_supported()
        if not ok:
            raise OSError(why)
        self.ring = RawRing(self.queue_depth, max_files=MAX_REGISTERED_FILES if registered_files else 0,
                            max_buffers=MAX_REGISTERED_BUFFERS if registered_buffers else 0)
        self.registered_files = self.ring.fixed_files > 0
        self.registered_buffers = self.ring.fixed_buffers > 0
        self._fds = np.full(16, -1, dtype=np.int32)  # file id -> fd, or registered slot
        self._aligns = np.ones(16, dtype=np.int64)  # file id -> O_DIRECT alignment (1: buffered)
        self._buffers: OrderedDict[tuple[int, int], tuple[int, np.ndarray]] = OrderedDict()  # (addr, len) -> slot, ref
        self._pending: dict[int, np.ndarray] = {}  # low-level API: tag -> dest kept alive while in flight
        self._queued = 0  # low-level API: SQEs written, not yet committed
        self._broken = ""  # set when the ring failed mid-batch; the engine refuses further batches

    def _on_open(self, file_id: int, f: OpenFile) -> None:
        if file_id >= self._fds.shape[0]:
            self._fds = np.concatenate([self._fds, np.full(self._fds.shape[0], -1, dtype=np.int32)])
            self._aligns = np.concatenate([self._aligns, np.ones(self._aligns.shape[0], dtype=np.int64)])
        self._aligns[file_id] = self.direct_align_bytes if f.direct else 1
        if self.registered_files:
            if file_id >= MAX_REGISTERED_FILES:
                raise ValueError(f"at most {MAX_REGISTERED_FILES} files per engine with registered_files=True")
            self.ring.set_file(file_id, f.fd)
            self._fds[file_id] = file_id
        else:
            self._fds[file_id] = f.fd

    # -- registered buffers ---------------------------------------------------------------------

    def _buffer_index(self, dest: np.ndarray) -> int:
        """Slot of a registered buffer covering ``dest`` (registering it if needed), or -1."""
        if not self.registered_buffers or dest.shape[0] == 0:
            return -1
        key = (dest.ctypes.data, dest.shape[0])
        hit = self._buffers.get(key)
        if hit is not None:
            self._buffers.move_to_end(key)
            return hit[0]
        if len(self._buffers) >= self.ring.fixed_buffers:
            _, (slot, _) = self._buffers.popitem(last=False)
        else:
            used = {s for s, _ in self._buffers.values()}
            slot = min(set(range(self.ring.fixed_buffers)) - used)
        try:
            self.ring.set_buffer(slot, key[0], key[1])
        except OSError:
            self.ring.set_buffer(slot, 0, 0)
            return -1  # e.g. RLIMIT_MEMLOCK: read unregistered instead
        self._buffers[key] = (slot, dest)
        return slot

    # -- workhorse ------------------------------------------------------------------------------

    def _read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        if self._broken:
            raise RuntimeError(f"this io_uring engine is unusable after an earlier failure: {self._broken}")
        if self._pending or self._queued:
            raise RuntimeError("read_many while low-level reads are queued or in flight; reap them first")
        n = len(req)
        nread = np.zeros(n, dtype=np.int64)
        lat = np.zeros(n if latency else 0, dtype=np.int64)
        sub = np.zeros(n if latency else 0, dtype=np.int64)
        stats = drive_reads(self.ring, self._fds, self._aligns, self.registered_files, self._buffer_index(req.dest),
                            req.file_ids, req.offsets, req.nbytes, req.dest, req.dest_offsets,
                            self.queue_depth, nread, lat, sub)
        if stats[T.ST_FAILED_INDEX] == -2:  # io_uring_enter itself failed: reads may still be in flight
            self._broken = f"io_uring_enter failed with errno {int(stats[T.ST_ERRNO])}"
        return BatchOutcome(nread, stats, lat if latency else None, sub if latency else None)

    # -- low-level contract (Python speed; fine for single reads) -------------------------------

    def queue(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int, tag: int) -> None:
        self._check_open()
        self.check_requests([file_id], [offset], [nbytes], dest, [dest_offset])
        if tag in self._pending:
            raise ValueError(f"tag {tag} is already in flight")
        lay = self.ring.layout
        in_ring = len(self._pending)
        if in_ring >= lay.sq_entries:
            raise RuntimeError(f"{in_ring} reads in flight: reap before queueing more (ring has {lay.sq_entries} slots)")
        tail = int(self.ring.sq[lay.sq_tail]) + self._queued
        slot = (tail & lay.sq_mask) * 8
        flags = _sys.IOSQE_FIXED_FILE if self.registered_files else 0
        fd = int(self._fds[file_id]) & 0xFFFFFFFF
        w = self.ring.sqes
        w[slot : slot + 8] = [_sys.IORING_OP_READ | (flags << 8) | (fd << 32), int(offset),
                              dest.ctypes.data + int(dest_offset), int(nbytes), int(tag), 0, 0, 0]
        self._pending[int(tag)] = dest
        self._queued += 1

    def commit(self) -> int:
        self._check_open()
        if not self._queued:
            return 0
        lay = self.ring.layout
        self.ring.sq[lay.sq_tail] = np.uint32((int(self.ring.sq[lay.sq_tail]) + self._queued) & 0xFFFFFFFF)
        n = _sys.sys_call(_sys.SYS_IO_URING_ENTER, self.ring.fd, self._queued, 0, 0, 0, 0)
        self._queued -= n
        return n

    def reap(self, min_n: int = 1, max_n: int = 1 << 30) -> Completions:
        self._check_open()
        lay = self.ring.layout
        cq = self.ring.cq
        min_n = min(int(min_n), len(self._pending) - self._queued)
        while (int(cq[lay.cq_tail]) - int(cq[lay.cq_head])) & 0xFFFFFFFF < min_n:
            try:
                _sys.sys_call(_sys.SYS_IO_URING_ENTER, self.ring.fd, 0, min_n, _sys.IORING_ENTER_GETEVENTS, 0, 0)
            except InterruptedError:
                continue
        head = int(cq[lay.cq_head])
        ready = min((int(cq[lay.cq_tail]) - head) & 0xFFFFFFFF, int(max_n))
        idx = ((head + np.arange(ready)) & lay.cq_mask) * 2
        tags = self.ring.cqes[idx].astype(np.int64)
        results = (self.ring.cqes[idx + 1] & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32).astype(np.int64)
        cq[lay.cq_head] = np.uint32((head + ready) & 0xFFFFFFFF)
        for t in tags.tolist():
            self._pending.pop(t, None)
        s = np.asarray(results)
        with self._stats_lock:
            self._c["ios"] += ready
            self._c["bytes_read"] += int(s[s > 0].sum())
        return Completions(tags=tags, results=results)

    def _close_engine(self) -> None:
        if getattr(self, "ring", None) is not None:
            self.ring.close()  # waits for / cancels anything in flight
        self._pending.clear()
        self._buffers.clear()


def uring_available() -> tuple[bool, str]:
    """``(True, "")`` if an io_uring can be created here, else ``(False, reason)``."""
    return _sys.ring_supported()


"""The IO engine contract (fio's split: queue / commit / reap) and what every engine shares.

An engine opens files (O_DIRECT unless the filesystem refuses and the engine
allows buffered reads), then either

* takes single reads with :meth:`IOEngine.queue`, sends them with
  :meth:`~IOEngine.commit` and collects them with :meth:`~IOEngine.reap`
  (the low-level contract, like fio's engines; no retries at this level), or
* reads a whole batch with :meth:`~IOEngine.read_many`, the workhorse: arrays
  of requests in, an :class:`~emulator.io.types.IOResult` out, ``queue_depth``
  reads in flight until all are done, short reads continued, EINTR/EAGAIN
  retried, persistent errors raised as :class:`~emulator.io.types.IOFailure`.

Pipelining: :meth:`~IOEngine.start` runs ``read_many`` on the engine's own
background thread and returns a :class:`ReadHandle`; :meth:`~IOEngine.wait`
blocks until it is done. The io_uring kernel runs without the GIL, so the
ring keeps the device busy while the caller's Numba kernels pool the previous
batch. One engine serves one batch at a time (a lock serialises callers);
``dest`` must not be touched between ``start`` and ``wait``.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from emulator.io import types as T
from emulator.io.types import Completions, IOCounters, IOFailure, IOResult
from tracegen.errors import InputError

_os_open = os.open  # indirection so tests can emulate a filesystem that refuses O_DIRECT


@dataclass(frozen=True)
class OpenFile:
    path: str
    fd: int
    direct: bool
    size_bytes: int


@dataclass(frozen=True)
class Requests:
    """Validated, contiguous request arrays (what engines' batch loops consume)."""

    file_ids: np.ndarray  # int64
    offsets: np.ndarray  # int64
    nbytes: np.ndarray  # int64
    dest: np.ndarray  # uint8, 1-D, C-contiguous, writeable
    dest_offsets: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.file_ids.shape[0])


@dataclass(frozen=True)
class BatchOutcome:
    nread: np.ndarray
    stats: np.ndarray  # int64[N_STATS], see types.ST_*
    latency_ns: np.ndarray | None
    submit_ns: np.ndarray | None = None  # per read, CLOCK_MONOTONIC ns (time.perf_counter_ns) of its submission


@dataclass(frozen=True)
class ReadHandle:
    """A ``read_many`` running on the engine's IO thread; pass it to :meth:`IOEngine.wait`."""

    future: Future

    def done(self) -> bool:
        return self.future.done()


def open_for_reading(path: str | os.PathLike, allow_buffered: bool) -> OpenFile:
    """Open ``path`` read-only with O_DIRECT; fall back to buffered only if allowed. Bad paths raise InputError."""
    path = os.fspath(path)
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        fd, direct = _os_open(path, flags | os.O_DIRECT), True
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path) from None
    except PermissionError:
        raise InputError("permission denied", path) from None
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise InputError(f"cannot open: {e.strerror}", path) from None
        if not allow_buffered:
            raise InputError("the filesystem does not support O_DIRECT; pass --buffered-io to read through "
                             "the page cache", path) from None
        fd, direct = _os_open(path, flags), False
    try:
        size = os.fstat(fd).st_size
    except OSError:
        os.close(fd)
        raise
    return OpenFile(path=path, fd=fd, direct=direct, size_bytes=int(size))


class IOEngine(ABC):
    """An engine reading into caller-owned, page-aligned uint8 buffers. Use as a context manager."""

    name = "abstract"

    def __init__(self, queue_depth: int, allow_buffered: bool = False,
                 direct_align_bytes: int = T.DIRECT_ALIGN_BYTES, clock: Callable[[], float] = time.perf_counter):
        if int(queue_depth) < 1:
            raise ValueError(f"queue_depth must be >= 1, got {queue_depth}")
        if direct_align_bytes < 1 or direct_align_bytes & (direct_align_bytes - 1):
            raise ValueError(f"direct_align_bytes must be a power of two, got {direct_align_bytes}")
        self.queue_depth = int(queue_depth)
        self.allow_buffered = bool(allow_buffered)
        self.direct_align_bytes = int(direct_align_bytes)
        self.clock = clock
        self.files: list[OpenFile | None] = []
        self._lock = threading.RLock()  # one batch at a time per engine
        self._executor_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._c = dict(ios=0, requests=0, bytes_read=0, retries=0, short_reads=0, syscalls=0,
                       busy_s=0.0, wait_s=0.0, max_in_flight=0)

    # -- files ----------------------------------------------------------------------------------

    def open(self, path: str | os.PathLike) -> int:
        """Open ``path`` for reading and return its file id (small int, used in requests)."""
        self._check_open()
        f = open_for_reading(path, self.allow_buffered)
        with self._lock:
            file_id = len(self.files)
            self.files.append(f)
            try:
                self._on_open(file_id, f)
            except BaseException:
                self.files[file_id] = None
                os.close(f.fd)
                raise
        return file_id

    def file(self, file_id: int) -> OpenFile:
        if not 0 <= file_id < len(self.files) or self.files[file_id] is None:
            raise ValueError(f"file id {file_id} is not open on this {self.name} engine")
        return self.files[file_id]

    def _on_open(self, file_id: int, f: OpenFile) -> None:
        """Hook: engines that register files do it here."""

    # -- the low-level contract -----------------------------------------------------------------

    @abstractmethod
    def queue(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int, tag: int) -> None:
        """Queue one read of ``nbytes`` at ``offset`` into ``dest[dest_offset:]``; ``tag`` comes back in reap."""

    @abstractmethod
    def commit(self) -> int:
        """Send everything queued to the device; returns how many reads were submitted."""

    @abstractmethod
    def reap(self, min_n: int = 1, max_n: int = 1 << 30) -> Completions:
        """Wait until at least ``min_n`` reads finished and return up to ``max_n`` of them."""

    # -- the workhorse --------------------------------------------------------------------------

    def read_many(self, file_ids, offsets, nbytes, dest: np.ndarray, dest_offsets, *,
                  latency: bool = False) -> IOResult:
        """Read every request into ``dest``, ``queue_depth`` at a time; raise IOFailure on a hard error."""
        self._check_open()
        return self._run(self.check_requests(file_ids, offsets, nbytes, dest, dest_offsets), latency)

    def _run(self, req: Requests, latency: bool) -> IOResult:
        with self._lock:
            self._check_open()
            t0, c0 = self.clock(), time.thread_time()
            out = self._read_batch(req, latency) if len(req) else BatchOutcome(
                np.zeros(0, np.int64), T.new_stats(), np.zeros(0, np.int64) if latency else None)
            elapsed = self.clock() - t0
            cpu = time.thread_time() - c0
        s = out.stats
        with self._stats_lock:
            c = self._c
            c["ios"] += int(s[T.ST_SUBMITTED])
            c["requests"] += len(req)
            c["bytes_read"] += int(s[T.ST_BYTES])
            c["retries"] += int(s[T.ST_RETRIES])
            c["short_reads"] += int(s[T.ST_SHORT])
            c["syscalls"] += int(s[T.ST_SYSCALLS])
            c["busy_s"] += elapsed
            c["max_in_flight"] = max(c["max_in_flight"], int(s[T.ST_MAX_IN_FLIGHT]))
        failed = int(s[T.ST_FAILED_INDEX])
        if failed == -2:
            raise IOFailure(int(s[T.ST_ERRNO]), f"<{self.name} ring>", 0, 0, what="io_uring_enter")
        if failed >= 0:
            f = self.files[int(req.file_ids[failed])]
            raise IOFailure(int(s[T.ST_ERRNO]), f.path, int(req.offsets[failed]), int(req.nbytes[failed]))
        return IOResult(
            nread=out.nread, ios=int(s[T.ST_SUBMITTED]), bytes_read=int(s[T.ST_BYTES]),
            retries=int(s[T.ST_RETRIES]), short_reads=int(s[T.ST_SHORT]),
            max_in_flight=int(s[T.ST_MAX_IN_FLIGHT]), syscalls=int(s[T.ST_SYSCALLS]),
            elapsed_s=elapsed, latency_ns=out.latency_ns, submit_ns=out.submit_ns, cpu_s=cpu,
        )

    @abstractmethod
    def _read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        """Engine-specific batch loop over validated requests (called under the engine lock)."""

    def check_requests(self, file_ids, offsets, nbytes, dest, dest_offsets) -> Requests:
        """Validate and normalise request arrays (ValueError/TypeError on misuse: these are program bugs)."""
        if not isinstance(dest, np.ndarray) or dest.dtype != np.uint8 or dest.ndim != 1:
            raise TypeError("dest must be a 1-D numpy uint8 array")
        if not dest.flags.c_contiguous or not dest.flags.writeable:
            raise ValueError("dest must be C-contiguous and writeable")
        arrs = [np.ascontiguousarray(a, dtype=np.int64).reshape(-1) for a in (file_ids, offsets, nbytes, dest_offsets)]
        fid, off, nb, doff = arrs
        n = fid.shape[0]
        if any(a.shape[0] != n for a in arrs):
            raise ValueError(f"request arrays differ in length: {[a.shape[0] for a in arrs]}")
        req = Requests(fid, off, nb, dest, doff)
        if n == 0:
            return req
        is_open = np.array([f is not None for f in self.files], dtype=bool)
        if fid.min() < 0 or fid.max() >= is_open.shape[0] or not is_open[fid].all():
            raise ValueError(f"file ids must be open files of this engine (0..{len(self.files) - 1})")
        if nb.min() <= 0 or nb.max() > T.MAX_READ_BYTES:
            raise ValueError(f"read lengths must be in 1..{T.MAX_READ_BYTES} bytes")
        if off.min() < 0 or doff.min() < 0 or int((doff + nb).max()) > dest.shape[0]:
            raise ValueError(f"offsets must be >= 0 and every read must fit in dest ({dest.shape[0]} bytes)")
        is_direct = np.array([f is not None and f.direct for f in self.files], dtype=bool)
        if is_direct.any():
            a = self.direct_align_bytes  # a power of two: one OR and one AND per read
            bad = ((off | nb | (doff + dest.ctypes.data)) & (a - 1)) != 0
            if not is_direct.all():
                bad &= is_direct[fid]
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ValueError(f"O_DIRECT read {k} (offset {off[k]}, {nb[k]} bytes, dest offset {doff[k]}) is not "
                                 f"aligned to {a} bytes (use emulator.io.aligned_empty for dest)")
        return req

    # -- pipelining -----------------------------------------------------------------------------

    def start(self, file_ids, offsets, nbytes, dest: np.ndarray, dest_offsets, *, latency: bool = False) -> ReadHandle:
        """Begin ``read_many`` on the engine's IO thread and return at once.

        The request arrays are copied; ``dest`` is not, so leave it alone until :meth:`wait`.
        """
        self._check_open()
        req = self.check_requests(file_ids, offsets, nbytes, dest, dest_offsets)  # fail here, not in the thread
        req = Requests(req.file_ids.copy(), req.offsets.copy(), req.nbytes.copy(), req.dest, req.dest_offsets.copy())
        with self._executor_lock:  # not the engine lock: a batch in flight holds that one
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"screc-io-{self.name}")
        return ReadHandle(self._executor.submit(self._run, req, latency))

    def wait(self, handle: ReadHandle) -> IOResult:
        """Block until a started read is done; its exception (IOFailure, ...) is raised here."""
        t0 = self.clock()
        try:
            return handle.future.result()
        finally:
            with self._stats_lock:
                self._c["wait_s"] += self.clock() - t0

    # -- counters and lifetime ------------------------------------------------------------------

    def counters(self) -> IOCounters:
        with self._stats_lock:
            return IOCounters(engine=self.name, **self._c)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"this {self.name} engine is closed")

    def close(self) -> None:
        """Finish pending work, release the ring / threads and close every file. Idempotent."""
        if self._closed:
            return
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            self._closed = True
            self._close_engine()
            for f in self.files:
                if f is not None:
                    os.close(f.fd)
            self.files = [None] * len(self.files)

    def _close_engine(self) -> None:
        """Hook: release engine resources (called once, under the lock, before files are closed)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

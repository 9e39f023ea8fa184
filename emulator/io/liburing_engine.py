"""The liburing engine: O_DIRECT reads through the ``liburing`` PyPI package (Python calls per read).

The design card's reader as it names it: ``io_uring_queue_init``,
``io_uring_get_sqe``, ``io_uring_prep_readv`` into page-aligned
``memoryview`` slices of the caller's ``dest`` (``io_uring_prep_read`` takes
only a ``bytearray``), ``io_uring_sqe_set_data64`` for tags, one
``io_uring_submit`` per round for every new read, and a reap of every ready
completion per round. It keeps the contract and the semantics of the other
engines (``queue_depth`` in flight, short reads continued, EINTR/EAGAIN
retried, end of file zero-filled and reported through ``nread``, hard errors
raised as :class:`~emulator.io.types.IOFailure`), but every read costs
several Python calls: measured on this 2-core machine (4 KiB random reads,
under load), about 2-3 us more CPU per read than
:class:`~emulator.io.uring.UringEngine` at queue depth 32-128 and about 10 us
more at depth 1, where the extra time also lengthens each read. The package
cannot reap CQEs in batches (``io_uring_peek_batch_cqe`` raises
NotImplementedError) and gives no access to the ring's memory; the closest it
has, ``CqeIter`` + ``io_uring_cq_advance``, is what this engine uses (about
2-3x cheaper per completion than ``io_uring_peek_cqe`` + ``io_uring_cqe_seen``,
whose empty-queue answer is an exception). UringEngine stays the fast one.

The package's waiting calls (``io_uring_wait_cqe``, ``io_uring_submit_and_wait``)
hold the GIL while the thread sleeps in the kernel, which would stall every
other Python thread, among them the caller of a pipelined :meth:`start`. So
by default the engine waits in ``select.poll`` on the ring's file descriptor
(GIL released) when it runs on its own IO thread, and with
``io_uring_submit_and_wait`` (one system call per round) otherwise.

Options (each with its default, fio style):

``queue_depth=128``
    Reads kept in flight by ``read_many`` (the ring gets this many SQ slots).
``registered_files=False``
    Register every opened file (``io_uring_register_files_sparse`` +
    ``io_uring_register_files_update``) and flag each SQE IOSQE_FIXED_FILE.
    Off by default: measured here it made no difference, the extra Python
    call per read eating what the kernel saves on file reference counting.
``cache_iovecs=True``
    Keep the ``Iovec`` of every (dest address, offset, length) seen, up to
    ``MAX_CACHED_IOVECS``, so reads into the same slots of a reused buffer skip
    building one (~0.4 us each). An Iovec holds raw addresses, so it stays
    right for any buffer later placed at the same address. When off, each
    read builds its own, kept alive until the read completes.
``release_gil=None``
    Wait with the GIL released (``True``), holding it (``False``), or only on
    the engine's IO thread (``None``).
``allow_buffered=False``
    Accept files on filesystems that refuse O_DIRECT, read through the page cache.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from collections import OrderedDict

import numpy as np

from emulator.io import types as T
from emulator.io.base import BatchOutcome, IOEngine, OpenFile, Requests
from emulator.io.types import Completions

try:  # the package is a declared dependency; still, a missing wheel should only disable this engine
    import liburing as _lu
    _IMPORT_ERROR = ""
except Exception as _e:  # pragma: no cover - depends on the installation
    _lu = None
    _IMPORT_ERROR = f"the liburing package cannot be imported: {_e}"

MAX_REGISTERED_FILES = 4096
MAX_CACHED_IOVECS = 1 << 16  # per engine, over at most MAX_CACHED_DESTS buffers
MAX_CACHED_DESTS = 8
MAX_RETRIES = 1000
POLL_TIMEOUT_MS = 100  # a safety net only: completions wake poll(2) on the ring fd
_RETRYABLE = (errno.EINTR, errno.EAGAIN)
_KEY_SHIFT = 31  # iovec cache key: dest_offset << 31 | nbytes (nbytes <= 2**30)


_PROBE = """
import liburing as lu
ring = lu.Ring()
try:
    lu.io_uring_queue_init(2, ring)
except OSError as e:
    print(f"io_uring_queue_init failed: {e.strerror} (errno {e.errno}); kernel too old or io_uring disabled")
    raise SystemExit(3)
lu.io_uring_queue_exit(ring)
"""
_probe_result: tuple[bool, str] | None = None


def liburing_available() -> tuple[bool, str]:
    """``(True, "")`` if the liburing package can create an io_uring here, else ``(False, reason)``.

    The check runs in a child process once per process: the package's wheel is
    compiled for newer CPUs than some machines have, and on those its first call
    kills the process with SIGILL instead of raising.
    """
    global _probe_result
    if _lu is None:
        return False, _IMPORT_ERROR
    if _probe_result is None:
        import signal
        import subprocess
        import sys

        try:
            proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            _probe_result = (False, f"the liburing probe could not run: {e}")
        else:
            if proc.returncode == 0:
                _probe_result = (True, "")
            elif proc.returncode == -signal.SIGILL:
                _probe_result = (False, "the liburing package's wheel uses instructions this CPU lacks (SIGILL)")
            else:
                why = (proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:] or ["unknown error"])
                why = why if isinstance(why, str) else why[0]
                _probe_result = (False, f"the liburing package cannot create a ring: {why}")
    return _probe_result


class LiburingEngine(IOEngine):
    name = "liburing"

    def __init__(self, queue_depth: int = 128, registered_files: bool = False, cache_iovecs: bool = True,
                 release_gil: bool | None = None, allow_buffered: bool = False, **kw):
        super().__init__(queue_depth, allow_buffered=allow_buffered, **kw)
        ok, why = liburing_available()
        if not ok:
            raise OSError(why)
        self.ring = _lu.Ring()
        _lu.io_uring_queue_init(self.queue_depth, self.ring)
        self._cqe = _lu.Cqe()
        self.registered_files = False
        if registered_files:
            try:
                _lu.io_uring_register_files_sparse(self.ring, MAX_REGISTERED_FILES)
                self.registered_files = True
            except OSError:
                pass  # kernel without sparse file tables: plain descriptors
        self.cache_iovecs = bool(cache_iovecs)
        self.release_gil = release_gil
        self._poller = select.poll()
        self._poller.register(self.ring.ring_fd, select.POLLIN)
        self._fds = np.full(16, -1, dtype=np.int64)  # file id -> fd, or registered slot
        self._aligns = np.ones(16, dtype=np.int64)  # file id -> O_DIRECT alignment (1: buffered)
        self._iovecs: OrderedDict[tuple[int, int], dict] = OrderedDict()  # (dest addr, len) -> {key: Iovec}
        self._n_iovecs = 0
        self._pending: dict[int, tuple] = {}  # low-level API: tag -> (dest, Iovec) kept alive while in flight
        self._queued = 0  # low-level API: SQEs prepared, not yet committed
        self._broken = ""

    def _on_open(self, file_id: int, f: OpenFile) -> None:
        if file_id >= self._fds.shape[0]:
            grow = self._fds.shape[0]
            self._fds = np.concatenate([self._fds, np.full(grow, -1, dtype=np.int64)])
            self._aligns = np.concatenate([self._aligns, np.ones(grow, dtype=np.int64)])
        self._aligns[file_id] = self.direct_align_bytes if f.direct else 1
        if self.registered_files:
            if file_id >= MAX_REGISTERED_FILES:
                raise ValueError(f"at most {MAX_REGISTERED_FILES} files per engine with registered_files=True")
            _lu.io_uring_register_files_update(self.ring, _lu.FileIndex([f.fd]), file_id)
            self._fds[file_id] = file_id
        else:
            self._fds[file_id] = f.fd

    # -- iovecs ---------------------------------------------------------------------------------

    def _iovec_cache(self, dest: np.ndarray) -> dict:
        """The Iovec cache of this buffer (an Iovec holds raw addresses: valid for any array at that address)."""
        if not self.cache_iovecs:
            return {}
        key = (dest.ctypes.data, dest.shape[0])
        cache = self._iovecs.get(key)
        if cache is None:
            while self._iovecs and (len(self._iovecs) >= MAX_CACHED_DESTS or self._n_iovecs >= MAX_CACHED_IOVECS):
                _, old = self._iovecs.popitem(last=False)
                self._n_iovecs -= len(old)
            cache = self._iovecs[key] = {}
        else:
            self._iovecs.move_to_end(key)
        return cache

    def _waits_without_gil(self) -> bool:
        if self.release_gil is not None:
            return self.release_gil
        return threading.current_thread().name.startswith(f"screc-io-{self.name}")

    # -- workhorse ------------------------------------------------------------------------------

    def _read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        if self._broken:
            raise RuntimeError(f"this liburing engine is unusable after an earlier failure: {self._broken}")
        if self._pending or self._queued:
            raise RuntimeError("read_many while low-level reads are queued or in flight; reap them first")
        lu, ring, cqe = _lu, self.ring, self._cqe
        get_sqe, prep, set_data, set_flags = (lu.io_uring_get_sqe, lu.io_uring_prep_readv, lu.io_uring_sqe_set_data64,
                                             lu.io_uring_sqe_set_flags)
        submit, submit_wait, get_events, cq_ready, cq_advance, CqeIter, Iovec = (
            lu.io_uring_submit, lu.io_uring_submit_and_wait, lu.io_uring_get_events, lu.io_uring_cq_ready,
            lu.io_uring_cq_advance, lu.CqeIter, lu.Iovec)
        fixed = lu.IOSQE_FIXED_FILE if self.registered_files else 0
        poll = self._poller.poll if self._waits_without_gil() else None
        now = time.perf_counter_ns
        n, qd = len(req), self.queue_depth
        stats = T.new_stats()
        fd_l = self._fds[req.file_ids].tolist()
        off_l, nb_l, doff_l = req.offsets.tolist(), req.nbytes.tolist(), req.dest_offsets.tolist()
        if req.dest.shape[0] < (1 << 32):
            key_l = ((req.dest_offsets << _KEY_SHIFT) | req.nbytes).tolist()
        else:
            key_l = [(d << _KEY_SHIFT) | b for d, b in zip(doff_l, nb_l)]
        cache = self._iovec_cache(req.dest)
        cache_room = MAX_CACHED_IOVECS - self._n_iovecs + len(cache) if self.cache_iovecs else 0
        cget = cache.get
        mv = memoryview(req.dest)
        nread = [0] * n
        t0 = [0] * n if latency else None
        lat = [0] * n if latency else None
        alive: dict[int, object] = {}  # uncached Iovecs of reads in flight
        retry: list[int] = []  # reads to submit again (short reads continued, EINTR/EAGAIN)
        tries: dict[int, int] = {}
        next_new, in_flight, n_resubmitted, unsent, syscalls, n_bytes = 0, 0, 0, False, 0, 0
        failed, fail_errno, max_in_flight = -1, 0, 0
        while True:
            # 1. fill the ring up to the queue depth: continuations and retries first, then new reads
            if retry and failed < 0:
                while in_flight < qd and retry:
                    i = retry.pop()
                    done = nread[i]
                    iov = alive[i] = Iovec([mv[doff_l[i] + done : doff_l[i] + nb_l[i]]])
                    sqe = get_sqe(ring)
                    prep(sqe, fd_l[i], iov, off_l[i] + done)
                    set_data(sqe, i)
                    if fixed:
                        set_flags(sqe, fixed)
                    in_flight += 1
                    n_resubmitted += 1
                    unsent = True
            if in_flight < qd and next_new < n and failed < 0:
                first = next_new
                next_new += qd - in_flight
                if next_new > n:
                    next_new = n
                for i in range(first, next_new):
                    sqe = get_sqe(ring)
                    iov = cget(key_l[i])
                    if iov is None:
                        iov = Iovec([mv[doff_l[i] : doff_l[i] + nb_l[i]]])
                        if len(cache) < cache_room:
                            cache[key_l[i]] = iov
                        else:
                            alive[i] = iov
                    prep(sqe, fd_l[i], iov, off_l[i])
                    set_data(sqe, i)
                    if fixed:
                        set_flags(sqe, fixed)
                in_flight += next_new - first
                unsent = True
                if in_flight > max_in_flight:
                    max_in_flight = in_flight
                if latency:
                    t0[first:next_new] = [now()] * (next_new - first)
            elif in_flight == 0:
                break
            # 2. one system call when possible: submit what is new, block for a completion only if none is ready
            try:
                if poll is None:
                    if unsent or not cq_ready(ring):
                        syscalls += 1
                        submit_wait(ring, 1)  # returns at once when a completion is already there
                else:
                    if unsent:
                        syscalls += 1
                        submit(ring)
                    if not cq_ready(ring):
                        syscalls += 1
                        if not poll(POLL_TIMEOUT_MS):  # never expected; run pending completion work, then look again
                            get_events(ring)
                unsent = False
            except OSError as e:
                if e.errno not in _RETRYABLE and e.errno != errno.EBUSY:
                    self._broken = f"io_uring_submit failed with errno {e.errno}"
                    stats[T.ST_FAILED_INDEX], stats[T.ST_ERRNO] = -2, e.errno
                    break  # reads in flight are abandoned with the ring (the engine refuses further use)
            # 3. consume every completion that is ready
            t_done = now() if latency else 0
            k = 0
            for _ in CqeIter(ring, cqe):
                c = cqe[0]
                i = c.user_data
                k += 1
                try:
                    res = c.res
                except OSError as e:  # the package raises for a negative result
                    res = -(e.errno or errno.EIO)
                done = nread[i]
                if res == nb_l[i] - done:  # the common case: finished in one go
                    nread[i] = done + res
                    n_bytes += res
                    if latency:
                        lat[i] = t_done - t0[i]
                    if alive:
                        alive.pop(i, None)
                    continue
                alive.pop(i, None)
                if res < 0:
                    if -res in _RETRYABLE and tries.get(i, 0) < MAX_RETRIES:
                        tries[i] = tries.get(i, 0) + 1
                        stats[T.ST_RETRIES] += 1
                        retry.append(i)
                    elif failed < 0:
                        failed, fail_errno = i, -res
                    continue
                done += res
                nread[i] = done
                n_bytes += res
                align = int(self._aligns[int(req.file_ids[i])])
                if res > 0 and res % align == 0:  # short, not at end of file: read the rest
                    stats[T.ST_RETRIES] += 1
                    retry.append(i)
                    continue
                stats[T.ST_SHORT] += 1  # end of file: never leave stale bytes behind
                req.dest[doff_l[i] + done : doff_l[i] + nb_l[i]] = 0
                if latency:
                    lat[i] = t_done - t0[i]
            if k:
                cq_advance(ring, k)
                in_flight -= k
        stats[T.ST_SUBMITTED] = next_new + n_resubmitted
        stats[T.ST_SYSCALLS] = syscalls
        stats[T.ST_MAX_IN_FLIGHT] = max_in_flight
        stats[T.ST_BYTES] = n_bytes
        if failed >= 0 and not self._broken:
            stats[T.ST_FAILED_INDEX], stats[T.ST_ERRNO] = failed, fail_errno
        if cache:
            self._n_iovecs = sum(len(c) for c in self._iovecs.values())
        return BatchOutcome(np.array(nread, dtype=np.int64), stats,
                            np.array(lat, dtype=np.int64) if latency else None,
                            np.array(t0, dtype=np.int64) if latency else None)

    # -- low-level contract (one read at a time; the package's own calls) ----------------------

    def queue(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int, tag: int) -> None:
        self._check_open()
        self.check_requests([file_id], [offset], [nbytes], dest, [dest_offset])
        tag = int(tag)
        if tag in self._pending:
            raise ValueError(f"tag {tag} is already in flight")
        sqe = _lu.io_uring_get_sqe(self.ring) if len(self._pending) < self.queue_depth else None
        if sqe is None:
            raise RuntimeError(f"{len(self._pending)} reads queued or in flight: reap before queueing more "
                               f"(ring has {self.queue_depth} slots)")
        d = int(dest_offset)
        iov = _lu.Iovec([memoryview(dest)[d : d + int(nbytes)]])
        _lu.io_uring_prep_readv(sqe, int(self._fds[file_id]), iov, int(offset))
        _lu.io_uring_sqe_set_data64(sqe, tag)
        if self.registered_files:
            _lu.io_uring_sqe_set_flags(sqe, _lu.IOSQE_FIXED_FILE)
        self._pending[tag] = (dest, iov)
        self._queued += 1

    def commit(self) -> int:
        self._check_open()
        if not self._queued:
            return 0
        while True:
            try:
                n = _lu.io_uring_submit(self.ring)
                break
            except InterruptedError:
                continue
        self._queued -= n
        return n

    def reap(self, min_n: int = 1, max_n: int = 1 << 30) -> Completions:
        self._check_open()
        min_n = min(int(min_n), len(self._pending) - self._queued)
        while _lu.io_uring_cq_ready(self.ring) < min_n:
            try:
                _lu.io_uring_wait_cqe_nr(self.ring, self._cqe, min_n)
            except InterruptedError:
                continue
        tags, results = [], []
        for _ in _lu.CqeIter(self.ring, self._cqe):
            if len(tags) >= max_n:
                break
            c = self._cqe[0]
            tags.append(c.user_data)
            try:
                results.append(c.res)
            except OSError as e:
                results.append(-(e.errno or errno.EIO))
        if tags:
            _lu.io_uring_cq_advance(self.ring, len(tags))
        for t in tags:
            self._pending.pop(t, None)
        with self._stats_lock:
            self._c["ios"] += len(tags)
            self._c["bytes_read"] += sum(r for r in results if r > 0)
        return Completions(tags=np.array(tags, dtype=np.int64), results=np.array(results, dtype=np.int64))

    def _close_engine(self) -> None:
        ring = getattr(self, "ring", None)
        if ring is None:
            return
        if self._queued:  # prepared, never sent: send them so that the drain below sees them complete
            try:
                _lu.io_uring_submit(ring)
                self._queued = 0
            except OSError:
                pass
        try:
            while self._pending and not self._queued and not self._broken:
                self.reap(min_n=len(self._pending))  # the kernel must not write into freed buffers
        except OSError:
            pass
        _lu.io_uring_queue_exit(ring)
        self.ring = None
        self._pending.clear()
        self._iovecs.clear()

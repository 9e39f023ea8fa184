"""The pread engine: ``os.preadv`` into aligned memoryviews, O_DIRECT too; threads reach QD > 1.

The portable baseline (fio's ``psync``): every read is one system call made
from Python, so it is slower per read than the io_uring engine, but it works
wherever Python does. ``queue_depth`` reads run at once on that many threads
(``preadv`` releases the GIL while the device works).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from emulator.io import types as T
from emulator.io.base import BatchOutcome, IOEngine, Requests
from emulator.io.types import Completions

MAX_RETRIES = 1000


class PreadEngine(IOEngine):
    name = "pread"

    def __init__(self, queue_depth: int = 1, allow_buffered: bool = False, **kw):
        super().__init__(queue_depth, allow_buffered=allow_buffered, **kw)
        self._pool: ThreadPoolExecutor | None = None
        self._queued: list[tuple[int, int, int, np.ndarray, int, int]] = []
        self._done_tags: list[int] = []
        self._done_results: list[int] = []

    def _read_one(self, file_id: int, offset: int, nbytes: int, view: memoryview, stats: np.ndarray) -> int:
        """Read fully (continuing short reads); returns bytes read, or -errno; zero-fills past end of file."""
        f = self.files[file_id]
        done, tries = 0, 0
        align = self.direct_align_bytes if f.direct else 1
        while done < nbytes:
            try:
                got = os.preadv(f.fd, [view[done:nbytes]], offset + done)
            except (BlockingIOError, InterruptedError) as e:
                tries += 1
                stats[T.ST_RETRIES] += 1
                if tries > MAX_RETRIES:
                    return -e.errno
                continue
            except OSError as e:
                return -(e.errno or 5)
            finally:
                stats[T.ST_SUBMITTED] += 1
                stats[T.ST_SYSCALLS] += 1
            done += got
            if got == 0 or (done < nbytes and got % align):
                view[done:nbytes] = bytes(nbytes - done)  # end of file: no stale bytes
                stats[T.ST_SHORT] += 1
                break
            if done < nbytes:
                stats[T.ST_RETRIES] += 1
        stats[T.ST_BYTES] += done
        return done

    def _run_slice(self, req: Requests, idx: range, nread: np.ndarray, lat: np.ndarray | None,
                   sub: np.ndarray | None = None) -> np.ndarray:
        stats = T.new_stats()
        mv = memoryview(req.dest)
        for i in idx:
            d, nb = int(req.dest_offsets[i]), int(req.nbytes[i])
            t0 = time.perf_counter_ns() if lat is not None else 0
            r = self._read_one(int(req.file_ids[i]), int(req.offsets[i]), nb, mv[d : d + nb], stats)
            if r < 0:
                stats[T.ST_FAILED_INDEX], stats[T.ST_ERRNO] = i, -r
                return stats
            nread[i] = r
            if lat is not None:
                lat[i] = time.perf_counter_ns() - t0
                sub[i] = t0
        return stats

    def _read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        n = len(req)
        nread = np.zeros(n, dtype=np.int64)
        lat = np.zeros(n, dtype=np.int64) if latency else None
        sub = np.zeros(n, dtype=np.int64) if latency else None
        workers = min(self.queue_depth, n)
        if workers <= 1:
            parts = [self._run_slice(req, range(n), nread, lat, sub)]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.queue_depth, thread_name_prefix="screc-pread")
            futs = [self._pool.submit(self._run_slice, req, range(k, n, workers), nread, lat, sub) for k in range(workers)]
            parts = [f.result() for f in futs]
        stats = T.new_stats()
        for s in parts:
            for k in (T.ST_SUBMITTED, T.ST_SYSCALLS, T.ST_RETRIES, T.ST_BYTES, T.ST_SHORT):
                stats[k] += s[k]
            if s[T.ST_FAILED_INDEX] >= 0 and stats[T.ST_FAILED_INDEX] < 0:
                stats[T.ST_FAILED_INDEX], stats[T.ST_ERRNO] = s[T.ST_FAILED_INDEX], s[T.ST_ERRNO]
        stats[T.ST_MAX_IN_FLIGHT] = max(1, workers)
        return BatchOutcome(nread, stats, lat, sub)

    # -- low-level contract: queue collects, commit reads (like fio's psync), reap hands back --

    def queue(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int, tag: int) -> None:
        self._check_open()
        self.check_requests([file_id], [offset], [nbytes], dest, [dest_offset])
        self._queued.append((int(file_id), int(offset), int(nbytes), dest, int(dest_offset), int(tag)))

    def commit(self) -> int:
        self._check_open()
        stats = T.new_stats()
        queued, self._queued = self._queued, []
        for file_id, offset, nbytes, dest, dest_offset, tag in queued:
            view = memoryview(dest)[dest_offset : dest_offset + nbytes]
            self._done_tags.append(tag)
            self._done_results.append(self._read_one(file_id, offset, nbytes, view, stats))
        with self._stats_lock:
            self._c["ios"] += int(stats[T.ST_SUBMITTED])
            self._c["bytes_read"] += int(stats[T.ST_BYTES])
        return len(queued)

    def reap(self, min_n: int = 1, max_n: int = 1 << 30) -> Completions:
        self._check_open()
        k = min(int(max_n), len(self._done_tags))
        tags, self._done_tags = self._done_tags[:k], self._done_tags[k:]
        res, self._done_results = self._done_results[:k], self._done_results[k:]
        return Completions(tags=np.array(tags, dtype=np.int64), results=np.array(res, dtype=np.int64))

    def _close_engine(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

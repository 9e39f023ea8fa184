"""The null engine (fio's ``null``): opens files for real, completes every read at once.

For tests and for measuring the overhead of everything around the IO.
``fill`` says what lands in the destination: ``"none"`` (untouched, the
cheapest), ``"zero"``, or ``"pattern"`` (byte ``k`` of a file reads as
:func:`null_pattern` ``(k)``, so tests can check that every byte went to the
right place). Reads past end of file are short and zero-filled, as on a real
file.
"""

from __future__ import annotations

import time

import numpy as np

from emulator.io import types as T
from emulator.io.base import BatchOutcome, IOEngine, Requests
from emulator.io.types import Completions

FILLS = ("none", "zero", "pattern")


def null_pattern(file_offsets: np.ndarray) -> np.ndarray:
    """The byte the null engine's ``"pattern"`` fill puts at each absolute file offset."""
    x = np.asarray(file_offsets, dtype=np.int64)
    return ((x >> 12) * 31 + x).astype(np.uint8)


class NullEngine(IOEngine):
    name = "null"

    def __init__(self, queue_depth: int = 128, fill: str = "none", allow_buffered: bool = False, **kw):
        super().__init__(queue_depth, allow_buffered=allow_buffered, **kw)
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
        self.fill = fill
        self._queued: list[tuple[int, int]] = []
        self._done: list[tuple[int, int]] = []

    def _complete(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int) -> int:
        got = int(min(nbytes, max(0, self.files[file_id].size_bytes - offset)))
        if self.fill == "pattern":
            dest[dest_offset : dest_offset + got] = null_pattern(np.arange(offset, offset + got))
        elif self.fill == "zero":
            dest[dest_offset : dest_offset + got] = 0
        if got < nbytes:
            dest[dest_offset + got : dest_offset + nbytes] = 0
        return got

    def _read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        n = len(req)
        sizes = np.array([f.size_bytes if f is not None else 0 for f in self.files], dtype=np.int64)
        nread = np.clip(sizes[req.file_ids] - req.offsets, 0, req.nbytes)
        if self.fill != "none" or (nread < req.nbytes).any():
            for i in np.flatnonzero((nread < req.nbytes) | (self.fill != "none")):
                self._complete(int(req.file_ids[i]), int(req.offsets[i]), int(req.nbytes[i]), req.dest,
                               int(req.dest_offsets[i]))
        stats = T.new_stats()
        stats[T.ST_SUBMITTED] = n
        stats[T.ST_BYTES] = int(nread.sum())
        stats[T.ST_SHORT] = int((nread < req.nbytes).sum())
        stats[T.ST_MAX_IN_FLIGHT] = min(self.queue_depth, n)
        now = time.perf_counter_ns()
        return BatchOutcome(nread, stats, np.zeros(n, dtype=np.int64) if latency else None,
                            np.full(n, now, dtype=np.int64) if latency else None)

    def queue(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int, tag: int) -> None:
        self._check_open()
        self.check_requests([file_id], [offset], [nbytes], dest, [dest_offset])
        self._queued.append((int(tag), self._complete(int(file_id), int(offset), int(nbytes), dest, int(dest_offset))))

    def commit(self) -> int:
        self._check_open()
        n = len(self._queued)
        self._done += self._queued
        self._queued = []
        return n

    def reap(self, min_n: int = 1, max_n: int = 1 << 30) -> Completions:
        self._check_open()
        k = min(int(max_n), len(self._done))
        got, self._done = self._done[:k], self._done[k:]
        return Completions(tags=np.array([t for t, _ in got], dtype=np.int64),
                           results=np.array([r for _, r in got], dtype=np.int64))

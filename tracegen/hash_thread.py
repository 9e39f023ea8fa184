"""A content hash fed in order on a thread of its own: ``hashlib`` releases the GIL on large buffers, so the
SHA-256 of a trace's bytes (about 1.6 GB/s on one core with SHA-NI) runs next to its generation and writing.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time

import numpy as np

QUEUE_BYTES = 256 << 20  # bytes waiting to be hashed before update() blocks (one larger buffer always fits)


class HashThread:
    """``hashlib.new(algorithm)`` updated on a background thread, in the order of :meth:`update` calls.

    :meth:`update` keeps a reference to its buffer until hashed: the caller must not modify it afterwards
    (hand over a copy if it will). Use as a context manager, or call :meth:`close` (or :meth:`abort`).
    """

    def __init__(self, algorithm: str = "sha256", queue_bytes: int = QUEUE_BYTES):
        self._h = hashlib.new(algorithm)
        self._queue_bytes = int(queue_bytes)
        self._items: collections.deque = collections.deque()
        self._queued = 0  # bytes in _items plus the buffer being hashed
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False  # a buffer taken off the queue is being hashed
        self.busy_s = self.stall_s = 0.0  # hashing; callers waiting for room in the queue
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._closed:
                    self._cv.wait()
                if not self._items:
                    return
                buf = self._items.popleft()
                self._busy = True
            t0 = time.perf_counter()
            self._h.update(buf)  # no lock held: the GIL is released for large buffers
            self.busy_s += time.perf_counter() - t0
            with self._cv:
                self._busy = False
                self._queued = max(0, self._queued - memoryview(buf).nbytes)
                self._cv.notify_all()

    def update(self, data: bytes | np.ndarray) -> None:
        """Hash ``data`` (bytes, or a C-contiguous array's bytes) after everything given before."""
        if isinstance(data, np.ndarray):
            if not data.flags.c_contiguous:
                raise ValueError("HashThread.update needs a C-contiguous array")
            data = data.reshape(-1).view(np.uint8)
        n = memoryview(data).nbytes
        with self._cv:
            if self._closed:
                raise ValueError("HashThread is closed")
            t0 = time.perf_counter()
            while self._queued and self._queued + n > self._queue_bytes:
                self._cv.wait()
            self.stall_s += time.perf_counter() - t0
            self._items.append(data)
            self._queued += n
            self._cv.notify_all()

    def _drain(self) -> None:
        with self._cv:
            while self._items or self._busy:
                self._cv.wait()

    def hexdigest(self) -> str:
        """The hex digest of everything given so far (waits until it is hashed)."""
        self._drain()
        return self._h.hexdigest()

    def close(self) -> None:
        """Hash what is queued and stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def abort(self) -> None:
        """Stop the thread, dropping what is queued (it finishes the buffer it is hashing)."""
        with self._cv:
            self._items.clear()
            self._queued = 0
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def __enter__(self) -> "HashThread":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

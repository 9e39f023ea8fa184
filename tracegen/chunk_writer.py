"""Appending to a chunked, fletcher32-checksummed 1-D HDF5 dataset by direct chunk writes, on a writer thread.

HDF5's own write path runs the fletcher32 filter one 16-bit word at a time (about 1 GB/s) with the GIL held.
:class:`ChunkAppender` instead fills whole chunks in its own buffers (narrowing int64 to the dataset's
type and checking each table's index range in the same Numba pass, :func:`narrow_copy`), and a writer
thread stores each full chunk with its checksum (:func:`tracegen.fletcher._fletcher32_words`, bit for bit
HDF5's) through ``H5Dwrite_chunk``: what HDF5 stores is byte for byte what its filter would have stored (the
last, partial chunk padded with the fill value 0, as HDF5 pads an edge chunk). Every HDF5 call of a file
being written (chunk stores, resizes, small writes) goes through one :class:`OrderedWriter` thread, in the
order the caller made them: HDF5 allocates file space in call order, so the same appends give the same
file, byte for byte.

A chunk stays in memory until it is full (a chunk spans batches), so only the dataset's extent must cover
it before it is written: the caller resizes the dataset before appending past its end.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import h5py
import numpy as np

from tracegen.atomic import start_writeback
from tracegen.fletcher import _fletcher32_words
from tracegen.jit import njit

BUFFER_BYTES = 64 << 20  # chunk buffers per dataset (4 to 16): one being filled, the others queued or written


@njit
def _narrow_copy(src: np.ndarray, dst: np.ndarray) -> tuple[np.int64, np.int64]:
    """``dst[:] = src`` (each value converted to ``dst``'s type); returns ``(min, max)`` of ``src``."""
    mn = np.int64(src[0])
    mx = mn
    for j in range(src.size):
        v = np.int64(src[j])
        dst[j] = v
        mn = min(mn, v)
        mx = max(mx, v)
    return mn, mx


def narrow_copy(src: np.ndarray, dst: np.ndarray) -> tuple[int, int]:
    """Copy ``src`` (int32 or int64) into ``dst`` (int32 or int64, as long) in one pass and return the minimum
    and maximum of ``src`` (``(0, -1)`` when empty), so a range check costs no second pass. Values outside
    ``dst``'s type wrap: check the returned range against the type (or tighter bounds) first."""
    for name, a in (("src", src), ("dst", dst)):
        if a.dtype not in (np.int32, np.int64) or a.ndim != 1 or not a.flags.c_contiguous:
            raise TypeError(f"narrow_copy: {name} must be a contiguous 1-D int32 or int64 array")
    if dst.size != src.size:
        raise ValueError(f"narrow_copy: {src.size} values into {dst.size}")
    if src.size == 0:
        return 0, -1
    mn, mx = _narrow_copy(src, dst)
    return int(mn), int(mx)


class OrderedWriter:
    """A thread running the calls given to :meth:`submit` one at a time, in order (all of a file's HDF5 calls,
    so that its layout does not depend on timing). A call that raises stops the others (their ``release``
    callbacks still run); the error is raised by the next :meth:`submit` or by :meth:`close`."""

    def __init__(self, name: str = "hdf5-writer"):
        self._todo: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            fn, args, release = item
            try:
                if not self._abort and self._error is None:
                    fn(*args)
            except BaseException as e:  # noqa: BLE001 - raised to the caller at its next call
                self._error = e
            finally:
                if release is not None:
                    release()

    def check(self) -> None:
        """Raise the error a call met, if any."""
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable, *args, release: Callable[[], None] | None = None) -> None:
        """Run ``fn(*args)`` after every call submitted before; ``release()`` after it, whatever happens."""
        self.check()
        self._todo.put((fn, args, release))

    def call(self, fn: Callable, *args):
        """Run ``fn(*args)`` in order and wait for its result."""
        done = threading.Event()
        out: list = []
        self.submit(lambda: out.append(fn(*args)), release=done.set)
        done.wait()
        self.check()
        return out[0]

    def close(self) -> None:
        """Run what is queued, stop the thread and raise the error a call met, if any."""
        self._todo.put(None)
        self._thread.join()
        self.check()

    def abort(self) -> None:
        """Stop the thread without running what is queued (the file is being thrown away)."""
        self._abort = True
        self._todo.put(None)
        self._thread.join()


class WritebackThread:
    """Starts the kernel writing a file's dirty pages (:func:`tracegen.atomic.start_writeback`) after every
    ``every_bytes`` reported by :meth:`written`, from a thread of its own: the request may block while the
    disk's queue is full, and the writer must not. The final fsync then has little left to wait for."""

    def __init__(self, fd: int, every_bytes: int):
        self._fd, self._every = int(fd), int(every_bytes)
        self._pending = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self.kicks = 0
        self._thread = threading.Thread(target=self._run, name="writeback", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            start_writeback(self._fd)
            self.kicks += 1

    def written(self, nbytes: int) -> None:
        """``nbytes`` more were written to the file."""
        with self._lock:
            self._pending += int(nbytes)
            if self._pending < self._every:
                return
            self._pending = 0
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (before the file's descriptor is closed)."""
        self._stop = True
        self._wake.set()
        self._thread.join()


class ChunkAppender:
    """Appends values to ``ds`` (1-D, chunked, with the fletcher32 filter, empty) chunk by chunk.

    :meth:`append` copies into the chunk being filled (from any integer array; see :meth:`append_checked`
    for a range check in the same pass); each full chunk is checksummed and stored on ``writer``'s thread.
    :meth:`close` submits the last, partial chunk (``writer.close()`` then waits for it). ``on_written(bytes)``
    is called on that thread after each chunk is stored.
    """

    def __init__(self, ds: h5py.Dataset, writer: OrderedWriter, on_written: Callable[[int], None] | None = None):
        if ds.ndim != 1 or ds.chunks is None or ds.shape[0] != 0:
            raise ValueError(f"{ds.name}: ChunkAppender needs an empty, chunked 1-D dataset")
        self.ds = ds
        self._writer = writer
        self._on_written = on_written
        self.dtype = ds.dtype
        self.chunk = int(ds.chunks[0])
        # one extra element of room: the checksum goes right after the data (4 bytes, in a uint32 view)
        extra = -(-4 // self.dtype.itemsize)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(min(16, max(4, BUFFER_BYTES // (self.chunk * self.dtype.itemsize)))):
            self._free.put(np.zeros(self.chunk + extra, self.dtype))
        self._nbytes = self.chunk * self.dtype.itemsize + 4
        self._buf = self._free.get()
        self._fill = 0  # elements in the chunk being filled
        self._next_chunk = 0  # index of the chunk being filled
        self._size = 0
        self.checksum_s = self.write_s = self.stall_s = 0.0  # writer thread: fletcher32, HDF5; caller: waits

    @property
    def size(self) -> int:
        """Values appended so far."""
        return self._size

    def _store(self, k: int, buf: np.ndarray) -> None:  # on the writer thread
        n = self.chunk * self.dtype.itemsize
        raw = buf.view(np.uint8)
        t0 = time.perf_counter()
        raw[n : n + 4].view(np.uint32)[0] = _fletcher32_words(raw[:n].view(np.uint16))
        t1 = time.perf_counter()
        self.ds.id.write_direct_chunk((k * self.chunk,), raw[: self._nbytes], 0)
        if self._on_written is not None:
            self._on_written(self._nbytes)
        self.checksum_s += t1 - t0
        self.write_s += time.perf_counter() - t1

    def _send(self) -> None:
        buf = self._buf
        self._writer.submit(self._store, self._next_chunk, buf, release=lambda: self._free.put(buf))
        self._next_chunk += 1
        self._fill = 0

    def _room(self) -> np.ndarray:
        """The free part of the chunk being filled (a full chunk is sent to the writer first)."""
        if self._fill == self.chunk:
            self._send()
            t0 = time.perf_counter()
            self._buf = self._free.get()  # waits while every buffer is queued: the writer sets the pace
            self.stall_s += time.perf_counter() - t0
        return self._buf[self._fill : self.chunk]

    def append(self, values: np.ndarray) -> None:
        """Append ``values`` (1-D), converted to the dataset's type as NumPy casts."""
        values = np.asarray(values).reshape(-1)
        pos = 0
        while pos < values.size:
            room = self._room()
            n = min(room.size, values.size - pos)
            room[:n] = values[pos : pos + n]
            self._fill += n
            self._size += n
            pos += n

    def append_checked(self, values: np.ndarray) -> tuple[int, int]:
        """Append ``values`` (contiguous 1-D int32/int64) into an int32/int64 dataset and return their
        ``(min, max)`` (``(0, -1)`` when empty), from the copy's own pass (:func:`narrow_copy`)."""
        mn, mx, pos = 0, -1, 0
        while pos < values.size:
            room = self._room()
            n = min(room.size, values.size - pos)
            lo, hi = narrow_copy(values[pos : pos + n], room[:n])
            mn, mx = (lo, hi) if pos == 0 else (min(mn, lo), max(mx, hi))
            self._fill += n
            self._size += n
            pos += n
        return mn, mx

    def close(self) -> None:
        """Submit the last chunk, padded with zeros (``writer.close()`` waits until it is stored)."""
        if self._fill:
            self._buf[self._fill : self.chunk] = 0
            self._send()

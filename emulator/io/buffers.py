"""Page-aligned uint8 buffers for O_DIRECT reads, and a pool that reuses them across batches.

Memory comes from anonymous ``mmap`` (always page aligned, zero-filled by the
kernel, returned to the OS when the last view is dropped); NumPy arrays are
zero-copy views of it.
"""

from __future__ import annotations

import mmap
import threading

import numpy as np

from emulator.io.types import PAGE_BYTES


def aligned_empty(nbytes: int, align: int = PAGE_BYTES) -> np.ndarray:
    """A 1-D uint8 array of ``nbytes`` whose first byte is ``align``-aligned (``align`` divides 4096, or
    is a multiple of it: larger alignments over-allocate and slice)."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    if align <= 0 or align & (align - 1):
        raise ValueError(f"align must be a power of two, got {align}")
    extra = max(0, align - mmap.PAGESIZE)
    raw = np.frombuffer(mmap.mmap(-1, max(1, nbytes) + extra), dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + max(1, nbytes)][:nbytes]  # (an empty slice would lose its address)


def is_aligned(arr: np.ndarray, align: int = PAGE_BYTES) -> bool:
    return arr.ctypes.data % align == 0


class AlignedBufferPool:
    """Hands out page-aligned uint8 buffers of at least the asked size and takes them back.

    Buffers are rounded up to ``granule_bytes`` (1 MiB by default) and kept for
    reuse, up to ``max_cached_bytes`` in total, so a replay loop that asks for
    similar sizes every batch allocates (and an io_uring engine registers)
    each buffer once. ``get`` returns a view of exactly the asked size; give it
    back with ``put``. Thread safe.
    """

    def __init__(self, granule_bytes: int = 1 << 20, max_cached_bytes: int = 1 << 30):
        if granule_bytes <= 0 or granule_bytes % PAGE_BYTES:
            raise ValueError(f"granule_bytes must be a positive multiple of {PAGE_BYTES}, got {granule_bytes}")
        self.granule_bytes = int(granule_bytes)
        self.max_cached_bytes = int(max_cached_bytes)
        self._free: list[np.ndarray] = []
        self._lent: dict[int, np.ndarray] = {}  # data address of a lent view -> its buffer
        self._lock = threading.Lock()
        self.allocations = 0

    def get(self, nbytes: int) -> np.ndarray:
        need = max(1, -(-int(nbytes) // self.granule_bytes)) * self.granule_bytes
        with self._lock:
            fits = [k for k, b in enumerate(self._free) if b.shape[0] >= need]
            buf = self._free.pop(min(fits, key=lambda k: self._free[k].shape[0])) if fits else None
        if buf is None:
            buf = aligned_empty(need)
            self.allocations += 1
        view = buf[: int(nbytes)]
        with self._lock:
            self._lent[view.ctypes.data] = buf
        return view

    def put(self, view: np.ndarray) -> None:
        """Give back a buffer from :meth:`get` (anything else is ignored)."""
        with self._lock:
            buf = self._lent.pop(view.ctypes.data, None)
            if buf is not None and self._cached_bytes() + buf.shape[0] <= self.max_cached_bytes:
                self._free.append(buf)

    def _cached_bytes(self) -> int:
        return sum(b.shape[0] for b in self._free)

    @property
    def cached_bytes(self) -> int:
        with self._lock:
            return self._cached_bytes()

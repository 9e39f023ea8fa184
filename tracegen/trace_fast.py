"""The fast read path of a trace's ``indices`` and ``offsets`` (and ``batch_ptr``, read once at open):
``os.preadv`` straight from the file.

h5py's slicing of these datasets runs at 1-1.6 GB/s (per-call overhead, HDF5's chunk cache and its
fletcher32 filter summing one 16-bit word at a time), about 1 ms per batch of a criteo-sized trace. Here
each dataset's chunk table (the file byte offset of every chunk) is read once at open through h5py's
low-level API, and element ranges are then read with ``os.preadv``: a chunk that a range covers whole
goes straight into the caller's array, the others into a window of consecutive chunks side by side (a
range spanning chunks is then a slice of it, and the chunk a batch ended in is still there for the next).
:class:`ArrayPool` recycles the batches' arrays once the caller has dropped them (fresh ones cost their
page faults every time).

The fletcher32 checksum HDF5 would verify is verified here too, by :func:`fletcher32` (a Numba kernel
giving HDF5's value bit for bit): a corrupted byte is still an error, never wrong data. A short read (a
truncated file) or a checksum mismatch raises :class:`RawReadError`, an ``OSError`` like h5py's own.

Which chunk holds which elements comes from HDF5's chunk index, which the earliest file format (traces
written before ``TraceWriter`` used ``libver=("v110", "v110")``) does not checksum: a flipped byte there could
hand out another chunk, whose own checksum is fine. :func:`open_checked` therefore checks the index first
(every chunk listed once at a valid element offset, of its full size, no two overlapping in the file), and
:class:`CheckedDataset` checks that HDF5 finds each chunk h5py reads where it is listed: a corrupt index is
a :class:`RawReadError` too.

:func:`open_raw` returns ``None`` -- read through h5py -- unless both the file and the dataset are plain:
the ``sec2`` driver on a regular file, no user block, a little-endian machine, a 1-D dataset of exactly the
expected little-endian integer type, contiguous or chunked layout, no external storage and no filter other
than fletcher32.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import weakref

import h5py
import numpy as np

from tracegen.fletcher import FLETCHER_LEN as _FLETCHER_LEN
from tracegen.fletcher import _fletcher32_words, _fletcher_matches, fletcher32  # noqa: F401 (re-exported)

_WINDOW_BYTES = 8 << 20  # RawDataset.view's window of consecutive chunks (at least 4 chunks)


class RawReadError(OSError):
    """A short read or a checksum mismatch: the file is truncated or corrupt."""




def file_handle(f: h5py.File) -> int | None:
    """A duplicate of ``f``'s file descriptor when raw reads are safe, else ``None``.

    Duplicated from h5py's own descriptor, so it is the very file h5py opened (a rename in between cannot
    swap it); the caller owns it (see :class:`RawFile`).
    """
    try:
        if sys.byteorder != "little" or f.driver != "sec2" or f.userblock_size != 0:
            return None
        fd = os.dup(int(f.id.get_vfd_handle()))
    except Exception:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


class RawFile:
    """Owns the duplicated descriptor; closed by :meth:`close` or, at the latest, when collected."""

    def __init__(self, fd: int):
        self.fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        self.lock = threading.RLock()  # the datasets' windows are shared state

    def close(self) -> None:
        self._finalizer()


class ArrayPool:
    """Hands out int64 arrays, reusing one once nothing but the pool refers to it any more.

    A fresh array of a few hundred KiB pays its page faults (and the kernel's zeroing) again and again,
    since glibc gives a freed heap top back to the kernel: for a criteo-sized batch that costs as much as
    reading it. A reader's batches are usually dropped a batch or two later, so their arrays come back
    here. "Nothing refers to it" is the array's reference count being that of an array held by the pool
    alone (measured at start, not assumed): a batch, a view, a memoryview or a container holding the array
    all count, so an array still in use is never handed out again.
    """

    def __init__(self, slots: int = 8, max_bytes: int = 64 << 20):
        self._slots, self._max_bytes = slots, max_bytes  # at most ``slots`` arrays, ``max_bytes`` in all
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._arrays.append(np.empty(0, np.int64))
        self._alone = self._refs(0)
        self._arrays.clear()

    def _refs(self, k: int) -> int:
        return sys.getrefcount(self._arrays[k])

    def take(self, n: int, slack: bool = False) -> np.ndarray:
        """An int64 array of ``n`` elements (a view of a pooled one when that one is longer); ``slack``
        makes a new array 1/8 longer, room for the next batch's if it is a little longer."""
        with self._lock:
            arrays = self._arrays
            for k in range(len(arrays) - 1, -1, -1):  # the most recently handed out first: cache-warm
                if arrays[k].size >= n and self._refs(k) == self._alone:
                    a = arrays.pop(k)
                    arrays.append(a)
                    return a if a.size == n else a[:n]
            a = np.empty(n + (n // 8 if slack else 0), np.int64)
            if len(arrays) >= self._slots:
                arrays.pop(0)
            while arrays and sum(x.nbytes for x in arrays) + a.nbytes > self._max_bytes:
                arrays.pop(0)
            if a.nbytes <= self._max_bytes:
                arrays.append(a)
            return a if a.size == n else a[:n]


class RawDataset:
    """Element ranges of one 1-D dataset, read with ``os.preadv`` (build with :func:`open_raw`).

    A chunk with a checksum is read whole: straight into the caller's array when a range covers it,
    else into a window where consecutive chunks sit side by side (so a range spanning chunks is a plain
    slice, and the chunk a range ended in is still there for the next, neighbouring range).
    """

    def __init__(self, raw: RawFile, name: str, dtype: np.dtype, size: int, chunk: int, starts: np.ndarray,
                 fletcher: bool):
        self.raw, self.name, self.dtype, self.size = raw, name, np.dtype(dtype), int(size)
        self.chunk = int(chunk)  # elements per chunk; 0 for the contiguous layout (``starts[0]`` is its offset)
        self.starts = [int(s) for s in starts]  # file byte offset of each chunk, in element order
        self.fletcher = fletcher
        self._trailer = np.zeros(_FLETCHER_LEN, np.uint8)
        self._win_chunks = max(4, _WINDOW_BYTES // max(1, self.chunk * self.dtype.itemsize))
        self._win = np.empty(0, self.dtype)  # chunks _win_first, _win_first + 1, ... side by side
        self._win_ids: list[int] = []  # the chunk each window slot holds (checked), or -1
        self._win_first = 0
        self._stage = np.empty(0, self.dtype)

    def _span(self, lo: int, hi: int) -> tuple[int, int]:
        if not 0 <= lo <= hi <= self.size:
            raise IndexError(f"{self.name}[{lo}:{hi}] outside 0..{self.size}")
        return (lo // self.chunk, (hi - 1) // self.chunk) if self.chunk and hi > lo else (0, -1)

    def view(self, lo: int, hi: int) -> np.ndarray:
        """Elements ``[lo, hi)`` as a view of an internal buffer, valid until the next call: not to keep.

        No copy for a range within the window; others (wider than the window, or from a dataset
        without checksums) are read into a reused buffer. Raises :class:`RawReadError`.
        """
        k0, k1 = self._span(lo, hi)
        if self.fletcher and 0 < k1 - k0 + 1 <= self._win_chunks:
            with self.raw.lock:
                return self._window(lo, hi, k0, k1)
        n = hi - lo
        if self._stage.size < n:
            self._stage = np.empty(n + n // 8, self.dtype)
        return self.read(lo, hi, self._stage[:n])

    def read(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """Elements ``[lo, hi)`` into ``out`` (a new array when ``None``); raises :class:`RawReadError`."""
        k0, k1 = self._span(lo, hi)
        n = hi - lo
        if out is None:
            out = np.empty(n, self.dtype)
        elif out.shape != (n,) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous {self.dtype} array of {n} elements")
        isz = self.dtype.itemsize
        if self.chunk == 0:
            if n:
                self._pread([out], self.starts[0] + lo * isz)
            return out
        c = self.chunk
        with self.raw.lock:
            for k in range(k0, k1 + 1):
                c_lo = k * c
                a, b = max(lo, c_lo), min(hi, c_lo + c)
                dst = out[a - lo : b - lo]
                if not self.fletcher:
                    self._pread([dst], self.starts[k] + (a - c_lo) * isz)
                elif b - a == c:  # the whole chunk: straight into out, then its checksum
                    self._pread([dst, self._trailer], self.starts[k])
                    self._check(dst, self._trailer, k)
                else:
                    dst[:] = self._window(a, b, k, k)
        return out

    def _window(self, lo: int, hi: int, k0: int, k1: int) -> np.ndarray:
        """``[lo, hi)`` (chunks ``k0..k1``, at most the window's size) as a view of the window."""
        c, w = self.chunk, self._win_chunks
        if self._win.size == 0:
            self._win = np.empty(w * c, self.dtype)
            self._win_ids = [-1] * w
        first = self._win_first
        if k0 < first or k1 >= first + w:  # move the window to start at k0, keeping chunk k0 if held
            ids = [-1] * w
            if first < k0 < first + w and self._win_ids[k0 - first] == k0:
                self._win[:c] = self._win[(k0 - first) * c : (k0 - first + 1) * c]
                ids[0] = k0
            self._win_first, self._win_ids, first = k0, ids, k0
        for k in range(k0, k1 + 1):
            slot = k - first
            if self._win_ids[slot] != k:
                self._win_ids[slot] = -1
                data = self._win[slot * c : (slot + 1) * c]
                self._pread([data, self._trailer], self.starts[k])
                self._check(data, self._trailer, k)
                self._win_ids[slot] = k
        return self._win[lo - first * c : hi - first * c]

    def _check(self, data: np.ndarray, trailer: np.ndarray, k: int) -> None:
        stored = int(trailer.view("<u4")[0])
        if not _fletcher_matches(stored, int(_fletcher32_words(data.view(np.uint16)))):
            raise RawReadError(f"{self.name}: chunk {k} at byte {self.starts[k]}: "
                               "data error detected by Fletcher32 checksum")

    def _pread(self, bufs: list[np.ndarray], offset: int) -> None:
        """Fill ``bufs`` from ``offset``; a read ending early (end of file) is an error."""
        views = [memoryview(b).cast("B") for b in bufs]
        want = sum(len(v) for v in views)
        got = os.preadv(self.raw.fd, views, offset)
        while got < want:  # regular files read short only at their end; finish (or find the end) the slow way
            more = 0
            pos = got
            for v in views:
                if pos < len(v):
                    more = os.preadv(self.raw.fd, [v[pos:]], offset + got)
                    break
                pos -= len(v)
            if more == 0:
                raise RawReadError(f"{self.name}: truncated: the file ends at byte {offset + got}, inside "
                                   f"bytes {offset}..{offset + want} of its data")
            got += more


def chunk_table(ds: h5py.Dataset) -> tuple[int, np.ndarray, np.ndarray] | None:
    """``(chunk length, file byte offset of each chunk, its stored size)``, chunks in element order, from one
    pass over HDF5's index of a chunked 1-D dataset (``None`` for any other dataset); raises
    :class:`RawReadError` unless the index is consistent.

    Consistent: each of the dataset's chunks listed once, at an element offset that is a multiple of the
    chunk length, none missing or beyond the dataset's end (every element of a trace was written, so a
    missing chunk can only be a corrupt index), none with a mandatory filter (fletcher32) skipped, and of
    exactly the stored size when the filters fix it. Indexes of the earliest file format (v1 B-trees) carry
    no checksum: this is what turns a flipped byte in one into an error rather than another chunk's data.
    """
    if ds.ndim != 1 or ds.chunks is None:
        return None
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    mandatory = sum(1 << i for i, flt in enumerate(filters) if not flt[1] & h5py.h5z.FLAG_OPTIONAL)
    c, isz = int(ds.chunks[0]), ds.dtype.itemsize
    n_chunks = -(-int(ds.shape[0]) // c)
    exact = {(): c * isz, (h5py.h5z.FILTER_FLETCHER32,): c * isz + _FLETCHER_LEN}.get(tuple(f[0] for f in filters))
    starts, sizes = np.full(n_chunks, -1, np.int64), np.zeros(n_chunks, np.int64)
    infos = []
    if n_chunks:
        if hasattr(ds.id, "chunk_iter"):
            ds.id.chunk_iter(infos.append)  # one pass over the chunk index
        else:
            infos = [ds.id.get_chunk_info(k) for k in range(ds.id.get_num_chunks())]
    for info in infos:
        at = -1 if info.chunk_offset is None else int(info.chunk_offset[0])
        k, r = divmod(at, c)
        if r or not 0 <= k < n_chunks:
            problem = f"a chunk listed at element {at} (chunks of {c} of {int(ds.shape[0])} elements)"
        elif starts[k] >= 0:
            problem = f"chunk {k} listed twice"
        elif info.byte_offset is None or info.byte_offset < 0:
            problem = f"chunk {k} listed without a file address"
        elif info.filter_mask & mandatory:
            problem = f"chunk {k} listed with a filter skipped (mask {info.filter_mask:#x})"
        elif info.size <= 0 or exact is not None and info.size != exact:
            problem = f"chunk {k} listed with {info.size} bytes" + (f", not {exact}" if exact else "")
        else:
            starts[k], sizes[k] = info.byte_offset, info.size
            continue
        raise RawReadError(f"{ds.name}: chunk index is corrupt: {problem}")
    missing = np.flatnonzero(starts < 0)
    if missing.size:
        raise RawReadError(f"{ds.name}: chunk index is corrupt: chunk {int(missing[0])} of {n_chunks} not listed")
    return c, starts, sizes


def check_chunk_tables(tables: dict[str, tuple[int, np.ndarray, np.ndarray] | None]) -> None:
    """The chunks of all the datasets occupy disjoint byte ranges of the file (see :func:`chunk_table`): an
    index entry pointing at another chunk is a :class:`RawReadError`."""
    names = [n for n, t in tables.items() if t is not None]
    if not names:
        return
    starts = np.concatenate([tables[n][1] for n in names])
    ends = starts + np.concatenate([tables[n][2] for n in names])
    order = np.argsort(starts, kind="stable")
    clash = np.flatnonzero(starts[order][1:] < ends[order][:-1])
    if clash.size:
        owner = np.repeat(np.arange(len(names)), [tables[n][1].size for n in names])
        first = np.concatenate([np.arange(tables[n][1].size) for n in names])
        a, b = order[clash[0]], order[clash[0] + 1]
        raise RawReadError(f"{names[owner[b]]}: chunk index is corrupt: chunk {first[b]} at byte {starts[b]} overlaps "
                           f"{names[owner[a]]} chunk {first[a]} at bytes {starts[a]}..{ends[a]}")


class CheckedDataset:
    """Slices of an h5py dataset (``ds[lo:hi]``), each chunk first seen found by HDF5 where
    :func:`chunk_table` listed it.

    HDF5 reads a chunk after searching its index, and a v1 B-tree search also compares bytes of its keys that
    a pass over the index (:func:`chunk_table`) never reports (the keys of its inner nodes, and an element-size
    coordinate in every key): corrupted, the chunk is not found and h5py reads the fill value (zeros) instead.
    So before a chunk's first read, ``read_direct_chunk`` (the same search) must find it, with the listed size.
    That reads it once more: h5py's path is the slow one already, for traces :func:`open_raw` cannot read.
    """

    def __init__(self, ds: h5py.Dataset, table: tuple[int, np.ndarray, np.ndarray]):
        self.ds, self.dtype, self.shape, self.name = ds, ds.dtype, ds.shape, ds.name
        self._chunk, _, self._sizes = table
        self._found = np.zeros(self._sizes.size, bool)

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, _ = key.indices(self.shape[0])  # h5py takes steps >= 1 only: the elements lie in [lo, hi)
        for k in range(lo // self._chunk, -(-hi // self._chunk)) if hi > lo else ():
            if not self._found[k]:
                try:
                    _, data = self.ds.id.read_direct_chunk((k * self._chunk,))
                except Exception:
                    data = None
                if data is None or len(data) != self._sizes[k]:
                    raise RawReadError(f"{self.name}: chunk index is corrupt: chunk {k} is not found where "
                                       "it is listed")
                self._found[k] = True
        return self.ds[key]


def open_checked(f: h5py.File, dtypes: dict[str, np.dtype | None]
                 ) -> tuple[RawFile | None, dict[str, RawDataset | None], dict[str, h5py.Dataset | CheckedDataset]]:
    """Check the chunk indexes of the datasets named in ``dtypes`` (:func:`chunk_table`,
    :func:`check_chunk_tables`) and open a raw reader (:func:`open_raw`) of each whose dtype is given, where
    the file and the dataset allow it.

    Returns the :class:`RawFile` (``None`` when no dataset is read raw), the raw readers (``None``: use h5py)
    and the datasets to slice when reading through h5py (a :class:`CheckedDataset` when chunked); raises
    :class:`RawReadError` for an inconsistent index.
    """
    tables = {name: chunk_table(f[name]) for name in dtypes}
    check_chunk_tables(tables)
    fd = file_handle(f)
    raw = None if fd is None else RawFile(fd)
    readers: dict[str, RawDataset | None] = {}
    try:
        for name, dtype in dtypes.items():
            readers[name] = None if raw is None or dtype is None else open_raw(raw, f[name], dtype, tables[name])
    except BaseException:
        if raw is not None:
            raw.close()
        raise
    if raw is not None and all(r is None for r in readers.values()):
        raw.close()
        raw = None
    return raw, readers, {n: f[n] if t is None else CheckedDataset(f[n], t) for n, t in tables.items()}


def open_raw(raw: RawFile, ds: h5py.Dataset, dtype,
             table: tuple[int, np.ndarray, np.ndarray] | None = None) -> RawDataset | None:
    """A raw reader of ``ds`` if it is plain (see the module docstring), else ``None`` (use h5py).

    ``table`` is the dataset's :func:`chunk_table` when already made; an inconsistent index is a
    :class:`RawReadError`.
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    try:
        if ds.ndim != 1 or ds.dtype != dtype or ds.dtype.byteorder not in ("<", "=") or ds.external:
            return None
        dcpl = ds.id.get_create_plist()
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        if filters not in ([], [h5py.h5z.FILTER_FLETCHER32]):
            return None
        fletcher = bool(filters)
        size, isz = int(ds.shape[0]), dtype.itemsize
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            if fletcher:
                return None
            off = ds.id.get_offset()
            if size and (off is None or ds.id.get_storage_size() != size * isz):
                return None
            return RawDataset(raw, ds.name, dtype, size, 0, np.array([off or 0]), False)
        if layout != h5py.h5d.CHUNKED or ds.chunks is None:
            return None
    except Exception:  # anything unexpected in the low-level API: h5py's own path will do
        return None
    c, starts, _ = chunk_table(ds) if table is None else table  # consistent, every chunk of its full size
    return RawDataset(raw, ds.name, dtype, size, c, starts, fletcher)

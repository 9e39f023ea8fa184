"""The HDF5 trace format: batches of table-major CSR lookups, streamed.

Layout of one trace file (``format = "screc-trace"``, ``format_version = 1``):

``indices``  (int32 or int64, total lookups)
    Row ids, local to their table, all batches concatenated.
``offsets``  (int64, num_batches * (T*B + 1))
    Per batch, the table-major CSR offsets of length ``T*B + 1`` relative to
    the batch's first index (so every block starts at 0): bag ``(t, b)`` of
    batch ``i`` is ``indices[batch_ptr[i] + o[t*B + b] : batch_ptr[i] + o[t*B + b + 1]]``,
    exactly Meta's dlrm_datasets convention within one batch.
``batch_ptr`` (int64, num_batches + 1)
    Where each batch starts in ``indices``.

Attributes: ``format``, ``format_version``, ``spec`` (model spec JSON),
``params`` (generator parameters JSON), ``seed``, ``batch_size``,
``num_tables``, ``num_batches``, ``num_lookups`` and ``trace_id`` (a SHA-256
content hash of the spec and every batch, computed while writing, which plans
use to name the trace they were made for), and ``attrs_crc32`` (a CRC32 of
the other attributes; text attributes are fixed-length strings, see
:mod:`tracegen.trace_attrs`). Every dataset is chunked with HDF5's fletcher32
filter, and the file is written in HDF5's 1.10 format (``WRITE_LIBVER``), whose
superblock, object headers and chunk indexes carry checksums too, so a corrupted
byte anywhere is an error on read. Traces in the earliest format (written before)
still read, their chunk indexes checked for consistency instead (see
:mod:`tracegen.trace_fast`); traces written before the fletcher32 checksums existed
read without the checks.

Files are written under a temporary name and renamed into place when closed,
so a trace that exists is complete. Reading is batch by batch: a trace larger
than memory is normal. ``indices`` and ``offsets`` are read with ``os.preadv``
from their chunks' file offsets when the file allows it (see
:mod:`tracegen.trace_fast`, which also verifies the fletcher32 checksums),
else through h5py; either way the batches are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from tracegen.atomic import atomic_path, is_temporary_sibling, release_reserve, reserve_space
from tracegen.errors import InputError
from tracegen.jit import njit
from tracegen.spec import ModelSpec
from tracegen.trace_attrs import ATTRS_CRC, attrs_crc32, fixed_text, plain
from tracegen.trace_fast import ArrayPool, RawFile, open_checked

TRACE_FORMAT = "screc-trace"
TRACE_FORMAT_VERSION = 1
_CHUNK = 1 << 20
_STREAM_RUN = 1 << 24  # table-by-table batches reach the file in runs of at least 16M lookups
WRITE_LIBVER = ("v110", "v110")  # checksummed metadata (superblock v3, v2 object headers and chunk indexes)


@dataclass(frozen=True)
class Batch:
    """One batch: ``T*B`` bags in table-major CSR."""

    index: int
    indices: np.ndarray  # int64, all lookups of the batch
    offsets: np.ndarray  # int64, length T*B + 1, starting at 0
    num_tables: int
    batch_size: int

    @property
    def num_lookups(self) -> int:
        return int(self.offsets[-1])

    def table(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and offsets (rebased to 0, length B+1) of table ``t``."""
        B = self.batch_size
        off = self.offsets[t * B : (t + 1) * B + 1]
        lo, hi = int(off[0]), int(off[-1])
        return self.indices[lo:hi], off - lo

    def table_bounds(self) -> np.ndarray:
        """Start of each table's lookups in ``indices`` (length T+1)."""
        return self.offsets[:: self.batch_size][: self.num_tables + 1]


def check_csr(offsets: np.ndarray, num_lookups: int, what: str, path: str | os.PathLike | None) -> None:
    """Offsets must start at 0, never decrease, and end at ``num_lookups``."""
    if offsets.size == 0 or offsets[0] != 0:
        raise InputError(f"{what}: offsets do not start at 0", path)
    if offsets.size > 1 and np.any(np.diff(offsets) < 0):
        raise InputError(f"{what}: offsets are not monotonic (negative bag length)", path)
    if offsets[-1] != num_lookups:
        raise InputError(f"{what}: last offset {int(offsets[-1])} != number of indices {num_lookups}", path)


def check_rows(batch: Batch, rows: np.ndarray, path: str | os.PathLike | None) -> None:
    """Every index of table ``t`` must lie in ``[0, rows[t])``."""
    bounds = batch.table_bounds()
    for t in range(batch.num_tables):
        idx = batch.indices[bounds[t] : bounds[t + 1]]
        if idx.size == 0:
            continue
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows[t]:
            bad = lo if lo < 0 else hi
            raise InputError(
                f"batch {batch.index}: index {bad} out of range for table {t} with {int(rows[t])} rows", path
            )


@njit
def _check_batch(offsets: np.ndarray, src: np.ndarray, dst: np.ndarray, rows: np.ndarray, batch_size: int):
    """The checks of :func:`check_csr` then :func:`check_rows` in one pass: ``(code, table, value)``.

    Codes: 0 fine; 1 offsets empty or not starting at 0; 2 a negative bag length; 3 the last offset
    (``value``) is not the number of indices; 4 ``table`` is the first table holding an index outside
    ``[0, rows[table])`` and ``value`` its minimum if negative, else its maximum (as check_rows reports).
    When ``dst`` has the size of ``src``, the indices are also copied (widened) into it on the way.
    """
    n = offsets.size
    if n == 0 or offsets[0] != 0:
        return 1, -1, np.int64(0)
    bad = False
    for i in range(1, n):  # no early exit: the loop vectorises
        bad |= offsets[i] < offsets[i - 1]
    if bad:
        return 2, -1, np.int64(0)
    if offsets[n - 1] != src.size:
        return 3, -1, np.int64(offsets[n - 1])
    widen = dst.size == src.size
    for t in range(rows.size):
        lo, hi = offsets[t * batch_size], offsets[(t + 1) * batch_size]
        if hi > lo:
            s = src[lo:hi]  # slices, not range(lo, hi): only these loops vectorise
            mn = np.int64(s[0])
            mx = mn
            if widen:
                d = dst[lo:hi]
                for j in range(s.size):
                    v = np.int64(s[j])
                    d[j] = v
                    mn = v if v < mn else mn
                    mx = v if v > mx else mx
            else:
                for j in range(s.size):
                    v = np.int64(s[j])
                    mn = v if v < mn else mn
                    mx = v if v > mx else mx
            if mn < 0 or mx >= rows[t]:
                return 4, t, mn if mn < 0 else mx
    return 0, -1, np.int64(0)


def check_batch(offsets: np.ndarray, indices: np.ndarray, rows: np.ndarray, batch_size: int, index: int,
                path: str | os.PathLike | None, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`check_csr` (as ``batch {index}``) then :func:`check_rows` in one Numba pass, same messages.

    ``offsets`` (int64, length ``T*B + 1``), ``indices`` (int32 or int64) and ``rows`` (int64, length ``T``)
    are contiguous 1-D arrays. Returns the indices as int64: a copy made in the same pass into ``out`` (a
    contiguous int64 array of their length) when given, else ``indices`` itself if int64, else a new array.
    """
    for name, a, kinds in (("offsets", offsets, (np.int64,)), ("indices", indices, (np.int32, np.int64)),
                           ("rows", rows, (np.int64,))):
        if not isinstance(a, np.ndarray) or a.dtype not in kinds or a.ndim != 1 or not a.flags.c_contiguous:
            raise TypeError(f"check_batch: {name} must be a contiguous 1-D array of {kinds}")
    if offsets.size != rows.size * int(batch_size) + 1:
        raise ValueError(f"check_batch: {offsets.size} offsets for {rows.size} tables of batch {batch_size}")
    if out is None:
        out = indices if indices.dtype == np.int64 else np.empty(indices.size, np.int64)
    elif out.dtype != np.int64 or out.shape != indices.shape or not out.flags.c_contiguous:
        raise TypeError("check_batch: out must be a contiguous int64 array as long as indices")
    code, t, value = _check_batch(offsets, indices, out if out is not indices else out[:0], rows, int(batch_size))
    if code == 1:
        raise InputError(f"batch {index}: offsets do not start at 0", path)
    if code == 2:
        raise InputError(f"batch {index}: offsets are not monotonic (negative bag length)", path)
    if code == 3:
        raise InputError(f"batch {index}: last offset {int(value)} != number of indices {indices.size}", path)
    if code == 4:
        raise InputError(f"batch {index}: index {int(value)} out of range for table {int(t)} with "
                         f"{int(rows[t])} rows", path)
    return out


class TraceWriter:
    """Stream batches into a new trace file; use as a context manager.

    >>> with TraceWriter("t.h5", spec, seed=0, params={}) as w:   # doctest: +SKIP
    ...     w.append(indices, offsets)

    A batch too large for memory is written table by table instead:
    :meth:`begin_batch` with the batch's offsets, :meth:`append_table` for
    tables ``0 .. T-1`` in order, :meth:`end_batch`. The file and the
    ``trace_id`` are byte-identical to one :meth:`append` of the whole batch.
    """

    def __init__(self, path: str | os.PathLike, spec: ModelSpec, *, seed: int | None = None,
                 params: dict[str, Any] | None = None, batch_size: int | None = None):
        self.path = Path(path)
        self.spec = spec
        self.batch_size = int(batch_size or spec.batch_size)
        self.num_tables = spec.num_tables
        self.seed = seed
        self.params = dict(params or {})
        self._rows = np.array([t.rows for t in spec.tables], dtype=np.int64)
        self._idx_dtype = np.int32 if int(self._rows.max()) < 2**31 else np.int64
        self._ctx = None
        self._f: h5py.File | None = None
        self._n_batches = 0
        self._n_lookups = 0
        self._open_batch: np.ndarray | None = None  # offsets of a batch being written table by table
        self._next_table = 0
        self._hash = hashlib.sha256()  # ~3x faster than BLAKE2b here; trace_id is its first 32 hex digits
        self._hash.update(spec.to_json().encode())
        self._hash.update(str(self.batch_size).encode())

    def __enter__(self) -> "TraceWriter":
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._written_bytes = self._reserved_bytes = 0
        try:
            self._f = h5py.File(self._tmp, "w", libver=WRITE_LIBVER)
            tb1 = self.num_tables * self.batch_size + 1
            # chunk about one batch of lookups (4 Ki .. 1 Mi entries), so small traces stay small on disk
            expected = self.batch_size * sum(max(1.0, t.pooling.mean_lookups) for t in self.spec.tables)
            chunk = int(min(_CHUNK, max(4096, 1 << int(np.ceil(np.log2(expected))))))
            # fletcher32: every chunk carries a checksum HDF5 verifies on read (a flipped byte is an error)
            self._f.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=self._idx_dtype,
                                   chunks=(chunk,), fletcher32=True)
            self._f.create_dataset("offsets", shape=(0,), maxshape=(None,), dtype=np.int64,
                                   chunks=(min(_CHUNK, tb1),), fletcher32=True)
            self._f.create_dataset("batch_ptr", shape=(1,), maxshape=(None,), dtype=np.int64, data=[0],
                                   fletcher32=True)
            self._reserve(0)
        except BaseException as e:
            f, self._f = self._f, None
            if f is not None:
                f.close()
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(type(e), e, e.__traceback__)  # removes the temporary file; re-raises
            raise
        return self

    def _reserve(self, more_bytes: int) -> None:
        """Reserve disk space ahead of HDF5's writes: a full disk must fail here, in Python, since HDF5
        cannot close (and crashes at exit on) a file whose writes failed."""
        self._written_bytes += int(more_bytes)
        need = self._written_bytes + self._written_bytes // 4 + (256 << 10)  # chunk and B-tree overhead
        if need > self._reserved_bytes:
            self._reserved_bytes = need + max(1 << 20, self._written_bytes // 4)
            reserve_space(self._tmp, self._reserved_bytes)

    def append(self, indices: np.ndarray, offsets: np.ndarray) -> None:
        """Append one batch (table-major CSR, offsets of length T*B+1 starting at 0)."""
        assert self._f is not None, "use TraceWriter as a context manager"
        if self._open_batch is not None:
            raise ValueError("append() inside begin_batch() ... end_batch()")
        indices = np.ascontiguousarray(indices)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        tb1 = self.num_tables * self.batch_size + 1
        if offsets.shape != (tb1,):
            raise ValueError(f"offsets must have length T*B+1 = {tb1}, got {offsets.shape}")
        check_csr(offsets, indices.size, f"batch {self._n_batches}", None)
        batch = Batch(self._n_batches, indices.astype(np.int64, copy=False), offsets, self.num_tables, self.batch_size)
        check_rows(batch, self._rows, None)
        idx = indices.astype(self._idx_dtype, copy=False)
        self._reserve(idx.nbytes + offsets.nbytes + 8)
        f = self._f
        n0 = self._n_lookups
        f["indices"].resize((n0 + idx.size,))
        f["indices"][n0:] = idx
        m0 = self._n_batches * tb1
        f["offsets"].resize((m0 + tb1,))
        f["offsets"][m0:] = offsets
        self._n_lookups += idx.size
        self._n_batches += 1
        f["batch_ptr"].resize((self._n_batches + 1,))
        f["batch_ptr"][self._n_batches] = self._n_lookups
        self._hash.update(offsets.tobytes())
        self._hash.update(idx.astype(np.int64, copy=False).tobytes())

    def begin_batch(self, offsets: np.ndarray) -> None:
        """Start a batch written table by table: its offsets (length T*B+1, starting at 0) come first."""
        assert self._f is not None, "use TraceWriter as a context manager"
        if self._open_batch is not None:
            raise ValueError("begin_batch() before end_batch() of the previous batch")
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        tb1 = self.num_tables * self.batch_size + 1
        if offsets.shape != (tb1,):
            raise ValueError(f"offsets must have length T*B+1 = {tb1}, got {offsets.shape}")
        check_csr(offsets, int(offsets[-1]) if offsets.size else 0, f"batch {self._n_batches}", None)
        f = self._f
        m0 = self._n_batches * tb1
        f["offsets"].resize((m0 + tb1,))
        f["offsets"][m0:] = offsets
        f["indices"].resize((self._n_lookups + int(offsets[-1]),))  # once: resizing per table is slow
        self._hash.update(offsets.tobytes())
        self._open_batch = offsets
        self._next_table = 0
        self._pending: list[np.ndarray] = []  # tables not yet written (written in runs of >= _STREAM_RUN)
        self._pending_size = 0
        self._written = self._n_lookups  # where the pending run starts in the file

    def append_table(self, t: int, indices: np.ndarray) -> None:
        """The lookups of table ``t`` of the open batch (tables in order ``0 .. T-1``)."""
        off = self._open_batch
        if off is None:
            raise ValueError("append_table() outside begin_batch() ... end_batch()")
        if t != self._next_table:
            raise ValueError(f"expected table {self._next_table}, got table {t}")
        B = self.batch_size
        lo, hi = int(off[t * B]), int(off[(t + 1) * B])
        indices = np.ascontiguousarray(indices)
        if indices.shape != (hi - lo,):
            raise ValueError(f"table {t}: {indices.size} indices, but its offsets say {hi - lo}")
        if indices.size:
            mn, mx = int(indices.min()), int(indices.max())
            if mn < 0 or mx >= self._rows[t]:
                bad = mn if mn < 0 else mx
                raise InputError(f"batch {self._n_batches}: index {bad} out of range for table {t} with "
                                 f"{int(self._rows[t])} rows")
        idx = indices.astype(self._idx_dtype)  # a copy: the caller may reuse its array
        self._hash.update(idx.astype(np.int64, copy=False).tobytes())
        self._pending.append(idx)
        self._pending_size += idx.size
        if self._pending_size >= _STREAM_RUN:
            self._flush_pending()
        self._next_table += 1

    def _flush_pending(self) -> None:
        if self._pending_size:
            run = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._f["indices"][self._written : self._written + run.size] = run
            self._written += run.size
        self._pending, self._pending_size = [], 0

    def end_batch(self) -> None:
        """Close the batch opened by :meth:`begin_batch` (every table must have been appended)."""
        off = self._open_batch
        if off is None:
            raise ValueError("end_batch() without begin_batch()")
        if self._next_table != self.num_tables:
            raise ValueError(f"end_batch() after {self._next_table} of {self.num_tables} tables")
        self._flush_pending()
        self._n_lookups += int(off[-1])
        self._n_batches += 1
        f = self._f
        f["batch_ptr"].resize((self._n_batches + 1,))
        f["batch_ptr"][self._n_batches] = self._n_lookups
        self._open_batch = None

    @property
    def trace_id(self) -> str:
        return self._hash.hexdigest()[:32]

    def __exit__(self, exc_type, exc, tb) -> None:
        f, self._f = self._f, None
        ctx, self._ctx = self._ctx, None
        try:
            if exc_type is None and self._open_batch is not None:
                raise ValueError("trace closed inside begin_batch() ... end_batch()")
            if exc_type is None:
                a = f.attrs
                a["format"] = fixed_text(TRACE_FORMAT)
                a["format_version"] = TRACE_FORMAT_VERSION
                a["spec"] = fixed_text(self.spec.to_json())
                a["params"] = fixed_text(json.dumps(self.params, sort_keys=True))
                a["seed"] = -1 if self.seed is None else int(self.seed)
                a["batch_size"] = self.batch_size
                a["num_tables"] = self.num_tables
                a["num_batches"] = self._n_batches
                a["num_lookups"] = self._n_lookups
                a["trace_id"] = fixed_text(self.trace_id)
                a[ATTRS_CRC] = attrs_crc32(a)
            f.close()  # flushes: a full disk can surface here
            release_reserve(self._tmp)
        except BaseException as e:
            try:
                f.close()
            except Exception:
                pass
            ctx.__exit__(type(e), e, e.__traceback__)  # removes the temporary file; re-raises (maybe as InputError)
            raise
        ctx.__exit__(exc_type, exc, tb)  # on success: fsync and rename into place; else remove


class TraceReader:
    """Read a trace batch by batch, checking it as it goes.

    Bad files raise :class:`InputError` naming the file and the problem. ``indices`` and ``offsets``
    are read raw with ``os.preadv`` where :func:`tracegen.trace_fast.open_raw` allows, else by h5py.
    """

    def __init__(self, path: str | os.PathLike, *, validate: bool = True):
        self.path = Path(path)
        self.validate = validate
        self._raw: RawFile | None = None
        self._pool = ArrayPool()  # the batches' arrays, reused once the caller has dropped them
        if self.path.is_dir():
            raise InputError("is a directory, not a trace file (give the .h5 trace file itself)", self.path)
        if not self.path.is_file():
            raise InputError("trace file not found", self.path)
        if is_temporary_sibling(self.path):
            raise InputError("is the temporary file of an unfinished or interrupted write, not a trace", self.path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise InputError(f"not a readable HDF5 trace ({e.__class__.__name__})", self.path) from None
        try:
            self._open()
        except InputError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise InputError(f"corrupt trace: {e}", self.path) from None

    def _open(self) -> None:
        a = self._f.attrs
        if plain(a.get("format")) != TRACE_FORMAT:
            raise InputError(f"not a screc trace (format attribute is {plain(a.get('format'))!r})", self.path)
        ver = int(a.get("format_version", -1))
        if ver != TRACE_FORMAT_VERSION:
            raise InputError(f"trace format version {ver} is not supported (expected {TRACE_FORMAT_VERSION})",
                             self.path)
        for name in ("indices", "offsets", "batch_ptr"):
            if name not in self._f:
                raise InputError(f"missing dataset {name!r}", self.path)
        try:
            self.spec = ModelSpec.from_json(str(plain(a["spec"])))
        except Exception as e:
            raise InputError(f"bad spec attribute: {e}", self.path) from None
        self.params = json.loads(str(plain(a.get("params", "{}"))))
        self.seed = int(a.get("seed", -1))
        self.batch_size = int(a["batch_size"])
        self.num_tables = int(a["num_tables"])
        self.num_batches = int(a["num_batches"])
        self.num_lookups = int(a["num_lookups"])
        self.trace_id = str(plain(a["trace_id"]))
        if ATTRS_CRC in a and int(a[ATTRS_CRC]) != attrs_crc32(a):
            raise InputError("corrupt trace: its attributes do not match their checksum", self.path)
        if self.num_tables != self.spec.num_tables:
            raise InputError(f"num_tables {self.num_tables} != {self.spec.num_tables} tables in spec", self.path)
        self.rows = np.array([t.rows for t in self.spec.tables], dtype=np.int64)
        self._tb1 = self.num_tables * self.batch_size + 1
        if self._f["batch_ptr"].shape != (self.num_batches + 1,):
            raise InputError("batch_ptr length does not match num_batches", self.path)
        if self._f["offsets"].shape != (self.num_batches * self._tb1,):
            raise InputError("offsets length is not num_batches * (T*B+1)", self.path)
        if self._f["indices"].shape != (self.num_lookups,):
            raise InputError("indices length does not match num_lookups", self.path)
        idx_dtype = self._f["indices"].dtype if self._f["indices"].dtype in (np.int32, np.int64) else None
        # chunk indexes checked; raw readers (None: h5py) where the file and datasets allow them
        self._raw, raw, h5 = open_checked(self._f, {"offsets": np.int64, "indices": idx_dtype, "batch_ptr": np.int64})
        self._raw_off, self._raw_idx, raw_ptr = raw["offsets"], raw["indices"], raw["batch_ptr"]
        self._offsets_ds, self._indices_ds = h5["offsets"], h5["indices"]
        ptr = h5["batch_ptr"][:] if raw_ptr is None else raw_ptr.read(0, raw_ptr.size)
        self.batch_ptr = ptr.astype(np.int64)
        if self.batch_ptr[-1] != self.num_lookups:
            raise InputError("indices length does not match num_lookups", self.path)
        if self.batch_ptr[0] != 0 or np.any(np.diff(self.batch_ptr) < 0):
            raise InputError("batch_ptr is not monotonic", self.path)

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        self._f.close()

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, i: int) -> Batch:
        if not 0 <= i < self.num_batches:
            raise IndexError(i)
        lo, hi = int(self.batch_ptr[i]), int(self.batch_ptr[i + 1])
        try:
            if self._raw_off is not None:
                off = self._raw_off.read(i * self._tb1, (i + 1) * self._tb1, self._pool.take(self._tb1))
            else:
                off = self._offsets_ds[i * self._tb1 : (i + 1) * self._tb1].astype(np.int64, copy=False)
            if self._raw_idx is not None:  # a view of the reader's buffer: copied below into the batch's own
                idx = self._raw_idx.view(lo, hi)
            else:
                idx = self._indices_ds[lo:hi]
                if idx.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
                    idx = idx.astype(np.int64)
        except OSError as e:
            raise InputError(f"batch {i}: unreadable, the file is corrupt ({e})", self.path) from None
        own = self._raw_idx is not None or idx.dtype != np.int64  # needs a copy (widened) of its own
        out = self._pool.take(idx.size, slack=True) if own else None
        if self.validate:
            idx = check_batch(off, idx, self.rows, self.batch_size, i, self.path, out=out)
        elif out is not None:
            out[:] = idx
            idx = out
        return Batch(i, idx, off, self.num_tables, self.batch_size)

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        stop = self.num_batches if stop is None else min(stop, self.num_batches)
        for i in range(start, stop):
            yield self.batch(i)

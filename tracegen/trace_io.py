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

import json
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from tracegen.atomic import is_temporary_sibling
from tracegen.errors import InputError
from tracegen.spec import ModelSpec
from tracegen.trace_attrs import ATTRS_CRC, attrs_crc32, plain
from tracegen.trace_batch import Batch, check_batch, check_csr, check_rows
from tracegen.trace_fast import ArrayPool, RawFile, open_checked
from tracegen.trace_write import TRACE_FORMAT, TRACE_FORMAT_VERSION, WRITE_LIBVER, TraceWriter

__all__ = ["TRACE_FORMAT", "TRACE_FORMAT_VERSION", "WRITE_LIBVER", "Batch", "TraceReader", "TraceWriter",
           "check_batch", "check_csr", "check_rows"]


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

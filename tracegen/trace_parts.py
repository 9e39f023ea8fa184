"""A trace written as parts (by several processes or machines) and read as one trace.

A parts directory holds ``parts.json`` and the part files, each an ordinary
trace (``tracegen.trace_io``) of a contiguous range of the model's tables over a
contiguous range of its batches::

    format           "screc-trace-parts"
    format_version   1
    spec             the whole model's effective spec (as a single trace file would record it)
    params           the generator parameters, seed, batch_size, num_batches, num_lookups
    parts            per part: file, tables [start, stop), batches [start, stop), trace_id, lookups, and
                     where it was made (node, seconds) when known
    trace_id         SHA-256 (32 hex digits) of the parts' trace ids in order: this parts trace's id

Because the batch format is table-major CSR, batch ``i`` of the whole trace is
the parts of its batch range laid end to end in table order, their offsets
shifted by the lookups before them (:class:`PartsReader`). :func:`merge_parts`
writes them as one trace file; its ``trace_id`` is the one generating the whole
trace in one process gives (the file id hashes the spec, the batch size and the
batches only).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tracegen.errors import InputError
from tracegen.spec import ModelSpec
from tracegen.trace_batch import Batch

PARTS_FORMAT = "screc-trace-parts"
PARTS_FORMAT_VERSION = 1
PARTS_MANIFEST = "parts.json"


@dataclass(frozen=True)
class PartEntry:
    file: str  # relative to the parts directory
    tables: tuple[int, int]  # [start, stop) in the model
    batches: tuple[int, int]  # [start, stop) of the trace
    trace_id: str
    lookups: int
    made_on: dict[str, Any] | None = None  # node, seconds (informative)

    def to_dict(self) -> dict[str, Any]:
        d = {"file": self.file, "tables": list(self.tables), "batches": list(self.batches),
             "trace_id": self.trace_id, "lookups": self.lookups}
        if self.made_on is not None:
            d["made_on"] = self.made_on
        return d


def parts_trace_id(parts: list[PartEntry]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(f"{p.tables[0]}:{p.tables[1]}:{p.batches[0]}:{p.batches[1]}:{p.trace_id};".encode())
    return h.hexdigest()[:32]


def parts_manifest(spec: ModelSpec, params: dict[str, Any], seed: int, parts: list[PartEntry]) -> dict[str, Any]:
    """The ``parts.json`` document of ``parts`` (in batch-range, then table order)."""
    parts = sorted(parts, key=lambda p: (p.batches[0], p.tables[0]))
    return {"format": PARTS_FORMAT, "format_version": PARTS_FORMAT_VERSION, "spec": spec.to_dict(),
            "params": params, "seed": seed, "batch_size": spec.batch_size,
            "num_batches": max(p.batches[1] for p in parts), "num_lookups": sum(p.lookups for p in parts),
            "parts": [p.to_dict() for p in parts], "trace_id": parts_trace_id(parts)}


def is_parts_trace(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / PARTS_MANIFEST).is_file()) or (p.is_file() and p.name == PARTS_MANIFEST)


def _check_tiling(parts: list[PartEntry], num_tables: int, num_batches: int) -> str | None:
    """None when the parts tile tables x batches exactly (each batch range covers every table once)."""
    ranges = sorted({p.batches for p in parts})
    at = 0
    for b in ranges:
        if b[0] != at or b[1] <= b[0]:
            return f"batch ranges do not tile [0, {num_batches})"
        at = b[1]
        cols = sorted(p.tables for p in parts if p.batches == b)
        t = 0
        for c in cols:
            if c[0] != t or c[1] <= c[0]:
                return f"the parts of batches {list(b)} do not cover every table once"
            t = c[1]
        if t != num_tables:
            return f"the parts of batches {list(b)} do not cover every table once"
    return None if at == num_batches else f"batch ranges do not tile [0, {num_batches})"


class PartsReader:
    """A parts directory read as one trace: the attributes and batches of :class:`tracegen.trace_io.TraceReader`
    (``spec``, ``batch_size``, ``num_tables``, ``num_batches``, ``num_lookups``, ``trace_id``, ``rows``,
    ``params``, ``seed``, ``batch(i)``, ``batches()``). Every part is opened (and checked) as a trace."""

    def __init__(self, path: str | os.PathLike, *, validate: bool = True):
        from tracegen.trace_io import TraceReader

        p = Path(path)
        self.path = p.parent if p.name == PARTS_MANIFEST and p.is_file() else p
        mpath = self.path / PARTS_MANIFEST
        if not mpath.is_file():
            raise InputError("not a parts trace (no parts.json)", self.path)
        try:
            doc = json.loads(mpath.read_text())
            if doc.get("format") != PARTS_FORMAT or doc.get("format_version") != PARTS_FORMAT_VERSION:
                raise InputError(f"not a screc parts trace of version {PARTS_FORMAT_VERSION}", mpath)
            self.spec = ModelSpec.from_dict(doc["spec"])
            self.params, self.seed = dict(doc["params"]), int(doc["seed"])
            self.num_batches, self.num_lookups = int(doc["num_batches"]), int(doc["num_lookups"])
            self.trace_id = str(doc["trace_id"])
            parts = [PartEntry(str(e["file"]), tuple(e["tables"]), tuple(e["batches"]), str(e["trace_id"]),
                               int(e["lookups"]), e.get("made_on")) for e in doc["parts"]]
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise InputError(f"corrupt parts manifest ({e.__class__.__name__}: {e})", mpath) from None
        self.batch_size, self.num_tables = self.spec.batch_size, self.spec.num_tables
        self.rows = np.array([t.rows for t in self.spec.tables], dtype=np.int64)
        problem = _check_tiling(parts, self.num_tables, self.num_batches)
        if problem is None and parts_trace_id(sorted(parts, key=lambda p: (p.batches[0], p.tables[0]))) != self.trace_id:
            problem = "its trace_id does not match its parts"
        if problem is not None:
            raise InputError(f"corrupt parts manifest: {problem}", mpath)
        self.parts = sorted(parts, key=lambda p: (p.batches[0], p.tables[0]))
        self._starts = sorted({p.batches[0] for p in self.parts})
        self._readers: list = []
        try:
            for part in self.parts:
                r = TraceReader(self.path / part.file, validate=validate)
                self._readers.append(r)
                want = self.spec.tables[part.tables[0]:part.tables[1]]
                if r.trace_id != part.trace_id or r.batch_size != self.batch_size or r.num_batches != (
                        part.batches[1] - part.batches[0]) or tuple(r.spec.tables) != tuple(want):
                    raise InputError(f"part {part.file} is not the one parts.json names (tables, batches or "
                                     f"trace_id differ)", r.path)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "PartsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for r in self._readers:
            r.close()
        self._readers = []

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, i: int) -> Batch:
        if not 0 <= i < self.num_batches:
            raise IndexError(i)
        start = self._starts[bisect.bisect_right(self._starts, i) - 1]
        pieces = [(r, p) for r, p in zip(self._readers, self.parts) if p.batches[0] == start]
        batches = [r.batch(i - start) for r, _ in pieces]
        B = self.batch_size
        offsets = np.empty(self.num_tables * B + 1, dtype=np.int64)
        indices = np.empty(sum(b.num_lookups for b in batches), dtype=np.int64)
        at = 0
        for b, (_, p) in zip(batches, pieces):
            t0, t1 = p.tables
            offsets[t0 * B:t1 * B] = b.offsets[:-1] + at
            indices[at:at + b.num_lookups] = b.indices
            at += b.num_lookups
        offsets[-1] = at
        return Batch(i, indices, offsets, self.num_tables, B)

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        stop = self.num_batches if stop is None else min(stop, self.num_batches)
        for i in range(start, stop):
            yield self.batch(i)


def open_trace(path: str | os.PathLike, *, validate: bool = True):
    """A reader of ``path``: :class:`PartsReader` for a parts directory (or its parts.json), else a
    :class:`tracegen.trace_io.TraceReader`."""
    from tracegen.trace_io import TraceReader

    return PartsReader(path, validate=validate) if is_parts_trace(path) else TraceReader(path, validate=validate)


def merge_parts(path: str | os.PathLike, out: str | os.PathLike) -> str:
    """Write the parts trace ``path`` as one trace file ``out`` (batch by batch; crash-safe); its trace id."""
    from tracegen.trace_write import TraceWriter

    with PartsReader(path) as reader, TraceWriter(out, reader.spec, seed=reader.seed, params=reader.params) as w:
        for b in reader.batches():
            w.append(b.indices, b.offsets)
    return w.trace_id

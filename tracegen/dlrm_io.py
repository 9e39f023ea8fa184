"""Traces in and out of Meta's dlrm_datasets layout, and Criteo-style text into a spec plus a trace.

dlrm_datasets layout (``embedding_bag/2021/fbgemm_t856_bs65536*.pt``, read by
FBGEMM's embedding benchmarks with ``torch.load``): a tuple ``(indices,
offsets, lengths)`` of integer tensors, ``lengths`` of shape ``(T, B)``,
``offsets`` table-major of length ``T*B + 1`` (bag ``(t, b)`` is
``indices[offsets[t*B + b] : offsets[t*B + b + 1]]``), row ids local to each
table; files may be gzip-compressed (``.pt.gz``). That is one batch of the
project's trace format; :func:`import_dlrm` can cut it into batches of a
smaller size (every table's first ``b`` samples form batch 0, and so on), and
:func:`export_dlrm` does the reverse (the selected batches become one batch of
``N*b`` samples, and a sidecar ``X.pt.screc.json`` records ``b`` and the
spec), so an export imports back batch for batch, with the same ``trace_id``.

``torch`` is imported only here, lazily (the ``torch`` extra). Uncompressed
files are memory-mapped (``torch.load(mmap=True)``) and written table by
table, so importing the 887M-lookup 2021 file holds one table's lookups in
memory plus the offsets; a ``.gz`` file is first decompressed to a temporary
file beside the output.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tracegen.errors import InputError
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import TraceReader, TraceWriter

DEFAULT_DIM = 128
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22
SIDECAR_FORMAT = "screc-dlrm-export"


def _torch():
    try:
        import torch
    except ImportError:
        raise InputError("reading or writing .pt files needs torch: install the torch extra "
                         "(pip install 'screc[torch]')") from None
    return torch


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


@dataclass
class DlrmTensors:
    """The three arrays of a dlrm_datasets file, as NumPy views (memory-mapped when the file allows)."""

    indices: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray  # (T, B)

    @property
    def num_tables(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[1])


def load_dlrm(path: str | os.PathLike, tmp_dir: str | os.PathLike | None = None) -> tuple[DlrmTensors, Path | None]:
    """Open a dlrm_datasets ``.pt`` (or ``.pt.gz``) file and check its layout.

    Returns the arrays and the temporary file a ``.gz`` was decompressed to (the
    caller deletes it when done). Bad or truncated files raise :class:`InputError`.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", p)
    torch = _torch()
    tmp = None
    src = p
    if _is_gzip(p):
        fd, name = tempfile.mkstemp(suffix=".pt", prefix=".screc-import-", dir=tmp_dir)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(p, "rb") as gz:
                shutil.copyfileobj(gz, out, _CHUNK)
        except (OSError, EOFError) as e:
            tmp.unlink(missing_ok=True)
            raise InputError(f"bad or truncated gzip file ({e.__class__.__name__}: {e})", p) from None
        src = tmp
    try:
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(src, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise InputError(f"not a readable torch file ({_torch_problem(e)})", p) from None
    try:
        t = _check_layout(obj, p, torch)
    except InputError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return t, tmp


def _torch_problem(e: BaseException) -> str:
    """A short, whole-word reason for a failed ``torch.load`` (torch's own messages run to several lines)."""
    text = " ".join(str(e).split())
    low = text.lower()
    if "zip archive" in low or "central directory" in low or "pytorchstreamreader" in low:
        return "truncated, or not a torch zip archive"
    if "pickle" in low or "unpickl" in low or "magic number" in low:
        return "not torch's format (unpickling failed)"
    if "weights_only" in low or "unsupported global" in low:
        return "holds Python objects other than tensors"
    if not text:
        return e.__class__.__name__
    words, out = text.split(" "), ""
    for w in words:
        if len(out) + len(w) + 1 > 100:
            return out + " ..."
        out = f"{out} {w}".strip()
    return out


def _check_layout(obj, p: Path, torch) -> DlrmTensors:
    if not isinstance(obj, (tuple, list)) or len(obj) != 3 or not all(isinstance(x, torch.Tensor) for x in obj):
        raise InputError("expected a tuple (indices, offsets, lengths) of tensors", p)
    idx, off, lens = obj
    for name, x, nd in (("indices", idx, 1), ("offsets", off, 1), ("lengths", lens, 2)):
        if x.dtype not in (torch.int32, torch.int64) or x.dim() != nd:
            raise InputError(f"{name} must be a {nd}-d integer tensor, got {tuple(x.shape)} {x.dtype}", p)
    T, B = int(lens.shape[0]), int(lens.shape[1])
    if T < 1 or B < 1:
        raise InputError(f"lengths has shape {(T, B)}: no bags", p)
    if off.numel() != T * B + 1:
        raise InputError(f"offsets has {off.numel()} entries, expected T*B+1 = {T * B + 1}", p)
    indices, offsets, lengths = idx.numpy(), off.numpy(), lens.numpy()
    if int(offsets[0]) != 0 or int(offsets[-1]) != indices.size:
        raise InputError(f"offsets run from {int(offsets[0])} to {int(offsets[-1])}, not 0 to the "
                         f"{indices.size} indices", p)
    flat = lengths.reshape(-1)
    for lo in range(0, T * B, _CHUNK):  # lengths == diff(offsets), chunk by chunk
        d = np.diff(offsets[lo : min(lo + _CHUNK, T * B) + 1].astype(np.int64))
        if np.any(d < 0):
            raise InputError("offsets are not monotonic (negative bag length)", p)
        if not np.array_equal(d, flat[lo : lo + d.size]):
            raise InputError("lengths do not match the differences of offsets", p)
    return DlrmTensors(indices, offsets, lengths)


def _table_rows(t: DlrmTensors) -> np.ndarray:
    """Max index + 1 per table (1 for a table with no lookups); negative ids raise ValueError."""
    B = t.batch_size
    rows = np.ones(t.num_tables, dtype=np.int64)
    for k in range(t.num_tables):
        lo, hi = int(t.offsets[k * B]), int(t.offsets[(k + 1) * B])
        if hi > lo:
            seg = t.indices[lo:hi]
            if int(seg.min()) < 0:
                raise ValueError(f"table {k} has a negative index {int(seg.min())}")
            rows[k] = int(seg.max()) + 1
    return rows


def import_dlrm(path: str | os.PathLike, out: str | os.PathLike, *, spec: ModelSpec | None = None,
                batch_size: int | None = None, dim: int = DEFAULT_DIM, name: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[str, ModelSpec]:
    """Write a dlrm_datasets file as a trace at ``out``; return ``(trace_id, spec)``.

    ``spec``: the tables to record (their count must match and every index must
    fit); by default tables ``t0..`` with rows ``max index + 1``, dim ``dim``,
    fp32 and Poisson pooling of the file's mean bag size. ``batch_size`` must
    divide the file's ``B`` (default ``B``: one batch). A file written by
    :func:`export_dlrm` has a sidecar (:func:`sidecar_path`) recording its
    batch size and spec: they are the defaults then, so an export imports back
    batch for batch.
    """
    p = Path(path)
    if batch_size is None or spec is None:  # an export of ours: its batches and spec, unless given
        side_b, side_spec = read_sidecar(p)
        batch_size = batch_size if batch_size is not None else side_b
        spec = spec if spec is not None else side_spec
    t, tmp = load_dlrm(p, Path(out).resolve().parent)
    try:
        T, B = t.num_tables, t.batch_size
        b = B if batch_size is None else int(batch_size)
        if b < 1 or B % b:
            raise InputError(f"batch size {b} does not divide the file's batch size {B}", p)
        try:
            rows = _table_rows(t)
        except ValueError as e:
            raise InputError(str(e), p) from None
        if spec is None:
            means = np.array([(int(t.offsets[(k + 1) * B]) - int(t.offsets[k * B])) / B for k in range(T)])
            maxlen = t.lengths.max(axis=1)
            spec = ModelSpec(name or p.name.split(".")[0], tuple(
                TableSpec(f"t{k}", rows=int(rows[k]), dim=int(dim), pooling=PoolingSpec(
                    kind="poisson", mean=float(means[k]), min=0, max=int(maxlen[k])), zipf_alpha=0.0)
                for k in range(T)), batch_size=b)
        else:
            if spec.num_tables != T:
                raise InputError(f"the file has {T} tables, the spec {spec.num_tables}", p)
            spec_rows = np.array([x.rows for x in spec.tables])
            bad = np.flatnonzero(rows > spec_rows)
            if bad.size:
                k = int(bad[0])
                raise InputError(f"table {k} has index {int(rows[k]) - 1}, the spec gives it {int(spec_rows[k])} rows", p)
            spec = spec.with_batch_size(b)
        nb = B // b
        with TraceWriter(out, spec, params={"imported_from": p.name, "format": "dlrm_datasets"}) as w:
            for j in range(nb):
                starts = t.offsets[np.arange(T)[:, None] * B + j * b + np.arange(b + 1)[None, :]].astype(np.int64)
                local = starts - starts[:, :1]  # each table's offsets within the batch, from 0
                sizes = local[:, -1]
                base = np.concatenate([[0], np.cumsum(sizes)])
                offsets = np.empty(T * b + 1, dtype=np.int64)
                offsets[:-1] = (local[:, :-1] + base[:-1, None]).reshape(-1)
                offsets[-1] = base[-1]
                w.begin_batch(offsets)
                for k in range(T):
                    w.append_table(k, np.asarray(t.indices[int(starts[k, 0]) : int(starts[k, -1])]))
                w.end_batch()
                if progress is not None:
                    progress(j + 1, nb)
        return w.trace_id, spec
    finally:
        del t
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def export_dlrm(trace: str | os.PathLike, out: str | os.PathLike, *, start: int = 0, stop: int | None = None
                ) -> dict[str, int]:
    """Write batches ``[start, stop)`` of a trace as one dlrm_datasets batch of ``(stop - start) * B`` samples.

    ``out`` ending in ``.gz`` is gzip-compressed. Returns the tables, samples and lookups written.
    Memory: the selected batches' lookups, once (each batch is read twice).
    """
    torch = _torch()
    with TraceReader(trace) as r:
        spec = r.spec
        stop = r.num_batches if stop is None else min(int(stop), r.num_batches)
        if not 0 <= start < stop:
            raise InputError(f"no batches in [{start}, {stop}) (the trace has {r.num_batches})", trace)
        T, b, nb = r.num_tables, r.batch_size, stop - start
        per = np.zeros((T, nb), dtype=np.int64)  # lookups of table t in batch j
        for j in range(nb):  # a first pass for the sizes, so the lookups are placed once
            per[:, j] = np.diff(r.batch(start + j).table_bounds())
        total = int(per.sum())
        indices = np.empty(total, dtype=np.int64)
        lengths = np.empty((T, nb * b), dtype=np.int64)
        pos = np.concatenate([[0], np.cumsum(per.reshape(-1))])[:-1].reshape(T, nb)  # start of (t, j)
        for j in range(nb):
            batch = r.batch(start + j)
            for k in range(T):
                idx, off = batch.table(k)
                indices[pos[k, j] : pos[k, j] + idx.size] = idx
                lengths[k, j * b : (j + 1) * b] = np.diff(off)
    offsets = np.zeros(T * nb * b + 1, dtype=np.int64)
    np.cumsum(lengths.reshape(-1), out=offsets[1:])
    data = (torch.from_numpy(indices), torch.from_numpy(offsets), torch.from_numpy(lengths))
    from tracegen.atomic import atomic_path

    with atomic_path(out) as tmp:
        if str(out).endswith(".gz"):
            with gzip.open(tmp, "wb", compresslevel=6) as f:
                torch.save(data, f)
        else:
            torch.save(data, tmp)
    with atomic_path(sidecar_path(out)) as tmp:
        Path(tmp).write_text(json.dumps({"format": SIDECAR_FORMAT, "batch_size": b, "batches": nb,
                                         "spec": spec.to_dict()}, sort_keys=True))
    return {"tables": T, "samples": nb * b, "lookups": total, "batches": nb}


def sidecar_path(pt: str | os.PathLike) -> Path:
    """Where :func:`export_dlrm` records the batch structure and spec of an exported file (``X.pt`` ->
    ``X.pt.screc.json``): the dlrm_datasets layout itself is one batch and has no room for them."""
    return Path(str(pt) + ".screc.json")


def read_sidecar(pt: str | os.PathLike) -> tuple[int | None, ModelSpec | None]:
    """The batch size and spec an export recorded beside ``pt`` (``(None, None)`` when there is none)."""
    side = sidecar_path(pt)
    if not side.is_file():
        return None, None
    try:
        doc = json.loads(side.read_text())
        if doc.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}")
        return int(doc["batch_size"]), ModelSpec.from_dict(doc["spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"bad export sidecar ({e})", side) from None

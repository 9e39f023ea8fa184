"""Criteo-layout text (label, 13 dense, 26 categorical tokens, tab separated) into a spec plus a trace.

Each line is one sample: ``label \\t I1 .. I13 \\t C1 .. C26`` (the Criteo
Display Advertising Challenge and Terabyte click logs; tokens are hashed
strings such as ``68fd1e64``, and any field may be empty). Only the
categorical tokens matter for lookups: token ``x`` of feature ``k`` becomes
row ``hash(x, k) mod rows_k`` of table ``c<k>`` (one lookup per table per
sample, like DLRM's one-hot Criteo models). The hash is CRC-32 of the token's
bytes mixed with the feature number by SplitMix64's finaliser: stable across
runs, machines and Python versions. An empty token is hashed like any other
(DLRM's preprocessing also gives "missing" its own row).

Samples are grouped into batches of ``batch_size`` in file order; a last,
partial batch is dropped (and counted). Files may be gzip-compressed. The
rows of every sample are first written to a temporary raw file beside the
output (4 bytes per token, so memory stays bounded), then the spec is made
(each table's skew estimated from the whole file's counts, with
:func:`tracegen.locality.fit_alpha`) and the trace written from it.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from tracegen.errors import InputError
from tracegen.locality import fit_alpha
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import TraceWriter

NUM_DENSE = 13
NUM_CATEGORICAL = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_CATEGORICAL
DEFAULT_ROWS = 1 << 20
_M64 = (1 << 64) - 1


def token_row(token: bytes, feature: int, rows: int) -> int:
    """The row of ``token`` in feature ``feature``'s table of ``rows`` rows."""
    z = (zlib.crc32(token) ^ ((feature + 1) * 0x9E3779B97F4A7C15)) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return (z ^ (z >> 31)) % rows


def _open_text(p: Path):
    with open(p, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(p, "rb") if gz else open(p, "rb")


def _rows_per_table(rows: int | Sequence[int]) -> np.ndarray:
    r = np.full(NUM_CATEGORICAL, rows, dtype=np.int64) if np.isscalar(rows) else np.asarray(rows, dtype=np.int64)
    if r.shape != (NUM_CATEGORICAL,) or np.any(r < 1) or np.any(r >= 2**31):
        raise InputError(f"rows must be one count or {NUM_CATEGORICAL} counts in [1, 2**31)")
    return r


def import_criteo(path: str | os.PathLike, out: str | os.PathLike, *, rows: int | Sequence[int] = DEFAULT_ROWS,
                  batch_size: int = 2048, dim: int = 16, name: str = "criteo-import",
                  max_samples: int | None = None) -> tuple[str, ModelSpec, dict[str, int]]:
    """Hash a Criteo-layout text file into a trace at ``out``; return ``(trace_id, spec, counts)``.

    ``counts``: samples read, batches written, samples dropped (the last partial batch).
    Bad lines raise :class:`InputError` naming the line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", p)
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    table_rows = _rows_per_table(rows)
    out = Path(out)
    fd, tmp_name = tempfile.mkstemp(suffix=".i32", prefix=".screc-criteo-", dir=out.resolve().parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        n = _hash_file(p, tmp, table_rows, max_samples)
        nb = n // batch_size
        if nb == 0:
            raise InputError(f"{n} samples: fewer than one batch of {batch_size}", p)
        hashed = np.memmap(tmp, dtype=np.int32, mode="r", shape=(n, NUM_CATEGORICAL))
        tables = []
        for k in range(NUM_CATEGORICAL):
            counts = np.bincount(hashed[: nb * batch_size, k], minlength=int(table_rows[k]))
            counts = np.sort(counts[counts > 0])[::-1]
            alpha, _ = fit_alpha(counts / max(nb, 1))
            tables.append(TableSpec(f"c{k}", rows=int(table_rows[k]), dim=int(dim), pooling=PoolingSpec.fixed(1),
                                    zipf_alpha=round(alpha, 4) if math.isfinite(alpha) and alpha > 0 else 0.0))
        spec = ModelSpec(name, tuple(tables), batch_size=int(batch_size))
        offsets = np.arange(NUM_CATEGORICAL * batch_size + 1, dtype=np.int64)
        with TraceWriter(out, spec, params={"imported_from": p.name, "format": "criteo-text"}) as w:
            for j in range(nb):
                block = np.asarray(hashed[j * batch_size : (j + 1) * batch_size]).astype(np.int64)
                w.append(np.ascontiguousarray(block.T).reshape(-1), offsets)
        del hashed
        return w.trace_id, spec, {"samples": n, "batches": nb, "dropped": n - nb * batch_size}
    finally:
        tmp.unlink(missing_ok=True)


def _hash_file(p: Path, tmp: Path, table_rows: np.ndarray, max_samples: int | None) -> int:
    """Hash every sample's tokens into ``tmp`` (raw int32, samples x 26, row-major); return the samples."""
    chunk = 1 << 16
    buf = np.empty((chunk, NUM_CATEGORICAL), dtype=np.int32)
    n = 0
    rows_list = [int(r) for r in table_rows]
    try:
        with _open_text(p) as f, open(tmp, "wb") as sink:
            fill = 0
            for lineno, line in enumerate(f, 1):
                if max_samples is not None and n >= max_samples:
                    break
                fields = line.rstrip(b"\r\n").split(b"\t")
                if len(fields) != NUM_FIELDS:
                    raise InputError(f"line {lineno}: {len(fields)} tab-separated fields, expected {NUM_FIELDS} "
                                     f"(label, {NUM_DENSE} dense, {NUM_CATEGORICAL} categorical)", p)
                if fields[0].strip() not in (b"0", b"1"):
                    raise InputError(f"line {lineno}: label {fields[0][:20]!r} is not 0 or 1", p)
                cats = fields[1 + NUM_DENSE:]
                for k in range(NUM_CATEGORICAL):
                    buf[fill, k] = token_row(cats[k], k, rows_list[k])
                fill += 1
                n += 1
                if fill == chunk:
                    sink.write(buf.tobytes())
                    fill = 0
            sink.write(buf[:fill].tobytes())
        if n == 0:
            raise InputError("no samples", p)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"unreadable ({e.__class__.__name__}: {e})", p) from None
    return n

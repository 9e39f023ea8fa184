"""Locality statistics of lookup traces, in the bins and text layout of Meta's dlrm_datasets.

Meta published, with its synthetic embedding-lookup traces, a
``locality_stats.txt`` (facebookresearch/dlrm_datasets,
``embedding_bag/2021/locality_stats.txt``). Per batch, every unique
``(table, row)`` pair touched is a "col" and the number of times the batch
touches it is its "col size". Two histograms over the col-size bins
``(0, 1], (1, 2], (2, 4], ..., (16384, 32768], (32768+``:

* histogram 1, "Histogram of col sizes": the share of unique pairs in each bin;
* histogram 2, "Ratio of index distribution at different column sizes": the
  share of all lookups that fall on pairs of each bin;

each followed by the bin edges and the cumulative shares (a leading 0, then one
per bin). "Avg # of indices" is lookups per batch, "Avg # of unique cols"
unique pairs per batch, "Avg col size" their ratio. Over several batches, the
counts and the per-batch shares are averaged (each batch weighs the same).

:func:`trace_stats` adds per-table figures, including a skew estimate: the
least-squares slope of ``log(mean count)`` against ``log(rank)`` over the
within-batch rank-frequency curve (the ``k``-th largest count of a batch,
averaged over batches), using the ranks whose mean count is at least
``ALPHA_FIT_MIN_COUNT`` (so Poisson noise stays below about 30%) among the top
``ALPHA_FIT_MAX_RANKS``; NaN when fewer than 3 ranks qualify. Small counts
flatten the curve, so it under-estimates alpha when batches are small.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from tracegen.errors import InputError
from tracegen.trace_io import Batch, TraceReader

NUM_BINS = 17
BIN_EDGES = (0,) + tuple(1 << i for i in range(NUM_BINS - 1))  # 0, 1, 2, 4, ..., 32768
BIN_LABELS = tuple(f"({BIN_EDGES[i]}, {BIN_EDGES[i + 1]}]" for i in range(NUM_BINS - 1)) + (f"({BIN_EDGES[-1]}+",)
_UPPER = np.array(BIN_EDGES[1:], dtype=np.int64)  # bin b holds counts in (upper[b-1], upper[b]]
ALPHA_FIT_MIN_COUNT = 10
ALPHA_FIT_MAX_RANKS = 4096
_DENSE_ROWS = 1 << 20  # tables up to this many rows are counted with bincount, larger ones by sorting


def count_bins(counts: np.ndarray) -> np.ndarray:
    """The bin (0..16) of each col size ``>= 1``: 0 for 1, ``ceil(log2(c))`` up to 32768, 16 above."""
    return np.searchsorted(_UPPER, counts, side="left")


def _cumulative(shares: Iterable[float]) -> tuple[float, ...]:
    return (0.0,) + tuple(float(x) for x in np.cumsum(np.asarray(list(shares), dtype=np.float64)))


@dataclass(frozen=True)
class LocalityStats:
    """One block of ``locality_stats.txt``: averages over ``num_batches`` batches of ``batch_size``."""

    num_batches: int
    batch_size: int
    avg_indices: float
    avg_unique: float
    avg_col_size: float
    col_size_share: tuple[float, ...]  # histogram 1, one per bin
    col_size_cumulative: tuple[float, ...]  # 0, then running sums (NUM_BINS + 1 values)
    index_share: tuple[float, ...]  # histogram 2
    index_cumulative: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bins"] = list(BIN_LABELS)
        return d

    @classmethod
    def from_shares(cls, num_batches: int, batch_size: int, avg_indices: float, avg_unique: float,
                    col_size_share: Iterable[float], index_share: Iterable[float]) -> "LocalityStats":
        col, idx = tuple(float(x) for x in col_size_share), tuple(float(x) for x in index_share)
        return cls(num_batches, batch_size, avg_indices, avg_unique, avg_indices / avg_unique if avg_unique else 0.0,
                   col, _cumulative(col), idx, _cumulative(idx))


def table_counts(indices: np.ndarray, rows: int) -> np.ndarray:
    """How many times each touched row of one table is looked up (order unspecified)."""
    if indices.size == 0:
        return np.zeros(0, dtype=np.int64)
    if rows <= max(_DENSE_ROWS, 4 * indices.size):
        c = np.bincount(indices, minlength=rows)
        return c[c > 0]
    return np.unique(indices, return_counts=True)[1]


@dataclass(frozen=True)
class BatchLocality:
    """The raw locality counts of one batch (histograms as counts, not shares)."""

    indices: int
    unique: int
    col_size_hist: np.ndarray  # unique pairs per bin
    index_hist: np.ndarray  # lookups per bin


def batch_locality(batch: Batch, rows: np.ndarray, per_table: list[np.ndarray] | None = None) -> BatchLocality:
    """Locality counts of one batch; ``per_table`` (if given) receives each table's col sizes."""
    col = np.zeros(NUM_BINS, dtype=np.int64)
    idx = np.zeros(NUM_BINS, dtype=np.int64)
    unique = 0
    bounds = batch.table_bounds()
    for t in range(batch.num_tables):
        counts = table_counts(batch.indices[bounds[t] : bounds[t + 1]], int(rows[t]))
        if per_table is not None:
            per_table.append(counts)
        if counts.size == 0:
            continue
        bins = count_bins(counts)
        col += np.bincount(bins, minlength=NUM_BINS)
        idx += np.bincount(bins, weights=counts, minlength=NUM_BINS).astype(np.int64)
        unique += counts.size
    return BatchLocality(batch.num_lookups, unique, col, idx)


class LocalityAccumulator:
    """Averages :class:`BatchLocality` over batches (each batch weighs the same)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.n = 0
        self._indices = 0.0
        self._unique = 0.0
        self._col = np.zeros(NUM_BINS)
        self._idx = np.zeros(NUM_BINS)

    def add(self, b: BatchLocality) -> None:
        self.n += 1
        self._indices += b.indices
        self._unique += b.unique
        if b.unique:
            self._col += b.col_size_hist / b.unique
            self._idx += b.index_hist / b.indices

    def result(self) -> LocalityStats:
        n = max(self.n, 1)
        col, idx = self._col / n, self._idx / n
        ind, uni = self._indices / n, self._unique / n
        return LocalityStats(self.n, self.batch_size, ind, uni, ind / uni if uni else 0.0,
                             tuple(col.tolist()), _cumulative(col), tuple(idx.tolist()), _cumulative(idx))


# --- the text layout ------------------------------------------------------------------------------

def _format_hist(title: str, shares: tuple[float, ...], cumulative: tuple[float, ...]) -> list[str]:
    lines = [title]
    lines += [f"{label}: {share:.3f}" for label, share in zip(BIN_LABELS, shares)]
    lines.append("[" + ", ".join(str(e) for e in BIN_EDGES) + "]")
    lines.append("[" + ", ".join(f"'{c:.3f}'" for c in cumulative) + "]")
    return lines


def format_locality_stats(name: str, stats: LocalityStats) -> str:
    """One block in the layout of ``locality_stats.txt`` (no trailing newline)."""
    lines = [
        name,
        f"Locality stats after processing {stats.num_batches} batches of size {stats.batch_size}",
        f"Avg # of indices: {stats.avg_indices:.0f}",
        f"Avg # of unique cols: {stats.avg_unique:.0f}",
        f"Avg col size: {stats.avg_col_size:.1f}",
    ]
    lines += _format_hist("Histogram of col sizes:", stats.col_size_share, stats.col_size_cumulative)
    lines += _format_hist("Ratio of index distribution at different column sizes:", stats.index_share,
                          stats.index_cumulative)
    return "\n".join(lines)


_HEADER = re.compile(r"Locality stats after processing (\d+) batches of size (\d+)")
_AVG = {
    "Avg # of indices:": "avg_indices",
    "Avg # of unique cols:": "avg_unique",
    "Avg col size:": "avg_col_size",
}
_HISTS = {
    "Histogram of col sizes:": ("col_size_share", "col_size_cumulative"),
    "Ratio of index distribution at different column sizes:": ("index_share", "index_cumulative"),
}


def _parse_number(text: str, where: str, path: Path) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a number", path) from None


def _parse_list(text: str, where: str, path: Path) -> list[float]:
    t = text.strip()
    if not (t.startswith("[") and t.endswith("]")):
        raise InputError(f"{where}: expected a [...] list, got {t[:40]!r}", path)
    items = [x.strip().strip("'\"") for x in t[1:-1].split(",") if x.strip()]
    return [_parse_number(x, where, path) for x in items]


def parse_locality_stats(path: str | os.PathLike) -> dict[str, LocalityStats]:
    """Read every block of a ``locality_stats.txt`` file: ``{block name: LocalityStats}``.

    Bad input raises :class:`InputError` naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("locality stats file not found", p)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError("not a text file", p) from None
    blocks: dict[str, LocalityStats] = {}
    name: str | None = None
    fields: dict[str, Any] = {}
    i = 0

    def finish() -> None:
        if name is None:
            return
        missing = [f for f in LocalityStats.__dataclass_fields__ if f not in fields]
        if missing:
            raise InputError(f"block {name!r} lacks {', '.join(missing)}", p)
        blocks[name] = LocalityStats(**fields)

    while i < len(lines):
        line = lines[i].strip()
        where = f"line {i + 1}"
        i += 1
        if not line:
            continue
        m = _HEADER.fullmatch(line)
        if m:
            if name is None:
                raise InputError(f"{where}: statistics before any block name", p)
            fields["num_batches"], fields["batch_size"] = int(m.group(1)), int(m.group(2))
            continue
        avg = next((k for k in _AVG if line.startswith(k)), None)
        if avg is not None:
            if name is None:
                raise InputError(f"{where}: statistics before any block name", p)
            fields[_AVG[avg]] = _parse_number(line[len(avg):].strip(), where, p)
            continue
        if line in _HISTS:
            if name is None:
                raise InputError(f"{where}: histogram before any block name", p)
            share_field, cum_field = _HISTS[line]
            if i + NUM_BINS + 2 > len(lines):
                raise InputError(f"{where}: histogram cut short", p)
            shares = []
            for b, label in enumerate(BIN_LABELS):
                row = lines[i + b].strip()
                if not row.startswith(label + ":"):
                    raise InputError(f"line {i + b + 1}: expected bin {label!r}, got {row[:40]!r}", p)
                shares.append(_parse_number(row[len(label) + 1:].strip(), f"line {i + b + 1}", p))
            i += NUM_BINS
            edges = _parse_list(lines[i], f"line {i + 1}", p)
            if tuple(int(e) for e in edges) != BIN_EDGES:
                raise InputError(f"line {i + 1}: unexpected bin edges", p)
            cumulative = _parse_list(lines[i + 1], f"line {i + 2}", p)
            if len(cumulative) != NUM_BINS + 1:
                raise InputError(f"line {i + 2}: expected {NUM_BINS + 1} cumulative shares", p)
            i += 2
            fields[share_field] = tuple(shares)
            fields[cum_field] = tuple(cumulative)
            continue
        finish()  # any other line starts a new block
        name, fields = line, {}
    finish()
    if not blocks:
        raise InputError("no locality statistics blocks found", p)
    return blocks


# --- whole-trace statistics ------------------------------------------------------------------------

@dataclass(frozen=True)
class TableTraceStats:
    name: str
    rows: int
    spec_alpha: float  # the skew the trace's spec states
    lookups: int  # over the batches read
    lookups_per_batch: float
    unique_rows_per_batch: float
    mean_pooling: float  # lookups per bag
    alpha_estimate: float  # NaN when too few ranks qualify (see the module docstring)
    alpha_fit_ranks: int


@dataclass(frozen=True)
class TraceStats:
    trace_id: str
    num_batches: int  # read
    total_batches: int  # in the file
    batch_size: int
    num_tables: int
    lookups: int
    lookups_per_batch: float
    unique_rows_per_batch: float
    tables: tuple[TableTraceStats, ...]
    locality: LocalityStats

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["locality"] = self.locality.to_dict()
        for t in d["tables"]:
            if not math.isfinite(t["alpha_estimate"]):
                t["alpha_estimate"] = None
        return d


def fit_alpha(mean_counts: np.ndarray, min_count: float = ALPHA_FIT_MIN_COUNT) -> tuple[float, int]:
    """Zipf slope of a rank-frequency curve (descending): ``(alpha, ranks used)``, NaN if < 3 ranks."""
    use = mean_counts[: ALPHA_FIT_MAX_RANKS]
    use = use[use >= min_count]
    if use.size < 3:
        return math.nan, int(use.size)
    x = np.log(np.arange(1, use.size + 1, dtype=np.float64))
    slope = np.polyfit(x, np.log(use), 1)[0]
    return float(-slope), int(use.size)


STREAM_LOOKUPS = 1 << 26  # batches with more lookups are read table by table


def _top_counts(counts: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(lookups, unique rows, the largest ``ALPHA_FIT_MAX_RANKS`` counts in descending order) of one table."""
    k = min(counts.size, ALPHA_FIT_MAX_RANKS)
    top = np.partition(counts, counts.size - k)[counts.size - k:] if counts.size > k else counts
    return int(counts.sum()), int(counts.size), np.sort(top)[::-1]


def _batch_by_table(reader: TraceReader, i: int, f: h5py.File) -> tuple[BatchLocality, list[np.ndarray]]:
    """Locality of batch ``i`` read one table at a time (a full-size meta-2021 batch is 7 GB as int64)."""
    T, B = reader.num_tables, reader.batch_size
    tb1 = T * B + 1
    base, end = int(reader.batch_ptr[i]), int(reader.batch_ptr[i + 1])
    off_ds, idx_ds = f["offsets"], f["indices"]
    bounds = off_ds[i * tb1 : (i + 1) * tb1 : B].astype(np.int64)  # offsets[t * B] for t = 0..T
    if bounds.size != T + 1 or bounds[0] != 0 or bounds[-1] != end - base or np.any(np.diff(bounds) < 0):
        raise InputError(f"batch {i}: table offsets do not match the batch's lookups", reader.path)
    col = np.zeros(NUM_BINS, dtype=np.int64)
    idx_hist = np.zeros(NUM_BINS, dtype=np.int64)
    per_table, unique = [], 0
    for t in range(T):
        if reader.validate:
            off = off_ds[i * tb1 + t * B : i * tb1 + (t + 1) * B + 1].astype(np.int64)
            if np.any(np.diff(off) < 0):
                raise InputError(f"batch {i}: offsets are not monotonic (negative bag length)", reader.path)
        idx = idx_ds[base + int(bounds[t]) : base + int(bounds[t + 1])].astype(np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= reader.rows[t]):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise InputError(f"batch {i}: index {bad} out of range for table {t} with {int(reader.rows[t])} rows",
                             reader.path)
        counts = table_counts(idx, int(reader.rows[t]))
        del idx
        per_table.append(_top_counts(counts))
        if counts.size:
            bins = count_bins(counts)
            col += np.bincount(bins, minlength=NUM_BINS)
            idx_hist += np.bincount(bins, weights=counts, minlength=NUM_BINS).astype(np.int64)
            unique += counts.size
    return BatchLocality(end - base, unique, col, idx_hist), per_table


def _localities(reader: TraceReader, nb: int, stream_lookups: int) -> Iterable[tuple[BatchLocality, list[np.ndarray]]]:
    f = None
    try:
        for i in range(nb):
            if int(reader.batch_ptr[i + 1] - reader.batch_ptr[i]) > stream_lookups:
                if f is None:
                    f = h5py.File(reader.path, "r")
                yield _batch_by_table(reader, i, f)
            else:
                per_table: list[np.ndarray] = []
                loc = batch_locality(reader.batch(i), reader.rows, per_table)
                yield loc, [_top_counts(c) for c in per_table]
    finally:
        if f is not None:
            f.close()


def trace_stats(reader: TraceReader, max_batches: int | None = None, stream_lookups: int = STREAM_LOOKUPS
                ) -> TraceStats:
    """Statistics of the first ``max_batches`` batches (all if None), one batch in memory at a time, or one
    table at a time for batches of more than ``stream_lookups`` lookups."""
    nb = reader.num_batches if max_batches is None else max(0, min(int(max_batches), reader.num_batches))
    T, B = reader.num_tables, reader.batch_size
    acc = LocalityAccumulator(B)
    lookups = np.zeros(T, dtype=np.int64)
    unique = np.zeros(T, dtype=np.int64)
    curve = np.zeros((T, ALPHA_FIT_MAX_RANKS))
    for loc, per_table in _localities(reader, nb, stream_lookups):
        acc.add(loc)
        for t, (n_look, n_uniq, top) in enumerate(per_table):
            lookups[t] += n_look
            unique[t] += n_uniq
            curve[t, : top.size] += top
    n = max(nb, 1)
    tables = []
    for t, spec in enumerate(reader.spec.tables):
        alpha, used = fit_alpha(curve[t] / n)
        tables.append(TableTraceStats(spec.name, spec.rows, spec.zipf_alpha, int(lookups[t]), lookups[t] / n,
                                      unique[t] / n, lookups[t] / (n * B), alpha, used))
    total = int(lookups.sum())
    return TraceStats(reader.trace_id, nb, reader.num_batches, B, T, total, total / n, float(unique.sum()) / n,
                      tuple(tables), acc.result())

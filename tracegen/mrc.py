"""LRU miss-ratio curves of a trace: exact stack distances (Mattson et al.), or SHARDS-sampled.

An LRU cache of ``C`` rows hits a lookup exactly when fewer than ``C``
distinct rows were looked up since the previous lookup of the same row (its
*stack distance*, counted 0-based here; a first lookup is a cold miss). One
pass computes every lookup's stack distance with a Fenwick tree over time
(``O(N log N)``): when a row is looked up at time ``i`` and before at ``j``,
its distance is the number of rows whose latest lookup lies in ``(j, i)``.
The miss ratio at every cache size follows from the distances' histogram.

Keys are ``(table, row)`` pairs in trace order (batch by batch, tables in
order, bags in order within a table): the whole trace's curve is that of one
cache shared by all tables; a table's curve is that of its own cache.

SHARDS (Waldspurger et al., FAST 2015): keep only the lookups whose key hashes
below a threshold (a fixed share ``rate`` of the *keys*, so every kept key
keeps all its lookups), compute the distances of the kept stream, and scale
them by ``1 / rate``. Memory and time shrink by ``rate``; the curve's error
is reported as the largest difference between two independent samplings
(two hash seeds), which :func:`trace_mrc` computes when it samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import h5py
import numba
import numpy as np

from tracegen.jit import NJIT_OPTIONS
from tracegen.trace_io import TraceReader

MAX_EXACT_LOOKUPS = 1 << 24  # larger traces are SHARDS-sampled down to about this many lookups
_HASH_BITS = 24
_TABLE_SHIFT = np.uint64(40)


@numba.njit(**NJIT_OPTIONS)
def fenwick_prefix(tree, k):
    """Sum of the marks at positions ``< k`` of the Fenwick tree ``tree`` (1-based, ``tree[0]`` unused)."""
    s = 0
    while k > 0:
        s += tree[k]
        k -= k & (-k)
    return s


@numba.njit(**NJIT_OPTIONS)
def fenwick_add(tree, pos, v):
    """Add ``v`` to the mark at position ``pos`` (0-based) of the Fenwick tree ``tree``."""
    k = pos + 1
    n = tree.size - 1
    while k <= n:
        tree[k] += v
        k += k & (-k)


@numba.njit(**NJIT_OPTIONS)
def _stack_distance_kernel(prev, out):
    n = prev.size
    tree = np.zeros(n + 1, dtype=np.int32)  # Fenwick tree of "latest lookup of its row" marks over time
    for i in range(n):
        j = prev[i]
        if j < 0:
            out[i] = -1
        else:
            # marks in (j, i): prefix(i) - prefix(j + 1), prefix(k) = marks at positions < k
            out[i] = fenwick_prefix(tree, i) - fenwick_prefix(tree, j + 1)
            fenwick_add(tree, j, -1)
        fenwick_add(tree, i, 1)


def previous_occurrence(keys: np.ndarray) -> np.ndarray:
    """``prev[i]``: the last ``j < i`` with ``keys[j] == keys[i]``, or -1."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    prev = np.full(keys.size, -1, dtype=np.int64)
    same = np.flatnonzero(sk[1:] == sk[:-1])
    prev[order[same + 1]] = order[same]
    return prev


def stack_distances(keys: np.ndarray) -> np.ndarray:
    """Every lookup's LRU stack distance (0-based: a hit in a cache of ``C`` rows iff ``0 <= d < C``; -1: cold)."""
    keys = np.ascontiguousarray(keys)
    if keys.ndim != 1:
        raise ValueError("keys must be 1-d")
    out = np.empty(keys.size, dtype=np.int64)
    if keys.size:
        _stack_distance_kernel(previous_occurrence(keys), out)
    return out


def miss_ratios(distances: np.ndarray, sizes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Miss ratio of an LRU cache of each of ``sizes`` rows, given the lookups' stack distances (sampled ones
    scaled by ``scale = 1 / rate``)."""
    if distances.size == 0:
        return np.zeros(len(sizes))
    d = np.sort(distances[distances >= 0].astype(np.float64) * scale)
    hits = np.searchsorted(d, np.asarray(sizes, dtype=np.float64), side="left")  # d < C
    return 1.0 - hits / distances.size


def default_sizes(max_rows: float) -> np.ndarray:
    """Cache sizes 1, 2, 4, ... up to the first power of two at or above ``max_rows``."""
    top = max(1, int(np.ceil(np.log2(max(max_rows, 1)))))
    return 2 ** np.arange(top + 1, dtype=np.int64)


def _hash(keys: np.ndarray, seed: int) -> np.ndarray:
    z = keys.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & (2**64 - 1))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_mask(keys: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """SHARDS: keep the lookups whose key hashes below ``rate`` of the hash range."""
    if rate >= 1.0:
        return np.ones(keys.size, dtype=bool)
    return (_hash(keys, seed) >> np.uint64(64 - _HASH_BITS)) < np.uint64(int(rate * (1 << _HASH_BITS)))


def table_lookups(reader: TraceReader, max_batches: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(table, rows looked up)`` in trace order, one table of one batch at a time (bounded memory)."""
    nb = reader.num_batches if max_batches is None else min(int(max_batches), reader.num_batches)
    T, B = reader.num_tables, reader.batch_size
    tb1 = T * B + 1
    with h5py.File(reader.path, "r") as f:
        off_ds, idx_ds = f["offsets"], f["indices"]
        for i in range(nb):
            base = int(reader.batch_ptr[i])
            bounds = off_ds[i * tb1 : (i + 1) * tb1 : B].astype(np.int64)
            for t in range(T):
                yield t, idx_ds[base + int(bounds[t]) : base + int(bounds[t + 1])].astype(np.int64)


@dataclass(frozen=True)
class MissRatioCurve:
    """Miss ratio per cache size (rows) of one cache: the whole trace's, or one table's."""

    name: str
    sizes: tuple[int, ...]
    miss_ratio: tuple[float, ...]
    lookups: int  # in the stream (before sampling)
    sampled_lookups: int
    rate: float  # 1 = exact
    error: float | None  # largest |difference| between two samplings; None when exact

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sizes": list(self.sizes), "miss_ratio": list(self.miss_ratio),
                "lookups": self.lookups, "sampled_lookups": self.sampled_lookups, "rate": self.rate,
                "exact": self.rate >= 1.0, "sampling_error": self.error}


def _collect(reader: TraceReader, tables: set[int], rate: float, seeds: tuple[int, ...], max_batches: int | None
             ) -> tuple[list[np.ndarray], int, np.ndarray]:
    """Sampled keys per seed, the stream's lookups, and the lookups per table."""
    parts: list[list[np.ndarray]] = [[] for _ in seeds]
    n, per_table = 0, np.zeros(reader.num_tables, dtype=np.int64)
    for t, rows in table_lookups(reader, max_batches):
        keys = (np.uint64(t) << _TABLE_SHIFT) | rows.astype(np.uint64)
        n += rows.size
        per_table[t] += rows.size
        for k, seed in enumerate(seeds):
            parts[k].append(keys[sample_mask(keys, rate, seed)])
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.uint64) for p in parts], n, per_table


def _curve(name: str, keys_by_seed: list[np.ndarray], lookups: int, rate: float, sizes: np.ndarray
           ) -> MissRatioCurve:
    curves = [miss_ratios(stack_distances(k), sizes, 1.0 / rate) for k in keys_by_seed]
    err = float(np.max(np.abs(curves[0] - curves[1]))) if len(curves) > 1 else None
    mr = np.clip(np.mean(curves, axis=0), 0.0, 1.0)
    return MissRatioCurve(name, tuple(int(s) for s in sizes), tuple(float(x) for x in mr), int(lookups),
                          int(keys_by_seed[0].size), float(rate), err)


def trace_mrc(reader: TraceReader, tables: list[int] | None = None, max_batches: int | None = None,
              rate: float | None = None, max_exact: int = MAX_EXACT_LOOKUPS) -> list[MissRatioCurve]:
    """The whole trace's LRU miss-ratio curve, then one per table of ``tables``. Exact when the trace has at
    most ``max_exact`` lookups (or ``rate = 1``), else SHARDS at ``rate`` (default ``max_exact / lookups``)."""
    nb = reader.num_batches if max_batches is None else min(int(max_batches), reader.num_batches)
    total = int(reader.batch_ptr[nb])
    if rate is None:
        rate = 1.0 if total <= max_exact else max_exact / total
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
    seeds = (0,) if rate >= 1.0 else (0, 1)
    keys, n, per_table = _collect(reader, set(tables or []), rate, seeds, nb)
    sizes = default_sizes(float(reader.rows.sum()))
    out = [_curve("all tables", keys, n, rate, sizes[sizes <= max(2, 2 * n)])]
    for t in tables or []:
        sel = [k[(k >> _TABLE_SHIFT) == np.uint64(t)] for k in keys]
        ts = default_sizes(float(reader.rows[t]))
        out.append(_curve(reader.spec.tables[t].name, sel, int(per_table[t]), rate,
                          ts[ts <= max(2, 2 * int(per_table[t]))]))
    return out

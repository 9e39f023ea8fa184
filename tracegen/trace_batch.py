"""One batch of a trace in memory (table-major CSR) and the checks every batch passes: offsets start at 0,
never decrease and end at the number of indices; every index of table ``t`` lies in ``[0, rows[t])``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tracegen.errors import InputError
from tracegen.jit import njit


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

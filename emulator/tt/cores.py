"""Tensor-train (TT) tables: shapes, the cores, plain NumPy rebuilds, reconstruction errors, HDF5.

Functions first, a thin frozen :class:`TTCores` on top (tensorly's
``decomposition/_tt.py``); names follow FBTT-Embedding (``tt_p_shapes``,
``tt_q_shapes``, ``tt_ranks``).

Layout. A table ``W`` of ``rows x dim`` is padded with zero rows to
``prod(p_shapes)`` rows. Row ``r`` maps to ``(i_1..i_d)`` in mixed radix over
``p_shapes`` and column ``j`` to ``(j_1..j_d)`` over ``q_shapes`` (``i_1`` and
``j_1`` most significant). Core ``k`` has shape ``(p_k, r_k, q_k, r_{k+1})`` so
that ``core[k][i_k]`` is one contiguous ``(r_k, q_k, r_{k+1})`` slice, and::

    W[r, j] = sum_alpha core_1[i_1][0, j_1, a_1] core_2[i_2][a_1, j_2, a_2] ... core_d[i_d][a_{d-1}, j_d, 0]

The fast row rebuild (the compute-centric core) is ``emulator.tt.kernels``;
this module holds the plain NumPy versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tracegen.errors import InputError

_SVD_MAX_ELEMENTS = 1 << 22  # wider unfoldings use the Gram matrix (memory: m*m, not m*n)
_FACTOR_WINDOW = 32  # candidate factors tried below the d-th root of what is left to cover
_MAX_FACTOR_RATIO = 1.5  # largest / smallest factor of factorize_rows


# ---------------------------------------------------------------------------------------------- shapes


def factorize_rows(rows: int, d: int = 3) -> tuple[int, ...]:
    """``d`` near-balanced factors (ascending) with product >= ``rows`` and the least padding.

    Candidates have a largest/smallest factor ratio <= 1.5 (core bytes grow
    with the sum of the factors, so balance matters); among them the least
    waste ``prod - rows`` wins, then the best balance. The balanced ceiling
    ``ceil(rows ** (1/d))`` repeated ``d`` times is always a candidate.
    ``factorize_rows(11_000_000) == (200, 220, 250)`` (TT-Rec's shape).
    """
    rows, d = int(rows), int(d)
    if d < 1:
        raise ValueError(f"d={d}: a TT needs at least one core")
    if rows < 1:
        raise ValueError(f"rows={rows}: a table needs at least one row")
    ceiling = int(math.ceil(rows ** (1.0 / d) - 1e-9))
    while ceiling**d < rows:  # guard against float rounding
        ceiling += 1
    best = (ceiling**d - rows, 1.0, (ceiling,) * d)
    root = rows ** (1.0 / d)
    for f in range(max(1, int(root) - _FACTOR_WINDOW), int(root) + 1):  # f: the smallest factor
        sub = _best_row_factors(-(-rows // f), d - 1, f, int(f * _MAX_FACTOR_RATIO))
        if sub is not None:
            factors = (f,) + sub
            key = (math.prod(factors) - rows, factors[-1] / factors[0], factors)
            best = min(best, key)
    return best[2]


def _best_row_factors(rows: int, d: int, lo: int, hi: int) -> tuple[int, ...] | None:
    """Ascending factors in [lo, hi] with product >= rows: least waste, then least spread; None if impossible."""
    if d == 1:
        f = max(rows, lo)
        return (f,) if f <= hi else None
    if hi**d < rows:
        return None
    best = None
    root = rows ** (1.0 / d)
    for f in range(max(lo, int(root) - _FACTOR_WINDOW), min(hi, int(root) + 1) + 1):
        sub = _best_row_factors(-(-rows // f), d - 1, f, hi)
        if sub is not None:
            factors = (f,) + sub
            key = (math.prod(factors) - rows, factors[-1] - factors[0], factors)
            best = key if best is None or key < best else best
    return None if best is None else best[2]


def factorize_dim(dim: int, d: int = 3) -> tuple[int, ...]:
    """``d`` ascending factors with product exactly ``dim``, as balanced as possible.

    ``factorize_dim(128) == (4, 4, 8)``, ``factorize_dim(16) == (2, 2, 4)``,
    ``factorize_dim(64) == (4, 4, 4)``. Factors of 1 appear only when ``dim``
    has fewer than ``d`` prime factors.
    """
    dim, d = int(dim), int(d)
    if d < 1:
        raise ValueError(f"d={d}: a TT needs at least one core")
    if dim < 1:
        raise ValueError(f"dim={dim}: an embedding needs at least one column")
    best = None
    for factors in _ordered_factorizations(dim, d, 1):
        key = (factors[-1] / factors[0], factors[-1])
        if best is None or key < best[0]:
            best = (key, factors)
    return best[1]


def _ordered_factorizations(n: int, d: int, min_factor: int):
    if d == 1:
        if n >= min_factor:
            yield (n,)
        return
    for f in range(min_factor, int(round(n ** (1.0 / d))) + 2):
        if n % f == 0:
            for rest in _ordered_factorizations(n // f, d - 1, f):
                yield (f,) + rest


# ---------------------------------------------------------------------------------------------- cores


@dataclass(frozen=True, eq=False)  # identity equality (arrays have no truth value), hashable
class TTCores:
    """The cores of one TT-compressed table. Core ``k`` is float32, C-contiguous, ``(p_k, r_k, q_k, r_{k+1})``.

    The cores are private read-only copies (kernels may cache layouts derived
    from them), so a ``TTCores`` never changes after construction.
    """

    p_shapes: tuple[int, ...]
    q_shapes: tuple[int, ...]
    ranks: tuple[int, ...]
    cores: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        p, q, r = (tuple(int(x) for x in v) for v in (self.p_shapes, self.q_shapes, self.ranks))
        object.__setattr__(self, "p_shapes", p)
        object.__setattr__(self, "q_shapes", q)
        object.__setattr__(self, "ranks", r)
        d = len(p)
        if d < 1 or len(q) != d:
            raise ValueError(f"tt_p_shapes {p} and tt_q_shapes {q} must be non-empty and of equal length")
        if len(r) != d + 1 or r[0] != 1 or r[-1] != 1 or min(r) < 1:
            raise ValueError(f"tt_ranks {r} must have length {d + 1}, start and end with 1, all >= 1")
        if min(p) < 1 or min(q) < 1:
            raise ValueError(f"shapes must be >= 1: tt_p_shapes {p}, tt_q_shapes {q}")
        if len(self.cores) != d:
            raise ValueError(f"{len(self.cores)} cores given for {d} TT dimensions")
        cores = []
        for k, core in enumerate(self.cores):
            core = np.asarray(core)
            expected = (p[k], r[k], q[k], r[k + 1])
            if core.shape != expected:
                raise ValueError(f"core {k}: shape {core.shape} is not (p_k, r_k, q_k, r_k+1) = {expected}")
            if not np.issubdtype(core.dtype, np.floating):
                raise ValueError(f"core {k}: dtype {core.dtype} is not floating point")
            core = np.array(core, dtype=np.float32, order="C")  # a private copy, made read-only below
            if not np.all(np.isfinite(core)):
                raise ValueError(f"core {k}: contains NaN or infinite values")
            core.flags.writeable = False
            cores.append(core)
        object.__setattr__(self, "cores", tuple(cores))

    @property
    def d(self) -> int:
        return len(self.p_shapes)

    @property
    def num_rows(self) -> int:
        """Rows the cores can address (``prod(p_shapes)``, >= the table's rows)."""
        return math.prod(self.p_shapes)

    @property
    def dim(self) -> int:
        return math.prod(self.q_shapes)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cores)

    def compression_ratio(self, rows: int, row_bytes: int) -> float:
        """Raw table bytes (``rows * row_bytes``) per byte of cores."""
        return rows * row_bytes / self.nbytes


def random_tt(p_shapes, q_shapes, ranks, rng: np.random.Generator, scale: float = 1.0) -> TTCores:
    """Gaussian cores whose rebuilt table has entries of standard deviation ``scale``.

    An entry is a sum of ``prod(ranks[1:-1])`` products of ``d`` core entries,
    so each core gets standard deviation ``(scale**2 / prod(ranks))**(1/(2d))``.
    """
    p, q, r = tuple(p_shapes), tuple(q_shapes), tuple(ranks)
    d = len(p)
    sigma = (scale**2 / math.prod(r)) ** (1.0 / (2 * d))
    cores = tuple((rng.standard_normal((p[k], r[k], q[k], r[k + 1])) * sigma).astype(np.float32) for k in range(d))
    return TTCores(p, q, r, cores)


# ---------------------------------------------------------------------------------------------- rebuild


def row_digits(rows: np.ndarray, p_shapes) -> list[np.ndarray]:
    """Mixed-radix digits ``[i_1, ..., i_d]`` of row ids (``i_1`` most significant)."""
    rest = np.asarray(rows, dtype=np.int64)
    digits = []
    for p in reversed(tuple(p_shapes)):
        digits.append(rest % p)
        rest = rest // p
    return digits[::-1]


def tt_rebuild_rows_reference(tt: TTCores, rows, chunk_rows: int = 4096) -> np.ndarray:
    """Rows ``rows`` of the table as ``(n, dim)`` float32: gather each core slice, multiply left to right."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= tt.num_rows):
        raise ValueError(f"row ids must be in [0, {tt.num_rows})")
    out = np.empty((rows.size, tt.dim), dtype=np.float32)
    for s in range(0, rows.size, chunk_rows):
        idx = row_digits(rows[s:s + chunk_rows], tt.p_shapes)
        acc = tt.cores[0][idx[0]].astype(np.float64).reshape(len(idx[0]), tt.q_shapes[0], tt.ranks[1])
        for k in range(1, tt.d):
            g = tt.cores[k][idx[k]].astype(np.float64).reshape(len(idx[k]), tt.ranks[k], -1)
            acc = np.matmul(acc, g).reshape(len(idx[k]), -1, tt.ranks[k + 1])
        out[s:s + chunk_rows] = acc.reshape(len(idx[0]), tt.dim)
    return out


def tt_rebuild_range(tt: TTCores, start: int, stop: int) -> np.ndarray:
    """Rows ``start..stop-1`` as ``(stop-start, dim)`` float32, by large GEMMs over row prefixes.

    Contiguous rows share their leading indices, so each level multiplies all
    distinct prefixes in the range by the whole next core at once.
    """
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= tt.num_rows:
        raise ValueError(f"row range [{start}, {stop}) is not within [0, {tt.num_rows}]")
    if start == stop:
        return np.empty((0, tt.dim), dtype=np.float32)
    left = _prefix_products(tt, tt.d, start, stop)  # (n, dim, 1)
    return left.reshape(stop - start, tt.dim).astype(np.float32, copy=False)


def _prefix_products(tt: TTCores, k: int, start: int, stop: int) -> np.ndarray:
    """Products of cores ``1..k`` for prefixes ``start..stop-1`` over ``p_shapes[:k]``: ``(n, Q_k, r_k)``."""
    if k == 1:
        c = tt.cores[0][start:stop]
        return c.reshape(stop - start, tt.q_shapes[0], tt.ranks[1])
    p, r, q, r2 = tt.cores[k - 1].shape
    first, last = start // p, (stop - 1) // p + 1
    left = _prefix_products(tt, k - 1, first, last)  # (m, Q, r)
    m, big_q = left.shape[0], left.shape[1]
    core = tt.cores[k - 1].transpose(1, 0, 2, 3).reshape(r, p * q * r2)
    prod = (left.reshape(m * big_q, r) @ core).reshape(m, big_q, p, q, r2)
    prod = prod.transpose(0, 2, 1, 3, 4).reshape(m * p, big_q * q, r2)
    return prod[start - first * p:stop - first * p]


def reconstruction_error(tt: TTCores, read_rows_at: Callable[[np.ndarray], np.ndarray], sample_rows) -> dict:
    """Error of the cores against the true rows ``read_rows_at(sample_rows)``.

    ``rel_fro_error`` = ||true - rebuilt||_F / ||true||_F over the sample,
    ``max_abs_error`` = max |true - rebuilt|, ``sample_rows`` = sample size.
    """
    sample = np.asarray(sample_rows, dtype=np.int64).reshape(-1)
    if sample.size == 0:
        return {"rel_fro_error": 0.0, "max_abs_error": 0.0, "sample_rows": 0}
    true = np.asarray(read_rows_at(sample), dtype=np.float64)
    if true.shape != (sample.size, tt.dim):
        raise ValueError(f"read_rows_at returned shape {true.shape}, expected {(sample.size, tt.dim)}")
    diff = true - tt_rebuild_rows_reference(tt, sample).astype(np.float64)
    norm = float(np.linalg.norm(true))
    err = float(np.linalg.norm(diff))
    return {"rel_fro_error": err / norm if norm > 0 else (0.0 if err == 0 else math.inf),
            "max_abs_error": float(np.abs(diff).max()), "sample_rows": int(sample.size)}


# ---------------------------------------------------------------------------------------------- HDF5


def save_tt(h5group, tt: TTCores) -> None:
    """Write datasets ``core_0..core_{d-1}`` and attrs ``tt_p_shapes``, ``tt_q_shapes``, ``tt_ranks``."""
    for k, core in enumerate(tt.cores):
        h5group.create_dataset(f"core_{k}", data=core)
    h5group.attrs["tt_p_shapes"] = np.asarray(tt.p_shapes, dtype=np.int64)
    h5group.attrs["tt_q_shapes"] = np.asarray(tt.q_shapes, dtype=np.int64)
    h5group.attrs["tt_ranks"] = np.asarray(tt.ranks, dtype=np.int64)


def load_tt(h5group, name: str | None = None) -> TTCores:
    """Read cores written by :func:`save_tt` (from ``h5group[name]`` when ``name`` is given).

    A missing group, attribute or dataset, or cores inconsistent with the
    attributes, raise ``InputError`` naming the file and the group.
    """
    filename = getattr(getattr(h5group, "file", None), "filename", None)
    if name is not None:
        if name not in h5group:
            raise InputError(f"TT group {name!r} is missing", filename)
        h5group = h5group[name]
    where = f"TT group {h5group.name!r}"
    try:
        attrs = {k: tuple(int(x) for x in np.asarray(h5group.attrs[k]).reshape(-1))
                 for k in ("tt_p_shapes", "tt_q_shapes", "tt_ranks")}
        cores = tuple(np.asarray(h5group[f"core_{k}"][...]) for k in range(len(attrs["tt_p_shapes"])))
    except (KeyError, OSError, ValueError, TypeError) as e:
        raise InputError(f"{where}: unreadable or incomplete ({e})", filename) from e
    try:
        return TTCores(attrs["tt_p_shapes"], attrs["tt_q_shapes"], attrs["tt_ranks"], cores)
    except ValueError as e:
        raise InputError(f"{where}: {e}", filename) from e

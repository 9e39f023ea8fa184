"""Synthetic lookup traces: Zipf rows over a hidden permutation, per-bag pooling, temporal reuse.

How one batch is made, table by table (table ``t`` of batch ``i`` draws from its
own stream ``SeedSequence(seed, spawn_key=(0, t, i))``, so any batch can be
generated without the ones before it, unless reuse is on):

1. Bag sizes: ``B`` pooling factors from the table's :class:`PoolingSpec`
   (fixed, uniform, poisson or lognormal, clipped to ``[min, max]``).
2. Ranks: one Zipf rank per lookup over the table's ``rows`` ranks, rank ``k``
   (1-based) with probability ``k**-alpha / H(rows, alpha)``, exactly:
   the first ``HEAD_ROWS`` ranks by inverse CDF (a cached CDF searched through
   a guide table), the ranks beyond by Hörmann & Derflinger's
   rejection-inversion sampler ("Rejection-inversion to generate variates from
   monotone discrete distributions", ACM TOMACS 6(3), 1996; the formulation of
   Apache Commons RNG's ``RejectionInversionZipfSampler``), restricted to the
   tail. Memory stays O(HEAD_ROWS) per table however large it is, and one
   uniform makes one lookup (about 1% of tail candidates are rejected).
   ``alpha == 0`` is uniform.
3. Rows: rank ``k`` (0-based) becomes row ``perm_t(k)``, a seeded bijection on
   ``[0, rows)``: an unbalanced 4-round Feistel network on the smallest power of
   two ``>= rows``, cycle-walking back into range. No permutation array is
   stored (40M-row tables cost nothing), the hot rows are scattered over the
   table rather than being the low ids, and the key depends only on
   ``(seed, t)`` (stream ``spawn_key=(1, t)``), so a row keeps its popularity
   across batches.
4. Reuse (``reuse > 0``): each lookup, with probability ``reuse``, is replaced
   by a uniformly chosen lookup of the previous batch's same table. Batch ``i``
   then depends on batch ``i - 1``; :func:`generate_batch` regenerates the
   chain from batch 0 unless it is handed the previous batch.

The same ``(spec, params)`` gives byte-identical traces.

The Numba kernels here use ``numba.njit`` with the options of
``emulator.jit.NJIT_OPTIONS`` (repeated, because ``tracegen`` sits below
``emulator`` and must not import it).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numba
import numpy as np

from tracegen.errors import InputError
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import TraceWriter

GENERATOR_NAME = "screc.zipf"
GENERATOR_VERSION = 1
HEAD_ROWS = 1 << 16  # ranks sampled by inverse CDF (the CDF stays in L2); rejection-inversion beyond
FEISTEL_ROUNDS = 4
_NJIT_OPTIONS = dict(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class GeneratorParams:
    """Everything besides the model spec that determines a synthetic trace.

    ``reuse``: probability that a lookup copies a random lookup of the previous
    batch's same table (0 = off). ``batch_size``: overrides the spec's.
    ``zipf_alpha``: overrides every table's skew; ``alpha_overrides``:
    ``(table name, alpha)`` pairs applied after it. ``permute``: scatter hot
    rows with the hash permutation (off: rank ``k`` is row ``k``).
    """

    seed: int = 0
    num_batches: int = 1
    reuse: float = 0.0
    batch_size: int | None = None
    zipf_alpha: float | None = None
    alpha_overrides: tuple[tuple[str, float], ...] = ()
    permute: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise InputError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if int(self.num_batches) != self.num_batches or self.num_batches < 1:
            raise InputError(f"number of batches must be a whole number >= 1, got {self.num_batches!r}")
        if not (0.0 <= float(self.reuse) <= 1.0):
            raise InputError(f"reuse must be a probability in [0, 1], got {self.reuse!r}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size < 1):
            raise InputError(f"batch size must be a whole number >= 1, got {self.batch_size!r}")
        alphas = [self.zipf_alpha] if self.zipf_alpha is not None else []
        alphas += [a for _, a in self.alpha_overrides]
        for a in alphas:
            if not (math.isfinite(float(a)) and float(a) >= 0):
                raise InputError(f"zipf alpha must be finite and >= 0, got {a!r}")
        object.__setattr__(self, "alpha_overrides", tuple((str(n), float(a)) for n, a in self.alpha_overrides))

    def effective_spec(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with this batch size and these skews applied (idempotent)."""
        names = {t.name for t in spec.tables}
        for name, _ in self.alpha_overrides:
            if name not in names:
                raise InputError(f"zipf alpha override names unknown table {name!r}")
        over = dict(self.alpha_overrides)
        tables = []
        for t in spec.tables:
            alpha = over.get(t.name, self.zipf_alpha if self.zipf_alpha is not None else t.zipf_alpha)
            tables.append(t if alpha == t.zipf_alpha else dataclasses.replace(t, zipf_alpha=float(alpha)))
        out = dataclasses.replace(spec, tables=tuple(tables))
        return out.with_batch_size(self.batch_size) if self.batch_size is not None else out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["alpha_overrides"] = [list(p) for p in self.alpha_overrides]
        d["generator"] = GENERATOR_NAME
        d["generator_version"] = GENERATOR_VERSION
        return d


# --- seeded hash permutation (Feistel network with cycle walking) ---------------------------

@numba.njit
def _round_hash(v, key):
    h = (v ^ key) * _M1
    h ^= h >> np.uint64(31)
    h *= _M2
    h ^= h >> np.uint64(29)
    h *= _M3
    h ^= h >> np.uint64(32)
    return h


@numba.njit(**_NJIT_OPTIONS)
def _feistel_kernel(x, rows, bits, keys, out):
    rbits = np.uint64(bits // 2)
    lmask = np.uint64((1 << (bits - bits // 2)) - 1)
    rmask = np.uint64((1 << (bits // 2)) - 1)
    n = np.uint64(rows)
    for i in range(x.size):
        out[i] = np.int64(_feistel_one(np.uint64(x[i]), n, rbits, lmask, rmask, keys))


def permutation_bits(rows: int) -> int:
    """Bits of the Feistel domain: the smallest ``b >= 1`` with ``2**b >= rows``."""
    return max(1, int(rows - 1).bit_length())


def permutation_keys(seed: int, table_index: int, rounds: int = FEISTEL_ROUNDS) -> np.ndarray:
    """The round keys of table ``table_index``'s permutation (uint64, one per round)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(1, int(table_index)))
    return ss.generate_state(rounds, dtype=np.uint64)


def feistel_permute(x: np.ndarray, rows: int, keys: np.ndarray) -> np.ndarray:
    """``perm(x)`` for every ``x`` in ``[0, rows)``: a bijection on ``[0, rows)`` keyed by ``keys``."""
    x = np.ascontiguousarray(x)
    if x.dtype != np.int64:
        raise ValueError(f"feistel_permute needs int64 input, got {x.dtype}")
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if x.size and (int(x.min()) < 0 or int(x.max()) >= rows):
        raise ValueError(f"feistel_permute input outside [0, {rows})")
    out = np.empty_like(x)
    if rows == 1:
        out[:] = 0
        return out
    _feistel_kernel(x, int(rows), permutation_bits(rows), keys, out)
    return out


# --- Zipf over a finite support ---------------------------------------------------------------
# Rank k (1-based) has weight h(k) = k**-alpha. The head (ranks 1..K, K = min(rows, HEAD_ROWS))
# is sampled by inverse CDF with a guide table (Chen & Asau); the tail (ranks K+1..rows) by
# rejection-inversion. A uniform below P(head) picks the head; otherwise it is rescaled and used
# as the tail's first candidate. Head ranks map to rows through a materialised permutation
# prefix; tail ranks through the Feistel network.

@numba.njit
def _helper1(x):  # log1p(x) / x, continuous at 0
    if abs(x) > 1e-8:
        return math.log1p(x) / x
    return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))


@numba.njit
def _helper2(x):  # expm1(x) / x, continuous at 0
    if abs(x) > 1e-8:
        return math.expm1(x) / x
    return 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))


@numba.njit
def _h_integral(x, alpha):  # (x**(1-alpha) - 1) / (1 - alpha), or log(x) at alpha == 1
    log_x = math.log(x)
    return _helper2((1.0 - alpha) * log_x) * log_x


@numba.njit
def _h(x, alpha):
    return math.exp(-alpha * math.log(x))


@numba.njit
def _h_integral_inverse(x, alpha):
    t = x * (1.0 - alpha)
    if t < -1.0:
        t = -1.0  # guards rounding near the support's end
    return math.exp(_helper1(t) * x)


@numba.njit
def _feistel_one(y, n, rbits, lmask, rmask, keys):
    while True:
        left = y >> rbits
        right = y & rmask
        for r in range(keys.size):
            if r % 2 == 0:
                left ^= _round_hash(right, keys[r]) & lmask
            else:
                right ^= _round_hash(left, keys[r]) & rmask
        y = (left << rbits) | right
        if y < n:
            return y


@numba.njit(**_NJIT_OPTIONS)
def _zipf_rows_kernel(u, cdf, guide, perm_head, rows, alpha, bits, keys, permute, out, start):
    head = cdf.size
    m = guide.size - 1
    p_head = cdf[head - 1]
    h_lo = 0.0
    h_n = 0.0
    s = 0.0
    if head < rows:
        h_lo = _h_integral(head + 1.5, alpha) - _h(head + 1.0, alpha)
        h_n = _h_integral(rows + 0.5, alpha)
        s = 2.0 - _h_integral_inverse(_h_integral(2.5, alpha) - _h(2.0, alpha), alpha)
    rbits = np.uint64(bits // 2)
    lmask = np.uint64((1 << (bits - bits // 2)) - 1)
    rmask = np.uint64((1 << (bits // 2)) - 1)
    n = np.uint64(rows)
    j = start
    i = 0
    while j < out.size and i < u.size:
        first = i
        x = u[i]
        i += 1
        if x < p_head:  # head: first k with cdf[k] > x, searched between two guide entries
            g = np.int64(x * m)
            lo = guide[g]
            hi = guide[g + 1]
            while lo < hi:
                mid = (lo + hi) >> 1
                if cdf[mid] > x:
                    hi = mid
                else:
                    lo = mid + 1
            out[j] = perm_head[lo] if permute else lo
            j += 1
            continue
        w = (x - p_head) / (1.0 - p_head)  # uniform in [0, 1) again: the first tail candidate
        k = np.int64(-1)
        while True:
            v = h_n + w * (h_lo - h_n)
            xr = _h_integral_inverse(v, alpha)
            kk = np.int64(xr + 0.5)
            if kk <= head:
                kk = head + 1
            elif kk > rows:
                kk = rows
            if kk - xr <= s or v >= _h_integral(kk + 0.5, alpha) - _h(float(kk), alpha):
                k = kk - 1
                break
            if i >= u.size:
                break
            w = u[i]
            i += 1
        if k < 0:  # out of uniforms in the middle of a sample: report it unstarted
            return j, first
        out[j] = np.int64(_feistel_one(np.uint64(k), n, rbits, lmask, rmask, keys)) if permute else k
        j += 1
    return j, i


def zipf_tail_sum(first: int, last: int, alpha: float) -> float:
    """``sum(k**-alpha for k in range(first, last + 1))`` (1-based ranks; 0 when ``last < first``).

    Summed directly (pairwise) up to 2**22 terms; beyond that the ranks from
    ``c = max(first, 2**16)`` on use Euler-Maclaurin with three correction terms
    (the next term is below 1e-22 of the sum for ``c >= 2**16``).
    """
    if last < first:
        return 0.0
    if last - first < (1 << 22):
        return float(np.sum(np.arange(first, last + 1, dtype=np.float64) ** -alpha))
    c = max(first, 1 << 16)
    direct = float(np.sum(np.arange(first, c, dtype=np.float64) ** -alpha)) if c > first else 0.0
    a, b = float(c), float(last)

    def f(x: float, d: int = 0) -> float:  # d-th derivative of x**-alpha
        coef = 1.0
        for i in range(d):
            coef *= -(alpha + i)
        return coef * x ** (-alpha - d)

    if alpha == 1.0:
        integral = math.log(b) - math.log(a)
    else:
        integral = (b ** (1.0 - alpha) - a ** (1.0 - alpha)) / (1.0 - alpha)
    em = (f(a) + f(b)) / 2 + (f(b, 1) - f(a, 1)) / 12 - (f(b, 3) - f(a, 3)) / 720
    return direct + integral + em


def guide_table(cdf: np.ndarray) -> np.ndarray:
    """``guide[g]`` = first ``k`` with ``cdf[k] > g / m`` (clipped to ``len(cdf) - 1``), ``g = 0..m``.

    ``m`` is a power of two ``>= len(cdf)``, so ``u * m`` and ``g / m`` are exact.
    """
    m = 1 << max(0, int(cdf.size - 1).bit_length())
    g = np.searchsorted(cdf, np.arange(m + 1, dtype=np.float64) / m, side="right")
    return np.minimum(g, cdf.size - 1).astype(np.int64)


class ZipfSampler:
    """Exact Zipf(``alpha``) lookups over ``rows`` ranks, mapped to rows by a seeded permutation.

    ``keys=None`` (or ``permute=False``) returns the 0-based ranks themselves.
    ``head_rows`` bounds the CDF kept in memory (``HEAD_ROWS`` = 2**16 float64,
    plus the guide table and permutation prefix: 1.5 MiB per large table).
    """

    def __init__(self, rows: int, alpha: float, keys: np.ndarray | None = None, head_rows: int | None = None):
        self.rows = int(rows)
        self.alpha = float(alpha)
        if self.rows < 1 or not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"bad Zipf support rows={rows} alpha={alpha}")
        self.keys = np.zeros(0, dtype=np.uint64) if keys is None else np.ascontiguousarray(keys, dtype=np.uint64)
        self.permute = keys is not None and self.rows > 1
        self.bits = permutation_bits(self.rows)
        head = min(self.rows, HEAD_ROWS if head_rows is None else max(1, int(head_rows)))
        w = np.arange(1, head + 1, dtype=np.float64) ** -self.alpha
        cdf = np.cumsum(w)
        total = cdf[-1] + zipf_tail_sum(head + 1, self.rows, self.alpha)
        cdf /= total
        if head == self.rows:
            cdf[-1] = 1.0
        self.cdf = cdf
        self.p_head = float(cdf[-1])
        self.guide = guide_table(cdf)
        ranks = np.arange(head, dtype=np.int64)
        self.perm_head = feistel_permute(ranks, self.rows, self.keys) if self.permute else ranks

    def fill(self, rng: np.random.Generator, out: np.ndarray) -> None:
        """Fill ``out`` (contiguous int64) with rows drawn with Zipf popularity."""
        if self.alpha == 0:  # uniform: the permutation changes nothing
            out[:] = rng.integers(0, self.rows, size=out.size, dtype=np.int64)
            return
        filled = 0
        while filled < out.size:
            need = out.size - filled
            u = rng.random(need + need // 4 + 16)
            filled, _ = _zipf_rows_kernel(u, self.cdf, self.guide, self.perm_head, self.rows, self.alpha,
                                          self.bits, self.keys, self.permute, out, filled)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(int(size), dtype=np.int64)
        self.fill(rng, out)
        return out


def zipf_rows(u: np.ndarray, sampler: ZipfSampler, out: np.ndarray, start: int = 0) -> tuple[int, int]:
    """Kernel wrapper: fill ``out[start:]`` from the uniforms ``u`` (float64 in [0, 1)), in order.

    Returns ``(filled, used)``: ``out[:filled]`` is complete and ``u[:used]``
    was consumed (a sample cut short by the end of ``u`` is left out, unused).
    Needs ``sampler.alpha > 0``.
    """
    if u.dtype != np.float64 or u.ndim != 1 or not u.flags.c_contiguous:
        raise ValueError("u must be a contiguous 1-d float64 array")
    if out.dtype != np.int64 or out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous 1-d int64 array")
    if not sampler.alpha > 0 or not 0 <= start <= out.size:
        raise ValueError(f"zipf_rows needs alpha > 0 and 0 <= start <= out.size (alpha={sampler.alpha})")
    s = sampler
    filled, used = _zipf_rows_kernel(u, s.cdf, s.guide, s.perm_head, s.rows, s.alpha, s.bits, s.keys, s.permute,
                                     out, int(start))
    return int(filled), int(used)


# --- pooling factors -------------------------------------------------------------------------

def bag_sizes(pooling: PoolingSpec, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``batch_size`` pooling factors (int64) drawn from ``pooling``, clipped to ``[min, max]``."""
    p = pooling
    if p.kind == "fixed":
        return np.full(batch_size, int(p.mean), dtype=np.int64)
    if p.kind == "uniform":
        return rng.integers(p.min, p.max + 1, size=batch_size, dtype=np.int64)
    if p.kind == "poisson":
        n = rng.poisson(max(p.mean, 0.0), size=batch_size)
    else:  # lognormal with mean p.mean: mu = log(mean) - sigma^2 / 2
        if p.mean <= 0:
            n = np.zeros(batch_size)
        else:
            n = np.rint(rng.lognormal(math.log(p.mean) - p.sigma**2 / 2, p.sigma, size=batch_size))
    return np.clip(n, p.min, p.max).astype(np.int64)


# --- batches -----------------------------------------------------------------------------------

def _batch_rng(seed: int, table_index: int, batch_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0, int(table_index), int(batch_index))))


class _TableGenerator:
    def __init__(self, table: TableSpec, table_index: int, params: GeneratorParams):
        self.table = table
        keys = permutation_keys(params.seed, table_index) if params.permute else None
        self.sampler = ZipfSampler(table.rows, table.zipf_alpha, keys)

    def fill(self, rng: np.random.Generator, out: np.ndarray, prev: np.ndarray | None, reuse: float) -> None:
        n = out.size
        self.sampler.fill(rng, out)
        if reuse > 0 and prev is not None and prev.size and n:
            mask = rng.random(n) < reuse
            k = int(np.count_nonzero(mask))
            out[mask] = prev[rng.integers(0, prev.size, size=k)]


class TraceGenerator:
    """Generates the batches of ``(spec, params)``; holds per-table samplers (CDFs, keys) between batches."""

    def __init__(self, spec: ModelSpec, params: GeneratorParams):
        self.spec = params.effective_spec(spec)
        self.params = params
        self._tables = [_TableGenerator(t, ti, params) for ti, t in enumerate(self.spec.tables)]

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    def batch(self, i: int, previous: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``i`` as ``(indices, offsets)``; ``previous`` is batch ``i - 1`` (used only when reuse is on)."""
        if not 0 <= i < self.params.num_batches:
            raise IndexError(f"batch {i} outside [0, {self.params.num_batches})")
        reuse = float(self.params.reuse)
        if reuse > 0 and i > 0 and previous is None:
            previous = self.batch(0)
            for j in range(1, i):
                previous = self.batch(j, previous)
        B, T = self.batch_size, self.spec.num_tables
        rngs, sizes = [], []
        for ti, tg in enumerate(self._tables):
            rng = _batch_rng(self.params.seed, ti, i)
            rngs.append(rng)
            sizes.append(bag_sizes(tg.table.pooling, B, rng))
        offsets = np.zeros(T * B + 1, dtype=np.int64)
        np.cumsum(np.concatenate(sizes), out=offsets[1:])
        indices = np.empty(int(offsets[-1]), dtype=np.int64)
        prev_bounds = None
        if reuse > 0 and i > 0:
            prev_bounds = previous[1][::B][: T + 1]
        for ti, tg in enumerate(self._tables):
            lo, hi = int(offsets[ti * B]), int(offsets[(ti + 1) * B])
            prev = None
            if prev_bounds is not None:
                prev = previous[0][int(prev_bounds[ti]) : int(prev_bounds[ti + 1])]
            tg.fill(rngs[ti], indices[lo:hi], prev, reuse)
        return indices, offsets


def generate_batch(spec: ModelSpec, params: GeneratorParams, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``i`` of the trace ``(spec, params)``: ``indices`` (int64) and ``offsets`` (int64, ``T*B + 1``).

    With reuse on, batch ``i`` depends on batch ``i - 1`` and this regenerates
    batches ``0..i-1`` first (cost grows with ``i``); use
    :class:`TraceGenerator` to stream.
    """
    return TraceGenerator(spec, params).batch(i)


def generate_trace(spec: ModelSpec, params: GeneratorParams, path: str | os.PathLike,
                   progress: Callable[[int, int], None] | None = None) -> str:
    """Write the ``params.num_batches`` batches of ``(spec, params)`` to ``path``; return the trace id.

    One batch is in memory at a time (two with reuse on). The file records the
    effective spec (batch size and skew overrides applied) and the parameters.
    ``progress(done_batches, total)`` is called after each batch.
    """
    gen = TraceGenerator(spec, params)
    total = params.num_batches
    with TraceWriter(path, gen.spec, seed=params.seed, params=params.to_dict()) as writer:
        prev = None
        for i in range(total):
            batch = gen.batch(i, prev)
            writer.append(*batch)
            prev = batch if params.reuse > 0 else None
            if progress is not None:
                progress(i + 1, total)
    return writer.trace_id

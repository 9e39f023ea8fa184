"""Synthetic lookup traces: Zipf rows over a hidden permutation, per-bag pooling, temporal reuse.

How one batch is made, table by table (table ``t`` of batch ``i`` draws from its
own stream ``SeedSequence(seed, spawn_key=(0, t, i))``, so any batch can be
generated without the ones before it, unless reuse is on):

1. Bag sizes: ``B`` pooling factors from the table's :class:`PoolingSpec`
   (fixed, uniform, poisson or lognormal, clipped to ``[min, max]``).
2. Ranks: one Zipf rank per lookup over the table's ``rows`` ranks, rank ``k``
   (1-based) with probability ``k**-alpha / sum(j**-alpha)``, exactly, by
   rejection from a piecewise-constant envelope over geometrically growing
   cells of ranks (see :func:`zipf_cells`): O(log rows) memory, no CDF over
   all rows, no transcendental function on the common path, about 1.5
   uniforms per lookup, acceptance above 0.998. (Hörmann & Derflinger's
   rejection-inversion, the other exact O(1)-memory choice, spent about 30 ns
   per lookup in ``log1p`` and ``exp`` alone on the development machine.)
   Uniforms come from a SplitMix64 stream inside the kernel, seeded by one
   draw from the batch's ``Generator``. ``alpha == 0`` is uniform.
3. Rows: rank ``k`` (0-based) becomes row ``perm_t(k)``, a seeded bijection on
   ``[0, rows)``: a 4-round Feistel network with modular addition over
   ``[0, a) x [0, b)``, ``a*b >= rows``, cycle-walking back into range (see
   :func:`hash_permute`). No permutation array is stored beyond the head
   (40M-row tables cost nothing), the hot rows are scattered over the table
   rather than being the low ids, and the key depends only on ``(seed, t)``
   (stream ``spawn_key=(1, t)``), so a row keeps its popularity across
   batches.
4. Reuse (``reuse > 0``): each lookup, with probability ``reuse``, is replaced
   by a uniformly chosen lookup of the previous batch's same table. Batch ``i``
   then depends on batch ``i - 1``; :func:`generate_batch` regenerates the
   chain from batch 0 unless it is handed the previous batch.

The same ``(spec, params)`` gives byte-identical traces.

The Numba kernels here use ``numba.njit`` with the project's options
(:data:`tracegen.jit.NJIT_OPTIONS`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numba
import numpy as np

from tracegen.errors import InputError
from tracegen.jit import NJIT_OPTIONS as _NJIT_OPTIONS
from tracegen.pooling import bag_sizes, scale_pooling
from tracegen.spec import ModelSpec, TableSpec
from tracegen.trace_io import TraceWriter

GENERATOR_NAME = "screc.zipf"
GENERATOR_VERSION = 1
CELL_BITS = 9  # 2**9 Zipf cells per octave of ranks: acceptance above 0.998
PERM_HEAD_ROWS = 1 << 16  # rows of the hottest ranks kept in memory (512 KiB per table)
FEISTEL_ROUNDS = 4
_M1 = np.uint64(0x9E3779B97F4A7C15)
_S11, _S27, _S30, _S31, _S32 = (np.uint64(k) for k in (11, 27, 30, 31, 32))
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 2.0**-53
_MASK32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class GeneratorParams:
    """Everything besides the model spec that determines a synthetic trace.

    ``reuse``: probability that a lookup copies a random lookup of the previous
    batch's same table (0 = off). ``batch_size``: overrides the spec's.
    ``zipf_alpha``: overrides every table's skew; ``alpha_overrides``:
    ``(table name, alpha)`` pairs applied after it. ``permute``: scatter hot
    rows with the hash permutation (off: rank ``k`` is row ``k``).
    ``pooling_scale``: multiplies every table's mean bag size (and its bounds,
    see :func:`scale_pooling`); 1 leaves the spec's pooling as it is.
    :mod:`tracegen.calibrate` writes per-table alphas and a pooling scale.
    """

    seed: int = 0
    num_batches: int = 1
    reuse: float = 0.0
    batch_size: int | None = None
    zipf_alpha: float | None = None
    alpha_overrides: tuple[tuple[str, float], ...] = ()
    permute: bool = True
    pooling_scale: float = 1.0

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
        if not (math.isfinite(float(self.pooling_scale)) and float(self.pooling_scale) > 0):
            raise InputError(f"pooling scale must be a finite number > 0, got {self.pooling_scale!r}")
        object.__setattr__(self, "alpha_overrides", tuple((str(n), float(a)) for n, a in self.alpha_overrides))

    def effective_spec(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with this batch size, these skews and this pooling scale applied (idempotent when
        ``pooling_scale`` is 1)."""
        names = {t.name for t in spec.tables}
        for name, _ in self.alpha_overrides:
            if name not in names:
                raise InputError(f"zipf alpha override names unknown table {name!r}")
        over = dict(self.alpha_overrides)
        tables = []
        for t in spec.tables:
            alpha = over.get(t.name, self.zipf_alpha if self.zipf_alpha is not None else t.zipf_alpha)
            if alpha != t.zipf_alpha:
                t = dataclasses.replace(t, zipf_alpha=float(alpha))
            if self.pooling_scale != 1.0:
                t = dataclasses.replace(t, pooling=scale_pooling(t.pooling, self.pooling_scale))
            tables.append(t)
        out = dataclasses.replace(spec, tables=tuple(tables))
        return out.with_batch_size(self.batch_size) if self.batch_size is not None else out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["alpha_overrides"] = [list(p) for p in self.alpha_overrides]
        d["generator"] = GENERATOR_NAME
        d["generator_version"] = GENERATOR_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | os.PathLike | None = None) -> "GeneratorParams":
        """The inverse of :meth:`to_dict`; unknown keys or bad values raise :class:`InputError`."""
        if not isinstance(d, dict):
            raise InputError("generator parameters must be a JSON object", where)
        if d.get("generator", GENERATOR_NAME) != GENERATOR_NAME:
            raise InputError(f"parameters are for generator {d.get('generator')!r}, not {GENERATOR_NAME!r}", where)
        if int(d.get("generator_version", GENERATOR_VERSION)) > GENERATOR_VERSION:
            raise InputError(f"parameters need generator version {d.get('generator_version')} "
                             f"(this is {GENERATOR_VERSION})", where)
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k not in ("generator", "generator_version")}
        unknown = sorted(set(kw) - fields)
        if unknown:
            raise InputError(f"unknown generator parameter(s): {', '.join(unknown)}", where)
        try:
            if "alpha_overrides" in kw:
                kw["alpha_overrides"] = tuple((str(n), float(a)) for n, a in kw["alpha_overrides"])
            return cls(**kw)
        except InputError as e:
            raise InputError(e.problem, where) from None
        except (TypeError, ValueError) as e:
            raise InputError(f"bad generator parameters: {e}", where) from None


# --- seeded hash permutation -----------------------------------------------------------------
# A 4-round Feistel network over [0, a) x [0, b) with addition modulo each side (the FFX / FE2
# construction of format-preserving encryption), a = ceil(sqrt(rows)), b = ceil(rows / a): each
# round adds a keyed hash of one side to the other, which is a bijection whatever the hash is.
# x in [0, a*b) splits as (x // b, x % b). Values that land in [rows, a*b) (a*b - rows < a, so
# fewer than 1 in sqrt(rows)) are permuted again ("cycle walking") until they are below rows.

@numba.njit
def _round_hash(v, key):  # 32 well-mixed bits of (v, key)
    h = (v ^ key) * _M1
    h ^= h >> _S32
    return h & _MASK32


@numba.njit
def _permute_one(x, n, a, b, keys):
    while True:
        left = x // b
        right = x - left * b
        for r in range(keys.size):
            if r % 2 == 0:
                left += (_round_hash(right, keys[r]) * a) >> _S32  # + (hash mapped to [0, a))
                if left >= a:
                    left -= a
            else:
                right += (_round_hash(left, keys[r]) * b) >> _S32
                if right >= b:
                    right -= b
        x = left * b + right
        if x < n:
            return x


@numba.njit(**_NJIT_OPTIONS)
def _permute_kernel(x, head, rows, a, b, keys, out):
    # out may be x. head[k] == perm(k) for k < head.size (a gather is cheaper than the rounds).
    n, ua, ub = np.uint64(rows), np.uint64(a), np.uint64(b)
    for i in range(x.size):
        k = x[i]
        if k < head.size:
            out[i] = head[k]
        else:
            out[i] = np.int64(_permute_one(np.uint64(k), n, ua, ub, keys))


def permutation_shape(rows: int) -> tuple[int, int]:
    """The Feistel domain ``(a, b)``: ``a = ceil(sqrt(rows))``, ``b = ceil(rows / a)``, ``a * b >= rows``."""
    a = max(1, math.isqrt(rows - 1) + 1) if rows > 1 else 1
    return a, -(-rows // a)


def permutation_keys(seed: int, table_index: int, rounds: int = FEISTEL_ROUNDS) -> np.ndarray:
    """The round keys of table ``table_index``'s permutation (uint64, one per round)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(1, int(table_index)))
    return ss.generate_state(rounds, dtype=np.uint64)


def hash_permute(x: np.ndarray, rows: int, keys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``perm(x)`` for every ``x`` in ``[0, rows)``: a bijection on ``[0, rows)`` keyed by ``keys``.

    ``out`` (contiguous int64, may be ``x`` itself) receives the result.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.int64 or x.ndim != 1 or not x.flags.c_contiguous:
        raise ValueError("hash_permute needs a contiguous 1-d int64 array")
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    if not 1 <= rows < 2**62:
        raise ValueError(f"rows must be in [1, 2**62), got {rows}")
    if x.size and (int(x.min()) < 0 or int(x.max()) >= rows):
        raise ValueError(f"hash_permute input outside [0, {rows})")
    if out is None:
        out = np.empty_like(x)
    elif out.dtype != np.int64 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous int64 array shaped like x")
    a, b = permutation_shape(int(rows))
    _permute_kernel(x, np.zeros(0, dtype=np.int64), int(rows), a, b, keys, out)
    return out


class HashPermutation:
    """Table ``table_index``'s row permutation: rank ``k`` (0-based) -> row ``perm(k)``.

    The rows of the ``head_rows`` hottest ranks are materialised (512 KiB by
    default); the rest are computed.
    """

    def __init__(self, rows: int, keys: np.ndarray, head_rows: int = PERM_HEAD_ROWS):
        self.rows = int(rows)
        self.keys = np.ascontiguousarray(keys, dtype=np.uint64)
        self.shape = permutation_shape(self.rows)
        self.head = hash_permute(np.arange(min(self.rows, head_rows), dtype=np.int64), self.rows, self.keys)

    def apply(self, ranks: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = perm(ranks[i])``; ``out`` may be ``ranks``. Ranks must lie in ``[0, rows)`` (not checked)."""
        for a in (ranks, out):
            if a.dtype != np.int64 or a.ndim != 1 or not a.flags.c_contiguous:
                raise ValueError("ranks and out must be contiguous 1-d int64 arrays")
        if out.size != ranks.size:
            raise ValueError("out must have the size of ranks")
        _permute_kernel(ranks, self.head, self.rows, *self.shape, self.keys, out)


# --- Zipf over a finite support ---------------------------------------------------------------
# Rank r (1-based) has weight w(r) = r**-alpha. Ranks are grouped into cells: ranks below
# 2**(CELL_BITS + 1) are cells of one rank; each octave [2**j, 2**(j+1)) above is split into
# 2**CELL_BITS cells of equal width. A cell c of n ranks starting at rank lo has envelope mass
# n * w(lo) >= its true mass (w decreases). Sampling: pick a cell by inverse CDF over the
# envelope masses (guide table + binary search), a rank r uniformly in the cell (from the same
# uniform, rescaled), and accept it with probability w(r) / w(lo) (one more uniform; a squeeze
# (lo / hi)**alpha decides without a pow() almost always); on rejection start again. Accepted
# ranks have probability proportional to w(r): exact. Cells grow with the rank, so the tables
# are O(2**CELL_BITS * log2(rows)) (about 9K cells for 40M rows), and the acceptance rate is
# above 0.998.

@numba.njit
def _next_uniform(state):  # SplitMix64 (Steele, Lea & Flood 2014): the next state and a double in [0, 1)
    state += _M1
    z = state
    z = (z ^ (z >> _S30)) * _C1
    z = (z ^ (z >> _S27)) * _C2
    z ^= z >> _S31
    return state, np.float64(z >> _S11) * _TWO_M53


@numba.njit(**_NJIT_OPTIONS)
def _zipf_ranks_kernel(seed, cdf, guide, cell_lo, cell_n, squeeze, alpha, out):
    m = guide.size - 1
    state = np.uint64(seed)
    used = 0
    for j in range(out.size):
        while True:
            state, x = _next_uniform(state)
            used += 1
            g = np.int64(x * m)  # exact: m is a power of two
            lo = guide[g]
            hi = guide[g + 1]
            while lo < hi:  # first cell c with cdf[c] > x
                mid = (lo + hi) >> 1
                if cdf[mid] > x:
                    hi = mid
                else:
                    lo = mid + 1
            c = lo
            k = cell_lo[c]  # 0-based rank
            cnt = cell_n[c]
            if cnt > 1:
                below = cdf[c - 1] if c > 0 else 0.0
                pos = np.int64((x - below) / (cdf[c] - below) * cnt)  # x rescaled: uniform in the cell
                k += min(max(pos, 0), cnt - 1)
                state, y = _next_uniform(state)
                used += 1
                if y >= squeeze[c] and y * math.pow((k + 1.0) / (cell_lo[c] + 1.0), alpha) > 1.0:
                    continue  # rejected: y > w(k+1) / w(lo)
            out[j] = k
            break
    return used


def zipf_cells(rows: int, alpha: float, cell_bits: int = CELL_BITS) -> dict[str, np.ndarray]:
    """The cell tables of Zipf(``alpha``) over ``rows`` ranks (see the comment above).

    ``lo`` (0-based first rank), ``n`` (ranks in the cell), ``cdf`` (cumulative
    envelope mass, normalised, last exactly 1), ``squeeze`` (a lower bound of
    ``w(r) / w(lo)`` in the cell, 1 for one-rank cells) and ``guide``.
    """
    single = min(rows, (1 << (cell_bits + 1)) - 1)
    starts = [np.arange(1, single + 1, dtype=np.int64)]
    j = cell_bits + 1
    while (1 << j) <= rows:
        s = (1 << j) + (np.arange(1 << cell_bits, dtype=np.int64) << (j - cell_bits))
        starts.append(s[s <= rows])
        j += 1
    lo1 = np.concatenate(starts)
    n = np.diff(np.append(lo1, rows + 1))
    env = n * lo1.astype(np.float64) ** -alpha
    cdf = np.cumsum(env)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    hi1 = (lo1 + n - 1).astype(np.float64)
    squeeze = np.where(n > 1, (lo1 / hi1) ** alpha * (1.0 - 1e-12), 1.0)
    return {"lo": lo1 - 1, "n": n, "cdf": cdf, "squeeze": squeeze, "guide": guide_table(cdf)}


def guide_table(cdf: np.ndarray) -> np.ndarray:
    """``guide[g]`` = first ``k`` with ``cdf[k] > g / m`` (clipped to ``len(cdf) - 1``), ``g = 0..m``.

    ``m`` is a power of two ``>= 4 * len(cdf)`` (so most searches end at once), and
    ``u * m`` and ``g / m`` are exact: the answer for ``u`` lies in
    ``[guide[int(u * m)], guide[int(u * m) + 1]]``.
    """
    m = 1 << max(0, int(4 * cdf.size - 1).bit_length())
    g = np.searchsorted(cdf, np.arange(m + 1, dtype=np.float64) / m, side="right")
    return np.minimum(g, cdf.size - 1).astype(np.int64)


class ZipfSampler:
    """Exact Zipf(``alpha``) ranks (0-based) over ``rows`` ranks; ``alpha == 0`` is uniform."""

    def __init__(self, rows: int, alpha: float, cell_bits: int = CELL_BITS):
        self.rows = int(rows)
        self.alpha = float(alpha)
        if self.rows < 1 or not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"bad Zipf support rows={rows} alpha={alpha}")
        self.cells = zipf_cells(self.rows, self.alpha, cell_bits) if self.alpha > 0 else None

    def fill(self, rng: np.random.Generator, out: np.ndarray) -> None:
        """Fill ``out`` (contiguous int64) with ranks; takes one 64-bit seed from ``rng``."""
        if self.cells is None:
            out[:] = rng.integers(0, self.rows, size=out.size, dtype=np.int64)
            return
        zipf_ranks(int(rng.integers(0, 2**64, dtype=np.uint64)), self, out)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(int(size), dtype=np.int64)
        self.fill(rng, out)
        return out


def zipf_ranks(seed: int, sampler: ZipfSampler, out: np.ndarray) -> int:
    """Kernel wrapper: fill ``out`` with ranks drawn from the SplitMix64 stream started at ``seed``.

    Returns how many uniforms were used (one per rank, two in cells of more
    than one rank, more after the rare rejections). Needs ``sampler.alpha > 0``.
    """
    if not isinstance(out, np.ndarray) or out.dtype != np.int64 or out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous 1-d int64 array")
    if sampler.cells is None:
        raise ValueError(f"zipf_ranks needs alpha > 0 (alpha={sampler.alpha})")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed {seed} is not a 64-bit unsigned integer")
    c = sampler.cells
    return int(_zipf_ranks_kernel(np.uint64(seed), c["cdf"], c["guide"], c["lo"], c["n"], c["squeeze"],
                                  sampler.alpha, out))


# --- batches -----------------------------------------------------------------------------------

def _batch_rng(seed: int, table_index: int, batch_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0, int(table_index), int(batch_index))))


class _TableGenerator:
    def __init__(self, table: TableSpec, table_index: int, params: GeneratorParams):
        self.table = table
        self.sampler = ZipfSampler(table.rows, table.zipf_alpha)
        self.perm = None  # uniform rows (alpha == 0) need no permutation
        if params.permute and table.zipf_alpha > 0:
            self.perm = HashPermutation(table.rows, permutation_keys(params.seed, table_index))

    def fill(self, rng: np.random.Generator, out: np.ndarray, prev: np.ndarray | None, reuse: float) -> None:
        n = out.size
        self.sampler.fill(rng, out)
        if self.perm is not None:
            self.perm.apply(out, out)
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
        offsets, tables = self.batch_tables(i, previous)
        indices = np.empty(int(offsets[-1]), dtype=np.int64)
        B = self.batch_size
        for ti, idx in tables:
            indices[int(offsets[ti * B]) : int(offsets[(ti + 1) * B])] = idx
        return indices, offsets

    def batch_tables(self, i: int, previous: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, Iterator[tuple[int, np.ndarray]]]:
        """Batch ``i`` table by table: its offsets (``T*B + 1``), and an iterator of ``(table, indices)`` for
        tables ``0 .. T-1`` (one table's lookups in memory at a time; :meth:`batch` concatenates them)."""
        if i < 0:
            raise IndexError(f"batch index {i} < 0")
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
        del sizes
        prev_bounds = previous[1][::B][: T + 1] if reuse > 0 and i > 0 else None

        def tables() -> Iterator[tuple[int, np.ndarray]]:
            for ti, tg in enumerate(self._tables):
                out = np.empty(int(offsets[(ti + 1) * B] - offsets[ti * B]), dtype=np.int64)
                prev = None
                if prev_bounds is not None:
                    prev = previous[0][int(prev_bounds[ti]) : int(prev_bounds[ti + 1])]
                tg.fill(rngs[ti], out, prev, reuse)
                yield ti, out

        return offsets, tables()


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

    Batches are written table by table (:meth:`TraceWriter.begin_batch`), so
    memory holds the batch's offsets and bag sizes, one table's lookups and a
    write buffer: a full-size ``meta-2021`` batch (887M lookups, 7 GB as
    int64) peaked at 1.8 GB resident on the development machine. With
    reuse on, the previous batch is kept whole (it is sampled from). The file
    records the effective spec (batch size, skew overrides and pooling scale
    applied) and the parameters. ``progress(done_batches, total)`` is called
    after each batch.
    """
    gen = TraceGenerator(spec, params)
    total = params.num_batches
    with TraceWriter(path, gen.spec, seed=params.seed, params=params.to_dict()) as writer:
        prev = None
        for i in range(total):
            offsets, tables = gen.batch_tables(i, prev)
            writer.begin_batch(offsets)
            keep = [] if params.reuse > 0 else None
            for t, idx in tables:
                writer.append_table(t, idx)
                if keep is not None:
                    keep.append(idx)
            writer.end_batch()
            prev = (np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64), offsets) if keep is not None else None
            if progress is not None:
                progress(i + 1, total)
    return writer.trace_id

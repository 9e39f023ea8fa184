"""One table's popularity within a batch: a Hurwitz-Zipf tail over an active set, with a uniform floor.

Rank ``k`` (1-based) of a table's ``active`` ranks has weight

    w(k) = (k + q) ** -s + c,        c = uniform / (1 - uniform) * Z / active,

``Z = sum_k (k + q) ** -s``, so a share ``uniform`` of the lookups is spread
evenly over the active ranks and the rest follows a Hurwitz-Zipf law
``p(k) ~ (k + q) ** -s`` (FBGEMM's EEG tail; ``q = 0`` is plain Zipf, a large
``q`` flattens the head). Ranks above ``active`` are never drawn (the rest of
the table's rows are cold). ``w`` decreases with ``k``, which is all the exact
sampler needs:

The sampler is the rejection scheme of :mod:`tracegen.generate`'s Zipf
sampler generalised to ``w``: ranks are grouped into cells (single ranks up to
``2**(CELL_BITS + 1)``, then ``2**CELL_BITS`` cells per octave); a cell is
chosen by inverse CDF over envelope masses ``n * w(lo)``, a rank uniformly
inside it, and accepted with probability ``w(k) / w(lo)`` (a squeeze
``w(hi) / w(lo)`` decides without a ``pow`` almost always). Accepted ranks
have probability proportional to ``w(k)``: exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from tracegen.jit import NJIT_OPTIONS
from tracegen.permutation import PERMUTE_BLOCK, HashPermutation, _permute_kernel

CELL_BITS = 9
HEAD_EXACT = 4096  # Z is summed exactly over the first ranks, integrated beyond
_M1 = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S11, _S27, _S30, _S31 = (np.uint64(k) for k in (11, 27, 30, 31))
_TWO_M53 = 2.0**-53


@dataclass(frozen=True)
class TablePopularity:
    """The distribution of one table's ranks: tail exponent ``s``, Hurwitz offset ``q`` (ranks), the
    ``uniform`` share of lookups and the ``active`` ranks (1 .. rows)."""

    s: float
    q: float = 0.0
    uniform: float = 0.0
    active: int = 1

    def __post_init__(self) -> None:
        for what, v, lo in (("s", self.s, 0.0), ("q", self.q, 0.0)):
            if not (math.isfinite(float(v)) and float(v) >= lo):
                raise ValueError(f"popularity {what} must be finite and >= {lo}, got {v!r}")
        if not (0.0 <= float(self.uniform) < 1.0):
            raise ValueError(f"popularity uniform share must be in [0, 1), got {self.uniform!r}")
        if int(self.active) != self.active or self.active < 1:
            raise ValueError(f"popularity active ranks must be a whole number >= 1, got {self.active!r}")

    @property
    def floor(self) -> float:
        """``c``, the weight every active rank gets on top of its Hurwitz-Zipf weight."""
        return uniform_floor(int(self.active), float(self.s), float(self.q), float(self.uniform))


def hurwitz_total(active: int, s: float, q: float) -> float:
    """``Z = sum_{k=1..active} (k + q) ** -s``: exact over the first ``HEAD_EXACT`` ranks, then the integral
    ``int_{h+1/2}^{active+1/2} (x + q) ** -s dx`` (midpoint rule; relative error below 1e-9 of Z there)."""
    h = min(int(active), HEAD_EXACT)
    total = float(np.sum((np.arange(1, h + 1, dtype=np.float64) + q) ** -s))
    if active > h:
        total += float(power_integral(np.array([h + 0.5 + q]), np.array([active + 0.5 + q]), np.array([s]))[0])
    return total


def uniform_floor(active: int, s: float, q: float, uniform: float) -> float:
    if uniform <= 0.0:
        return 0.0
    return uniform / (1.0 - uniform) * hurwitz_total(active, s, q) / active


def power_integral(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``integral_a^b x**-s dx`` (``0 < a < b``), stable at ``s == 1``."""
    la = np.log(a)
    lr = np.log(b) - la
    u = (1.0 - s) * lr
    safe = np.where(np.abs(u) < 1e-9, 1.0, u)
    ratio = np.where(np.abs(u) < 1e-9, 1.0 + u / 2.0, np.expm1(safe) / safe)
    return np.exp((1.0 - s) * la) * lr * ratio


GUIDE_PER_CELL = 8  # guide entries per cell: a draw's cell is then almost always found in one or two steps


def guide_table(cdf: np.ndarray) -> np.ndarray:
    """``guide[g]`` = first ``k`` with ``cdf[k] > g / m`` (int32; ``m`` a power of two ``>= GUIDE_PER_CELL *
    len(cdf)``). The cell of ``x`` lies in ``guide[int(x * m)] .. guide[int(x * m) + 1]`` (:func:`find_cell`),
    whatever ``m`` is: the guide only speeds the search up."""
    m = 1 << max(0, int(GUIDE_PER_CELL * cdf.size - 1).bit_length())
    g = np.searchsorted(cdf, np.arange(m + 1, dtype=np.float64) / m, side="right")
    return np.minimum(g, cdf.size - 1).astype(np.int32)


@numba.njit
def find_cell(cdf, guide, x):
    """The first cell ``c`` with ``cdf[c] > x`` (``0 <= x < 1``): bisection down to a few cells, then a scan
    (the guide leaves none to search almost always, and a short scan mispredicts less than bisection)."""
    g = np.int64(x * (guide.size - 1))  # exact: guide.size - 1 is a power of two
    c = np.int64(guide[g])
    hi = np.int64(guide[g + 1])
    if c < hi:
        while hi - c > 4:
            mid = (c + hi) >> 1
            if cdf[mid] > x:
                hi = mid
            else:
                c = mid + 1
        while c < hi and cdf[c] <= x:
            c += 1
    return c


def cell_starts(rows: int, cell_bits: int = CELL_BITS) -> tuple[np.ndarray, np.ndarray]:
    """The sampler's cells over ranks ``1..rows``: each cell's first rank (1-based) and its number of ranks.
    Ranks below ``2**(cell_bits + 1)`` are cells of one rank; each octave above is split into ``2**cell_bits``
    cells of equal width (so the tables stay ``O(2**cell_bits * log2(rows))``)."""
    single = min(rows, (1 << (cell_bits + 1)) - 1)
    starts = [np.arange(1, single + 1, dtype=np.int64)]
    j = cell_bits + 1
    while (1 << j) <= rows:
        st = (1 << j) + (np.arange(1 << cell_bits, dtype=np.int64) << (j - cell_bits))
        starts.append(st[st <= rows])
        j += 1
    lo1 = np.concatenate(starts)
    return lo1, np.diff(np.append(lo1, rows + 1))


def popularity_cells(p: TablePopularity, cell_bits: int = CELL_BITS) -> dict[str, np.ndarray]:
    """Cell tables of ``p``'s sampler: ``lo`` (0-based first rank), ``n``, ``cdf`` (envelope, last exactly
    1), ``squeeze`` (``w(hi) / w(lo)``, 1 for one-rank cells) and ``guide``."""
    lo1, n = cell_starts(int(p.active), cell_bits)
    c = p.floor
    w_lo = (lo1 + p.q) ** -p.s + c
    w_hi = (lo1 + n - 1 + p.q) ** -p.s + c
    cdf = np.cumsum(n * w_lo)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    squeeze = np.where(n > 1, w_hi / w_lo * (1.0 - 1e-12), 1.0)
    return {"lo": lo1 - 1, "n": n, "cdf": cdf, "squeeze": squeeze, "guide": guide_table(cdf),
            "w_lo": w_lo}


@numba.njit
def next_uniform(state):  # SplitMix64 (Steele, Lea & Flood 2014): the next state and a double in [0, 1)
    state += _M1
    z = state
    z = (z ^ (z >> _S30)) * _C1
    z = (z ^ (z >> _S27)) * _C2
    z ^= z >> _S31
    return state, np.float64(z >> _S11) * _TWO_M53


@numba.njit(**NJIT_OPTIONS)
def _ranks_kernel(seed, cdf, guide, cell_lo, cell_n, squeeze, w_lo, s, q, c, out):
    state = np.uint64(seed)
    for j in range(out.size):
        while True:
            state, x = next_uniform(state)
            cell = find_cell(cdf, guide, x)
            k = cell_lo[cell]
            cnt = cell_n[cell]
            if cnt > 1:
                below = cdf[cell - 1] if cell > 0 else 0.0
                pos = np.int64((x - below) / (cdf[cell] - below) * cnt)
                k += min(max(pos, 0), cnt - 1)
                state, y = next_uniform(state)
                if y >= squeeze[cell] and y * w_lo[cell] > math.pow(k + 1.0 + q, -s) + c:
                    continue
            out[j] = k
            break
    return state


@numba.njit(**NJIT_OPTIONS)
def _ranks_permuted_kernel(seed, cdf, guide, cell_lo, cell_n, squeeze, w_lo, s, q, c, head, rows, a, b, keys,
                           out):
    # _ranks_kernel then the permutation, block by block while the block is in cache: the same values
    state = np.uint64(seed)
    for lo in range(0, out.size, PERMUTE_BLOCK):
        blk = out[lo : min(out.size, lo + PERMUTE_BLOCK)]
        state = _ranks_kernel(state, cdf, guide, cell_lo, cell_n, squeeze, w_lo, s, q, c, blk)
        _permute_kernel(blk, head, rows, a, b, keys, blk)


class PopularitySampler:
    """Exact ranks (0-based, below ``p.active``) of :class:`TablePopularity` ``p``."""

    def __init__(self, p: TablePopularity):
        self.p = p
        self.cells = popularity_cells(p)

    def fill(self, seed: int, out: np.ndarray, perm: HashPermutation | None = None) -> None:
        """Fill ``out`` (contiguous 1-d int64) from the SplitMix64 stream started at ``seed`` (64-bit); with
        ``perm``, with the rows of those ranks (``perm.apply`` fused in, block by block: the same values)."""
        if not isinstance(out, np.ndarray) or out.dtype != np.int64 or out.ndim != 1 or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous 1-d int64 array")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed {seed} is not a 64-bit unsigned integer")
        c = self.cells
        args = (c["cdf"], c["guide"], c["lo"], c["n"], c["squeeze"], c["w_lo"], float(self.p.s), float(self.p.q),
                float(self.p.floor))
        if perm is None:
            _ranks_kernel(np.uint64(seed), *args, out)
        else:
            _ranks_permuted_kernel(np.uint64(seed), *args, *perm.kernel_args(), out)


def rank_probabilities(p: TablePopularity) -> np.ndarray:
    """Every active rank's probability (for tests and small tables: O(active) memory)."""
    k = np.arange(1, int(p.active) + 1, dtype=np.float64)
    w = (k + p.q) ** -p.s + p.floor
    return w / w.sum()

"""Expected locality histograms of one generated batch, computed without generating it.

Within one batch, table ``t`` makes ``n_t = B * m_t`` i.i.d. lookups (``m_t``
its mean pooling after clipping, :func:`effective_pooling_mean`), rank ``r``
with probability ``p_r = r**-alpha / H(R, alpha)``. The number of times row
``r`` is looked up is Binomial(``n_t``, ``p_r``), close to Poisson with mean
``lam_r = n_t p_r`` (the bins double in width, so the Binomial's smaller
variance at the hottest ranks does not move a row to another bin). So the
expected histograms of :mod:`tracegen.locality` are sums over rows of

* unique rows in bin ``(a, b]``: ``P(a < X <= b)``, ``X ~ Poisson(lam_r)``;
* lookups in bin ``(a, b]``: ``E[X; a < X <= b] = lam_r * P(a <= X <= b - 1)``.

Both depend on a row only through ``lam_r``. They are tabulated once on a grid
of ``log2(lam)`` (``GRID_STEPS_PER_OCTAVE`` points per octave, exact Poisson
sums up to ``lam = 512``, the Wilson-Hilferty normal approximation of the
Poisson CDF above), and every row is deposited on the grid by linear
interpolation in ``log2(lam)``. Ranks are grouped: ranks ``1..HEAD_RANKS``
one by one, then ``CELLS_PER_OCTAVE`` geometric cells per octave whose mass is
the integral of ``x**-alpha`` over the cell (error below 1e-6 of the cell's
mass there). A table costs a few hundred cells whatever its rows, so the
expected histograms of Meta's 856-table, 65,536-sample batch (887M lookups)
take milliseconds: this is what :mod:`tracegen.calibrate` optimises.

Rows whose ``lam`` is below ``2**GRID_LOG2_MIN`` are counted linearly
(``P(X = 1) = lam`` to 1 part in 10^7 there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from tracegen.locality import BIN_EDGES, NUM_BINS
from tracegen.spec import ModelSpec, PoolingSpec

GRID_STEPS_PER_OCTAVE = 16
GRID_LOG2_MIN = -24
GRID_LOG2_MAX = 34
HEAD_RANKS = 256
CELLS_PER_OCTAVE = 16
EXACT_POISSON_MAX_LAM = 512.0


# --- the Poisson grid ------------------------------------------------------------------------------

def _poisson_cdf(lam: float, ks: np.ndarray) -> np.ndarray:
    """``P(X <= k)`` for ``X ~ Poisson(lam)`` at each ``k`` (``k < 0`` gives 0)."""
    out = np.zeros(ks.size)
    if lam <= EXACT_POISSON_MAX_LAM:
        kmax = int(lam + 40 * math.sqrt(lam) + 40)
        j = np.arange(kmax + 1, dtype=np.float64)
        lg = np.array([math.lgamma(x + 1.0) for x in j])
        pmf = np.exp(j * math.log(lam) - lam - lg) if lam > 0 else (j == 0).astype(np.float64)
        cdf = np.minimum(np.cumsum(pmf), 1.0)
        ok = ks >= 0
        out[ok] = np.where(ks[ok] <= kmax, cdf[np.minimum(ks[ok], kmax)], 1.0)
        return out
    # Wilson-Hilferty: P(X <= k) = P(Gamma(k + 1) > lam), Gamma(a)/a ~ (1 - 1/(9a) + z / (3 sqrt(a)))**3
    nd = NormalDist()
    for i, k in enumerate(ks):
        if k < 0:
            continue
        a = k + 1.0
        z = ((lam / a) ** (1.0 / 3.0) - (1.0 - 1.0 / (9.0 * a))) * 3.0 * math.sqrt(a)
        out[i] = 1.0 - nd.cdf(z)
    return out


@dataclass(frozen=True)
class PoissonBins:
    """Per grid point ``g`` (``lam = 2**log2_lam[g]``): expected unique rows and lookups per bin of one row."""

    log2_lam: np.ndarray  # (G,)
    unique: np.ndarray  # (G, NUM_BINS): P(X in bin)
    lookups: np.ndarray  # (G, NUM_BINS): E[X; X in bin]


_GRID: PoissonBins | None = None


def poisson_bins() -> PoissonBins:
    """The (cached) grid tables."""
    global _GRID
    if _GRID is None:
        steps = (GRID_LOG2_MAX - GRID_LOG2_MIN) * GRID_STEPS_PER_OCTAVE + 1
        log2_lam = GRID_LOG2_MIN + np.arange(steps) / GRID_STEPS_PER_OCTAVE
        upper = np.array(BIN_EDGES[1:], dtype=np.int64)  # bins (0,1], (1,2], (2,4], ... (16384,32768], then open
        ks = np.concatenate([upper, upper - 1])
        uniq = np.empty((steps, NUM_BINS))
        look = np.empty((steps, NUM_BINS))
        for g, l2 in enumerate(log2_lam):
            lam = 2.0 ** l2
            c = _poisson_cdf(lam, ks)
            cdf, cdf_m1 = c[: upper.size], c[upper.size:]
            lo = np.concatenate([[math.exp(-lam)], cdf])  # P(X <= lower edge) per bin
            hi = np.concatenate([cdf, [1.0]])
            uniq[g] = np.maximum(hi - lo, 0.0)
            lo_m1 = np.concatenate([[0.0], cdf_m1])  # P(X <= lower edge - 1)
            hi_m1 = np.concatenate([cdf_m1, [1.0]])
            look[g] = lam * np.maximum(hi_m1 - lo_m1, 0.0)
        _GRID = PoissonBins(log2_lam, uniq, look)
    return _GRID


# --- rank cells --------------------------------------------------------------------------------------

_CELLS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def rank_cells(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` (1-based, inclusive) rank cells covering ``1..rows``: single ranks, then geometric cells."""
    cached = _CELLS.get(rows)
    if cached is not None:
        return cached
    head = min(rows, HEAD_RANKS)
    lo = list(range(1, head + 1))
    if rows > head:
        edges = np.unique(np.round(np.geomspace(head + 1, rows + 1,
                                                max(2, int(math.ceil(CELLS_PER_OCTAVE * math.log2((rows + 1) / (head + 1))))
                                                    + 1))).astype(np.int64))
        edges[0], edges[-1] = head + 1, rows + 1
        lo += edges[:-1].tolist()
        hi = np.concatenate([np.arange(1, head + 1), edges[1:] - 1])
    else:
        hi = np.arange(1, head + 1)
    out = (np.asarray(lo, dtype=np.int64), hi.astype(np.int64))
    if len(_CELLS) < 100_000:
        _CELLS[rows] = out
    return out


def _power_integral(a: np.ndarray, b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``integral_a^b x**-alpha dx`` (``0 < a < b``), stable at ``alpha == 1``."""
    la = np.log(a)
    lr = np.log(b) - la
    u = (1.0 - alpha) * lr
    safe = np.where(np.abs(u) < 1e-9, 1.0, u)
    ratio = np.where(np.abs(u) < 1e-9, 1.0 + u / 2.0, np.expm1(safe) / safe)
    return np.exp((1.0 - alpha) * la) * lr * ratio


@dataclass(frozen=True)
class TableLayout:
    """The rank cells of a list of tables, concatenated (built once per set of row counts)."""

    table: np.ndarray  # table index of each cell
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray  # ranks in the cell (float)
    single: np.ndarray  # bool: a one-rank cell

    @classmethod
    def build(cls, rows: Sequence[int]) -> "TableLayout":
        parts = [rank_cells(int(r)) for r in rows]
        lo = np.concatenate([p[0] for p in parts])
        hi = np.concatenate([p[1] for p in parts])
        table = np.repeat(np.arange(len(parts)), [p[0].size for p in parts])
        return cls(table, lo, hi, (hi - lo + 1).astype(np.float64), lo == hi)


@dataclass(frozen=True)
class ExpectedLocality:
    """Expected histograms of one batch (shares per bin) and its lookups per batch and unique rows."""

    unique_share: np.ndarray
    lookup_share: np.ndarray
    lookups: float
    unique: float

    @property
    def unique_per_lookup(self) -> float:
        return self.unique / self.lookups if self.lookups else 0.0


def table_counts_by_bin(layout: TableLayout, alpha: np.ndarray, lookups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected unique rows and lookups per bin of each table: two ``(tables, NUM_BINS)`` arrays.

    ``alpha`` and ``lookups`` (lookups per batch) are arrays over the tables of ``layout``.
    """
    grid = poisson_bins()
    ntab = len(alpha)
    a = np.asarray(alpha, dtype=np.float64)[layout.table]
    single_mass = np.exp(-a * np.log(layout.lo.astype(np.float64)))
    span = _power_integral(layout.lo - 0.5, layout.hi + 0.5, a)
    mass = np.where(layout.single, single_mass, span)
    h = np.bincount(layout.table, weights=mass, minlength=ntab)
    lam = np.asarray(lookups, dtype=np.float64)[layout.table] * mass / (layout.count * h[layout.table])
    uniq = np.zeros((ntab, NUM_BINS))
    look = np.zeros((ntab, NUM_BINS))
    with np.errstate(divide="ignore"):
        pos = (np.log2(lam) - GRID_LOG2_MIN) * GRID_STEPS_PER_OCTAVE
    tiny = pos < 0
    if np.any(tiny):  # P(X = 1) = lam, E[X; X = 1] = lam, nothing else, to 1e-7
        s = np.bincount(layout.table[tiny], weights=layout.count[tiny] * lam[tiny], minlength=ntab)
        uniq[:, 0] += s
        look[:, 0] += s
    keep = ~tiny
    g = grid.log2_lam.size
    pos = np.minimum(pos[keep], g - 1 - 1e-9)
    cnt = layout.count[keep]
    i = pos.astype(np.int64)
    w = pos - i
    flat = layout.table[keep] * (g + 1) + i
    weights = (np.bincount(flat, cnt * (1.0 - w), minlength=ntab * (g + 1))
               + np.bincount(flat + 1, cnt * w, minlength=ntab * (g + 1)))[: ntab * (g + 1)]
    weights = weights.reshape(ntab, g + 1)[:, :g]
    uniq += weights @ grid.unique
    look += weights @ grid.lookups
    return uniq, look


def expected_counts(layout: TableLayout, alpha: np.ndarray, lookups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected unique rows and lookups per bin of all the tables together (counts, not shares)."""
    u, l = table_counts_by_bin(layout, alpha, lookups)
    return u.sum(axis=0), l.sum(axis=0)


def expected_locality(layout: TableLayout, alpha: np.ndarray, lookups: np.ndarray) -> ExpectedLocality:
    uniq, look = expected_counts(layout, alpha, lookups)
    u, l = uniq.sum(), look.sum()
    return ExpectedLocality(uniq / u if u else uniq, look / l if l else look, float(np.sum(lookups)), float(u))


_Z: np.ndarray | None = None


def _normal_quantiles(n: int = 4096) -> np.ndarray:
    global _Z
    if _Z is None:
        nd = NormalDist()
        _Z = np.array([nd.inv_cdf((i + 0.5) / n) for i in range(n)])
    return _Z


def effective_pooling_mean(p: PoolingSpec) -> float:
    """The mean bag size the generator really draws (:func:`tracegen.generate.bag_sizes`, clipping included)."""
    if p.kind == "fixed":
        return float(p.mean)
    if p.kind == "uniform":
        return (p.min + p.max) / 2.0
    if p.kind == "poisson":
        lam = max(float(p.mean), 0.0)
        k = np.arange(0, int(lam + 40 * math.sqrt(lam) + 40) + 1)
        if lam == 0:
            return float(min(max(0, p.min), p.max))
        lg = np.array([math.lgamma(x + 1.0) for x in k])
        pmf = np.exp(k * math.log(lam) - lam - lg)
        return float(np.dot(np.clip(k, p.min, p.max), pmf) / pmf.sum())
    if p.mean <= 0:
        return float(min(max(0, p.min), p.max))
    # lognormal: E[clip(rint(X))] over 4096 equal-probability quantiles
    z = _normal_quantiles()
    x = np.exp(math.log(p.mean) - p.sigma**2 / 2 + p.sigma * z)
    return float(np.clip(np.rint(x), p.min, p.max).mean())


def spec_locality(spec: ModelSpec) -> ExpectedLocality:
    """Expected histograms of one batch of ``spec`` (its skews, pooling and batch size)."""
    layout = TableLayout.build([t.rows for t in spec.tables])
    alpha = np.array([t.zipf_alpha for t in spec.tables])
    lookups = np.array([spec.batch_size * effective_pooling_mean(t.pooling) for t in spec.tables])
    return expected_locality(layout, alpha, lookups)

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
take milliseconds (the fit in :mod:`tracegen.fit` uses the Numba fast path at the end of this module).

Rows whose ``lam`` is below ``2**GRID_LOG2_MIN`` are counted linearly
(``P(X = 1) = lam`` to 1 part in 10^7 there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from tracegen.jit import njit
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
    ntab = len(alpha)
    a = np.asarray(alpha, dtype=np.float64)[layout.table]
    single_mass = np.exp(-a * np.log(layout.lo.astype(np.float64)))
    span = _power_integral(layout.lo - 0.5, layout.hi + 0.5, a)
    return _counts_from_mass(layout, np.where(layout.single, single_mass, span), lookups, ntab)


def popularity_counts_by_bin(layout: TableLayout, s: np.ndarray, q: np.ndarray, floor: np.ndarray,
                             lookups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`table_counts_by_bin` for :class:`tracegen.popularity.TablePopularity` tables: weight
    ``(k + q) ** -s + floor`` over each table's active ranks (``layout`` is built on the active ranks)."""
    ntab = len(s)
    a = np.asarray(s, dtype=np.float64)[layout.table]
    qq = np.asarray(q, dtype=np.float64)[layout.table]
    c = np.asarray(floor, dtype=np.float64)[layout.table]
    single_mass = np.exp(-a * np.log(layout.lo + qq)) + c
    span = _power_integral(layout.lo - 0.5 + qq, layout.hi + 0.5 + qq, a) + c * layout.count
    return _counts_from_mass(layout, np.where(layout.single, single_mass, span), lookups, ntab)


def _counts_from_mass(layout: TableLayout, mass: np.ndarray, lookups: np.ndarray, ntab: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    grid = poisson_bins()
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


def spec_locality(spec: ModelSpec, params=None) -> ExpectedLocality:
    """Expected histograms of one batch of ``spec`` (its skews, pooling and batch size; tables with a
    popularity entry in ``params``, a :class:`tracegen.params.GeneratorParams`, follow it instead)."""
    lookups = np.array([spec.batch_size * effective_pooling_mean(t.pooling) for t in spec.tables])
    pop = params.popularity_of() if params is not None else {}
    if not pop:
        layout = TableLayout.build([t.rows for t in spec.tables])
        return expected_locality(layout, np.array([t.zipf_alpha for t in spec.tables]), lookups)
    s, q, u, active = (np.empty(spec.num_tables) for _ in range(4))
    for i, t in enumerate(spec.tables):
        e = pop.get(t.name)
        if e is None:  # a Zipf table: s = alpha, every row active
            s[i], q[i], u[i], active[i] = t.zipf_alpha, 0.0, 0.0, t.rows
        else:
            active[i] = min(t.rows, max(1, round(t.rows * e[4])))
            s[i], q[i], u[i] = e[1], e[2] * active[i], e[3]
    uniq, look = popularity_expected_totals(active.astype(np.int64), s, q, u, lookups)
    un, lk = uniq.sum(), look.sum()
    return ExpectedLocality(uniq / un if un else uniq, look / lk if lk else look, float(lookups.sum()), float(un))


# --- the fit's fast path ------------------------------------------------------------------------------
# The same expectation as popularity_counts_by_bin, summed over the tables, in one Numba pass without
# building a layout: cells are generated on the fly (FAST_HEAD single ranks, then FAST_CELLS_PER_OCTAVE
# geometric cells per octave), each cell's rows deposited on the Poisson grid. A fit evaluates it
# thousands of times (about 10 ms for Meta's 856 tables).

FAST_HEAD = 64
FAST_CELLS_PER_OCTAVE = 16


@njit
def _table_cells(a, s, q, step, lo_out, n_out, mass_out):
    """Cells of one table's ``a`` active ranks and their Hurwitz-Zipf masses; returns (cells, total)."""
    k = 0
    z = 0.0
    lo = np.int64(1)
    prev_b = -1.0  # x ** (1 - s) at the previous cell's upper edge (shared with this cell's lower edge)
    log_case = abs(1.0 - s) < 1e-9
    while lo <= a:
        hi = lo if lo <= FAST_HEAD else min(a, max(lo, np.int64(math.floor(lo * step))))
        if hi == lo and lo <= FAST_HEAD:
            m = math.pow(lo + q, -s)
        else:
            lo_e, hi_e = lo - 0.5 + q, hi + 0.5 + q
            if log_case:
                m = math.log(hi_e / lo_e)
            else:
                pa = prev_b if prev_b >= 0 else math.pow(lo_e, 1.0 - s)
                pb = math.pow(hi_e, 1.0 - s)
                m = (pb - pa) / (1.0 - s)
                prev_b = pb
        lo_out[k] = lo
        n_out[k] = hi - lo + 1
        mass_out[k] = m
        z += m
        k += 1
        lo = hi + 1
    return k, z


@njit
def _expected_weights(active, s, q, uniform, lookups, g_min, steps, g, weights):
    """Deposit every table's rows on the grid; returns the lookups (= unique rows) of rows below the grid."""
    step = 2.0 ** (1.0 / FAST_CELLS_PER_OCTAVE)
    size = FAST_HEAD + 2 + np.int64(FAST_CELLS_PER_OCTAVE * 64)
    lo_c = np.empty(size, dtype=np.int64)
    n_c = np.empty(size, dtype=np.int64)
    m_c = np.empty(size)
    tiny = 0.0
    for t in range(active.size):
        a = active[t]
        cells, z = _table_cells(a, s[t], q[t], step, lo_c, n_c, m_c)
        floor = uniform[t] / (1.0 - uniform[t]) * z / a
        scale = lookups[t] / (z + floor * a)
        for k in range(cells):
            cnt = n_c[k]
            lam = (m_c[k] / cnt + floor) * scale
            pos = (math.log2(lam) - g_min) * steps if lam > 0 else -1.0
            if pos < 0:
                tiny += cnt * lam
            else:
                pos = min(pos, g - 1 - 1e-9)
                i = np.int64(pos)
                w = pos - i
                weights[i] += cnt * (1.0 - w)
                weights[i + 1] += cnt * w
    return tiny


def popularity_expected_totals(active: np.ndarray, s: np.ndarray, q: np.ndarray, uniform: np.ndarray,
                               lookups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected unique rows and lookups per bin of all the tables together, each table's weight
    ``(k + q) ** -s`` plus the floor that gives it a ``uniform`` share (the fit's fast path; agrees with
    :func:`popularity_counts_by_bin` to about 1e-4 in L1)."""
    grid = poisson_bins()
    g = grid.log2_lam.size
    arrays = [np.ascontiguousarray(x, dtype=np.float64) for x in (s, q, uniform, lookups)]
    act = np.ascontiguousarray(active, dtype=np.int64)
    if any(x.shape != act.shape for x in arrays) or act.ndim != 1 or (act.size and act.min() < 1):
        raise ValueError("active, s, q, uniform and lookups must be 1-d arrays of one length, active >= 1")
    if arrays[2].size and not (arrays[2].min() >= 0 and arrays[2].max() < 1):
        raise ValueError("uniform shares must lie in [0, 1)")
    weights = np.zeros(g + 1)
    tiny = _expected_weights(act, *arrays, float(GRID_LOG2_MIN), float(GRID_STEPS_PER_OCTAVE), g, weights)
    u = weights[:g] @ grid.unique
    l = weights[:g] @ grid.lookups
    u[0] += tiny
    l[0] += tiny
    return u, l

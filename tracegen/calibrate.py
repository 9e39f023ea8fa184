"""Fit the generator to a block of Meta's ``locality_stats.txt``: per-table skew and the pooling scale.

What is fitted. A block gives, for one batch of ``B`` samples over ``T``
tables, the lookups, the unique rows per lookup and the two histograms of
:mod:`tracegen.locality`. For a spec (its tables' rows and pooling), the fit
chooses

* the pooling scale ``c`` (:attr:`GeneratorParams.pooling_scale`) so that the
  mean lookups per table per sample are the block's (``lookups / (T * B)``);
  this is computed, not searched;
* every table's Zipf skew (``alpha_overrides``), on a grid of ``alpha_step``
  in ``[0, alpha_max]``. How skew ends up spread across tables is reported as
  :func:`skew_by_density`: the lookup-weighted mean and spread of alpha per
  half decade of table density ``log10(lookups per batch / rows)``. For
  ``meta-2021`` sparse tables (density below 1) get alpha 0.7 to 1.1 (the flat
  upper part of the lookup histogram), tables with about 3 to 30 lookups per
  row get near-uniform rows (its bump at counts 8 to 32), denser ones 0.3 to
  0.6.

Reuse between batches is not fitted: the published blocks are single batches
("processing 1 batches"), which say nothing about it; the fit holds for batch
0 (and, with ``reuse = 0``, for every batch).

Objective: ``f = L1(unique shares) + L1(lookup shares) + ratio_weight *
|unique/lookups - target| / target``, computed from the expected histograms of
:mod:`tracegen.locality_model` (each table's expected counts per bin are
tabulated once per grid alpha, so evaluating an assignment is a sum), for all
the tables plus, separately, for the check subset (below): ``f(all) +
f(subset)``. The search is a deterministic coordinate descent (each table in
turn moves to its best grid alpha given the others, until a sweep changes
nothing): first the subset alone from its best common alpha, then the other
tables, then all together. The only randomness is the check batch (``seed``).

Transfer to the published batch. Counts per row are what the histograms bin,
and they depend on ``B`` only through each table's ``lookups = B * pooling``:
halving ``B`` halves every hot row's count (one bin to the left), which no
skew undoes for the top bins (at ``B / 32`` a row would need more than all of
a typical table's lookups to reach the ``32768+`` bin). So the fit keeps the
published ``B`` and reduces the number of *tables* instead. Tables are
independent within a batch and a batch's histograms are the mixture of its
tables', so the check batch is the published batch restricted to
``check_tables`` tables, one per stratum of the density order (the one of
median lookups, so that no table dominates): counts per row are exactly those
of the full batch. The expected histograms of the whole batch at the published
size (``full``) come from the same model, and the generated check batch
(``check_measured``) shows that the model predicts generated batches (they
agree to about 0.005 in L1). Generating at a smaller batch size with rows
scaled by the same factor keeps the histograms of tables with ``alpha < 1``
(self-similar: rank ``r`` of the small table has the counts of rank ``r / s``
of the large one) but moves the heads of tables with ``alpha >= 1`` down by
about ``log2(1/s)`` bins; to make a small batch match by itself, fit at that
batch size (``batch_size=``), within what its top bins allow.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from tracegen.errors import InputError
from tracegen.generate import GeneratorParams, TraceGenerator, scale_pooling
from tracegen.locality import NUM_BINS, LocalityStats, batch_locality, parse_locality_stats
from tracegen.locality_model import TableLayout, effective_pooling_mean, table_counts_by_bin
from tracegen.spec import ModelSpec
from tracegen.trace_io import Batch

CALIBRATION_FORMAT = "screc-calibration"
_TABLES_IN_NAME = re.compile(r"_t(\d+)_")


@dataclass(frozen=True)
class CalibrationTarget:
    """What one block of ``locality_stats.txt`` asks of a batch."""

    name: str
    batch_size: int
    num_tables: int  # of the published trace: from the block name ("..._t856_...") unless given
    lookups_per_batch: float
    unique_per_lookup: float
    unique_share: tuple[float, ...]
    lookup_share: tuple[float, ...]

    @property
    def lookups_per_table_per_sample(self) -> float:
        return self.lookups_per_batch / (self.num_tables * self.batch_size)

    @classmethod
    def from_stats(cls, name: str, stats: LocalityStats, num_tables: int | None = None) -> "CalibrationTarget":
        if num_tables is None:
            m = _TABLES_IN_NAME.search(name)
            if m is None:
                raise InputError(f"block {name!r} does not say its table count (no '_t<N>_'); give it (--tables)")
            num_tables = int(m.group(1))
        if stats.avg_indices <= 0 or stats.avg_unique <= 0 or num_tables < 1:
            raise InputError(f"block {name!r} has no lookups")
        return cls(name, int(stats.batch_size), int(num_tables), float(stats.avg_indices),
                   float(stats.avg_unique / stats.avg_indices), tuple(stats.col_size_share), tuple(stats.index_share))


def load_targets(path, blocks: Sequence[str] | None = None, num_tables: int | None = None
                 ) -> list[CalibrationTarget]:
    """The blocks named (all when None) of a ``locality_stats.txt`` file; an unknown name raises InputError."""
    parsed = parse_locality_stats(path)
    names = list(parsed) if not blocks else list(blocks)
    for n in names:
        if n not in parsed:
            raise InputError(f"no block {n!r}; blocks: {', '.join(parsed)}", path)
    return [CalibrationTarget.from_stats(n, parsed[n], num_tables) for n in names]


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of :func:`calibrate` (the defaults are what ``screc trace calibrate`` uses)."""

    alpha_step: float = 0.05  # grid of the tabulated per-table contributions
    alpha_max: float = 2.0
    ratio_weight: float = 1.0
    check_tables: int = 64  # tables of the generated check batch (0 or >= the spec's: all of them, no subset term)
    max_sweeps: int = 50
    seed: int = 0
    reuse: float = 0.0
    batch_size: int | None = None  # fit at this batch size instead of the block's


@dataclass(frozen=True)
class Distances:
    """How far a batch's histograms are from the target."""

    unique_l1: float
    lookup_l1: float
    unique_per_lookup: float
    ratio_error: float  # |unique/lookups - target| / target
    lookups: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def distances(unique_counts: np.ndarray, lookup_counts: np.ndarray, target: CalibrationTarget) -> Distances:
    u, l = float(unique_counts.sum()), float(lookup_counts.sum())
    ratio = u / l if l else 0.0
    return Distances(float(np.abs(unique_counts / u - target.unique_share).sum()) if u else 2.0,
                     float(np.abs(lookup_counts / l - target.lookup_share).sum()) if l else 2.0,
                     ratio, abs(ratio - target.unique_per_lookup) / target.unique_per_lookup, l)


@dataclass(frozen=True)
class CalibrationResult:
    target: CalibrationTarget
    spec_name: str
    params: GeneratorParams
    skew_by_density: list[dict[str, float]]
    full: Distances  # expected, all tables at the fit's batch size
    check_tables: tuple[str, ...]
    check_model: Distances | None  # expected, the check subset
    check_measured: Distances | None  # measured on a generated batch of the check subset
    fit_s: float
    check_s: float
    evaluations: int

    @property
    def worst_l1(self) -> float:
        d = self.check_measured or self.full
        return max(d.unique_l1, d.lookup_l1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT, "format_version": 1,
            "target": dataclasses.asdict(self.target), "spec": self.spec_name,
            "params": self.params.to_dict(),
            "skew_by_density": self.skew_by_density,
            "full": self.full.to_dict(), "check_tables": list(self.check_tables),
            "check_model": None if self.check_model is None else self.check_model.to_dict(),
            "check_measured": None if self.check_measured is None else self.check_measured.to_dict(),
            "fit_s": self.fit_s, "check_s": self.check_s, "evaluations": self.evaluations,
        }


def load_params_file(doc: Any, where=None) -> GeneratorParams:
    """Generator parameters from a calibration document (or a bare :meth:`GeneratorParams.to_dict`)."""
    if isinstance(doc, dict) and doc.get("format") == CALIBRATION_FORMAT:
        doc = doc.get("params")
    return GeneratorParams.from_dict(doc, where)


# --- the fit -------------------------------------------------------------------------------------------

class _Tabulated:
    """Per-table expected counts on the alpha grid, interpolated linearly in alpha."""

    def __init__(self, rows: np.ndarray, lookups: np.ndarray, grid: np.ndarray):
        layout = TableLayout.build(rows)
        self.grid = grid
        t = rows.size
        self.u = np.empty((t, grid.size, NUM_BINS))
        self.l = np.empty_like(self.u)
        for k, a in enumerate(grid):
            self.u[:, k], self.l[:, k] = table_counts_by_bin(layout, np.full(t, a), lookups)

    def counts(self, alpha: np.ndarray, tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = self.grid[1] - self.grid[0]
        pos = np.clip(alpha / step, 0, self.grid.size - 1 - 1e-9)
        i = pos.astype(np.int64)
        w = (pos - i)[:, None]
        u = (1 - w) * self.u[tables, i] + w * self.u[tables, i + 1]
        l = (1 - w) * self.l[tables, i] + w * self.l[tables, i + 1]
        return u.sum(axis=0), l.sum(axis=0)


def _objective(u: np.ndarray, l: np.ndarray, target: CalibrationTarget, ratio_weight: float) -> float:
    d = distances(u, l, target)
    return d.unique_l1 + d.lookup_l1 + ratio_weight * d.ratio_error


def _objective_fn(target: CalibrationTarget, ratio_weight: float):
    tu, tl, tr = np.array(target.unique_share), np.array(target.lookup_share), target.unique_per_lookup

    def f(U, L):
        su, sl = U.sum(-1, keepdims=True), L.sum(-1, keepdims=True)
        return (np.abs(U / su - tu).sum(-1) + np.abs(L / sl - tl).sum(-1)
                + ratio_weight * np.abs(su[..., 0] / sl[..., 0] - tr) / tr)
    return f


def _descent(tab: _Tabulated, f, k: np.ndarray, movable: np.ndarray, sub: np.ndarray | None, max_sweeps: int
             ) -> int:
    """Coordinate descent over the grid indices ``k`` (changed in place) of the ``movable`` tables, minimising
    ``f(all tables) + f(subset)`` (``f(subset)`` alone when ``movable`` lies in ``sub`` and ``only_sub``)."""
    T = tab.u.shape[0]
    in_sub = np.zeros(T, dtype=bool)
    if sub is not None:
        in_sub[sub] = True
    rows = np.arange(T)
    U, L = tab.u[rows, k].sum(axis=0), tab.l[rows, k].sum(axis=0)
    fa = float(f(U, L))
    if sub is not None:
        Us, Ls = tab.u[sub, k[sub]].sum(axis=0), tab.l[sub, k[sub]].sum(axis=0)
        fs = float(f(Us, Ls))
    else:
        fs = 0.0
    evals = 0
    for _ in range(max_sweeps):
        changed = 0
        for t in movable:
            Uc, Lc = U - tab.u[t, k[t]] + tab.u[t], L - tab.l[t, k[t]] + tab.l[t]
            fac = f(Uc, Lc)
            if in_sub[t]:
                Usc, Lsc = Us - tab.u[t, k[t]] + tab.u[t], Ls - tab.l[t, k[t]] + tab.l[t]
                fsc = f(Usc, Lsc)
            else:
                fsc = np.full(fac.shape, fs)
            evals += fac.size
            j = int(np.argmin(fac + fsc))
            if j != k[t] and fac[j] + fsc[j] < fa + fs - 1e-12:
                if in_sub[t]:
                    Us, Ls = Usc[j], Lsc[j]
                k[t], U, L, fa, fs = j, Uc[j], Lc[j], float(fac[j]), float(fsc[j])
                changed += 1
        if not changed:
            break
    return evals


def _fit_grid(tab: _Tabulated, target: CalibrationTarget, sub: np.ndarray, ratio_weight: float, max_sweeps: int
              ) -> tuple[np.ndarray, int]:
    """Per-table grid indices: (1) the subset alone fitted to the target, from its best common alpha; (2) the
    other tables fitted so that all of them match too; (3) both together."""
    T = tab.u.shape[0]
    f = _objective_fn(target, ratio_weight)
    whole = np.arange(T)
    k = np.full(T, int(np.argmin(f(tab.u.sum(axis=0), tab.l.sum(axis=0)))))
    if sub.size == T:
        return k, _descent(tab, f, k, whole, None, max_sweeps)
    k[sub] = int(np.argmin(f(tab.u[sub].sum(axis=0), tab.l[sub].sum(axis=0))))
    fs = _objective_fn(target, ratio_weight)
    sub_tab = _Tabulated.__new__(_Tabulated)
    sub_tab.grid, sub_tab.u, sub_tab.l = tab.grid, tab.u[sub], tab.l[sub]
    ks = k[sub].copy()
    evals = _descent(sub_tab, fs, ks, np.arange(sub.size), None, max_sweeps)
    k[sub] = ks
    rest = np.setdiff1d(whole, sub)
    evals += _descent(tab, f, k, rest, sub, max_sweeps)
    evals += _descent(tab, f, k, whole, sub, max_sweeps)
    return k, evals


def skew_by_density(density: np.ndarray, alpha: np.ndarray, lookups: np.ndarray, width: float = 0.5
                    ) -> list[dict[str, float]]:
    """Lookup-weighted mean and spread of alpha per density bin of ``width`` decades: how skew is spread."""
    lo = math.floor(float(density.min()) / width) * width
    out = []
    while lo <= density.max():
        s = (density >= lo) & (density < lo + width)
        if s.any():
            w = lookups[s] / lookups[s].sum()
            m = float(np.dot(w, alpha[s]))
            out.append({"density_log10_from": round(lo, 3), "tables": int(s.sum()), "alpha_mean": round(m, 4),
                        "alpha_sd": round(float(np.sqrt(np.dot(w, (alpha[s] - m) ** 2))), 4),
                        "lookup_share": round(float(lookups[s].sum() / lookups.sum()), 4)})
        lo += width
    return out


def check_subset(density: np.ndarray, lookups: np.ndarray, n: int) -> np.ndarray:
    """``n`` table indices spread over the density order: the tables sorted by density are cut into ``n``
    equal strata and each gives its table of median lookups (so no single table dominates the check batch).
    All tables when ``n <= 0`` or ``n >= len``."""
    T = density.size
    if n <= 0 or n >= T:
        return np.arange(T)
    order = np.argsort(density, kind="stable")
    cuts = np.floor(np.arange(n + 1) * T / n).astype(np.int64)
    out = []
    for i in range(n):
        stratum = order[cuts[i]:cuts[i + 1]]
        by_lookups = stratum[np.argsort(lookups[stratum], kind="stable")]
        out.append(by_lookups[(by_lookups.size - 1) // 2])
    return np.sort(np.array(out, dtype=np.int64))


def subset_spec(spec: ModelSpec, tables: np.ndarray) -> ModelSpec:
    return dataclasses.replace(spec, tables=tuple(spec.tables[int(i)] for i in tables),
                               name=f"{spec.name}[{len(tables)} of {spec.num_tables} tables]")


def measure_batch(spec: ModelSpec, params: GeneratorParams, target: CalibrationTarget) -> Distances:
    """Generate batch 0 of ``(spec, params)`` and measure its distances to ``target``."""
    gen = TraceGenerator(spec, params)
    idx, off = gen.batch(0)
    rows = np.array([t.rows for t in gen.spec.tables], dtype=np.int64)
    bl = batch_locality(Batch(0, idx, off, gen.spec.num_tables, gen.spec.batch_size), rows)
    return distances(bl.col_size_hist.astype(np.float64), bl.index_hist.astype(np.float64), target)


def calibrate(spec: ModelSpec, target: CalibrationTarget, config: CalibrationConfig = CalibrationConfig(),
              clock: Callable[[], float] = time.perf_counter, measure: bool = True) -> CalibrationResult:
    """Fit per-table skews and the pooling scale of ``spec`` to ``target`` (see the module docstring)."""
    t0 = clock()
    cfg = config
    B = int(cfg.batch_size or target.batch_size)
    rows = np.array([t.rows for t in spec.tables], dtype=np.int64)
    means = np.array([effective_pooling_mean(t.pooling) for t in spec.tables])
    if means.mean() <= 0:
        raise InputError(f"spec {spec.name} makes no lookups (every pooling mean is 0)")
    scale = target.lookups_per_table_per_sample / means.mean()
    for _ in range(3):  # scaled pooling is rounded and clipped: correct the scale on the real means
        eff = np.array([effective_pooling_mean(scale_pooling(t.pooling, scale)) for t in spec.tables])
        if eff.mean() <= 0:
            break
        scale *= target.lookups_per_table_per_sample / eff.mean()
    lookups = B * np.array([effective_pooling_mean(scale_pooling(t.pooling, scale)) for t in spec.tables])
    density = np.log10(np.maximum(lookups, 1e-3) / rows)
    grid = np.round(np.arange(0.0, cfg.alpha_max + cfg.alpha_step / 2, cfg.alpha_step), 6)
    tab = _Tabulated(rows, lookups, grid)
    every = np.arange(rows.size)
    sub = check_subset(density, lookups, cfg.check_tables)
    use_sub = sub.size < rows.size

    k, evals = _fit_grid(tab, target, sub, cfg.ratio_weight, cfg.max_sweeps)
    alpha = np.round(grid[k], 4)
    params = GeneratorParams(seed=cfg.seed, reuse=cfg.reuse, batch_size=B, pooling_scale=float(scale),
                             alpha_overrides=tuple((t.name, float(a)) for t, a in zip(spec.tables, alpha)))
    layout = TableLayout.build(rows)
    full = distances(*[x.sum(axis=0) for x in table_counts_by_bin(layout, alpha, lookups)], target)
    check_model = None
    if use_sub:
        sl = TableLayout.build(rows[sub])
        check_model = distances(*[x.sum(axis=0) for x in table_counts_by_bin(sl, alpha[sub], lookups[sub])], target)
    fit_s = clock() - t0
    measured, check_s = None, 0.0
    if measure:
        t1 = clock()
        measured = measure_batch(subset_spec(spec, sub), _restrict(params, spec, sub), target)
        check_s = clock() - t1
    return CalibrationResult(target, spec.name, params, skew_by_density(density, alpha, lookups), full,
                             tuple(spec.tables[int(i)].name for i in sub), check_model, measured, fit_s, check_s, evals)


def _restrict(params: GeneratorParams, spec: ModelSpec, tables: np.ndarray) -> GeneratorParams:
    names = {spec.tables[int(i)].name for i in tables}
    return dataclasses.replace(params, alpha_overrides=tuple(p for p in params.alpha_overrides if p[0] in names))


def alpha_summary(params: GeneratorParams) -> dict[str, float]:
    a = np.array([x for _, x in params.alpha_overrides]) if params.alpha_overrides else np.zeros(1)
    return {"mean": float(a.mean()), "sd": float(a.std()), "min": float(a.min()), "max": float(a.max()),
            "median": float(np.median(a)), "tables": int(a.size)}


"""Fit the locality model to a block of Meta's ``locality_stats.txt``, and say how far it lands out of sample.

A block gives, for one batch of ``B`` samples over ``T`` tables, the lookups,
the unique rows per lookup and the two histograms of :mod:`tracegen.locality`
(34 numbers, 32 of them free). For a spec (its tables' rows and pooling) the
fit chooses

* the pooling scale ``c`` so that the mean lookups per table per sample are
  the block's (``lookups / (T * B)``): computed, not searched (the lookups of
  a batch are part of the workload, as its batch size is);
* the few parameters of a :class:`tracegen.group_model.GroupModel` (a
  candidate ``kind``; the default, ``hurwitz-active`` at 5 density knots, has
  15 numbers), minimising ``L1(unique shares) + L1(lookup shares) +
  ratio_weight * |unique/lookups - target| / target`` over the *expected*
  histograms (:func:`tracegen.locality_model.popularity_expected_totals`:
  about 20 ms for 887M lookups) of the whole batch, plus the mean of the same
  over every 4th table (``k::4``, ``k = 0..3``: a selection of tables should
  look like the batch too); deterministic: a short Powell search from each of
  a few start points with one value per parameter, Nelder-Mead from the best
  (Powell's line searches stall at the L1 objective's kinks), then every knot
  free (Nelder-Mead).

What is reported, each labelled:

* ``in_sample``: the expected distances the fit minimised;
* ``held_out``: the model fitted on the even tables (``0::2``) alone, its
  expected distances on the odd tables (``1::2``), which it never saw;
* ``full_batch`` (:mod:`tracegen.fit_check`): a full batch at the published
  batch size generated from the parameters, written to a trace file and
  counted back from it, streamed (see ``screc trace fit --full-batch``);
* ``transfer`` (:func:`transfer`): the model of one block applied to another
  block (its pooling scale from that block's lookups, nothing else).

Reuse between batches is not fitted: the published blocks are single batches.
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
from tracegen.generate import GeneratorParams, scale_pooling
from tracegen.group_model import (
    DEFAULT_KIND,
    DEFAULT_KNOTS,
    KINDS,
    GroupModel,
    default_knots,
    group_variable,
    start_points,
    table_density,
    vector_bounds,
)
from tracegen.locality import LocalityStats, parse_locality_stats
from tracegen.locality_model import effective_pooling_mean, popularity_expected_totals
from tracegen.spec import ModelSpec

FIT_FORMAT = "screc-trace-fit"
LEGACY_FORMAT = "screc-calibration"
_TABLES_IN_NAME = re.compile(r"_t(\d+)_")
START_EVALS = 120  # Powell evaluations per start point of the one-group search
QUARTERS = 4


@dataclass(frozen=True)
class FitTarget:
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
    def from_stats(cls, name: str, stats: LocalityStats, num_tables: int | None = None) -> "FitTarget":
        if num_tables is None:
            m = _TABLES_IN_NAME.search(name)
            if m is None:
                raise InputError(f"block {name!r} does not say its table count (no '_t<N>_'); give it (--num-tables)")
            num_tables = int(m.group(1))
        if stats.avg_indices <= 0 or stats.avg_unique <= 0 or num_tables < 1:
            raise InputError(f"block {name!r} has no lookups")
        return cls(name, int(stats.batch_size), int(num_tables), float(stats.avg_indices),
                   float(stats.avg_unique / stats.avg_indices), tuple(stats.col_size_share), tuple(stats.index_share))


def load_targets(path, blocks: Sequence[str] | None = None, num_tables: int | None = None) -> list[FitTarget]:
    """The blocks named (all when None) of a ``locality_stats.txt`` file; an unknown name raises InputError."""
    parsed = parse_locality_stats(path)
    names = list(parsed) if not blocks else list(blocks)
    for n in names:
        if n not in parsed:
            raise InputError(f"no block {n!r}; blocks: {', '.join(parsed)}", path)
    return [FitTarget.from_stats(n, parsed[n], num_tables) for n in names]


@dataclass(frozen=True)
class Distances:
    """How far a batch's histograms are from the target."""

    unique_l1: float
    lookup_l1: float
    unique_per_lookup: float
    ratio_error: float  # |unique/lookups - target| / target
    lookups: float

    @property
    def worst_l1(self) -> float:
        return max(self.unique_l1, self.lookup_l1)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def distances(unique_counts: np.ndarray, lookup_counts: np.ndarray, target: FitTarget) -> Distances:
    u, l = float(unique_counts.sum()), float(lookup_counts.sum())
    ratio = u / l if l else 0.0
    return Distances(float(np.abs(unique_counts / u - target.unique_share).sum()) if u else 2.0,
                     float(np.abs(lookup_counts / l - target.lookup_share).sum()) if l else 2.0,
                     ratio, abs(ratio - target.unique_per_lookup) / target.unique_per_lookup, l)


@dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit` (the defaults are what ``screc trace fit`` uses)."""

    kind: str = DEFAULT_KIND
    knots: int = DEFAULT_KNOTS
    ratio_weight: float = 1.0
    max_evals: int = 3000
    seed: int = 0
    batch_size: int | None = None  # fit at this batch size instead of the block's
    held_out: bool = True
    by: str = "density"
    quarters: bool = True  # also fit every 4th table (from each of the first four) to the target
    start_evals: int = START_EVALS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown model kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if not 1 <= int(self.knots) <= 8:
            raise InputError(f"knots must be in 1..8, got {self.knots}")


@dataclass(frozen=True)
class Workload:
    """A spec's tables as one batch of a target sees them: the pooling scale, rows and lookups per batch."""

    pooling_scale: float
    batch_size: int
    rows: np.ndarray
    lookups: np.ndarray

    @property
    def density(self) -> np.ndarray:
        return table_density(self.rows, self.lookups)

    def subset(self, idx: np.ndarray) -> "Workload":
        return Workload(self.pooling_scale, self.batch_size, self.rows[idx], self.lookups[idx])


def workload(spec: ModelSpec, target: FitTarget, batch_size: int | None = None) -> Workload:
    """The pooling scale that gives ``target``'s lookups per table per sample, and each table's lookups."""
    B = int(batch_size or target.batch_size)
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
    return Workload(float(scale), B, np.array([t.rows for t in spec.tables], dtype=np.int64), lookups)


def expected_counts(model: GroupModel, w: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Expected unique rows and lookups per bin of one batch of ``w`` under ``model`` (all tables summed)."""
    r = model.resolve(w.rows, w.lookups, floors=False)
    return popularity_expected_totals(r.active, r.s, r.q, r.uniform, w.lookups)


def expected_distances(model: GroupModel, w: Workload, target: FitTarget) -> Distances:
    return distances(*expected_counts(model, w), target)


def _objective(kind: str, knots: tuple[float, ...], w: Workload, target: FitTarget, cfg: "FitConfig"):
    """``f(all tables) + mean of f(every QUARTERS-th table from k)``: the quarters keep the fit from resting on a
    few tables (a selection of the tables, as ``--tables 0::4`` draws, must look like the whole batch)."""
    parts = [w] + ([w.subset(np.arange(k, w.rows.size, QUARTERS)) for k in range(QUARTERS)]
                   if cfg.quarters and w.rows.size >= 4 * QUARTERS else [])

    def score(d: Distances) -> float:
        return d.unique_l1 + d.lookup_l1 + cfg.ratio_weight * d.ratio_error

    def f(x: np.ndarray) -> float:
        try:
            m = GroupModel.from_vector(kind, knots, x, cfg.by)
            scores = [score(expected_distances(m, part, target)) for part in parts]
        except (InputError, ValueError):  # outside the parameters' domain (e.g. NaN from the search)
            return 10.0
        return scores[0] + (float(np.mean(scores[1:])) if len(scores) > 1 else 0.0)
    return f


def _scipy_minimize():
    """SciPy's ``minimize`` (the ``fit`` extra: ``pip install 'screc[fit]'``), or a one-line InputError."""
    try:
        from scipy.optimize import minimize
    except ImportError:
        raise InputError("trace fit needs SciPy's optimizers, which the fit extra installs: "
                         "pip install 'screc[fit]'") from None
    return minimize


def _powell(f, x0: np.ndarray, bounds: list[tuple[float, float]], max_evals: int) -> tuple[np.ndarray, float, int]:
    minimize = _scipy_minimize()

    res = minimize(f, x0, method="Powell", bounds=bounds, options={"maxfev": max_evals, "xtol": 1e-3, "ftol": 1e-6})
    x = np.clip(res.x, [b[0] for b in bounds], [b[1] for b in bounds])
    return x, float(res.fun), int(res.nfev)


def _nelder_mead(f, x0: np.ndarray, bounds: list[tuple[float, float]], max_evals: int
                 ) -> tuple[np.ndarray, float, int]:
    minimize = _scipy_minimize()

    res = minimize(f, x0, method="Nelder-Mead", bounds=bounds,
                   options={"maxfev": max_evals, "xatol": 1e-4, "fatol": 1e-7, "adaptive": True})
    x = np.clip(res.x, [b[0] for b in bounds], [b[1] for b in bounds])
    return x, float(res.fun), int(res.nfev)


def fit_model(w: Workload, target: FitTarget, cfg: FitConfig, knots: tuple[float, ...] | None = None,
              start: GroupModel | None = None) -> tuple[GroupModel, int]:
    """The model of ``cfg.kind`` fitted to ``target`` on the tables of ``w``: (model, objective evaluations).

    Coarse to fine, deterministic: one value per parameter for all tables from each of the
    :func:`tracegen.group_model.start_points` (a short Powell search each), the best of them searched on by
    Nelder-Mead (which copes with the L1 objective's kinks, where Powell's line searches stall), then spread to
    every knot and searched again (Nelder-Mead, up to ``cfg.max_evals`` evaluations). With ``start`` (a model
    fitted to another block), only the last search, from it (half the evaluations)."""
    if start is not None:  # warm start: another block's model (same kind, knots and grouping)
        fk = _objective(start.kind, start.knots, w, target, cfg)
        x, _, n = _nelder_mead(fk, start.vector(), vector_bounds(start.kind, len(start.knots)), cfg.max_evals // 2)
        return GroupModel.from_vector(start.kind, start.knots, np.round(x, 5), start.by), n
    knots = knots or default_knots(group_variable(cfg.by, w.rows, w.lookups), cfg.knots)
    centre = (float(np.median(knots)),)
    f1 = _objective(cfg.kind, centre, w, target, cfg)
    b1 = vector_bounds(cfg.kind, 1)
    best, best_f, evals = None, np.inf, 0
    for x0 in start_points(cfg.kind):
        x, fx, n = _powell(f1, x0, b1, cfg.start_evals)
        evals += n
        if fx < best_f - 1e-12:
            best, best_f = x, fx
    best, _, n = _nelder_mead(f1, best, b1, cfg.max_evals // 2)  # the best start, searched to convergence
    evals += n
    x = np.repeat(best, len(knots))
    if len(knots) > 1:
        fk = _objective(cfg.kind, knots, w, target, cfg)
        x, _, n = _nelder_mead(fk, x, vector_bounds(cfg.kind, len(knots)), cfg.max_evals)
        evals += n
    return GroupModel.from_vector(cfg.kind, knots, np.round(x, 5), cfg.by), evals


@dataclass(frozen=True)
class FitResult:
    target: FitTarget
    spec_name: str
    model: GroupModel
    params: GeneratorParams
    in_sample: Distances  # expected, all tables: what the fit minimised
    held_out: Distances | None  # expected on the odd tables of a model fitted on the even ones
    held_out_model: GroupModel | None
    fit_s: float
    evaluations: int
    full_batch: Distances | None = None  # measured on a generated full batch (tracegen.fit_check)
    full_batch_info: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FIT_FORMAT, "format_version": 1,
            "target": dataclasses.asdict(self.target), "spec": self.spec_name,
            "model": self.model.to_dict(), "params": self.params.to_dict(),
            "distances": {
                "in_sample": {"kind": "expected, the tables fitted (in sample)", **self.in_sample.to_dict()},
                "held_out": None if self.held_out is None else {
                    "kind": "expected, tables 1::2 under the model fitted on tables 0::2 (out of sample)",
                    **self.held_out.to_dict()},
                "full_batch": None if self.full_batch is None else {
                    "kind": "measured, a generated full batch counted from its trace file",
                    **self.full_batch.to_dict(), **(self.full_batch_info or {})},
            },
            "held_out_model": None if self.held_out_model is None else self.held_out_model.to_dict(),
            "fit_s": self.fit_s, "evaluations": self.evaluations,
        }


def generator_params(spec: ModelSpec, model: GroupModel, w: Workload, seed: int = 0) -> GeneratorParams:
    """Generator parameters: the pooling scale and every table's popularity resolved from ``model``."""
    r = model.resolve(w.rows, w.lookups)
    pop = tuple((t.name, round(float(r.s[i]), 6), float(r.q[i] / r.active[i]), round(float(r.uniform[i]), 6),
                 float(r.active[i] / t.rows)) for i, t in enumerate(spec.tables))
    return GeneratorParams(seed=seed, batch_size=w.batch_size, pooling_scale=w.pooling_scale, popularity=pop)


def fit(spec: ModelSpec, target: FitTarget, config: FitConfig = FitConfig(),
        clock: Callable[[], float] = time.perf_counter, start: FitResult | None = None) -> FitResult:
    """Fit ``config.kind`` to ``target`` on ``spec``'s tables (see the module docstring); ``start``: a fit of
    another block to start the search from (its model, and its held-out model for the held-out fit)."""
    t0 = clock()
    w = workload(spec, target, config.batch_size)
    model, evals = fit_model(w, target, config, start=None if start is None else start.model)
    in_sample = expected_distances(model, w, target)
    held, held_model = None, None
    if config.held_out and spec.num_tables >= 4:
        even, odd = np.arange(0, spec.num_tables, 2), np.arange(1, spec.num_tables, 2)
        held_model, e2 = fit_model(w.subset(even), target, config, knots=model.knots,
                                   start=None if start is None else start.held_out_model)
        held = expected_distances(held_model, w.subset(odd), target)
        evals += e2
    params = generator_params(spec, model, w, config.seed)
    return FitResult(target, spec.name, model, params, in_sample, held, held_model, clock() - t0, evals)


def transfer(model: GroupModel, spec: ModelSpec, target: FitTarget, batch_size: int | None = None) -> Distances:
    """Expected distances of ``model`` (fitted elsewhere) on ``target``: only the pooling scale is the target's."""
    return expected_distances(model, workload(spec, target, batch_size), target)


def load_fit_document(doc: Any, where=None) -> tuple[GeneratorParams, GroupModel | None]:
    """Generator parameters (and the model, if any) from a fit document, a legacy calibration document or a
    bare :meth:`GeneratorParams.to_dict`."""
    model = None
    if isinstance(doc, dict) and doc.get("format") in (FIT_FORMAT, LEGACY_FORMAT):
        if doc.get("model") is not None:
            try:
                model = GroupModel.from_dict(doc["model"])
            except InputError as e:
                raise InputError(e.problem, where) from None
        doc = doc.get("params")
    return GeneratorParams.from_dict(doc, where), model


def load_params_file(doc: Any, where=None) -> GeneratorParams:
    return load_fit_document(doc, where)[0]


def model_summary(model: GroupModel) -> str:
    """``s 1.02/0.95/..., lq ...`` for a table cell."""
    return "; ".join(f"{n} " + "/".join(f"{v:.2f}" for v in vals) for n, vals in model.values)


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None

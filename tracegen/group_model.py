"""The locality model with few parameters: per-table popularity shared through the tables' lookup density.

Every table ``t`` gets a :class:`tracegen.popularity.TablePopularity` whose
parameters are functions of its density ``d_t = log10(lookups per batch /
rows)``: each parameter is given at a few density knots (``knots``, fixed from
the spec's densities before fitting) and interpolated linearly between them
(held constant beyond the outer knots). Tables of similar density share
parameters, so a model of 856 tables has a handful of numbers, and tables it
was not fitted on (held-out tables, another block's tables, a selection of a
terabyte model) get theirs from their density.

Parameters (``values``, one value per knot, or one value for all):

``s``        Hurwitz-Zipf tail exponent.
``lq``       ``log10(q / active)``: the Hurwitz offset as a share of the active ranks (how flat the head is).
``uniform``  share of the table's lookups spread uniformly over its active ranks.
``la``       ``log10(active / rows)``: the share of the table's rows that are ever drawn.
``lal``      ``log10(active / lookups per batch)``: the active rows per lookup of a batch (at most the rows;
             replaces ``la``). A table's rows are often synthetic (the meta presets draw them), its lookups
             are not: an active set that scales with the lookups keeps a table's histograms when its
             lookups per batch change.

The candidate kinds (:data:`KINDS`) differ by which parameters they fit and
which are held at neutral values (``lq = -12`` is ``q`` near 0, ``uniform = 0``,
``la = 0``: every row active).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from tracegen.errors import InputError
from tracegen.popularity import uniform_floor

PARAMS = ("s", "lq", "uniform", "la", "lal")
NEUTRAL = {"s": 1.0, "lq": -12.0, "uniform": 0.0, "la": 0.0, "lal": 12.0}
BOUNDS = {"s": (0.0, 3.0), "lq": (-12.0, 0.5), "uniform": (0.0, 0.95), "la": (-4.0, 0.0), "lal": (-3.0, 3.0)}
# kind -> the fitted parameters (each per knot); the others stay NEUTRAL
KINDS: dict[str, tuple[str, ...]] = {
    "zipf": ("s",),
    "zipf-uniform": ("s", "uniform"),
    "zipf-active": ("s", "la"),
    "hurwitz": ("s", "lq"),
    "hurwitz-uniform": ("s", "lq", "uniform"),
    "hurwitz-active": ("s", "lq", "la"),
    "zipf-lal": ("s", "lal"),
    "hurwitz-lal": ("s", "lq", "lal"),
    "hurwitz-uniform-lal": ("s", "lq", "uniform", "lal"),
}
DEFAULT_KIND = "hurwitz-active"
GROUP_BY = ("density", "lookups")
DEFAULT_KNOTS = 5


@dataclass(frozen=True)
class GroupModel:
    """``kind``, the density ``knots`` and each parameter's ``values`` at them (see the module docstring)."""

    kind: str
    knots: tuple[float, ...]
    values: tuple[tuple[str, tuple[float, ...]], ...]
    by: str = "density"  # the grouping variable: "density" (log10 lookups/rows) or "lookups" (log10 lookups)

    def __post_init__(self) -> None:
        if self.by not in GROUP_BY:
            raise InputError(f"unknown grouping {self.by!r}; choose {' or '.join(GROUP_BY)}")
        if self.kind not in KINDS:
            raise InputError(f"unknown locality model kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if not self.knots or any(b <= a for a, b in zip(self.knots, self.knots[1:])):
            raise InputError("locality model knots must be increasing")
        for name, vals in self.values:
            if name not in PARAMS:
                raise InputError(f"unknown locality model parameter {name!r}")
            if len(vals) not in (1, len(self.knots)):
                raise InputError(f"parameter {name!r} needs 1 or {len(self.knots)} values, got {len(vals)}")
            lo, hi = BOUNDS[name]
            if not all(np.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9 for v in vals):
                raise InputError(f"parameter {name!r} outside [{lo}, {hi}]: {list(vals)}")

    @property
    def num_parameters(self) -> int:
        return sum(len(v) for _, v in self.values)

    def value(self, name: str, density: np.ndarray) -> np.ndarray:
        vals = dict(self.values).get(name)
        if vals is None:
            return np.full(density.shape, NEUTRAL[name])
        if len(vals) == 1:
            return np.full(density.shape, vals[0])
        return np.interp(density, self.knots, vals)

    def resolve(self, rows: np.ndarray, lookups: np.ndarray, floors: bool = True) -> "ResolvedTables":
        """Per-table popularity of tables with ``rows`` and ``lookups`` per batch (``floors=False``: leave the
        uniform floors at 0; the fit's fast path computes them itself)."""
        rows = np.asarray(rows, dtype=np.int64)
        d = group_variable(self.by, rows, lookups)
        if "lal" in dict(self.values):
            active = np.round(np.asarray(lookups, dtype=np.float64) * 10.0 ** self.value("lal", d))
        else:
            active = np.round(rows * 10.0 ** self.value("la", d))
        active = np.clip(active, 1, rows).astype(np.int64)
        q = active * 10.0 ** self.value("lq", d)
        s = self.value("s", d)
        u = self.value("uniform", d)
        floor = np.zeros(rows.size)
        if floors:
            floor = np.array([uniform_floor(int(a), float(x), float(y), float(z)) for a, x, y, z in zip(active, s, q, u)])
        return ResolvedTables(s, q, u, active, floor)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "by": self.by, "knots": list(self.knots),
                "values": {k: list(v) for k, v in self.values}, "parameters": self.num_parameters}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GroupModel":
        try:
            return cls(str(d["kind"]), tuple(float(x) for x in d["knots"]),
                       tuple((str(k), tuple(float(x) for x in v)) for k, v in dict(d["values"]).items()),
                       str(d.get("by", "density")))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"bad locality model: {e}") from None

    @classmethod
    def from_vector(cls, kind: str, knots: tuple[float, ...], x: np.ndarray, by: str = "density") -> "GroupModel":
        names = KINDS[kind]
        k = len(knots)
        vals = tuple((n, tuple(float(v) for v in x[i * k:(i + 1) * k])) for i, n in enumerate(names))
        return cls(kind, knots, vals, by)

    def vector(self) -> np.ndarray:
        k = len(self.knots)
        over = dict(self.values)
        return np.concatenate([np.broadcast_to(np.asarray(over.get(n, (NEUTRAL[n],)), dtype=float), (k,))
                               for n in KINDS[self.kind]])


@dataclass(frozen=True)
class ResolvedTables:
    """Per-table parameters (arrays over the tables)."""

    s: np.ndarray
    q: np.ndarray
    uniform: np.ndarray
    active: np.ndarray
    floor: np.ndarray

    def subset(self, idx: np.ndarray) -> "ResolvedTables":
        return ResolvedTables(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))


def table_density(rows: np.ndarray, lookups: np.ndarray) -> np.ndarray:
    """``log10(lookups per batch / rows)`` of each table."""
    return np.log10(np.maximum(np.asarray(lookups, dtype=np.float64), 1e-3) / np.asarray(rows, dtype=np.float64))


def group_variable(by: str, rows: np.ndarray, lookups: np.ndarray) -> np.ndarray:
    """Each table's position on the grouping axis."""
    if by == "lookups":
        return np.log10(np.maximum(np.asarray(lookups, dtype=np.float64), 1e-3))
    return table_density(rows, lookups)


def default_knots(density: np.ndarray, n: int = DEFAULT_KNOTS) -> tuple[float, ...]:
    """``n`` knots at the quantiles ``(i + 0.5) / n`` of the tables' grouping variable (from the spec alone)."""
    if n == 1:
        return (float(np.median(density)),)
    k = np.quantile(density, (np.arange(n) + 0.5) / n)
    k = np.round(k, 3)
    for i in range(1, n):  # strictly increasing
        k[i] = max(k[i], k[i - 1] + 1e-3)
    return tuple(float(x) for x in k)


START_VALUES = {"s": (0.7, 1.2), "lq": (-6.0, -1.5), "uniform": (0.02, 0.3), "la": (-1.0, -0.1),
                "lal": (-0.5, 1.0)}


def initial_vector(kind: str, n_knots: int) -> np.ndarray:
    return np.concatenate([np.full(n_knots, float(np.mean(START_VALUES[n]))) for n in KINDS[kind]])


def start_points(kind: str) -> list[np.ndarray]:
    """Start points of a one-group fit: every combination of two values per parameter (at most 16)."""
    import itertools

    names = KINDS[kind]
    return [np.array(c, dtype=float) for c in itertools.product(*(START_VALUES[n] for n in names))][:16]


def vector_bounds(kind: str, n_knots: int) -> list[tuple[float, float]]:
    return [BOUNDS[n] for n in KINDS[kind] for _ in range(n_knots)]

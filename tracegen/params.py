"""Generator parameters: everything besides the model spec that determines a synthetic trace."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from tracegen.errors import InputError
from tracegen.pooling import scale_pooling
from tracegen.spec import ModelSpec

GENERATOR_NAME = "screc.zipf"
GENERATOR_VERSION = 2  # 2: per-table popularity, lag reuse, source tables

Popularity = tuple[str, float, float, float, float]  # (table, s, q / active, uniform share, active / rows)


@dataclass(frozen=True)
class GeneratorParams:
    """Everything besides the model spec that determines a synthetic trace.

    ``batch_size``: overrides the spec's. ``zipf_alpha``: overrides every
    table's skew; ``alpha_overrides``: ``(table name, alpha)`` pairs applied
    after it. ``popularity``: ``(table, s, q_share, uniform, active_share)``
    per table, the locality model of :mod:`tracegen.popularity` (Hurwitz-Zipf
    exponent ``s``, offset ``q = q_share * active``, a uniform share, and
    ``active = active_share * rows`` ranks that are ever drawn); it replaces
    the Zipf skew of the tables it names (as shares, it survives ``--scale``).
    ``permute``: scatter hot rows with the hash permutation (off: rank ``k``
    is row ``k``). ``pooling_scale``: multiplies every table's mean bag size
    (and its bounds, see :func:`scale_pooling`).

    Temporal reuse (0 = off): with probability ``reuse`` a lookup repeats an
    earlier lookup of its table. ``reuse_window = 0``: a uniformly chosen
    lookup of the previous batch (the first model). ``reuse_window = W > 0``:
    the lookup ``L`` places back in the table's stream (across batches),
    ``L`` drawn from ``P(L) ~ L ** -reuse_lag_exponent`` on ``1 .. W`` (a
    power-law reuse distance, so an LRU cache of ``C`` rows catches repeats
    whose window held fewer than ``C`` distinct rows).

    ``source_tables``: the spec's tables' indices in the model they were
    selected from (``screc trace gen --tables``), so that a selected table
    draws exactly what it draws in the whole model (empty: ``0 .. T-1``).
    """

    seed: int = 0
    num_batches: int = 1
    reuse: float = 0.0
    batch_size: int | None = None
    zipf_alpha: float | None = None
    alpha_overrides: tuple[tuple[str, float], ...] = ()
    permute: bool = True
    pooling_scale: float = 1.0
    popularity: tuple[Popularity, ...] = ()
    reuse_window: int = 0
    reuse_lag_exponent: float = 1.0
    source_tables: tuple[int, ...] = ()

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
        if int(self.reuse_window) != self.reuse_window or self.reuse_window < 0:
            raise InputError(f"reuse window must be a whole number of lookups >= 0, got {self.reuse_window!r}")
        if not (math.isfinite(float(self.reuse_lag_exponent)) and float(self.reuse_lag_exponent) >= 0):
            raise InputError(f"reuse lag exponent must be finite and >= 0, got {self.reuse_lag_exponent!r}")
        object.__setattr__(self, "alpha_overrides", tuple((str(n), float(a)) for n, a in self.alpha_overrides))
        object.__setattr__(self, "popularity", tuple(_check_popularity(p) for p in self.popularity))
        object.__setattr__(self, "source_tables", tuple(int(i) for i in self.source_tables))

    def popularity_of(self) -> dict[str, Popularity]:
        return {p[0]: p for p in self.popularity}

    def effective_spec(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with this batch size, these skews and this pooling scale applied (idempotent when
        ``pooling_scale`` is 1). A table with a popularity entry records its ``s`` as its skew."""
        names = {t.name for t in spec.tables}
        for name, _ in self.alpha_overrides:
            if name not in names:
                raise InputError(f"zipf alpha override names unknown table {name!r}")
        pop = self.popularity_of()
        unknown = sorted(set(pop) - names)
        if unknown:
            raise InputError(f"popularity names {len(unknown)} unknown table(s), e.g. {unknown[0]!r}")
        if self.source_tables and len(self.source_tables) != spec.num_tables:
            raise InputError(f"{len(self.source_tables)} source tables for a spec of {spec.num_tables}")
        over = dict(self.alpha_overrides)
        tables = []
        for t in spec.tables:
            alpha = over.get(t.name, self.zipf_alpha if self.zipf_alpha is not None else t.zipf_alpha)
            if t.name in pop:
                alpha = round(pop[t.name][1], 6)
            if alpha != t.zipf_alpha:
                t = dataclasses.replace(t, zipf_alpha=float(alpha))
            if self.pooling_scale != 1.0:
                t = dataclasses.replace(t, pooling=scale_pooling(t.pooling, self.pooling_scale))
            tables.append(t)
        out = dataclasses.replace(spec, tables=tuple(tables))
        return out.with_batch_size(self.batch_size) if self.batch_size is not None else out

    def restricted(self, names: set[str], source_tables: tuple[int, ...]) -> "GeneratorParams":
        """These parameters for a selection of tables (their names, their indices in the whole model)."""
        return dataclasses.replace(self, alpha_overrides=tuple(p for p in self.alpha_overrides if p[0] in names),
                                   popularity=tuple(p for p in self.popularity if p[0] in names),
                                   source_tables=source_tables)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["alpha_overrides"] = [list(p) for p in self.alpha_overrides]
        d["popularity"] = [list(p) for p in self.popularity]
        d["source_tables"] = list(self.source_tables)
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
            if "popularity" in kw:
                kw["popularity"] = tuple(tuple(p) for p in kw["popularity"])
            if "source_tables" in kw:
                kw["source_tables"] = tuple(kw["source_tables"])
            return cls(**kw)
        except InputError as e:
            raise InputError(e.problem, where) from None
        except (TypeError, ValueError) as e:
            raise InputError(f"bad generator parameters: {e}", where) from None


def _check_popularity(p) -> Popularity:
    if len(p) != 5:
        raise InputError(f"a popularity entry is (table, s, q_share, uniform, active_share), got {list(p)!r}")
    name, s, q, u, a = str(p[0]), float(p[1]), float(p[2]), float(p[3]), float(p[4])
    if not (math.isfinite(s) and s >= 0 and math.isfinite(q) and q >= 0 and 0 <= u < 1 and 0 < a <= 1):
        raise InputError(f"popularity of table {name!r} out of range: s={s}, q_share={q}, uniform={u}, "
                         f"active_share={a}")
    return (name, s, q, u, a)

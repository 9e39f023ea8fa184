"""Model specifications: the shared vocabulary of tables, pooling and skew.

A :class:`ModelSpec` describes the embedding tables of a DLRM and the shape of
the workload that reads them (batch size, per-table pooling and Zipf skew).
Specs round-trip through JSON and load from JSON or TOML files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tracegen.errors import InputError

DTYPE_BYTES = {"fp32": 4, "fp16": 2}
NUMPY_DTYPE = {"fp32": "float32", "fp16": "float16"}
POOLING_KINDS = ("fixed", "uniform", "poisson", "lognormal")


@dataclass(frozen=True)
class PoolingSpec:
    """How many lookups one bag (one sample, one table) makes.

    ``fixed``: always ``mean``; ``uniform``: integers in [``min``, ``max``];
    ``poisson``: Poisson(``mean``) clipped to [``min``, ``max``];
    ``lognormal``: lognormal with mean ``mean`` and shape ``sigma``, rounded
    and clipped to [``min``, ``max``] (heavy-tailed, like production traces).
    """

    kind: str = "fixed"
    mean: float = 1.0
    min: int = 1
    max: int = 1
    sigma: float = 1.0

    def __post_init__(self) -> None:
        for what in ("min", "max"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"pooling {what} must be a whole number, got {v!r}")
        if self.kind not in POOLING_KINDS:
            raise ValueError(f"pooling kind {self.kind!r} is not one of {', '.join(POOLING_KINDS)}")
        if self.min < 0 or self.max < self.min:
            raise ValueError(f"pooling bounds min={self.min} max={self.max} are not 0 <= min <= max")
        if self.kind == "fixed" and (self.mean != int(self.mean) or self.mean < 0):
            raise ValueError(f"fixed pooling needs a whole non-negative mean, got {self.mean}")

    @classmethod
    def fixed(cls, n: int) -> "PoolingSpec":
        return cls(kind="fixed", mean=float(n), min=int(n), max=int(n))

    @property
    def mean_lookups(self) -> float:
        if self.kind == "fixed":
            return float(self.mean)
        if self.kind == "uniform":
            return (self.min + self.max) / 2.0
        return float(self.mean)  # approximately, before clipping


@dataclass(frozen=True)
class TableSpec:
    """One embedding table: ``rows`` x ``dim`` values of ``dtype``.

    ``zipf_alpha`` is the skew of lookups (0 = uniform; ~1 = strongly skewed).
    """

    name: str
    rows: int
    dim: int
    dtype: str = "fp32"
    pooling: PoolingSpec = field(default_factory=lambda: PoolingSpec.fixed(1))
    zipf_alpha: float = 1.05

    def __post_init__(self) -> None:
        for what in ("rows", "dim"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"table {self.name}: {what} must be a whole number, got {v!r}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"table name {self.name!r} is not a plain file-safe name")
        if self.rows < 1:
            raise ValueError(f"table {self.name}: rows must be >= 1, got {self.rows}")
        if self.dim < 1:
            raise ValueError(f"table {self.name}: dim must be >= 1, got {self.dim}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"table {self.name}: dtype {self.dtype!r} is not fp32 or fp16")
        if self.zipf_alpha < 0 or not math.isfinite(self.zipf_alpha):
            raise ValueError(f"table {self.name}: zipf_alpha must be finite and >= 0")

    @property
    def row_bytes(self) -> int:
        return self.dim * DTYPE_BYTES[self.dtype]

    @property
    def bytes(self) -> int:
        return self.rows * self.row_bytes


@dataclass(frozen=True)
class ModelSpec:
    """A model: its tables and the batch size of its inference requests."""

    name: str
    tables: tuple[TableSpec, ...]
    batch_size: int = 2048

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError(f"model {self.name}: no tables")
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name}: duplicate table names")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral):
            raise ValueError(f"model {self.name}: batch_size must be a whole number, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"model {self.name}: batch_size must be >= 1")

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def scaled(self, scale: float) -> "ModelSpec":
        """Row counts multiplied by ``scale`` (at least 1 row each)."""
        if not (scale > 0):
            raise ValueError(f"scale must be > 0, got {scale}")
        if scale == 1.0:
            return self
        tables = tuple(dataclasses.replace(t, rows=max(1, int(round(t.rows * scale)))) for t in self.tables)
        return dataclasses.replace(self, tables=tables, name=f"{self.name}@{scale:g}")

    def with_batch_size(self, batch_size: int) -> "ModelSpec":
        return dataclasses.replace(self, batch_size=int(batch_size))

    # --- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        tables = []
        for i, t in enumerate(d["tables"]):
            t = dict(t)
            if "name" not in t:
                t["name"] = f"t{i}"
            pool = t.get("pooling", 1)
            if isinstance(pool, (int, float)):
                pool = PoolingSpec.fixed(int(pool))
            else:
                pool = PoolingSpec(**_whole(dict(pool), "min", "max"))
            t["pooling"] = pool
            tables.append(TableSpec(**_whole(t, "rows", "dim")))
        return cls(name=str(d.get("name", "custom")), tables=tuple(tables),
                   batch_size=_whole(dict(d), "batch_size").get("batch_size", 2048))

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))


def _whole(d: dict, *keys: str) -> dict:
    """Whole-number floats (``1e6`` in JSON/TOML) of ``keys`` as ints; anything else is left for validation."""
    for k in keys:
        v = d.get(k)
        if isinstance(v, float) and v.is_integer():
            d[k] = int(v)
    return d


def load_spec_file(path: str | os.PathLike) -> ModelSpec:
    """Load a spec from a ``.json`` or ``.toml`` file; bad input raises :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError("spec file not found", p)
    try:
        raw = p.read_bytes()
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or "tables" not in data:
            raise ValueError("not a model spec (no 'tables' list)")
        return ModelSpec.from_dict(data)
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise InputError(f"bad model spec: {e}", p) from None
    except Exception as e:  # tomllib.TOMLDecodeError and friends
        raise InputError(f"bad model spec: {e}", p) from None

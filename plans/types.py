"""Shared vocabulary of the planner: statistics, calibration, devices, budgets, costs.

Laid out like torchrec's ``distributed/planner/types.py``: small frozen
dataclasses for the values every stage passes around, cost values as small
objects (:class:`Perf` with ``total_s``, :class:`Storage` with ``fits_in``),
and one small abstract base per stage (:class:`StatsSource`,
:class:`Estimator`, :class:`Planner`). The stages never compute a cost
themselves: they ask ``plans.cost``. The machine's side (:class:`Calibration`,
:class:`HostCosts`, :class:`DeviceProfile`) lives in ``plans.machine`` and is
re-exported here.

Units are in the names (``_bytes``, ``_s``, ``_per_s``); "per batch" means
one inference batch of ``WorkloadStats.batch_size`` samples.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from emulator.tiers import NONE, SSD_RAW
from plans.machine import (CALIBRATION_FORMAT, CALIBRATION_FORMAT_VERSION, EXECUTION_MODELS, PAGE_BYTES,  # noqa: F401
                           Calibration, DeviceProfile, HostCosts)
STATS_SOURCES = ("measured", "modelled")
ACCURACY_MODES = ("weighted", "per-table")


# --- statistics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TTVariant:
    """One TT-compressed copy of a table (from the store manifest, or modelled)."""

    rank: int
    core_bytes: int
    rel_fro_error: float
    max_abs_error: float
    flops_per_row: float  # multiply-adds x 2 to rebuild one row from its cores
    modelled: bool = False


@dataclass(frozen=True)
class FormatVariant:
    """A table stored in a row format beside its raw rows (emulator/store/quant.py; from the store manifest)."""

    format: str  # "fp16" | "int8" | "int4"
    row_bytes: int
    rows_per_page: int
    rel_fro_error: float  # measured at build time over sampled rows
    max_abs_error: float


def _ro(a: Any, dtype: Any) -> np.ndarray:
    arr = np.array(a, dtype=dtype)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class TableStats:
    """Access statistics of one table, on the remapped (hottest-first) row order.

    ``hot_rows`` is the grid of candidate hot-set sizes k (ascending, starting
    at 0). At each k: ``mass`` is the share of the table's lookups served by
    rows [0, k); ``cold_unique_rows_per_batch`` and
    ``cold_unique_pages_per_batch`` are the mean numbers of distinct rows and
    distinct 4 KiB pages with id >= k that one batch touches. ``estimator``
    says how those were obtained (measured per batch on the trace, or the
    expectation under i.i.d. Zipf draws for modelled tables).
    ``count_error_bound`` is the largest undercount of any row's access count
    (0 for exact counting; N/(m+1) for a Misra-Gries sketch of m counters).
    ``cold_reads_per_batch`` (optional, same grid): the mean number of read
    requests the engine issues for the cold rows (runs of neighbouring pages,
    in the store's row order, up to 32 pages each); None means one per page.
    """

    name: str
    rows: int
    row_bytes: int
    rows_per_page: int
    pages_per_row: int
    lookups_per_batch: float
    pooling: float  # mean lookups per sample
    hot_rows: np.ndarray
    mass: np.ndarray
    cold_unique_rows_per_batch: np.ndarray
    cold_unique_pages_per_batch: np.ndarray
    tt: tuple[TTVariant, ...] = ()
    seen_rows: int = 0
    counting: str = "exact"
    count_error_bound: float = 0.0
    estimator: str = "measured"
    cold_reads_per_batch: np.ndarray | None = None
    formats: tuple[FormatVariant, ...] = ()  # row formats the store holds (fp32 is the raw rows)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hot_rows", _ro(self.hot_rows, np.int64))
        if self.cold_reads_per_batch is not None:
            object.__setattr__(self, "cold_reads_per_batch", _ro(self.cold_reads_per_batch, np.float64))
            if self.cold_reads_per_batch.shape != self.hot_rows.shape:
                raise ValueError(f"table {self.name}: cold_reads_per_batch must have one value per hot_rows entry")
        for name in ("mass", "cold_unique_rows_per_batch", "cold_unique_pages_per_batch"):
            object.__setattr__(self, name, _ro(getattr(self, name), np.float64))
        k = self.hot_rows
        n = k.size
        if n == 0 or k[0] != 0 or np.any(np.diff(k) <= 0) or k[-1] > self.rows:
            raise ValueError(f"table {self.name}: hot_rows must ascend from 0 to at most rows")
        for name in ("mass", "cold_unique_rows_per_batch", "cold_unique_pages_per_batch"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"table {self.name}: {name} must have one value per hot_rows entry")

    @property
    def unique_rows_per_batch(self) -> float:
        return float(self.cold_unique_rows_per_batch[0])

    @property
    def table_bytes(self) -> int:
        return self.rows * self.row_bytes

    def at(self, k: int) -> tuple[float, float, float]:
        """(mass, cold unique rows, cold unique pages) at hot size ``k``: exact on the grid,
        linearly interpolated between grid points (and to 1, 0, 0 at k = rows)."""
        ks = self.hot_rows.astype(np.float64)
        m, r, p = self.mass, self.cold_unique_rows_per_batch, self.cold_unique_pages_per_batch
        if ks[-1] < self.rows:
            ks = np.append(ks, float(self.rows))
            m, r, p = np.append(m, max(1.0, m[-1])), np.append(r, 0.0), np.append(p, 0.0)
        k = float(min(max(k, 0), self.rows))
        return float(np.interp(k, ks, m)), float(np.interp(k, ks, r)), float(np.interp(k, ks, p))

    def reads_at(self, k: int) -> float:
        """Read requests per batch for the cold rows at hot size ``k`` (interpolated like :meth:`at`)."""
        if self.cold_reads_per_batch is None:
            return self.at(k)[2]
        ks, rd = self.hot_rows.astype(np.float64), self.cold_reads_per_batch
        if ks[-1] < self.rows:
            ks, rd = np.append(ks, float(self.rows)), np.append(rd, 0.0)
        return float(np.interp(float(min(max(k, 0), self.rows)), ks, rd))

    def ssd_raw_bytes(self, k: int) -> int:
        """Bytes of the raw pages holding rows [k, rows) (the cold part on SSD)."""
        groups = -(-self.rows // self.rows_per_page) - (k // self.rows_per_page)
        return int(max(groups, 0) * self.pages_per_row * PAGE_BYTES)

    def tt_variant(self, rank: int) -> TTVariant:
        for v in self.tt:
            if v.rank == rank:
                return v
        raise KeyError(rank)

    def with_tt(self, variants: Sequence[TTVariant]) -> "TableStats":
        return replace(self, tt=tuple(variants))

    def format_variant(self, name: str) -> FormatVariant:
        for v in self.formats:
            if v.format == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for name in ("hot_rows", "mass", "cold_unique_rows_per_batch", "cold_unique_pages_per_batch"):
            d[name] = d[name].tolist()
        if d["cold_reads_per_batch"] is not None:
            d["cold_reads_per_batch"] = d["cold_reads_per_batch"].tolist()
        d["tt"] = [asdict(v) for v in self.tt]
        d["formats"] = [asdict(v) for v in self.formats]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TableStats":
        d = dict(d)
        d["tt"] = tuple(TTVariant(**v) for v in d.get("tt", ()))
        d["formats"] = tuple(FormatVariant(**v) for v in d.get("formats", ()))
        return cls(**d)


@dataclass(frozen=True, eq=False)
class WorkloadStats:
    """Statistics of every table of a workload; ``source`` is "measured" or "modelled"."""

    tables: tuple[TableStats, ...]
    batch_size: int
    source: str = "measured"
    trace_id: str | None = None
    store_id: str | None = None
    profile_batches: tuple[int, int] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in STATS_SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {STATS_SOURCES}")
        if not self.tables:
            raise ValueError("no tables")

    @property
    def lookups_per_batch(self) -> float:
        return float(sum(t.lookups_per_batch for t in self.tables))

    def table(self, name: str) -> TableStats:
        found = next((t for t in self.tables if t.name == name), None)
        if found is None:
            raise KeyError(name)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"tables": [t.to_dict() for t in self.tables], "batch_size": self.batch_size, "source": self.source,
                "trace_id": self.trace_id, "store_id": self.store_id,
                "profile_batches": None if self.profile_batches is None else list(self.profile_batches),
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkloadStats":
        pb = d.get("profile_batches")
        return cls(tables=tuple(TableStats.from_dict(t) for t in d["tables"]), batch_size=int(d["batch_size"]),
                   source=d.get("source", "measured"), trace_id=d.get("trace_id"), store_id=d.get("store_id"),
                   profile_batches=None if pb is None else (int(pb[0]), int(pb[1])), notes=tuple(d.get("notes", ())))


@dataclass(frozen=True)
class Budgets:
    """What the plan may use. ``max_rel_error`` None: no accuracy constraint; 0: no TT.

    ``accuracy_mode`` "weighted": the lookup-weighted mean relative (Frobenius)
    error of the rows served must stay <= ``max_rel_error``; "per-table": a TT
    variant may serve a table only if its own error is <= ``max_rel_error``.
    """

    host_dram_bytes: int
    max_rel_error: float | None = None
    accuracy_mode: str = "weighted"
    host_threads: int = 1

    def __post_init__(self) -> None:
        if self.host_dram_bytes < 0:
            raise ValueError("host DRAM budget must be >= 0")
        if self.max_rel_error is not None and self.max_rel_error < 0:
            raise ValueError("accuracy budget must be >= 0")
        if self.accuracy_mode not in ACCURACY_MODES:
            raise ValueError(f"accuracy_mode must be one of {ACCURACY_MODES}")
        if self.host_threads < 1:
            raise ValueError("host_threads must be >= 1")


# --- cost values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perf:
    """Predicted seconds per batch of every resource; the batch takes the max of those that work in parallel.

    ``execution`` "parallel": DRAM, each device's IO and its memory- and compute-centric cores.
    "host-serial": ``host_s`` (one host thread does everything but the reads) and each device's IO;
    ``dram_s``, ``mem_core_s`` and ``compute_core_s`` are then the parts of ``host_s`` spent on each tier.
    """

    dram_s: float
    io_s: tuple[float, ...]
    mem_core_s: tuple[float, ...]
    compute_core_s: tuple[float, ...]
    host_s: float = 0.0
    execution: str = "parallel"

    def _items(self) -> list[tuple[str, float]]:
        items = [("host", self.host_s)] if self.execution == "host-serial" else [("dram", self.dram_s)]
        pairs = (("io", self.io_s),) if self.execution == "host-serial" else \
            (("io", self.io_s), ("mem_core", self.mem_core_s), ("compute_core", self.compute_core_s))
        for name, vals in pairs:
            items += [(f"{name}[{d}]", v) for d, v in enumerate(vals)]
        return items

    @property
    def total_s(self) -> float:
        return max(v for _, v in self._items())

    @property
    def bottleneck(self) -> str:
        return max(self._items(), key=lambda kv: kv[1])[0]

    def to_dict(self) -> dict[str, Any]:
        return {"dram_s": self.dram_s, "io_s": list(self.io_s), "mem_core_s": list(self.mem_core_s),
                "compute_core_s": list(self.compute_core_s), "host_s": self.host_s, "execution": self.execution,
                "total_s": self.total_s, "bottleneck": self.bottleneck}


@dataclass(frozen=True)
class Storage:
    """Bytes used (or available): host DRAM, and per device its DRAM and SSD."""

    host_dram_bytes: int
    device_dram_bytes: tuple[int, ...]
    ssd_bytes: tuple[int, ...]

    def fits_in(self, other: "Storage") -> bool:
        return (self.host_dram_bytes <= other.host_dram_bytes
                and len(self.device_dram_bytes) == len(other.device_dram_bytes)
                and all(a <= b for a, b in zip(self.device_dram_bytes, other.device_dram_bytes))
                and all(a <= b for a, b in zip(self.ssd_bytes, other.ssd_bytes)))

    def to_dict(self) -> dict[str, Any]:
        return {"host_dram_bytes": self.host_dram_bytes, "device_dram_bytes": list(self.device_dram_bytes),
                "ssd_bytes": list(self.ssd_bytes)}


def capacity(budgets: Budgets, devices: Sequence[DeviceProfile]) -> Storage:
    return Storage(budgets.host_dram_bytes, tuple(d.device_dram_bytes for d in devices),
                   tuple(d.ssd_capacity_bytes for d in devices))


@dataclass(frozen=True)
class TableLoad:
    """Work and bytes one table's placement option puts on the resources, per batch (no seconds yet)."""

    dram_lookups: float
    dram_row_bytes: int
    mem_core_lookups: float  # cold lookups of an ssd_raw table, extracted and pooled by memory-centric cores
    io_pages: float
    tt_rebuild_rows: float
    tt_flops: float
    host_dram_bytes: int
    device_dram_bytes: int
    ssd_bytes: int
    error_weight: float  # this table's share of all lookups that are served approximated x rel error
    lookups: float = 0.0  # every lookup of the table (the host touches each one)
    io_reads: float = 0.0  # read requests for the cold pages (runs of neighbouring pages)
    raw_active: float = 0.0  # probability that a batch has cold raw lookups of this table
    tt_lookups: float = 0.0  # cold lookups served from TT-rebuilt rows
    tt_active: float = 0.0  # probability that a batch has TT lookups of this table


@dataclass(frozen=True)
class TableOption:
    """One candidate placement of one table (device chosen separately)."""

    table: int
    hot_rows: int
    cold_tier: str  # SSD_RAW | SSD_TT | NONE (every row hot), see emulator.tiers
    tt_rank: int | None
    load: TableLoad
    row_format: str = "fp32"  # rows of the DRAM and raw tiers (fp32 raw, or a stored row format)

    @property
    def needs_device(self) -> bool:
        return self.cold_tier != NONE

    @property
    def plan_tier(self) -> str:
        """The cold tier a plan records (an all-hot table is recorded as ``ssd_raw``: it never reads)."""
        return SSD_RAW if self.cold_tier == NONE else self.cold_tier


@dataclass(frozen=True)
class PlannerOptions:
    """Knobs of the search. ``hot_mass_levels``: candidate hot sets cover these shares of lookups
    (plus 0 rows and every row)."""

    hot_mass_levels: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
    queue_depth: int = 128
    solver: str = "cbc"
    time_limit_s: float = 60.0
    gap: float = 1e-4
    threads: int | None = None
    symmetry_breaking: bool = True
    formulation: str = "auto"  # "exact" | "pooled" | "auto" (pooled for many tables on identical devices)
    tie_break: bool = True  # second stage: among plans with the optimal batch time, the least total work


# --- stages ------------------------------------------------------------------------------------


class StatsSource(abc.ABC):
    """Produces workload statistics (from a trace, or modelled from a spec)."""

    @abc.abstractmethod
    def workload_stats(self) -> WorkloadStats: ...


class Estimator(abc.ABC):
    """Turns statistics into candidate options with their loads (``plans.cost`` does the arithmetic)."""

    @abc.abstractmethod
    def table_options(self, stats: WorkloadStats, budgets: Budgets,
                      options: PlannerOptions) -> list[list[TableOption]]: ...


class Planner(abc.ABC):
    """Decides a :class:`emulator.plan.Plan`; every planner has this one method."""

    name: str = "planner"

    @abc.abstractmethod
    def plan(self, stats: WorkloadStats, calibration: Calibration | None, budgets: Budgets,
             devices: Sequence[DeviceProfile]): ...

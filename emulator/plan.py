"""The ``Plan``: where every row lives and how each device's cores are split.

The engine executes plans; ``plans/`` produces them (as torchrec keeps its
``ShardingPlan`` beside the runtime and its planner apart). A plan names the
store and trace it was made for by content hash; a plan made for another store
is refused.

Tiers, per table, after the (optional) address remapping:

* rows ``[0, hot_rows)`` live in host DRAM (tier ``dram``);
* optionally an LRU row cache of ``lru_rows`` rows in host DRAM in front of the
  raw cold rows (tier ``lru``; the baseline of FBGEMM/HugeCTR-style caches);
* the remaining rows are served from the device by ``cold_tier``:
  ``ssd_raw`` (raw rows read with O_DIRECT and extracted by memory-centric
  cores) or ``ssd_tt`` (rebuilt from TT cores of rank ``tt_rank`` by
  compute-centric cores).

``row_format`` says how a table's rows are stored where they are served from
DRAM or raw SSD pages: ``fp32`` (the raw rows, the default), or a row format
the store was built with (``fp16``, ``int8``, ``int4``; see
emulator/store/quant.py): the DRAM tier then holds the quantized rows and the
raw reads fetch the format's (fewer) pages. TT tables and LRU caches use fp32.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from emulator.jsondoc import load_json_doc, save_json_doc
from emulator.store.quant import ROW_FORMATS
from emulator.tiers import COLD_TIERS, TIERS  # noqa: F401  (re-exported)
from tracegen.errors import InputError

PLAN_FORMAT = "screc-plan"
PLAN_FORMAT_VERSION = 1


def _is_whole(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class TablePlacement:
    table: str
    hot_rows: int
    cold_tier: str = "ssd_raw"
    tt_rank: int | None = None
    device: int = 0
    lru_rows: int = 0  # an LRU row cache of this many rows in front of the ssd_raw rows (0 = none)
    row_format: str = "fp32"  # rows of the DRAM and raw tiers: fp32 (raw) or a stored row format

    def __post_init__(self) -> None:
        if not isinstance(self.table, str) or not self.table:
            raise ValueError(f"table name {self.table!r} is not a non-empty string")
        for what in ("hot_rows", "device", "lru_rows") + (("tt_rank",) if self.tt_rank is not None else ()):
            if not _is_whole(getattr(self, what)):
                raise ValueError(f"table {self.table}: {what} must be a whole number, got {getattr(self, what)!r}")
        if self.hot_rows < 0:
            raise ValueError(f"table {self.table}: hot_rows must be >= 0")
        if self.lru_rows < 0:
            raise ValueError(f"table {self.table}: lru_rows must be >= 0")
        if self.lru_rows and self.cold_tier != "ssd_raw":
            raise ValueError(f"table {self.table}: an LRU cache sits only in front of ssd_raw rows")
        if self.cold_tier not in COLD_TIERS:
            raise ValueError(f"table {self.table}: cold_tier {self.cold_tier!r} is not one of {COLD_TIERS}")
        if self.cold_tier == "ssd_tt" and (self.tt_rank is None or self.tt_rank < 1):
            raise ValueError(f"table {self.table}: ssd_tt needs a tt_rank >= 1")
        if self.row_format not in ROW_FORMATS:
            raise ValueError(f"table {self.table}: row_format {self.row_format!r} is not one of {ROW_FORMATS}")
        if self.row_format != "fp32" and (self.cold_tier != "ssd_raw" or self.lru_rows):
            raise ValueError(f"table {self.table}: row format {self.row_format} serves DRAM and ssd_raw rows only "
                             "(not ssd_tt, not behind an LRU cache)")


@dataclass(frozen=True)
class DevicePlan:
    name: str = "dev0"
    mem_cores: int = 1
    compute_cores: int = 1

    def __post_init__(self) -> None:
        if not _is_whole(self.mem_cores) or not _is_whole(self.compute_cores):
            raise ValueError(f"device {self.name}: core counts must be whole numbers")
        if self.mem_cores < 0 or self.compute_cores < 0:
            raise ValueError(f"device {self.name}: core counts must be >= 0")


@dataclass(frozen=True)
class Plan:
    store_id: str
    tables: tuple[TablePlacement, ...]
    devices: tuple[DevicePlan, ...] = (DevicePlan(),)
    trace_id: str | None = None
    dram_budget_bytes: int | None = None
    planner: str = "manual"
    remap: str | None = None  # HDF5 file of per-table permutations (new id of each old row), relative to the plan
    predicted: Mapping[str, Any] = field(default_factory=dict)
    solver: Mapping[str, Any] = field(default_factory=dict)
    version: int = PLAN_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.store_id, str):
            raise ValueError(f"store_id must be a string, got {self.store_id!r}")
        if not self.devices:
            raise ValueError("a plan needs at least one device")
        for t in self.tables:
            if not 0 <= t.device < len(self.devices):
                raise ValueError(f"table {t.table}: device {t.device} does not exist")
        names = [t.table for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError("a table is placed twice")
        if self.remap is not None and not isinstance(self.remap, str):
            raise ValueError(f"remap must be a file name, got {self.remap!r}")
        if self.trace_id is not None and not isinstance(self.trace_id, str):
            raise ValueError(f"trace_id must be a string, got {self.trace_id!r}")
        if self.dram_budget_bytes is not None and (not _is_whole(self.dram_budget_bytes) or self.dram_budget_bytes < 0):
            raise ValueError(f"dram_budget_bytes must be a whole number >= 0, got {self.dram_budget_bytes!r}")
        if not isinstance(self.predicted, Mapping) or not isinstance(self.solver, Mapping):
            raise ValueError("'predicted' and 'solver' must be objects")

    def placement(self, table: str) -> TablePlacement:
        for t in self.tables:
            if t.table == table:
                return t
        raise KeyError(table)

    # --- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for t in d["tables"]:  # the default is left out: plans without row formats keep their JSON
            if t["row_format"] == "fp32":
                del t["row_format"]
        d["format"] = PLAN_FORMAT
        d["predicted"] = dict(self.predicted)
        d["solver"] = dict(self.solver)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        d = dict(d)
        d.pop("format", None)
        if not isinstance(d["tables"], list) or not isinstance(d.get("devices", []), list):
            raise ValueError("'tables' and 'devices' must be lists")
        d["tables"] = tuple(TablePlacement(**t) for t in d["tables"])
        d["devices"] = tuple(DevicePlan(**x) for x in d.get("devices", [{}]))
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        save_json_doc(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        p = Path(path)
        plan = load_json_doc(p, "plan", PLAN_FORMAT, (PLAN_FORMAT_VERSION,), cls.from_dict)
        if plan.remap and not Path(plan.remap).is_absolute():  # stored relative to the plan file
            plan = dataclasses.replace(plan, remap=str(p.parent / plan.remap))
        return plan

    def check_store(self, store_id: str, path: str | os.PathLike | None = None) -> None:
        if self.store_id != store_id:
            raise InputError(
                f"plan was made for store {self.store_id[:12]}, not this store ({store_id[:12]})", path)

    def check_tables(self, table_rows: Mapping[str, int], path: str | os.PathLike | None = None,
                     tt_ranks: Mapping[str, Sequence[int]] | None = None) -> None:
        """Refuse a plan whose tables are not the store's (``table_rows``: name -> rows, in store order): a
        table the store does not have (a renamed or extra entry), a store table the plan does not place,
        ``hot_rows`` or ``lru_rows`` above the table's rows, or a TT rank the store has no cores for (row formats
        the store lacks are refused where the replay opens the table)."""
        for i, t in enumerate(self.tables):
            if t.table not in table_rows:
                raise InputError(f"tables[{i}]: the store has no table {t.table!r}", path)
            rows = table_rows[t.table]
            for what in ("hot_rows", "lru_rows"):
                if getattr(t, what) > rows:
                    raise InputError(f"tables[{i}] ({t.table}): {what} {getattr(t, what)} is more than the "
                                     f"table's {rows} rows", path)
            ranks = None if tt_ranks is None else list(tt_ranks.get(t.table, ()))
            if t.cold_tier == "ssd_tt" and ranks is not None and t.tt_rank not in ranks:
                raise InputError(f"tables[{i}] ({t.table}): the store has no TT rank {t.tt_rank} for it "
                                 f"(has {ranks or 'none'})", path)
        placed = {t.table for t in self.tables}
        missing = [name for name in table_rows if name not in placed]
        if missing:
            raise InputError(f"the plan places no table {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), path)


def uniform_plan(store_id: str, table_rows: Mapping[str, int], policy: str, *, tt_rank: int | None = None,
                 trace_id: str | None = None) -> Plan:
    """The simple policies: ``all-dram`` (every row hot), ``all-ssd`` (raw rows on SSD),
    ``all-tt`` (every table served from its TT cores of ``tt_rank``)."""
    if policy == "all-dram":
        tables = tuple(TablePlacement(n, hot_rows=r) for n, r in table_rows.items())
    elif policy == "all-ssd":
        tables = tuple(TablePlacement(n, hot_rows=0) for n in table_rows)
    elif policy == "all-tt":
        tables = tuple(TablePlacement(n, hot_rows=0, cold_tier="ssd_tt", tt_rank=tt_rank) for n in table_rows)
    else:
        raise InputError(f"unknown policy {policy!r} (all-dram, all-ssd, all-tt)")
    return Plan(store_id=store_id, tables=tables, trace_id=trace_id, planner=policy)


def check_remap_table(name: str, kind: str, rows: int, data, path: str | os.PathLike | None = None) -> None:
    """Refuse a table's remap (see plans/remap.py) unless ``dense`` is a permutation of ``[0, rows)`` and
    ``prefix`` lists distinct row ids in range: anything else would serve the wrong rows."""
    import numpy as np

    data = np.asarray(data)
    problem = None
    if kind not in ("dense", "prefix"):
        problem = f"unknown kind {kind!r} (dense or prefix)"
    elif data.ndim != 1 or data.dtype.kind not in "iu" or rows < 1:
        problem = "is not a list of row ids"
    elif kind == "dense" and data.shape != (rows,):
        problem = f"has {data.size} ids, expected {rows}"
    elif data.size > rows:
        problem = f"has {data.size} ids for {rows} rows"
    elif data.size and (data.min() < 0 or data.max() >= rows):
        problem = f"has a row id outside [0, {rows})"
    elif np.unique(data).size != data.size:
        problem = "names a row twice (not a permutation)"
    if problem:
        raise InputError(f"remap of table {name} {problem}", path)

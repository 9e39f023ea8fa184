"""Records that cross the replay engine's modules (prepare -> engine -> verify, accuracy, host fitting).

* :class:`DeviceReads`: one device's page reads for a batch (what its IO engine is handed);
* :class:`TableLookups`: one table's lookups of a prepared batch, tagged by tier (a view);
* :class:`Prepared`: a batch split by tier with its reads planned, before any IO;
* :class:`DeviceIO`: what a device's reads did (counters of the IO engine);
* :class:`BatchWork`: where a finished batch's time went (per tier, per device);
* :class:`BatchOutput`: the pooled embeddings of a batch, per table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracegen.trace_io import Batch


@dataclass(frozen=True)
class DeviceReads:
    """A device's reads: read ``k`` takes ``nbytes[k]`` bytes at byte ``offsets[k]`` of file ``file_ids[k]``
    into ``dest_offsets[k]`` of the batch's destination buffer, for table ``tables[k]``."""

    file_ids: np.ndarray  # int64, engine file ids
    offsets: np.ndarray  # int64 byte offsets in the files
    nbytes: np.ndarray  # int64 bytes per read
    dest_offsets: np.ndarray  # int64 byte offsets in the destination buffer
    tables: np.ndarray  # int64 table index of each read

    @property
    def count(self) -> int:
        return int(self.offsets.size)

    @property
    def total_bytes(self) -> int:
        return int(self.nbytes.sum())


@dataclass(frozen=True)
class TableLookups:
    """One table's lookups in a prepared batch: ``kind[k]`` says where lookup ``k``'s row is (see
    :mod:`emulator.tiers`), ``loc[k]`` where in that source; ``offsets`` are the bag bounds (from 0), ``old_ids``
    the trace's row ids, ``tt_rows`` the unique old ids rebuilt from TT cores (None if none)."""

    kind: np.ndarray
    loc: np.ndarray
    offsets: np.ndarray
    old_ids: np.ndarray
    tt_rows: np.ndarray | None


@dataclass(frozen=True)
class CacheWork:
    """An LRU table's cache work after pooling: release the hit slots, admit the missed rows from the pages."""

    hit_slots: np.ndarray | None
    admit_rows: np.ndarray | None = None  # missed rows (old ids) to admit
    admit_dest: np.ndarray | None = None  # their byte offsets in the destination buffer


@dataclass
class Prepared:
    """A batch split by tier and located, its page reads planned (no IO yet).

    The slow-path tables (served one by one) are in ``slow`` (table indices in ``slow_tables``); the batched
    path's groups in ``works`` (:class:`emulator.replay.groups.GroupWork`). ``tables()`` gives every table's
    lookups in table order."""

    batch: Batch
    slow: list[TableLookups]  # per slow-path table
    slow_tables: list[int]  # table index of each slow-path entry
    reads: list[DeviceReads | None]  # per device
    dest: np.ndarray  # the destination buffer of every device's reads
    tier_lookups: dict[str, int]  # tier name -> lookups
    dev_lookups: dict[str, np.ndarray]  # ssd tier -> lookups per device
    works: list = field(default_factory=list)  # per group: emulator.replay.groups.GroupWork
    cache_work: dict[int, CacheWork] = field(default_factory=dict)  # table index -> its LRU work
    lru_hits: int = 0
    handles: list = field(default_factory=list)  # (device, engine handle) of reads in flight
    t_start: float = 0.0
    device_record: Any = None  # what the device clock needs of this batch (set by the engine when emulating)
    device_prep_s: np.ndarray | None = None  # per device: CPU seconds of preparation steps that are device work
    _per_table: list[TableLookups] | None = None

    def tables(self) -> list[TableLookups]:
        """Every table's lookups, in table order (built on first use: verify, accuracy, host fitting). Group
        tables' arrays are views of the group's; their DRAM ``loc`` count from the group's DRAM array."""
        if self._per_table is None:
            views: list[Any] = [None] * self.batch.num_tables
            for j, t in enumerate(self.slow_tables):
                views[t] = self.slow[j]
            for w in self.works:
                cum = np.concatenate([[0], np.cumsum(w.counts)])
                tt = dict(w.tt_rows)
                for k, t in enumerate(w.group.tables):
                    ids, off = self.batch.table(int(t))
                    a, b = int(cum[k]), int(cum[k + 1])
                    views[int(t)] = TableLookups(w.kind[a:b], w.loc[a:b], off, ids, tt.get(k))
            self._per_table = views
        return self._per_table

    @property
    def kinds(self) -> list[np.ndarray]:
        return [v.kind for v in self.tables()]

    @property
    def tt_rows(self) -> list[np.ndarray | None]:
        return [v.tt_rows for v in self.tables()]


@dataclass
class DeviceIO:
    """What one device's reads of a batch did (from its IO engine's completion)."""

    ios: int = 0
    bytes: int = 0
    busy_s: float = 0.0  # engine time from submission to the last completion
    inflight_s: float = 0.0  # sum of the reads' latencies


@dataclass
class BatchWork:
    """Where a finished batch's time went: pooling of DRAM rows, memory-centric (raw rows) and
    compute-centric (TT rebuild and pooling) work per device, and each device's IO."""

    dram_s: float
    mem_s: list[float]
    compute_s: list[float]
    devices: list[DeviceIO]
    # optional: per table (indexed by table), the kernel time of the calls it was in, a call's time shared by its
    # tables in proportion to their lookups (see emulator.replay.table_stats.add_table_busy); None: per-table
    # figures share each tier's time by lookups instead
    table_busy_s: np.ndarray | None = None

    @property
    def ios(self) -> int:
        return sum(d.ios for d in self.devices)

    @property
    def bytes_read(self) -> int:
        return sum(d.bytes for d in self.devices)


@dataclass
class BatchOutput:
    index: int
    pooled: list[np.ndarray]  # per table, (B, dim) float32

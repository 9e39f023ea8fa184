"""The address remapper: renumber each table's rows hottest-first.

After remapping, a table's hot set of size k is the prefix [0, k) (it can be
pinned in DRAM as one block), and cold rows that are read together sit next to
each other, so they share 4 KiB pages.

A table's remap is either

* ``dense``: a full permutation ``old -> new`` (int32 when rows < 2**31), built
  from exact access counts: rows by descending count, ties and never-seen rows
  in their original order (a stable sort); or
* ``prefix``: for tables counted with a heavy-hitter sketch, the ``m`` tracked
  rows (by descending estimated count, ties by id) take new ids [0, m) and every
  other row keeps its original order after them. Nothing of size ``rows`` is
  ever held in memory.

Remaps are stored in HDF5 (``format = "screc-remap"``): one dataset per table,
named after the table, holding ``old -> new`` (dense) or the prefix's old ids
(attribute ``kind = "prefix"``). :func:`remap_store` writes a store whose raw
files are in the new order; it may also be left as a mapping applied at lookup
time (``Plan.remap`` names the file).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tracegen.atomic import atomic_dir, atomic_path, fsync_file
from tracegen.errors import InputError

REMAP_FORMAT = "screc-remap"
REMAP_FORMAT_VERSION = 1
REMAP_FILE = "remap.h5"
_COPY_ROWS_BYTES = 8 << 20


def _id_dtype(rows: int) -> type:
    return np.int32 if rows < 2**31 else np.int64


@dataclass(frozen=True, eq=False)
class TableRemap:
    """One table's renumbering; ``perm`` (dense, old -> new) or ``prefix`` (old ids of new 0..m-1)."""

    name: str
    rows: int
    perm: np.ndarray | None = None
    prefix: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.perm is None) == (self.prefix is None):
            raise ValueError(f"table {self.name}: give exactly one of perm and prefix")
        if self.perm is not None:
            object.__setattr__(self, "perm", np.asarray(self.perm))
            if self.perm.shape != (self.rows,):
                raise ValueError(f"table {self.name}: perm has {self.perm.size} entries, table has {self.rows} rows")
        else:
            p = np.asarray(self.prefix, dtype=np.int64)
            object.__setattr__(self, "prefix", p)
            srt = np.sort(p)
            if p.size and (srt[0] < 0 or srt[-1] >= self.rows or np.any(srt[1:] == srt[:-1])):
                raise ValueError(f"table {self.name}: prefix ids must be distinct rows")
            object.__setattr__(self, "_sorted", srt)
            object.__setattr__(self, "_sorted_pos", np.argsort(p, kind="stable"))  # position in prefix

    @property
    def kind(self) -> str:
        return "dense" if self.perm is not None else "prefix"

    def new_ids(self, old: np.ndarray) -> np.ndarray:
        old = np.asarray(old, dtype=np.int64)
        if self.perm is not None:
            return self.perm[old].astype(np.int64, copy=False)
        srt, pos = self._sorted, self._sorted_pos
        m = srt.size
        j = np.searchsorted(srt, old)
        hit = (j < m) & (srt[np.minimum(j, max(m - 1, 0))] == old) if m else np.zeros(old.shape, bool)
        out = m + old - j  # rows before ``old`` that are in the prefix: j of them
        if m:
            out[hit] = pos[j[hit]]
        return out

    def old_ids(self, new: np.ndarray) -> np.ndarray:
        new = np.asarray(new, dtype=np.int64)
        if self.perm is not None:
            if not hasattr(self, "_inverse"):
                inv = np.empty(self.rows, dtype=np.int64)
                inv[self.perm] = np.arange(self.rows, dtype=np.int64)
                object.__setattr__(self, "_inverse", inv)
            return self._inverse[new]
        m = self.prefix.size
        out = np.empty(new.shape, dtype=np.int64)
        in_prefix = new < m
        out[in_prefix] = self.prefix[new[in_prefix]]
        r = new[~in_prefix] - m  # rank among the rows not in the prefix
        before = self._sorted - np.arange(m)  # non-prefix rows before each prefix row
        out[~in_prefix] = r + np.searchsorted(before, r, side="right")
        return out

    def is_permutation(self) -> bool:
        if self.perm is not None:
            if self.perm.size == 0:
                return True
            seen = np.zeros(self.rows, dtype=bool)
            p = self.perm.astype(np.int64)
            if p.min() < 0 or p.max() >= self.rows:
                return False
            seen[p] = True
            return bool(seen.all())
        return True  # a prefix remap is a permutation by construction (checked in __post_init__)


class Remap:
    """Per-table renumbering of rows, hottest first."""

    def __init__(self, tables: Sequence[TableRemap], meta: dict[str, Any] | None = None):
        self.tables = list(tables)
        self.meta = dict(meta or {})
        self._by_name = {t.name: i for i, t in enumerate(self.tables)}

    def __len__(self) -> int:
        return len(self.tables)

    def table(self, table: int | str) -> TableRemap:
        return self.tables[self._by_name[table] if isinstance(table, str) else table]

    def new_ids(self, table: int | str, old_ids: np.ndarray) -> np.ndarray:
        return self.table(table).new_ids(old_ids)

    def old_ids(self, table: int | str, new_ids: np.ndarray) -> np.ndarray:
        return self.table(table).old_ids(new_ids)

    def is_permutation(self) -> bool:
        return all(t.is_permutation() for t in self.tables)

    @classmethod
    def identity(cls, names: Sequence[str], rows: Sequence[int]) -> "Remap":
        return cls([TableRemap(n, int(r), prefix=np.zeros(0, np.int64)) for n, r in zip(names, rows)],
                   {"source": "identity"})

    @classmethod
    def from_counts(cls, counts: Sequence[Any], names: Sequence[str], meta: dict[str, Any] | None = None) -> "Remap":
        """From ``plans.stats.TableCounts``: exact counts give dense permutations, sketches prefixes."""
        tables = []
        for name, c in zip(names, counts):
            if c.exact is not None:
                order = np.argsort(-c.exact, kind="stable")  # hottest first, ties keep original order
                perm = np.empty(c.rows, dtype=_id_dtype(c.rows))
                perm[order] = np.arange(c.rows, dtype=perm.dtype)
                tables.append(TableRemap(name, c.rows, perm=perm))
            else:
                tables.append(TableRemap(name, c.rows, prefix=c.hot_ids))
        return cls(tables, meta)

    # --- HDF5 ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        import h5py

        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = REMAP_FORMAT
                f.attrs["format_version"] = REMAP_FORMAT_VERSION
                f.attrs["meta"] = json.dumps(self.meta, sort_keys=True, default=str)
                for t in self.tables:
                    if t.perm is not None:
                        ds = f.create_dataset(t.name, data=t.perm.astype(_id_dtype(t.rows)), chunks=True)
                    else:
                        ds = f.create_dataset(t.name, data=t.prefix.astype(_id_dtype(t.rows)))
                    ds.attrs["kind"] = t.kind
                    ds.attrs["rows"] = t.rows
                f.attrs["tables"] = json.dumps([t.name for t in self.tables])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Remap":
        import h5py

        p = Path(path)
        if not p.is_file():
            raise InputError("remap file not found", p)
        try:
            with h5py.File(p, "r") as f:
                if f.attrs.get("format") != REMAP_FORMAT:
                    raise InputError("not a screc remap file (format attribute missing or wrong)", p)
                if int(f.attrs.get("format_version", -1)) != REMAP_FORMAT_VERSION:
                    raise InputError(f"remap version {f.attrs.get('format_version')} is not supported", p)
                tables = []
                for name in json.loads(str(f.attrs["tables"])):
                    ds = f[name]
                    kind, rows = str(ds.attrs["kind"]), int(ds.attrs["rows"])
                    data = ds[:]
                    tables.append(TableRemap(name, rows, perm=data) if kind == "dense"
                                  else TableRemap(name, rows, prefix=data))
                meta = json.loads(str(f.attrs.get("meta", "{}")))
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"corrupt remap file ({e})", p) from None
        return cls(tables, meta)


# --- drift --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """How a hot set chosen on a profile holds up later.

    ``new_share``: share of the later part's top-k rows that were not in the
    profile's top-k; ``hit_ratio``: share of later lookups the profile's top-k
    serves; ``oracle_hit_ratio``: what the later part's own top-k would serve;
    ``hit_ratio_loss`` = oracle - achieved.
    """

    k: int
    new_share: float
    hit_ratio: float
    oracle_hit_ratio: float

    @property
    def hit_ratio_loss(self) -> float:
        return self.oracle_hit_ratio - self.hit_ratio


def top_k(counts: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k most counted rows (ties by lower id), as the remapper ranks them."""
    return np.argsort(-np.asarray(counts), kind="stable")[:k]


def hot_set_drift(profile_counts: np.ndarray, later_counts: np.ndarray, k: int) -> Drift:
    profile_counts = np.asarray(profile_counts)
    later_counts = np.asarray(later_counts)
    if profile_counts.shape != later_counts.shape:
        raise ValueError("profile and later counts must cover the same rows")
    k = int(min(max(k, 0), profile_counts.size))
    if k == 0:
        return Drift(0, 0.0, 0.0, 0.0)
    prof, later = top_k(profile_counts, k), top_k(later_counts, k)
    total = float(later_counts.sum())
    new_share = float(np.setdiff1d(later, prof, assume_unique=True).size / k)
    hit = float(later_counts[prof].sum() / total) if total else 0.0
    oracle = float(later_counts[later].sum() / total) if total else 0.0
    return Drift(k, new_share, hit, oracle)


def plan_drift(profile_counts: Sequence[Any], later_counts: Sequence[Any], hot_rows: Sequence[int],
               lookups: Sequence[float] | None = None) -> dict[str, Any]:
    """How the hot sets of a plan (``hot_rows[t]`` rows of table t, chosen on the profile's counts) hold up on
    later batches, over the tables with exact counts and a hot set that is neither empty nor the whole table:
    the later lookups they serve against what the later batches' own top-k would serve (lookup-weighted), and the
    share of the later top-k rows that are new (row-weighted). ``*_counts`` are ``plans.stats.TableCounts``."""
    hit = oracle = total = new = rows = 0.0
    tables = 0
    for t, (p, q, k) in enumerate(zip(profile_counts, later_counts, hot_rows)):
        if p.exact is None or q.exact is None or not 0 < k < p.rows or q.total == 0:
            continue
        d = hot_set_drift(p.exact, q.exact, int(k))
        w = float(q.total)
        hit += d.hit_ratio * w
        oracle += d.oracle_hit_ratio * w
        total += w
        new += d.new_share * d.k
        rows += d.k
        tables += 1
    return {"tables": tables, "hit_ratio": hit / total if total else None,
            "oracle_hit_ratio": oracle / total if total else None,
            "new_row_share": new / rows if rows else None}


# --- a remapped copy of a store -----------------------------------------------------------------


def remap_store(store: Any, remap: Remap, out_dir: str | os.PathLike,
                progress: Callable[[str, int, int], None] | None = None) -> Any:
    """Write a copy of ``store`` whose raw rows are in the remapped order; returns the opened copy.

    Streams a few MiB of rows at a time (``Store.read_rows`` through the page
    cache). TT cores are copied unchanged, so TT rows stay in the original
    order: the manifest says so under ``"remap"`` (``tt_row_order:
    "original"``) and ships the remap file, so a TT lookup of new id n reads
    old id ``remap.old_ids(n)``.
    """
    from dataclasses import replace

    from emulator.store.manifest import FileEntry, RemapInfo, write_manifest
    from emulator.store.store import Store, file_crcs

    out = Path(out_dir)
    manifest = store.manifest
    for t in manifest.tables:
        if t.name not in remap._by_name:
            raise InputError(f"remap has no table {t.name!r}")
        if remap.table(t.name).rows != t.rows:
            raise InputError(f"remap of table {t.name} covers {remap.table(t.name).rows} rows, store has {t.rows}")
    with atomic_dir(out) as tmp:
        (tmp / "raw").mkdir()
        tables = []
        for i, t in enumerate(manifest.tables):
            path = tmp / t.raw.file
            _write_remapped_rows(store, i, remap, path, progress)
            raw = FileEntry(t.raw.file, path.stat().st_size, tuple(file_crcs(path, manifest.chunk_bytes)))
            tables.append(replace(t, raw=raw, formats=()))  # row-format files keep the original order: dropped
        for entry in manifest.files:
            shutil.copyfile(store.path / entry.file, tmp / entry.file)
            fsync_file(tmp / entry.file)
        remap.save(tmp / REMAP_FILE)
        info = RemapInfo(REMAP_FILE, store.store_id, raw_row_order="remapped", tt_row_order="original")
        fsync_file(write_manifest(tmp, replace(manifest, tables=tuple(tables), remap=info, store_id="")))
    return Store.open(out)


def _write_remapped_rows(store: Any, i: int, remap: Remap, path: Path,
                         progress: Callable[[str, int, int], None] | None) -> None:
    """Table ``i``'s raw file with row n holding the store's row ``remap.old_ids(n)`` (fsynced)."""
    lay, name = store.layouts[i], store.tables[i].name
    step = max(lay.rows_per_page, (_COPY_ROWS_BYTES // lay.span_bytes) * lay.rows_per_page)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for a in range(0, lay.rows, step):
            b = min(a + step, lay.rows)
            old = remap.old_ids(name, np.arange(a, b, dtype=np.int64))
            f.write(lay.pack(store.read_rows(i, old)).tobytes())
            if progress:
                progress(f"remap {name}", b, lay.rows)
    fsync_file(path)

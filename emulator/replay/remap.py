"""How the replay reads a plan's remap and loads a table's hot rows (see plans/remap.py for the format)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from emulator.plan import Plan, check_remap_table
from emulator.store.layout import RowLayout
from emulator.store.store import Store
from tracegen.errors import InputError


def load_hot_rows(store: Store, i: int, hot: int, inv: np.ndarray | None,
                   out: np.ndarray | None = None, row_format: str = "fp32") -> np.ndarray:
    """Read a table's hot rows into ``out`` (or a new array) with plain reads of 1 MiB blocks (no memory map,
    so the process's resident set holds the DRAM tier and one block, not every page the rows sit in).
    ``row_format`` other than fp32: the rows of that format's file (int8/int4 as (hot, row_bytes) uint8)."""
    lay, path = (store.layouts[i], store.table_path(i)) if row_format == "fp32" else \
        (store.format_layout(i, row_format), store.format_path(i, row_format))
    if row_format == "fp16":
        lay = RowLayout(lay.rows, lay.dim, "fp16", lay.page_bytes)  # plain fp16 rows: the same pages
    width = lay.row_bytes // lay.np_dtype.itemsize
    out = np.empty((hot, width), dtype=lay.np_dtype) if out is None else out
    if hot == 0:
        return out
    rows = np.arange(hot, dtype=np.int64) if inv is None else np.asarray(inv[:hot], dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    offs = lay.row_offsets(rows[order])
    block = max(1 << 20, lay.span_bytes)
    blocks = offs // block
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    ends = np.r_[starts[1:], offs.size]
    buf = np.empty(block + lay.span_bytes, dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        for a, b in zip(starts, ends):
            base = int(blocks[a]) * block
            n = os.preadv(f.fileno(), [memoryview(buf)[: min(buf.size, lay.file_bytes - base)]], base)
            rel = offs[a:b] - base
            if int(rel.max()) + lay.row_bytes > n:
                raise InputError(f"table {store.tables[i].name}: short read while loading hot rows", path)
            idx = rel[:, None] + np.arange(lay.row_bytes)
            out[order[a:b]] = buf[idx].view(lay.np_dtype).reshape(b - a, width)
    return out


@dataclass(frozen=True)
class TableRemap:
    """A table's renumbering as the engine needs it: the new id of any old id, and the old ids of the hot prefix.

    ``dense``: a full permutation old -> new. ``prefix``: only the ``m`` hottest rows are renumbered
    (``prefix[j]`` is the old id of new row ``j``); every other row is cold for any hot set <= m.
    """

    rows: int
    perm: np.ndarray | None = None
    prefix: np.ndarray | None = None

    def hot_lookup(self, hot: int) -> Callable[[np.ndarray], np.ndarray]:
        """A function giving the new id of each old id in the hot set ``[0, hot)``, and ``hot`` (cold) elsewhere."""
        if self.perm is not None:
            perm = self.perm
            return lambda old: perm[old]
        order = np.argsort(self.prefix[:hot], kind="stable")  # once per table, not per batch
        sp = self.prefix[:hot][order]
        if sp.size == 0:
            return lambda old: np.full(old.shape, hot, dtype=np.int64)

        def lookup(old: np.ndarray) -> np.ndarray:
            j = np.searchsorted(sp, old)
            jc = np.minimum(j, sp.size - 1)
            return np.where(sp[jc] == old, order[jc], hot)

        return lookup

    def hot_old_ids(self, hot: int) -> np.ndarray:
        if self.perm is not None:
            inv = np.empty_like(self.perm)
            inv[self.perm] = np.arange(self.rows, dtype=self.perm.dtype)
            return inv[:hot]
        if hot > self.prefix.size:
            raise InputError(f"hot set of {hot} rows exceeds the remap's prefix of {self.prefix.size} rows")
        return self.prefix[:hot]


def load_remap(plan: Plan) -> dict[str, TableRemap]:
    """Read the planner's remap file (see plans/remap.py for the format)."""
    import h5py

    try:
        with h5py.File(plan.remap, "r") as f:
            if f.attrs.get("format") != "screc-remap":
                raise InputError("not a screc remap file", plan.remap)
            out = {}
            names = json.loads(str(f.attrs["tables"]))
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InputError("the remap's 'tables' attribute is not a list of table names", plan.remap)
            for name in names:
                ds = f[name]
                kind, rows, data = str(ds.attrs["kind"]), int(ds.attrs["rows"]), ds[:]
                check_remap_table(name, kind, rows, data, plan.remap)  # a permutation / distinct ids in range
                data = data.astype(np.int64)
                out[name] = TableRemap(rows, perm=data) if kind == "dense" else TableRemap(rows, prefix=data)
            return out
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise InputError(f"cannot read the plan's remap file ({e})", plan.remap) from None

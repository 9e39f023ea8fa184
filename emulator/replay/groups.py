"""The replay engine's batched path: all tables of one (dim, dtype) served with whole-batch NumPy passes.

A *group* holds every table of one ``(dim, dtype)`` (dtype: fp32, fp16, or the
row format int8 / int4 its DRAM and pages hold) that needs no per-table
state in the batch loop (no LRU cache, no prefix remap, raw rows within one
page). Its DRAM tiers are concatenated into one C-contiguous array (each
table's ``dram`` is a view of it), its dense remaps into one permutation, so a
batch's lookups of the whole group are translated, split by tier and located
with a few array operations, and pooled with one kernel call over the group's
rebased CSR (out ``(K*B, dim)``; table ``k``'s pooled rows are
``out[k*B:(k+1)*B]``). Raw cold rows of every group on one device are planned
with one :func:`emulator.io.plan_page_reads` call over *global* page ids: the
files of a device are laid end to end with a one-page gap, so coalescing never
crosses files, and each read maps back to its file with a binary search.
TT cold rows are de-duplicated per table (one sort over table-tagged keys) and
rebuilt into one staged array per group. Results equal the per-table path bit
for bit (same rows, same bag order); only the placement of pages in the
destination buffer and of rows in the staging array differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emulator.kernels.jit import njit
from emulator.tiers import COLD_NONE, COLD_RAW, COLD_TT, KIND_DRAM, KIND_PAGE, KIND_STAGED  # noqa: F401


@dataclass
class Group:
    dim: int
    np_dtype: np.dtype
    tables: np.ndarray  # int64, global table index per member (ascending)
    dram: np.ndarray  # (sum of hot rows, dim) in the group dtype
    dram_base: np.ndarray  # int64 per member: first row of its hot rows in ``dram``
    hot: np.ndarray  # int64 per member
    cold_kind: np.ndarray  # uint8 per member: COLD_NONE (all hot), COLD_RAW, COLD_TT
    device: np.ndarray  # int64 per member
    perm_base: np.ndarray  # int64 per member: start of its permutation in ``perm`` (-1: identity)
    perm: np.ndarray  # int64, the members' dense permutations (old -> new id) end to end
    page_base: np.ndarray  # int64 per member: its file's first global page on its device (raw only)
    rows_per_page: np.ndarray  # int64 per member
    row_bytes: np.ndarray  # int64 per member
    key_base: np.ndarray  # int64 per member: cumulative rows (table-tagged keys of TT rows)
    tt_members: list = field(default_factory=list)  # member positions served by TT
    lru: np.ndarray | None = None  # bool per member: its raw cold rows go through ``cache``
    cache: Any = None  # emulator.replay.cache.RowCache shared by the LRU members, keyed by key_base + row
    row_format: str = "fp32"  # "fp16" / "int8" / "int4": ``dram`` and the pages hold those rows (emulator.store.quant)

    @property
    def size(self) -> int:
        return int(self.tables.size)


@dataclass
class GroupWork:
    """One batch of one group, from ``prepare`` to ``finish``."""

    group: Group
    ids: np.ndarray  # old ids of all the group's lookups (member-major)
    offsets: np.ndarray  # int64, K*B + 1
    counts: np.ndarray  # lookups per member
    kind: np.ndarray  # uint8
    loc: np.ndarray  # int64
    tt_rows: list  # (member, unique old ids) per TT member with cold lookups, in key order
    n_cold: int = 0
    page_per_dev: np.ndarray | None = None  # KIND_PAGE lookups per device
    tt_per_dev: np.ndarray | None = None  # KIND_STAGED lookups per device
    cold_prep_s: float = 0.0  # thread-CPU seconds locating cold rows in pages, de-duplicating TT rows (device work)
    lru_lookups: int = 0  # cold lookups of LRU members (probes of the group's cache)
    lru_hits: int = 0
    cache_hit_slots: np.ndarray | None = None  # slots pinned by this batch's hits (released after pooling)
    cache_miss_keys: np.ndarray | None = None  # unique missed keys, admitted after pooling...
    cache_miss_pos: np.ndarray | None = None  # ... from the page bytes of one of their lookups (a position)


def gather_group(g: Group, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The group's lookups of ``batch``: (old ids, rebased CSR offsets of length K*B+1, lookups per member)."""
    B, T = batch.batch_size, batch.num_tables
    tb = batch.table_bounds()
    t = g.tables
    starts = tb[t]
    counts = tb[t + 1] - starts
    t0, K = int(t[0]), t.size
    if int(t[-1]) - t0 + 1 == K:  # consecutive tables: slices, no gather
        lo = int(tb[t0])
        return batch.indices[lo:int(tb[t0 + K])], batch.offsets[t0 * B:(t0 + K) * B + 1] - lo, counts
    cum = np.zeros(K + 1, np.int64)
    np.cumsum(counts, out=cum[1:])
    shift = starts - cum[:-1]
    ids = batch.indices[np.repeat(shift, counts) + np.arange(int(cum[-1]), dtype=np.int64)]
    offs = np.empty(K * B + 1, np.int64)
    offs[:-1] = (batch.offsets[:-1].reshape(T, B)[t] - shift[:, None]).reshape(-1)
    offs[-1] = cum[-1]
    return ids, offs, counts


_NO_PERM: dict[int, np.ndarray] = {}


def _no_perm(k: int) -> np.ndarray:
    _NO_PERM[k] = np.full(k, -1, np.int64)
    return _NO_PERM[k]


@njit
def _locate(ids, counts, perm_base, perm, dram_base, hot, any_cold, loc, cold_pos, cold_member):  # pragma: no cover
    """One pass over a group's lookups (member-major): the remap (old -> new id), the DRAM location
    (``dram_base + new``) and, when ``any_cold``, the cold lookups (``new >= hot``) with their member, in order.
    Returns how many are cold."""
    n_cold = 0
    a = 0
    for m in range(counts.size):
        pb, db, h = perm_base[m], dram_base[m], hot[m]
        for k in range(a, a + counts[m]):
            x = ids[k]
            if pb >= 0:
                x = perm[pb + x]
            loc[k] = x + db
            if any_cold and x >= h:
                cold_pos[n_cold] = k
                cold_member[n_cold] = m
                n_cold += 1
        a += counts[m]
    return n_cold


def prepare_group(g: Group, batch, n_dev: int, raw_pending: list) -> GroupWork:
    """Translate, split and locate a group's lookups; raw cold rows are appended to ``raw_pending[device]``
    as (work, positions, global pages, byte offsets in page) for :func:`plan_raw` to place."""
    ids, offs, counts = gather_group(g, batch)
    n = ids.size
    loc = np.empty(n, np.int64)
    kind = np.zeros(n, np.uint8)
    w = GroupWork(g, ids, offs, counts, kind, loc, [], page_per_dev=np.zeros(n_dev, np.int64),
                  tt_per_dev=np.zeros(n_dev, np.int64))
    any_cold = bool((g.cold_kind != COLD_NONE).any())
    cold_pos = np.empty(n if any_cold else 0, np.int64)
    cold_member = np.empty(n if any_cold else 0, np.int64)
    perm_base = g.perm_base if g.perm.size else (_NO_PERM[g.size] if g.size in _NO_PERM else _no_perm(g.size))
    n_cold = _locate(ids, counts, perm_base, g.perm, g.dram_base, g.hot, any_cold, loc, cold_pos, cold_member)
    if not any_cold:
        return w
    ci, tl = cold_pos[:n_cold], cold_member[:n_cold]  # cold lookups, in order, and the member of each
    w.n_cold = int(n_cold)
    if not n_cold:
        return w
    c0 = time.thread_time()  # from here on: each cold row's own device work in SCRec (but an LRU probe)
    probe_s = 0.0
    old = ids[ci]
    ck = g.cold_kind[tl]
    raw = ck == COLD_RAW
    if raw.any():
        pos, r, k = ci[raw], old[raw], tl[raw]
        if g.cache is not None:
            p0 = time.thread_time()
            pos, r, k = _probe_cache(g, w, pos, r, k)
            probe_s = time.thread_time() - p0
        kind[pos] = KIND_PAGE
        rpp = g.rows_per_page[k]
        page = g.page_base[k] + r // rpp
        inpage = (r % rpp) * g.row_bytes[k]
        dev = g.device[k]
        w.page_per_dev += np.bincount(dev, minlength=n_dev)
        for d in np.unique(dev):
            sel = dev == d
            raw_pending[int(d)].append((w, pos[sel], page[sel], inpage[sel]))
    tt = ~raw
    if tt.any():
        pos, r, k = ci[tt], old[tt], tl[tt]
        uniq, inv = np.unique(g.key_base[k] + r, return_inverse=True)
        kind[pos] = KIND_STAGED
        loc[pos] = inv.reshape(-1)
        w.tt_per_dev += np.bincount(g.device[k], minlength=n_dev)
        owner = np.searchsorted(g.key_base, uniq, side="right") - 1
        cuts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1], True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            m = int(owner[a])
            w.tt_rows.append((m, uniq[a:b] - g.key_base[m]))
    w.cold_prep_s = time.thread_time() - c0 - probe_s
    return w


def _probe_cache(g: Group, w: GroupWork, pos: np.ndarray, r: np.ndarray, k: np.ndarray):
    """The raw cold lookups of LRU members probe the group's cache: hits become DRAM rows (their slots, pinned
    until pooled); the rest, misses and non-LRU lookups, are returned to be read from pages."""
    from emulator.replay.cache import split_hits

    lru = g.lru[k]
    if not lru.any():
        return pos, r, k
    li = np.flatnonzero(lru)
    hit, slots, miss_keys, miss_inv = split_hits(g.cache, g.key_base[k[li]] + r[li], pin=True)
    w.kind[pos[li[hit]]] = KIND_DRAM
    w.loc[pos[li[hit]]] = slots
    w.lru_lookups, w.lru_hits = int(li.size), int(slots.size)
    missed = li[~hit]
    first = np.empty(miss_keys.size, np.int64)
    first[miss_inv.reshape(-1)] = pos[missed]  # any lookup of a missed row: all get the same page bytes
    w.cache_hit_slots, w.cache_miss_keys, w.cache_miss_pos = slots, miss_keys, first
    keep = ~lru
    keep[missed] = True
    return pos[keep], r[keep], k[keep]


def finish_cache(w: GroupWork, dest: np.ndarray) -> None:
    """After the group was pooled: release its hits, admit its missed rows from this batch's pages."""
    if w.cache_hit_slots is None:
        return
    w.group.cache.unpin(w.cache_hit_slots)
    if w.cache_miss_keys.size:
        w.group.cache.admit(w.cache_miss_keys, dest, w.loc[w.cache_miss_pos])


def plan_raw(pending: list, page_base: np.ndarray, file_ids: np.ndarray, file_tables: np.ndarray,
             dest_pos: int, max_read_bytes: int, page_bytes: int):
    """Plan one device's raw reads of every group at once; set each raw lookup's ``loc`` (byte offset in dest).

    Returns (file ids, file offsets, nbytes, dest offsets, table of each read, dest bytes used)."""
    from emulator.io import plan_page_reads

    pages = np.concatenate([p[2] for p in pending])
    uniq, inv = np.unique(pages, return_inverse=True)
    read_off, read_nb, dest_off, slot = plan_page_reads(uniq, page_bytes, max_read_bytes)
    row_dest = slot[inv.reshape(-1)] * page_bytes + np.concatenate([p[3] for p in pending]) + dest_pos
    a = 0
    for w, pos, pg, _ in pending:
        w.loc[pos] = row_dest[a:a + pos.size]
        a += pos.size
    fi = np.searchsorted(page_base, read_off // page_bytes, side="right") - 1
    file_off = read_off - page_base[fi] * page_bytes
    return file_ids[fi], file_off, read_nb, dest_off + dest_pos, file_tables[fi], int(read_nb.sum())


def rebuild_group(w: GroupWork, tt_of, clock, compute_s: list) -> np.ndarray:
    """The group's staged array: each TT member's unique rows rebuilt, in key order (= ``loc`` order).
    ``tt_of(member)`` gives the member's TTCores; rebuild time goes to ``compute_s[device]``."""
    from emulator.tt.kernels import tt_rebuild_rows

    n = sum(r.size for _, r in w.tt_rows)
    staged = np.empty((n, w.group.dim), np.float32)
    a = 0
    for m, rows in w.tt_rows:
        t0 = clock()
        tt_rebuild_rows(tt_of(m), rows, out=staged[a:a + rows.size])
        compute_s[int(w.group.device[m])] += clock() - t0
        a += rows.size
    return staged

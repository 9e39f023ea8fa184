"""An LRU row cache in DRAM in front of raw SSD rows: the ``lru`` baseline policy.

The cache stands for what production systems put between host memory and an
SSD-resident table (FBGEMM's SSD TBE / TBE LXU cache, HugeCTR's hierarchical
parameter server): recently used rows are kept in DRAM, every other row is
read from the device and then admitted, evicting the least recently used row.

Layout (after FBGEMM's ``lxu_cache_state`` / ``lru_state``). ``capacity_rows``
slots form ``n_sets`` sets of ``ways`` slots (set ``s`` is slots ``[s * ways,
(s + 1) * ways)``); key ``k`` (a table row id) can only live in one set (a
SplitMix64 hash of ``k`` salted by ``seed``, scaled to ``n_sets``), in any of
its ways. Per slot: the key (int64, ``-1`` empty), the last-use stamp (int64;
every probe and insert takes the next tick) and a pin count (int32; FBGEMM's ``lxu_cache_locking_counter``).
The rows themselves live in ``storage``, a C-contiguous ``(prefix_rows +
capacity_rows, dim)`` array in the table's dtype, which the engine passes to
:func:`emulator.kernels.pooling.pool_sources` as its ``dram`` source: a hit is a
``KIND_DRAM`` lookup whose ``loc`` is the slot returned here (slots are storage
row numbers). ``prefix`` (optional) puts a table's static hot rows at
``storage[:prefix_rows]``; they are never evicted and never probed, so a plan
may combine a hot prefix with a cache for the remaining rows.
``ways == capacity_rows`` is a fully associative LRU (exact, but a probe then
scans every slot: use it for small caches and tests). ``capacity_rows`` is
rounded down to a multiple of ``ways`` (``ways`` is first capped at the capacity).

Replacement. A miss is admitted into the unpinned way of its set with the
smallest stamp (empty ways have stamp ``-1``, so they fill first, lowest way
first). A key already resident is not copied again: its stamp is refreshed.
If every way of the set is pinned the key is not admitted (a *conflict miss*,
counted in ``conflict_misses``).

The contract with the engine (why it is safe):

* ``lookup()`` runs when a batch is planned, before its reads; ``admit()`` runs
  after that batch was pooled. So a batch never reads a slot that its own
  admits overwrite, and misses of one batch are not hits of the same batch
  (every occurrence of a missed row in the batch is read from its page).
* With the pipeline on, batch ``i+1`` is planned (``lookup``) before batch
  ``i`` is pooled and admitted. ``lookup(..., pin=True)`` pins the slots it
  hits; ``admit`` never evicts a pinned slot; the engine unpins batch ``i+1``'s
  hits after pooling it. So ``admit(batch i)`` cannot overwrite a row that
  batch ``i+1`` is about to pool. Without the pipeline pinning is harmless.
  (As with FBGEMM's prefetch pipeline, a row missed by batches ``i`` and
  ``i+1`` is then read twice: ``i+1`` was planned before ``i`` admitted it.)
* Every probe of a batch is one Numba call (no per-key Python), and so is
  every admit of a batch.

With ``ways == capacity_rows``, no pins, and the engine's batch semantics (look
the whole batch up, then admit the batch's unique misses in sorted order) the
hit count equals that of a textbook ``OrderedDict`` LRU fed the same way.

How the replay uses it: :mod:`emulator.replay.tables` gives each group of
tables one cache for its LRU members (keys ``key_base[table] + row``, storage =
the group's hot rows, then the slots), and a slow-path table with wide rows its
own; :func:`emulator.replay.groups.prepare_group` and
:func:`emulator.replay.prepare.prepare_slow_table` probe it with
:func:`split_hits` (hits pinned, become DRAM lookups at their slots); after the
batch is pooled the engine unpins the hits and admits the misses from the
batch's pages.

The pages buffer ``p.dest`` of batch ``i`` is intact when ``finish(i)`` admits
from it (the engine double-buffers: it is reused by batch ``i+2``'s prepare).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.kernels._simd import prefetch
from emulator.kernels.jit import njit

__all__ = ["CACHE_META_BYTES_PER_ROW", "CacheCounters", "RowCache", "cache_bytes_per_row", "split_hits"]

_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64 increment: the seed's salt
_MASK64 = (1 << 64) - 1
_STAMP_EMPTY = -1
_NO_VICTIM = np.iinfo(np.int64).max
_PREFETCH_KEYS = 16  # lookup prefetches the set this many keys ahead
_MAX_SETS = 1 << 32  # the set hash scales 32 bits
CACHE_META_BYTES_PER_ROW = 8 + 8 + 4  # key (int64) + last-use stamp (int64) + pin count (int32) per slot


def cache_bytes_per_row(row_bytes: int) -> int:
    """DRAM one cache slot costs (row + metadata): size a cache from a budget as
    ``budget_bytes // cache_bytes_per_row(row_bytes)`` rows (``RowCache.memory_bytes`` per row)."""
    return int(row_bytes) + CACHE_META_BYTES_PER_ROW


@dataclass(frozen=True)
class CacheCounters:
    """Cumulative counts of a :class:`RowCache` since construction or :meth:`RowCache.reset_counters`.

    ``hits`` / ``misses`` count probes (every lookup, repeats included); ``inserted`` rows were copied
    in by ``admit``; ``evictions`` resident rows were replaced; ``conflict_misses`` admits were refused
    because every way of the set was pinned."""

    hits: int = 0
    misses: int = 0
    inserted: int = 0
    evictions: int = 0
    conflict_misses: int = 0

    def __sub__(self, o: "CacheCounters") -> "CacheCounters":  # cumulative -> per-batch delta
        return CacheCounters(self.hits - o.hits, self.misses - o.misses, self.inserted - o.inserted,
                             self.evictions - o.evictions, self.conflict_misses - o.conflict_misses)


# ---------------------------------------------------------------- private kernels


@njit(inline="always")
def _set_of(key, salt, n_sets):
    """The set of ``key``: the SplitMix64 finaliser of ``key + salt``, its high 32 bits scaled to
    ``[0, n_sets)`` by a multiply-shift (Lemire's fastrange; no division). All uint64; n_sets < 2**32."""
    z = np.uint64(key) + salt
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(((z >> np.uint64(32)) * n_sets) >> np.uint64(32))


@njit
def _set_index_kernel(keys, salt, n_sets, out):
    for i in range(keys.shape[0]):
        out[i] = _set_of(keys[i], salt, n_sets)


@njit
def _lookup_kernel(keys, slot_keys, stamps, pins, n_sets, ways, salt, tick0, pin, base, out):
    """Probe every key in order; a hit takes stamp ``tick0 + i`` (and a pin). Returns the hit count.

    A first pass writes each key's first slot into ``out`` (it is overwritten by the result as the
    second pass goes), so the second pass can prefetch the set ``_PREFETCH_KEYS`` keys ahead."""
    n = keys.shape[0]
    for i in range(n):
        out[i] = _set_of(keys[i], salt, n_sets) * ways
    last = np.int64(ways - 1)
    hits = 0
    for i in range(n):
        if i + _PREFETCH_KEYS < n:
            f = out[i + _PREFETCH_KEYS]
            prefetch(slot_keys, f)
            prefetch(slot_keys, f + last)
            prefetch(stamps, f)
            prefetch(stamps, f + last)
        k = keys[i]
        first = out[i]
        r = -1
        for w in range(ways):
            if slot_keys[first + w] == k:
                r = first + w
                break
        if r >= 0:
            stamps[r] = tick0 + i
            if pin:
                pins[r] += 1
            out[i] = base + r
            hits += 1
        else:
            out[i] = -1
    return hits


@njit
def _admit_kernel(new_keys, src, offsets, row_bytes, data, base, slot_keys, stamps, pins, n_sets, ways, salt,
                  tick0, out):
    """Insert each key into the unpinned least recently used way of its set, copying its row bytes from
    ``src[offsets[i]:]`` into ``data`` (the storage's bytes). Returns (inserted, evictions, conflicts)."""
    n = new_keys.shape[0]
    for i in range(n):  # first slots (scratch in ``out``), so the sets can be prefetched ahead
        out[i] = _set_of(new_keys[i], salt, n_sets) * ways
    last = np.int64(ways - 1)
    inserted = 0
    evictions = 0
    conflicts = 0
    for i in range(n):
        if i + _PREFETCH_KEYS < n:
            f = out[i + _PREFETCH_KEYS]
            prefetch(slot_keys, f)
            prefetch(slot_keys, f + last)
            prefetch(stamps, f)
            prefetch(stamps, f + last)
            prefetch(pins, f)
            prefetch(pins, f + last)
        k = new_keys[i]
        first = out[i]
        found = -1
        victim = -1
        vstamp = _NO_VICTIM
        for w in range(ways):
            j = first + w
            if slot_keys[j] == k:
                found = j
                break
            if pins[j] == 0 and stamps[j] < vstamp:
                victim = j
                vstamp = stamps[j]
        if found >= 0:  # already resident (e.g. a repeat in this call): refresh, no copy
            stamps[found] = tick0 + i
            out[i] = base + found
            continue
        if victim < 0:
            out[i] = -1
            conflicts += 1
            continue
        if slot_keys[victim] >= 0:
            evictions += 1
        slot_keys[victim] = k
        stamps[victim] = tick0 + i
        dst = (base + victim) * row_bytes
        o = offsets[i]
        for b in range(row_bytes):
            data[dst + b] = src[o + b]
        out[i] = base + victim
        inserted += 1
    for i in range(n):  # a key evicted again later in the same call (more new keys than ways in its set)
        s = out[i]
        if s >= 0 and slot_keys[s - base] != new_keys[i]:
            out[i] = -1
    return inserted, evictions, conflicts


@njit
def _unpin_kernel(slots, pins, base):
    """Drop one pin per slot (``-1`` entries ignored); all or nothing: returns the first index whose
    pin count would go negative (nothing changed then), else -1."""
    n = slots.shape[0]
    for i in range(n):
        if slots[i] >= 0:
            pins[slots[i] - base] -= 1
    bad = -1
    for i in range(n):
        if slots[i] >= 0 and pins[slots[i] - base] < 0:
            bad = i
            break
    if bad >= 0:
        for i in range(n):
            if slots[i] >= 0:
                pins[slots[i] - base] += 1
    return bad


# ---------------------------------------------------------------- the cache


def _int64_vector(a, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D numpy array, got {type(a).__name__}"
                         + (f" of shape {a.shape}" if isinstance(a, np.ndarray) else ""))
    if a.dtype != np.int64:
        raise TypeError(f"{what} must be int64, got {a.dtype} (convert with .astype(np.int64))")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be contiguous (use np.ascontiguousarray)")
    return a


def _check_keys(keys, what: str) -> np.ndarray:
    _int64_vector(keys, what)
    if keys.size and int(keys.min()) < 0:
        bad = int(np.flatnonzero(keys < 0)[0])
        raise ValueError(f"{what}[{bad}] = {int(keys[bad])}: row ids must be >= 0")
    return keys


class RowCache:
    """A set-associative LRU cache of table rows (see the module docstring for the contract).

    ``RowCache(capacity_rows, dim, np_dtype, ways=16, seed=0, prefix=None)``: ``np_dtype`` float32 or
    float16 (the table's); ``seed`` salts the key -> set hash; ``prefix`` ((P, dim), same dtype) is
    copied to ``storage[:P]`` and slots start at row ``P``.
    """

    def __init__(self, capacity_rows: int, dim: int, np_dtype, ways: int = 16, seed: int = 0, *,
                 prefix: np.ndarray | None = None):
        for name, v in (("capacity_rows", capacity_rows), ("dim", dim), ("ways", ways)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        dtype = np.dtype(np_dtype)
        if dtype not in (np.float32, np.float16):
            raise TypeError(f"np_dtype must be float32 or float16, got {dtype}")
        ways = min(int(ways), int(capacity_rows))
        self.ways = ways
        self.n_sets = int(capacity_rows) // ways
        if self.n_sets >= _MAX_SETS:
            raise ValueError(f"{self.n_sets} sets of {ways} ways: at most {_MAX_SETS - 1} sets (use more ways)")
        self.capacity_rows = self.n_sets * ways  # rounded down to whole sets
        self.dim = int(dim)
        self.dtype = dtype
        self.row_bytes = self.dim * dtype.itemsize
        self.seed = int(seed)
        if prefix is None:
            self.prefix_rows = 0
        else:
            if not isinstance(prefix, np.ndarray) or prefix.ndim != 2 or prefix.shape[1] != self.dim:
                got = f"shape {prefix.shape}" if isinstance(prefix, np.ndarray) else type(prefix).__name__
                raise ValueError(f"prefix must be a 2-D array with {self.dim} columns, got {got}")
            if prefix.dtype != dtype:
                raise TypeError(f"prefix must be {dtype}, got {prefix.dtype}")
            self.prefix_rows = prefix.shape[0]
        self.storage = np.zeros((self.prefix_rows + self.capacity_rows, self.dim), dtype=dtype)
        if self.prefix_rows:
            self.storage[: self.prefix_rows] = prefix
        self._bytes = self.storage.reshape(-1).view(np.uint8)
        self._keys = np.full(self.capacity_rows, -1, dtype=np.int64)
        self._stamps = np.full(self.capacity_rows, _STAMP_EMPTY, dtype=np.int64)
        self._pins = np.zeros(self.capacity_rows, dtype=np.int32)
        self._salt = np.uint64(((self.seed + 1) * _GOLDEN) & _MASK64)
        self._tick = 0
        self.reset_counters()

    # --- read-only views -------------------------------------------------------------------------
    @property
    def slot_keys(self) -> np.ndarray:
        """Key of each slot (index = slot - prefix_rows), ``-1`` empty; a read-only view."""
        v = self._keys.view()
        v.flags.writeable = False
        return v

    @property
    def pinned_slots(self) -> int:
        """How many slots are pinned now (0 between batches when every pin was released)."""
        return int(np.count_nonzero(self._pins))

    @property
    def memory_bytes(self) -> int:
        """Cache rows plus per-slot metadata (key, stamp, pin); the prefix rows are not counted."""
        return self.capacity_rows * cache_bytes_per_row(self.row_bytes)

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def evictions(self) -> int:
        return self._evictions

    @property
    def conflict_misses(self) -> int:
        return self._conflicts

    def counters(self) -> CacheCounters:
        return CacheCounters(self._hits, self._misses, self._inserted, self._evictions, self._conflicts)

    def reset_counters(self) -> None:
        self._hits = self._misses = self._inserted = self._evictions = self._conflicts = 0

    def set_index(self, keys: np.ndarray) -> np.ndarray:
        """The set each key maps to (int64), e.g. to build examples that collide."""
        _check_keys(keys, "keys")
        out = np.empty(keys.size, np.int64)
        _set_index_kernel(keys, self._salt, np.uint64(self.n_sets), out)
        return out

    # --- the three operations --------------------------------------------------------------------
    def lookup(self, keys: np.ndarray, *, pin: bool = False) -> np.ndarray:
        """Probe each key (int64 row ids of one batch, repeats allowed) in order -> storage row of each
        hit, ``-1`` for a miss. Hits become most recently used; ``pin=True`` also pins every hit slot
        (once per hit) until :meth:`unpin`. Misses are not inserted (see :meth:`admit`)."""
        _check_keys(keys, "keys")
        out = np.empty(keys.size, np.int64)
        if keys.size:
            hits = _lookup_kernel(keys, self._keys, self._stamps, self._pins, np.uint64(self.n_sets),
                                  self.ways, self._salt, np.int64(self._tick), bool(pin), self.prefix_rows, out)
            self._tick += keys.size
            self._hits += int(hits)
            self._misses += keys.size - int(hits)
        return out

    def admit(self, keys: np.ndarray, src_pages: np.ndarray, byte_offsets: np.ndarray) -> np.ndarray:
        """Insert rows read from the device: row ``keys[i]`` is the ``row_bytes`` bytes at
        ``src_pages[byte_offsets[i]:]``. Returns the storage row of each key after the call, ``-1`` if it
        is not resident (every way of its set pinned, or evicted again later in this same call). A key
        already resident, or repeated in ``keys``, keeps its one slot and becomes most recently used.
        Call it after the batch that read these rows was pooled."""
        _check_keys(keys, "keys")
        _int64_vector(byte_offsets, "byte_offsets")
        if not isinstance(src_pages, np.ndarray) or src_pages.ndim != 1 or src_pages.dtype != np.uint8:
            raise TypeError("src_pages must be a 1-D uint8 array (the buffer of read pages)")
        if not src_pages.flags.c_contiguous:
            raise ValueError("src_pages must be contiguous")
        if byte_offsets.size != keys.size:
            raise ValueError(f"keys ({keys.size}) and byte_offsets ({byte_offsets.size}) differ in length")
        out = np.empty(keys.size, np.int64)
        if not keys.size:
            return out
        limit = src_pages.size - self.row_bytes  # the last byte offset a whole row fits at
        bad = np.flatnonzero((byte_offsets < 0) | (byte_offsets > limit))
        if bad.size:
            k = int(bad[0])
            raise IndexError(f"byte_offsets[{k}] = {int(byte_offsets[k])}: a {self.row_bytes}-byte row does "
                             f"not fit in the {src_pages.size}-byte pages buffer")
        inserted, evictions, conflicts = _admit_kernel(
            keys, src_pages, byte_offsets, self.row_bytes, self._bytes, self.prefix_rows, self._keys,
            self._stamps, self._pins, np.uint64(self.n_sets), self.ways, self._salt, np.int64(self._tick), out)
        self._tick += keys.size
        self._inserted += int(inserted)
        self._evictions += int(evictions)
        self._conflicts += int(conflicts)
        return out

    def unpin(self, slots: np.ndarray) -> None:
        """Release one pin per entry of ``slots`` (storage rows as returned by ``lookup(pin=True)``;
        ``-1`` entries are ignored, so a whole lookup result may be passed back)."""
        _int64_vector(slots, "slots")
        if not slots.size:
            return
        lo, hi = self.prefix_rows, self.prefix_rows + self.capacity_rows
        bad = np.flatnonzero((slots != -1) & ((slots < lo) | (slots >= hi)))
        if bad.size:
            k = int(bad[0])
            raise IndexError(f"slots[{k}] = {int(slots[k])} is not a cache slot (rows {lo}..{hi - 1}) or -1")
        k = _unpin_kernel(slots, self._pins, self.prefix_rows)
        if k >= 0:
            raise ValueError(f"slots[{k}] = {int(slots[k])} is not pinned (more unpins than pins)")


def split_hits(cache: RowCache, rows: np.ndarray, *, pin: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One batch's cold lookups of a table through its cache.

    ``rows`` (row ids, repeats allowed) are probed in order. Returns ``(hit_mask, hit_slots,
    missed_unique, missed_inverse)``: ``hit_mask[k]`` whether lookup k hit; ``hit_slots`` the storage
    row (a ``KIND_DRAM`` loc into ``cache.storage``) of each hit, in lookup order; ``missed_unique``
    the sorted distinct rows to read from the device (and later :meth:`RowCache.admit`);
    ``missed_inverse[m]`` the index into ``missed_unique`` of the m-th missed lookup, so
    ``rows[~hit_mask] == missed_unique[missed_inverse]``. ``pin`` as in :meth:`RowCache.lookup`
    (the pipelined engine must pin, then ``unpin(hit_slots)`` after pooling).
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    slots = cache.lookup(rows, pin=pin)
    hit_mask = slots >= 0
    missed_unique, missed_inverse = np.unique(rows[~hit_mask], return_inverse=True)
    return hit_mask, slots[hit_mask], missed_unique, missed_inverse.reshape(-1).astype(np.int64, copy=False)

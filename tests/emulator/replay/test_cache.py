"""Tests of emulator/cache.py: the LRU row cache, against tests/naive.py and hand-derived examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.replay.cache import CACHE_META_BYTES_PER_ROW, CacheCounters, RowCache, cache_bytes_per_row, split_hits
from tests.naive import RowCacheNaive, cache_set_naive, lru_hits_ordereddict_naive

PAD = 3  # rows sit at odd byte offsets of the page buffer: admit must not assume alignment


def make_table(n_keys: int, dim: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The true rows and a 'read pages' buffer holding row k at byte PAD + k * row_bytes."""
    table = np.random.default_rng(seed).standard_normal((n_keys, dim)).astype(dtype)
    pages = np.concatenate([np.full(PAD, 0xAB, np.uint8), table.reshape(-1).view(np.uint8),
                            np.full(PAD, 0xCD, np.uint8)])
    return table, pages


def offsets_of(keys: np.ndarray, row_bytes: int) -> np.ndarray:
    return PAD + keys.astype(np.int64) * row_bytes


def check_invariants(cache: RowCache, table: np.ndarray) -> None:
    keys = cache.slot_keys
    res = np.flatnonzero(keys >= 0)
    assert np.unique(keys[res]).size == res.size  # never a key twice
    rows = cache.storage[cache.prefix_rows + res]
    # every resident slot holds the true row of its key, bit for bit
    assert np.array_equal(rows.view(np.uint8), table[keys[res]].view(np.uint8))
    # and sits in the set its key hashes to
    assert np.array_equal(cache.set_index(keys[res]), res // cache.ways)


def zipf_batches(rng, n_keys: int, alpha: float, n_batches: int, batch: int) -> list[np.ndarray]:
    p = 1.0 / np.arange(1, n_keys + 1) ** alpha
    perm = rng.permutation(n_keys)  # hot keys spread over the key space (and the sets)
    return [perm[rng.choice(n_keys, size=batch, p=p / p.sum())].astype(np.int64) for _ in range(n_batches)]


# --- hash -------------------------------------------------------------------------------------


def test_set_index_matches_naive_hash():
    keys = np.array([0, 1, 2, 7, 12345, 2**40 + 3, 2**62], dtype=np.int64)
    for seed, n_sets in ((0, 2), (5, 7), (123, 65536)):
        c = RowCache(n_sets * 4, 1, np.float32, ways=4, seed=seed)
        assert c.set_index(keys).tolist() == [cache_set_naive(k, seed, n_sets) for k in keys.tolist()]


# --- a hand-derived example -----------------------------------------------------------------------


def test_two_way_two_set_hand_example():
    table = np.arange(20, dtype=np.float32).reshape(10, 2)  # row k = [2k, 2k + 1]
    pages = table.reshape(-1).view(np.uint8).copy()
    c = RowCache(4, 2, np.float32, ways=2, seed=1928)
    adm = lambda *ks: c.admit(np.array(ks, np.int64), pages, np.array(ks, np.int64) * 8)  # noqa: E731
    look = lambda *ks, pin=False: c.lookup(np.array(ks, np.int64), pin=pin).tolist()  # noqa: E731
    # seed 1928 (searched for) sends keys 0..9 to sets [1 1 0 1 0 0 0 1 0 0] (tests/naive.cache_set_naive);
    # set 0 is slots 0-1, set 1 slots 2-3. Ticks (t) advance by one per probe and per admitted key.
    assert c.set_index(np.arange(10, dtype=np.int64)).tolist() == [1, 1, 0, 1, 0, 0, 0, 1, 0, 0]
    assert look(2, 0) == [-1, -1]                        # t0, t1: cold misses
    assert adm(0, 2).tolist() == [2, 0]                  # t2: 0 -> set 1 first empty way; t3: 2 -> slot 0
    assert look(4) == [-1]                               # t4
    assert adm(4).tolist() == [1]                        # t5: the empty way of set 0
    assert look(2) == [0]                                # t6: 2 becomes most recent
    assert adm(5).tolist() == [1]                        # t7: set 0 = {2@t6, 4@t5}: evict 4 (eviction 1)
    assert c.storage[1].tolist() == [10.0, 11.0]         # row 5
    assert look(4, 5, 2) == [-1, 1, 0]                   # t8..t10: 4 was evicted
    assert look(5, pin=True) == [1]                      # t11: 5 pinned
    assert look(2) == [0]                                # t12: 2 most recent, 5 least recent but pinned
    assert adm(6).tolist() == [0]                        # t13: only slot 0 is unpinned: 2 goes (eviction 2)
    assert look(6, pin=True) == [0]                      # t14: both ways of set 0 pinned now
    assert adm(8).tolist() == [-1]                       # t15: conflict miss, nothing evicted
    assert c.slot_keys.tolist() == [6, 5, 0, -1] and c.pinned_slots == 2
    c.unpin(np.array([1, 0], np.int64))
    assert c.pinned_slots == 0
    with pytest.raises(ValueError, match="not pinned"):
        c.unpin(np.array([0], np.int64))
    assert adm(8).tolist() == [1]                        # t16: {6@t14, 5@t11}: evict 5 (eviction 3)
    assert adm(9, 9).tolist() == [0, 0]                  # t17: evict 6 (eviction 4); t18: 9 resident, kept
    # t19..t21, all set 1 = {0@t2, empty}: 1 -> empty slot 3; 3 evicts 0 (eviction 5) into slot 2;
    # 7 evicts 1@t19 (eviction 6) from slot 3, so 1 is no longer resident when the call returns
    assert adm(1, 3, 7).tolist() == [-1, 2, 3]
    assert c.slot_keys.tolist() == [9, 8, 3, 7]
    assert c.storage.tolist() == [[18, 19], [16, 17], [6, 7], [14, 15]]
    # hits: 2; 5, 2; 5; 2; 6 = 6. misses: 2, 0; 4; 4 = 4. inserted: 0 2 4 5 6 8 9 1 3 7 = 10
    assert c.counters() == CacheCounters(hits=6, misses=4, inserted=10, evictions=6, conflict_misses=1)
    assert (c.hits, c.misses, c.evictions, c.conflict_misses) == (6, 4, 6, 1)
    check_invariants(c, table)
    c.reset_counters()
    assert c.counters() == CacheCounters()


# --- kernels vs the naive reference, and the invariants ---------------------------------------------

N_KEYS = 24
_op = st.tuples(st.sampled_from(["lookup", "lookup_pin", "admit", "unpin"]),
                st.lists(st.integers(0, N_KEYS - 1), max_size=10))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 12), ways=st.integers(1, 6), seed=st.integers(0, 3),
       dtype=st.sampled_from([np.float32, np.float16]), prefix_rows=st.sampled_from([0, 3]),
       ops=st.lists(_op, max_size=25))
def test_matches_naive_and_keeps_invariants(capacity, ways, seed, dtype, prefix_rows, ops):
    dim = 3
    table, pages = make_table(N_KEYS, dim, dtype, seed)
    prefix = np.full((prefix_rows, dim), 7, dtype) if prefix_rows else None
    c = RowCache(capacity, dim, dtype, ways=ways, seed=seed, prefix=prefix)
    ref = RowCacheNaive(capacity, dim, ways=ways, seed=seed, prefix_rows=prefix_rows)
    pinned: list[np.ndarray] = []
    for op, ks in ops:
        keys = np.array(ks, np.int64)
        if op in ("lookup", "lookup_pin"):
            got = c.lookup(keys, pin=op == "lookup_pin")
            assert got.tolist() == ref.lookup(keys, pin=op == "lookup_pin").tolist()
            hit = got >= 0
            assert np.array_equal(c.slot_keys[got[hit] - prefix_rows], keys[hit])  # a hit holds its key
            if op == "lookup_pin":
                pinned.append(got)
        elif op == "admit":
            offs = offsets_of(keys, c.row_bytes)
            got = c.admit(keys, pages, offs)
            assert got.tolist() == ref.admit(keys, pages, offs, c.row_bytes).tolist()
            ok = got >= 0
            assert np.array_equal(c.slot_keys[got[ok] - prefix_rows], keys[ok])
        elif pinned:
            slots = pinned.pop(0)
            c.unpin(slots)
            ref.unpin(slots)
        assert c.slot_keys.tolist() == ref.keys
        assert c._stamps.tolist() == ref.stamps and c._pins.tolist() == ref.pins
        check_invariants(c, table)
        if prefix_rows:
            assert (c.storage[:prefix_rows] == 7).all()  # the prefix is never overwritten
    assert c.counters() == CacheCounters(ref.hits, ref.misses, ref.inserted, ref.evictions, ref.conflicts)
    for slots in pinned:
        c.unpin(slots)
    assert c.pinned_slots == 0


# --- against a textbook LRU -------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 16, 64])
def test_fully_associative_equals_ordereddict_lru(capacity):
    rng = np.random.default_rng(7)
    batches = zipf_batches(rng, 1000, 1.05, 40, 100)
    table, pages = make_table(1000, 4, np.float32)
    c = RowCache(capacity, 4, np.float32, ways=capacity, seed=1)
    for b in batches:  # the engine's semantics: look the whole batch up, then admit its distinct misses
        hit, hit_slots, missed, inverse = split_hits(c, b)
        c.admit(missed, pages, offsets_of(missed, c.row_bytes))
    want = lru_hits_ordereddict_naive(batches, capacity)
    assert 0 < want < 4000  # a stream where the cache matters
    assert c.hits == want and c.misses == 4000 - want
    check_invariants(c, table)


def test_set_associative_is_close_to_fully_associative():
    """16 ways over 32 sets lose a few hits to conflicts, never a large share (a sanity bound)."""
    batches = zipf_batches(np.random.default_rng(3), 20000, 1.0, 30, 2000)
    _, pages = make_table(20000, 1, np.float32)
    hits = {}
    for ways in (16, 512):
        c = RowCache(512, 1, np.float32, ways=ways, seed=0)
        for b in batches:
            _, _, missed, _ = split_hits(c, b)
            c.admit(missed, pages, offsets_of(missed, 4))
        hits[ways] = c.hits
    assert hits[512] == lru_hits_ordereddict_naive(batches, 512)
    assert 0.9 * hits[512] < hits[16] < 1.1 * hits[512]


# --- the engine's pipeline: pins keep planned hits alive ----------------------------------------------


def _pipelined_hazards(pin: bool) -> int:
    """Replay a Zipf stream as the pipelined engine does: batch i+1 is looked up before batch i is
    admitted. Returns how many planned hits of a batch no longer held their row when it was pooled."""
    rng = np.random.default_rng(11)
    batches = zipf_batches(rng, 400, 0.8, 40, 64)
    table, pages = make_table(400, 2, np.float32)
    c = RowCache(32, 2, np.float32, ways=4, seed=2)
    hazards = 0
    prev = None
    for b in batches + [None]:
        nxt = None
        if b is not None:
            hit, hit_slots, missed, inverse = split_hits(c, b, pin=pin)  # prepare(i+1)
            assert np.array_equal(b[~hit], missed[inverse])
            nxt = (b, hit, hit_slots, missed)
        if prev is not None:  # finish(i): pool (check the planned hits), unpin, admit
            pb, phit, pslots, pmissed = prev
            hazards += int((c.slot_keys[pslots] != pb[phit]).sum())
            if pin:
                c.unpin(pslots)
            c.admit(pmissed, pages, offsets_of(pmissed, c.row_bytes))
        check_invariants(c, table)
        prev = nxt
    assert c.pinned_slots == 0
    return hazards


def test_pins_protect_the_next_batch():
    assert _pipelined_hazards(pin=True) == 0
    assert _pipelined_hazards(pin=False) > 0  # without pins the pipeline would pool evicted slots


# --- split_hits, sizes, prefix ------------------------------------------------------------------------


def test_split_hits_outputs():
    table, pages = make_table(10, 2, np.float16)
    c = RowCache(8, 2, np.float16, ways=8)
    c.admit(np.array([3, 5], np.int64), pages, offsets_of(np.array([3, 5]), 4))
    rows = np.array([5, 9, 3, 9, 1, 5], np.int32)  # any integer dtype is accepted here
    hit, slots, missed, inverse = split_hits(c, rows)
    assert hit.tolist() == [True, False, True, False, False, True]
    assert c.slot_keys[slots].tolist() == [5, 3, 5]
    assert missed.tolist() == [1, 9] and inverse.tolist() == [1, 1, 0] and inverse.dtype == np.int64
    empty = split_hits(c, np.zeros(0, np.int64))
    assert [a.size for a in empty] == [0, 0, 0, 0]


def test_capacity_rounding_and_memory_bytes():
    c = RowCache(20, 8, np.float16, ways=16)
    assert (c.capacity_rows, c.n_sets, c.ways) == (16, 1, 16)  # rounded down to whole sets
    c = RowCache(10, 8, np.float16)
    assert (c.capacity_rows, c.n_sets, c.ways) == (10, 1, 10)  # ways capped at the capacity
    c = RowCache(32, 8, np.float16, ways=4, prefix=np.ones((5, 8), np.float16))
    # 32 slots x (16 row bytes + 8 key + 8 stamp + 4 pin) = 1152; the 5 prefix rows are not counted
    assert c.memory_bytes == 1152 and c.storage.shape == (37, 8) and c.n_sets == 8
    assert cache_bytes_per_row(16) == 36 and CACHE_META_BYTES_PER_ROW == 20
    assert c.lookup(np.array([0, 1, 2], np.int64)).tolist() == [-1, -1, -1]  # prefix rows are not keys


# --- bad inputs -----------------------------------------------------------------------------------


def test_bad_constructor_arguments():
    for kw in (dict(capacity_rows=0), dict(dim=0), dict(ways=0), dict(ways=True), dict(capacity_rows=2.5),
               dict(seed="x")):
        args = dict(capacity_rows=4, dim=2, np_dtype=np.float32) | kw
        with pytest.raises(ValueError):
            RowCache(**args)
    with pytest.raises(TypeError, match="float32 or float16"):
        RowCache(4, 2, np.int32)
    with pytest.raises(ValueError, match="sets"):  # the set hash scales 32 bits (checked before allocating)
        RowCache(2**32, 1, np.float32, ways=1)
    with pytest.raises(ValueError, match="2 columns"):
        RowCache(4, 2, np.float32, prefix=np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="prefix must be float32"):
        RowCache(4, 2, np.float32, prefix=np.zeros((3, 2), np.float16))


def test_bad_lookup_admit_unpin_inputs():
    table, pages = make_table(10, 2, np.float32)
    c = RowCache(4, 2, np.float32, ways=2)
    with pytest.raises(TypeError, match="int64"):
        c.lookup(np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match="1-D"):
        c.lookup(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="1-D"):
        c.lookup([1, 2])
    with pytest.raises(ValueError, match="contiguous"):
        c.lookup(np.arange(10, dtype=np.int64)[::2])
    with pytest.raises(ValueError, match=r"keys\[1\] = -3"):
        c.lookup(np.array([1, -3], np.int64))
    keys = np.array([1, 2], np.int64)
    with pytest.raises(ValueError, match="differ in length"):
        c.admit(keys, pages, np.array([PAD], np.int64))
    with pytest.raises(TypeError, match="uint8"):
        c.admit(keys, table.reshape(-1), offsets_of(keys, 8))
    with pytest.raises(IndexError, match=r"byte_offsets\[1\]"):
        c.admit(keys, pages, np.array([PAD, pages.size - 7], np.int64))  # 8-byte row, 7 bytes left
    with pytest.raises(IndexError, match=r"byte_offsets\[0\] = -1"):
        c.admit(keys, pages, np.array([-1, PAD], np.int64))
    assert c.slot_keys.tolist() == [-1] * 4 and c.counters() == CacheCounters()  # nothing was changed
    c.admit(keys, pages, offsets_of(keys, 8))
    slots = c.lookup(keys, pin=True)
    with pytest.raises(IndexError, match="not a cache slot"):
        c.unpin(np.array([4], np.int64))
    with pytest.raises(ValueError, match="not pinned"):
        c.unpin(np.concatenate([slots, slots]))  # all or nothing: the first two pins stay
    assert c.pinned_slots == 2
    c.unpin(slots)
    assert c.pinned_slots == 0
    with pytest.raises(ValueError, match="read-only"):
        c.slot_keys[0] = 5

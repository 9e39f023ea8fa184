"""plans.lru_sizing: batch-granular stack distances against a naive LRU simulation and a hand-worked stream;
the budget split equals lru_plan's; the bisection equals an exhaustive scan; hand-derived modelled times."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import pytest

from emulator.replay.cache import cache_bytes_per_row
from plans.lru_sizing import (LruProfile, batch_stack_distances, one_device_perf, size_lru, table_reuse,
                              water_fill_rows)
from plans.planner import lru_plan
from plans.sizing import Target
from plans.types import TableLoad
from tests.plans.test_mip import calib, device
from tracegen.errors import InputError


def naive_batch_lru_hits(batches, capacity: int, warmup: int) -> int:
    """Lookups hit by one LRU cache of ``capacity`` rows that, like the replay, looks a whole batch up against
    its state at the batch's start, then makes the batch's rows (in sorted order) the most recent."""
    cache: collections.OrderedDict = collections.OrderedDict()
    hits = 0
    for i, b in enumerate(batches):
        if i >= warmup:
            hits += sum(1 for r in b if r in cache)
        for r in sorted(set(int(x) for x in b)):
            cache[r] = True
            cache.move_to_end(r)
            while len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def test_hand_worked_distances():
    # batch 0 [1, 2]: both first uses. batch 1 [2, 3]: nothing used between row 2's use and the batch's start
    # (0); 3 first. batch 2 [1, 2, 3]: at its start rows 2 and 3 are more recent than 1 (2), row 3 than 2 (1),
    # nothing than 3 (0).
    d = batch_stack_distances([np.array([1, 2]), np.array([2, 3]), np.array([1, 2, 3])])
    assert [x.tolist() for x in d] == [[-1, -1], [0, -1], [2, 1, 0]]


@pytest.mark.parametrize("seed", range(6))
def test_hits_equal_a_naive_lru_simulation(seed):
    rng = np.random.default_rng(seed)
    batches = [rng.zipf(1.2, size=int(rng.integers(1, 60))) % 40 for _ in range(int(rng.integers(2, 9)))]
    warm = int(rng.integers(0, len(batches)))
    tr = table_reuse("t", 40, 64, 1, 80, batches, warm)
    for capacity in (0, 1, 2, 3, 5, 8, 13, 40):
        assert tr.hits(capacity)[0] == naive_batch_lru_hits(batches, capacity, warm), capacity


@dataclass
class _Entry:
    name: str
    rows: int
    row_bytes: int


class _Batch:
    def __init__(self, per_table):
        self.indices = np.concatenate(per_table)
        self.bounds = np.concatenate([[0], np.cumsum([len(p) for p in per_table])])

    def table_bounds(self):
        return self.bounds


class _Store:
    store_id = "s"

    def __init__(self, tables):
        self.tables = tables


class _Reader:
    trace_id = "t"
    path = "fake.h5"

    def __init__(self, batches):
        self._b = batches
        self.num_batches = len(batches)

    def batches(self, start, stop):
        return iter(self._b[start:stop])


def test_budget_split_equals_lru_plan():
    tables = [_Entry("a", 100, 64), _Entry("b", 30, 128), _Entry("c", 1000, 32)]
    batches = [_Batch([np.arange(n) % r for n, r in ((50, 100), (20, 30), (5, 1000))]) for _ in range(3)]
    reuse = [table_reuse(t.name, t.rows, t.row_bytes, 1, cache_bytes_per_row(t.row_bytes),
                         [b.indices[b.bounds[i]:b.bounds[i + 1]] for b in batches], 1) for i, t in enumerate(tables)]
    for budget in (0, 1000, 5000, 20_000, 10**6):
        plan = lru_plan(_Store(tables), _Reader(batches), budget, 3)
        assert water_fill_rows(reuse, budget).tolist() == [p.lru_rows for p in plan.tables]


def test_parallel_time_of_misses_is_hand_derived():
    # device of tests/plans/test_mip.py: 1 ms a page, 1 ms a row per memory core, 2 cores; 1 us per DRAM lookup.
    # 8 hits: 8 us of DRAM; 2 missed rows, 2 pages: IO 2 ms, memory work 2 ms on both cores = 1 ms -> IO, 2 ms.
    load = TableLoad(8.0, 64, 2.0, 2.0, 0.0, 0.0, 0, 0, 0, 0.0, lookups=10.0, io_reads=2.0, raw_active=1.0)
    perf = one_device_perf([load], calib(), device())
    assert perf.dram_s == pytest.approx(8e-6)
    assert perf.io_s == pytest.approx((2e-3,)) and perf.mem_core_s == pytest.approx((1e-3,))
    assert perf.total_s == pytest.approx(2e-3) and perf.bottleneck == "io[0]"


def _profile():
    # one table, warm-up batch [1, 1, 2], counted batch [1, 3]: row 1 has distance 1 (row 2 is more recent),
    # row 3 is a first use. 1 cache row: no hit; 2 rows: row 1 hits (1 of 2 lookups).
    return LruProfile((table_reuse("t", 10, 64, 1, 80, [np.array([1, 1, 2]), np.array([1, 3])], 1),), 2, 1)


def test_hit_ratio_and_missed_rows_by_cache_size():
    prof = _profile()
    p1, p2 = prof.point(80, calib(), device()), prof.point(160, calib(), device())
    assert (p1.hit_ratio, p1.missed_rows_per_batch, p1.cache_bytes) == (0.0, 2.0, 80)
    assert (p2.hit_ratio, p2.missed_rows_per_batch, p2.cache_bytes) == (0.5, 1.0, 160)
    # 1 miss: 1 page (1 ms IO), 1 row on 2 memory cores (0.5 ms): 1 ms
    assert p2.batch_s == pytest.approx(1e-3)


def test_hit_ratio_target_bisection_equals_exhaustive_scan():
    rng = np.random.default_rng(3)
    batches = [rng.zipf(1.3, size=40) % 50 for _ in range(6)]
    prof = LruProfile((table_reuse("t", 50, 64, 1, 80, batches, 2),), 6, 2)
    for h in (0.1, 0.3, 0.5, 0.6):
        s = size_lru(prof, calib(), device(), None, 10, hit_ratio=h, resolution_bytes=1)
        first = next(b for b in range(prof.max_bytes + 1) if prof.point(b, calib(), device()).hit_ratio >= h)
        if s.found is None:
            assert prof.point(prof.max_bytes, calib(), device()).hit_ratio < h
        else:
            assert s.found.budget_bytes == first, h


def test_first_lookups_make_a_high_target_unreachable():
    s = size_lru(_profile(), calib(), device(), None, 10, hit_ratio=0.9)
    assert s.found is None and "hit ratio 0.500" in s.reason
    s = size_lru(_profile(), calib(), device(), Target("batch-ms", 1.0), 10)
    assert s.found is not None and s.found.cache_bytes == 160  # 1 ms needs row 1 cached (2 rows of 80 B)


def test_one_target_only():
    with pytest.raises(InputError):
        size_lru(_profile(), calib(), device(), Target("batch-ms", 1.0), 10, hit_ratio=0.5)
    with pytest.raises(InputError):
        size_lru(_profile(), calib(), device(), None, 10, hit_ratio=1.5)

"""bench.measure: warm-up before the clock, a floor on measured batches, the first batch apart, rounds."""

from __future__ import annotations

import dataclasses

import pytest

from bench.measure import (BatchRange, Measurement, MeasureConfig, RoundResult, TraceLoop, measure_once,
                           measure_rounds, notes)
from emulator.plan import uniform_plan
from emulator.replay.counters import LatencyHistogram, ReplayStats
from emulator.replay.engine import ReplayConfig
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


class FakeClock:
    def __init__(self, step: float = 0.0):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class CountingReader:
    """A TraceReader that records which batches were read, in order."""

    def __init__(self, reader):
        self._r, self.read = reader, []

    def __getattr__(self, name):
        return getattr(self._r, name)

    def batch(self, i):
        self.read.append(i)
        return self._r.batch(i)


def _plans(store, reader, names):
    rows = {t.name: t.rows for t in store.tables}
    return [(n, uniform_plan(store.store_id, rows, n, trace_id=reader.trace_id)) for n in names]


def test_steady_state_excludes_the_first_batch():
    clock = FakeClock()
    stats = ReplayStats()
    stats.start(3, 10, "p", None, clock=clock)
    for t, lookups in ((5.0, 100), (6.0, 50), (7.0, 50)):  # the first batch completes at 5 s, then one a second
        clock.t = t
        stats.record_batch(0.1, 10, lookups)
    stats.stop()
    s = stats.summary()
    # first batch apart: 5 s; steady: 2 batches (20 queries, 100 lookups) in the 2 s after it
    assert s["first_batch_s"] == 5.0 and s["steady_batches"] == 2 and s["steady_s"] == 2.0
    assert s["steady_qps"] == 10.0 and s["steady_lookups_per_s"] == 50.0
    assert s["qps"] == pytest.approx(30 / 7)  # the average with the first batch, kept as it was


def test_trace_loop_repeats_the_range_until_the_floor(tiny_trace):
    with TraceReader(tiny_trace) as r:
        counting = CountingReader(r)
        loop = TraceLoop(counting, BatchRange(2, 2), min_batches=5)
        assert [b.index for b in loop.batches()] == [2, 3, 2, 3, 2]
        assert loop.handed == 5 and loop.passes == 2.5
        # min_seconds: a clock that advances 1 s per call keeps the loop going past min_batches until 3 s passed
        timed = TraceLoop(r, BatchRange(0, 4), min_batches=2, min_seconds=3.0, clock=FakeClock(1.0))
        assert len(list(timed.batches())) == 4  # t0 = 1 at the first batch; 2 -> 3 -> 4 (>= 3 s) stops
        with pytest.raises(InputError):
            TraceLoop(r, BatchRange(3, 2), min_batches=2)  # past the end of a 4-batch trace


def test_measure_once_warms_up_before_it_measures(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    with TraceReader(tiny_trace) as r:
        counting = CountingReader(r)
        (_, plan), = _plans(store, r, ["all-ssd"])
        cfg = MeasureConfig(min_batches=6, min_seconds=0.0, warmup_batches=1)
        res = measure_once(store, counting, plan, BatchRange(2, 2), ReplayConfig(engine="pread"), cfg)
    # warm-up: batch 1 (the one before the measured range), then 6 measured batches looping over 2 and 3
    assert counting.read == [1, 2, 3, 2, 3, 2, 3]
    assert res.warmup_batches == 1 and res.warmup_first_batch_s > 0
    p = res.payload
    assert res.batches == 6 and p["batches"] == 6 and res.passes == 3.0
    assert p["steady_batches"] == 5  # the first measured batch is reported apart
    assert p["samples"] == 6 * r.batch_size and p["first_batch_s"] > 0 and p["steady_qps"] > 0
    assert p["ios"] > 0 and p["bytes_read"] > 0 and p["devices_used"] == 1


def test_warm_up_uses_the_first_measured_batches_without_a_profile(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    with TraceReader(tiny_trace) as r:
        counting = CountingReader(r)
        (_, plan), = _plans(store, r, ["all-dram"])
        measure_once(store, counting, plan, BatchRange(0, 4), ReplayConfig(engine="pread"),
                     MeasureConfig(min_batches=4, min_seconds=0.0, warmup_batches=3))
    assert counting.read == [0, 1, 2, 0, 1, 2, 3]


def test_rounds_are_interleaved_and_reversed(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    steps = []
    with TraceReader(tiny_trace) as r:
        ms = measure_rounds(store, r, _plans(store, r, ["all-dram", "all-ssd"]), BatchRange(2, 2),
                            ReplayConfig(engine="pread"), MeasureConfig(min_batches=3, min_seconds=0.0, rounds=3),
                            on_step=steps.append)
    assert steps == ["round 1/3: all-dram", "round 1/3: all-ssd", "round 2/3: all-ssd", "round 2/3: all-dram",
                     "round 3/3: all-dram", "round 3/3: all-ssd"]
    assert [m.name for m in ms] == ["all-dram", "all-ssd"] and all(len(m.rounds) == 3 for m in ms)
    row = ms[1].row()
    assert row["measured_batches"] == 9 and row["steady_batches"] == 2 and row["rounds"] == 3
    assert row["latency_hist"]["count"] == 9  # every measured batch of the three rounds
    assert row["ios_per_batch"] > 0 and ms[0].row()["bytes_read_per_batch"] == 0  # all-dram reads nothing


def _round(qps: float, steady_batches: int = 19) -> RoundResult:
    h = LatencyHistogram()
    h.record(1e-3)
    return RoundResult({"steady_qps": qps, "steady_batches": steady_batches, "ios": 10, "bytes_read": 4096,
                        "first_batch_s": 0.002, "latency_hist": h.to_dict(), "steady_lookups_per_s": qps * 26},
                       warmup_batches=3, warmup_first_batch_s=0.5, batches=steady_batches + 1, distinct_batches=10)


def test_measurement_median_and_spread():
    plan = uniform_plan("s", {"a": 1}, "all-ssd")
    m = Measurement("all-ssd", plan, (_round(100.0), _round(120.0), _round(90.0)))
    # median 100; spread (120 - 90) / 100 = 0.3; the representative round is the median one
    assert m.median_qps == 100.0 and m.qps_range == (90.0, 120.0) and m.spread == pytest.approx(0.3)
    row = m.row()
    assert row["steady_qps"] == 100.0 and row["steady_lookups_per_s"] == 2600.0
    assert row["ios_per_batch"] == 0.5  # 30 IOs over 60 batches
    assert row["cold_first_batch_s"] == 0.5 and row["passes"] == 2.0
    assert row["round_steady_qps"] == [100.0, 120.0, 90.0]


def test_notes_flag_loops_and_few_batches():
    plan = uniform_plan("s", {"a": 1}, "all-ssd")
    cfg = MeasureConfig()
    few = Measurement("lru", plan, (_round(100.0, steady_batches=4),))
    text = " ".join(notes([few], cfg))
    assert "fewer than 10 steady-state batches" in text and "lru" in text
    assert "again in a loop" not in text  # 5 batches of 10 distinct: no loop
    looped = Measurement("all-ssd", plan, (RoundResult({"steady_qps": 1.0, "steady_batches": 39}, 3, 0.1, 40, 10),))
    text = " ".join(notes([looped], cfg))
    assert "again in a loop" in text and "LRU" not in text
    lru = Measurement("lru", dataclasses.replace(plan, tables=(dataclasses.replace(plan.tables[0], lru_rows=1),)),
                      looped.rounds)
    assert "the LRU cache of lru sees repeated batches" in " ".join(notes([looped, lru], cfg))


def test_config_checks():
    for bad in (dict(min_batches=1), dict(min_seconds=-1.0), dict(rounds=0), dict(warmup_batches=-1)):
        with pytest.raises(InputError):
            MeasureConfig(**bad).check()

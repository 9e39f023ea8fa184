"""Tests for emulator.replay.counters: the latency histogram against numpy, and snapshot arithmetic on a fake clock."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from emulator.replay.counters import (CoreCounters, DeviceCounters, LatencyHistogram, ReplayStats, Snapshot, TierCounters)


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- LatencyHistogram ------------------------------------------------------------------

QS = [1, 10, 25, 50, 75, 90, 95, 99, 99.9]


def test_percentiles_match_numpy_within_bucket_width():
    rng = np.random.default_rng(1)
    samples = rng.lognormal(mean=math.log(2e-3), sigma=1.5, size=20_000)  # ~2 ms, spread over decades
    h = LatencyHistogram()
    for v in samples:
        h.record(v)
    # nearest-rank percentile lies in the same bucket as ours; we return the bucket's geometric middle,
    # so the relative error is at most sqrt(growth) - 1 = sqrt(1.008) - 1 = 0.4 %
    tol = math.sqrt(h.growth) - 1 + 1e-9
    exact = np.percentile(samples, QS, method="inverted_cdf")
    got = h.percentiles(QS)
    assert np.all(np.abs(got - exact) / exact <= tol), (got, exact)
    assert h.count == 20_000
    assert h.min_s == samples.min() and h.max_s == samples.max()
    assert h.mean_s == pytest.approx(samples.mean(), rel=1e-12)
    assert h.percentile(0) == samples.min() and h.percentile(100) == samples.max()


def test_record_many_equals_record():
    rng = np.random.default_rng(2)
    samples = np.concatenate([rng.exponential(1e-3, 5000), [0.0, 5e-7, 2e3]])  # incl. underflow and overflow
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in samples:
        a.record(v)
    b.record_many(samples)
    assert np.array_equal(a.counts, b.counts)
    assert (a.count, a.min_s, a.max_s) == (b.count, b.min_s, b.max_s)
    assert a.sum_s == pytest.approx(b.sum_s)


def test_out_of_range_values_clamp_to_exact_min_and_max():
    h = LatencyHistogram(lowest_s=1e-6, highest_s=1.0)
    for v in (1e-8, 2e-8, 5.0, 7.0):  # two below the range, two above
        h.record(v)
    assert h.counts[0] == 2 and h.counts[-1] == 2
    assert h.percentile(25) == 1e-8  # underflow bucket reports the exact minimum
    assert h.percentile(99) == 7.0   # overflow bucket reports the exact maximum
    edges, frac = h.cdf()
    assert edges.tolist() == [1e-6, 7.0] and frac.tolist() == [0.5, 1.0]  # underflow edge = lowest_s


def test_empty_and_invalid():
    h = LatencyHistogram()
    assert math.isnan(h.percentile(50)) and math.isnan(h.mean_s)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            h.record(bad)
    with pytest.raises(ValueError):
        h.percentile(101)
    with pytest.raises(ValueError):
        LatencyHistogram(lowest_s=1.0, highest_s=0.5)


def test_merge_equals_one_histogram_of_everything():
    rng = np.random.default_rng(3)
    x = rng.lognormal(-6, 1, 4000)
    whole, a, b = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    whole.record_many(x)
    a.record_many(x[:1000])
    b.record_many(x[1000:])
    a.merge(b)
    assert np.array_equal(a.counts, whole.counts)
    assert (a.count, a.min_s, a.max_s) == (whole.count, whole.min_s, whole.max_s)
    with pytest.raises(ValueError):
        a.merge(LatencyHistogram(growth=1.05))


def test_dict_round_trip_and_cdf():
    h = LatencyHistogram()
    h.record_many(np.array([1e-3, 1e-3, 2e-3, 4e-3]))
    d = json.loads(json.dumps(h.to_dict()))
    assert len(d["index"]) == 3  # three distinct buckets, stored sparsely
    g = LatencyHistogram.from_dict(d)
    assert np.array_equal(g.counts, h.counts) and g.min_s == h.min_s and g.max_s == h.max_s
    edges, frac = g.cdf()
    assert frac.tolist() == [0.5, 0.75, 1.0]  # 2 of 4, 3 of 4, 4 of 4
    assert edges[-1] == 4e-3                    # the last edge is clamped to the maximum
    bad = dict(d, count=99)
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(bad)
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict({"index": []})


# --- counters ---------------------------------------------------------------------------

def test_counter_arithmetic():
    assert TierCounters(1, 2, 3, 0.5) + TierCounters(10, 20, 30, 1.0) == TierCounters(11, 22, 33, 1.5)
    after, before = DeviceCounters("d", 10, 100, 1.0, 2.0), DeviceCounters("d", 4, 40, 0.25, 0.5)
    assert after - before == DeviceCounters("d", 6, 60, 0.75, 1.5)
    with pytest.raises(ValueError):
        DeviceCounters("a") + DeviceCounters("b")
    with pytest.raises(ValueError):
        CoreCounters("d", "fpga")
    c = CoreCounters("d", "mem", 2, 1.0, 5) + CoreCounters("d", "mem", 3, 1.0, 5)
    assert (c.n_cores, c.busy_s, c.lookups) == (3, 2.0, 10)  # n_cores: the latest value


# --- ReplayStats / Snapshot ------------------------------------------------------------------

def _three_batches(clock: FakeClock) -> ReplayStats:
    """Started at t=100 s, window 10 s (slots of 1 s), batches finishing at t=101, 104 and 110."""
    stats = ReplayStats(window_s=10.0)
    clock.t = 100.0
    stats.start(total_batches=10, samples_per_batch=200, policy="mip", dram_budget_bytes=1 << 30, clock=clock)
    plan = [  # t_end, latency, samples, lookups, tiers, device (ios, busy_s, inflight_s), cores busy (mem, compute)
        (101.0, 0.010, 100, 1000, {"dram": TierCounters(800), "ssd_raw": TierCounters(200, bytes=200 * 4096)},
         (300, 2.0, 8.0), (3.0, 4.0)),
        (104.0, 0.020, 200, 2000, {"dram": TierCounters(1500), "ssd_raw": TierCounters(500, bytes=500 * 4096)},
         (500, 2.0, 8.0), (3.0, 4.0)),
        (110.0, 0.040, 200, 2000, {"dram": TierCounters(1000), "lru": TierCounters(1000, hits=600),
                                   "ssd_raw": TierCounters(400, bytes=400 * 4096)},
         (400, 2.0, 8.0), (6.0, 4.0)),
    ]
    for t_end, lat, samples, lookups, tiers, (ios, busy, inflight), (mem_busy, comp_busy) in plan:
        clock.t = t_end
        stats.record_batch(lat, samples, lookups, tiers=tiers,
                           devices=[DeviceCounters("dev0", ios, ios * 4096, busy, inflight)],
                           cores=[CoreCounters("dev0", "mem", 2, mem_busy, lookups=ios, ios=ios),
                                  CoreCounters("dev0", "compute", 4, comp_busy)])
    stats.set_dram_used(512 << 20)
    clock.t = 112.0
    return stats


def test_snapshot_arithmetic_on_fake_clock():
    clock = FakeClock()
    s = _three_batches(clock).snapshot()
    assert isinstance(s, Snapshot)
    assert s.elapsed_s == 12.0                               # 112 - 100
    assert (s.batches_done, s.batches_total, s.samples_done, s.lookups_done) == (3, 10, 500, 5000)
    assert s.eta_s == pytest.approx(28.0)                    # 7 batches left at 12 s / 3 batches
    assert s.qps_avg == pytest.approx(500 / 12)              # 41.67 queries/s
    assert s.lookups_per_s_avg == pytest.approx(5000 / 12)
    # window = slots overlapping (102, 112]: slot [101, 102) is out, slots from 104 in: span 112 - 104 = 8 s
    assert s.qps_now == pytest.approx(400 / 8)               # 50 queries/s
    assert s.lookups_per_s_now == pytest.approx(4000 / 8)    # 500 lookups/s
    # latencies 10, 20, 40 ms: nearest-rank p50 = 20 ms (bucket middle, within 0.4 %), max exact
    assert s.latency.count == 3 and s.latency.max_s == 0.040
    assert s.latency.p50_s == pytest.approx(0.020, rel=4e-3)
    assert s.latency.mean_s == pytest.approx(0.070 / 3)
    assert s.latency_recent.count == 2 and s.latency_recent.p50_s == pytest.approx(0.020, rel=4e-3)
    # tiers: dram served 3300, ssd_raw 1100, lru hit 600 of 1000 probes; of 5000 lookups
    tiers = {t.name: t for t in s.tiers}
    assert [t.name for t in s.tiers] == ["dram", "ssd_raw", "lru"]  # canonical order
    assert tiers["dram"].share == pytest.approx(0.66) and tiers["dram"].hit_ratio is None
    assert tiers["ssd_raw"].share == pytest.approx(0.22) and tiers["ssd_raw"].bytes == 1100 * 4096
    assert tiers["lru"].share == pytest.approx(0.12) and tiers["lru"].hit_ratio == pytest.approx(0.6)
    # device: 1200 IOs in 12 s = 100 IOPS; 1200*4096 B = 4.9152 MB -> 0.4096 MB/s; 24 s in flight -> QD 2
    (d,) = s.devices
    assert d.iops == pytest.approx(100.0) and d.mb_per_s == pytest.approx(0.4096)
    assert d.avg_queue_depth == pytest.approx(2.0) and d.busy_share == pytest.approx(0.5)
    # cores: mem 12 busy s over 12 s x 2 cores = 0.5; compute 12 s over 12 s x 4 cores = 0.25
    cores = {c.kind: c for c in s.cores}
    assert cores["mem"].busy_share == pytest.approx(0.5) and cores["mem"].ios == 1200
    assert cores["compute"].busy_share == pytest.approx(0.25)
    assert (s.dram_used_bytes, s.dram_budget_bytes, s.policy) == (512 << 20, 1 << 30, "mip")
    d = s.to_dict()
    assert d["tiers"][2]["name"] == "lru" and d["latency"]["count"] == 3


def test_window_empties_when_replay_stalls_and_stop_freezes():
    clock = FakeClock()
    stats = _three_batches(clock)
    clock.t = 121.0                      # every slot ended at or before 121 - 10 = 111
    s = stats.snapshot()
    assert s.qps_now == 0.0 and s.latency_recent.count == 0 and s.qps_avg == pytest.approx(500 / 21)
    stats.record_failure()
    stats.stop()
    clock.t = 500.0
    s = stats.snapshot()
    assert s.elapsed_s == 21.0 and s.finished and s.eta_s == 0.0
    assert (s.batches_done, s.failed_batches, s.samples_done) == (4, 1, 500)


def test_snapshot_before_start_is_empty():
    s = ReplayStats().snapshot()
    assert (s.elapsed_s, s.batches_done, s.eta_s, s.qps_now) == (0.0, 0, None, 0.0)
    assert math.isnan(s.latency.p50_s)


def test_summary_is_the_replay_payload():
    clock = FakeClock()
    stats = _three_batches(clock)
    stats.stop()
    p = stats.summary()
    for key in ("policy", "batches", "failed_batches", "samples", "lookups", "elapsed_s", "qps", "lookups_per_s",
                "latency_s", "latency_hist", "tiers", "devices", "cores", "dram_used_bytes", "dram_budget_bytes"):
        assert key in p
    assert p["qps"] == pytest.approx(500 / 12) and p["tiers"]["lru"]["hit_ratio"] == pytest.approx(0.6)
    assert LatencyHistogram.from_dict(json.loads(json.dumps(p["latency_hist"]))).count == 3


def test_snapshots_from_another_thread_while_recording():
    stats = ReplayStats()
    stats.start(2000, 1, "x", None)
    stop = threading.Event()
    seen: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            seen.append(stats.snapshot().batches_done)

    t = threading.Thread(target=watch)
    t.start()
    for _ in range(2000):
        stats.record_batch(1e-4, 1, 3, tiers={"dram": TierCounters(3)})
    stop.set()
    t.join()
    s = stats.snapshot()
    assert s.batches_done == 2000 and s.lookups_done == 6000 and s.tiers[0].lookups == 6000
    assert seen == sorted(seen)  # progress never goes backwards

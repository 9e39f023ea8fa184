"""plans.host_fit against hand-derived figures and naive references: the fits recover known costs from exact
(and partly disturbed) samples, non-negative least squares against a search over column subsets, the features of a
prepared batch against counts taken from the plan, the synthetic traces' shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from emulator.replay.engine import ReplayConfig, Replayer
from emulator.store.store import Store
from plans.host_fit import (FEATURES, ReplaySample, batch_features, fit_host_costs, fit_io_costs, fit_io_handoff,
                            host_target_s, nnls, write_synthetic_trace)
from tracegen.trace_io import TraceReader


def nnls_naive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every subset of columns: least squares on it, kept if non-negative; the least residual wins."""
    best, best_r = np.zeros(a.shape[1]), float(np.sum(b * b))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sol, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if (sol >= 0).all():
                x = np.zeros(a.shape[1])
                x[list(cols)] = sol
                r = float(np.sum((a @ x - b) ** 2))
                if r < best_r - 1e-12:
                    best, best_r = x, r
    return best


def test_nnls_hand_cases_and_against_the_subset_search():
    # exact non-negative data comes back: b = 2 a0 + 0.5 a2
    a = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=float)
    np.testing.assert_allclose(nnls(a, a @ np.array([2.0, 0.0, 0.5])), [2.0, 0.0, 0.5], atol=1e-12)
    # unconstrained, b = a0 - a1 would need a negative weight: the best non-negative fit drops a1 -> x0 = 1/2
    a2 = np.array([[1, 0], [0, 1], [1, 1]], dtype=float)
    np.testing.assert_allclose(nnls(a2, np.array([1.0, -1.0, 0.0])), [0.5, 0.0], atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.uniform(0, 1, (8, 3))
        b = a @ rng.uniform(-1, 1, 3) + rng.normal(0, 0.05, 8)
        x = nnls(a, b)
        assert (x >= 0).all()
        # never worse than 1e-9 above the best non-negative fit found by the subset search
        assert np.sum((a @ x - b) ** 2) <= np.sum((a @ nnls_naive(a, b) - b) ** 2) + 1e-9


TRUE = {"batch": 2e-4, "table": 1e-5, "lookup": 5e-8, "raw_table": 3e-5, "raw_lookup": 2e-7, "read": 1e-6,
        "tt_table": 4e-5, "tt_lookup": 0.0, "tt_row": 3e-7, "tt_flop": 1e-11, "io_device": 5e-5}


def _sample(name, features, host_s, io_s=(), reads=(), pages=(), batch_s=None) -> ReplaySample:
    return ReplaySample(name, 4, features, host_s, host_s if batch_s is None else batch_s, tuple(io_s), tuple(reads),
                        tuple(pages))


def _features(rng) -> dict[str, float]:
    f = {k: float(rng.uniform(0, 1)) for k in FEATURES}
    f.update(batch=1.0, table=float(rng.integers(1, 60)), lookup=float(rng.integers(100, 10**5)))
    f.update(raw_lookup=f["raw_table"] * rng.integers(0, 5000), tt_row=f["tt_table"] * rng.integers(0, 3000))
    f["tt_flop"] = f["tt_row"] * float(rng.integers(500, 40000))
    return f


def test_fit_host_costs_recovers_known_costs():
    rng = np.random.default_rng(1)
    samples = []
    for i in range(40):
        f = _features(rng)
        samples.append(_sample(f"s{i}", f, sum(TRUE[k] * f[k] for k in FEATURES)))
    coef, quality = fit_host_costs(samples)
    for k in FEATURES:
        assert coef[k] == pytest.approx(TRUE[k], rel=1e-4, abs=1e-15), k
    assert quality["max_abs_rel_error"] < 1e-6
    # a third of the runs slowed down 2x by other load: the reweighted fit still predicts every undisturbed run
    # within 1%, where one unweighted pass misses them by more than 5% at the median
    slowed = [_sample(s.name, s.features, s.host_s * (2.0 if i % 3 == 0 else 1.0)) for i, s in enumerate(samples)]

    def clean_errors(c):
        return np.abs([sum(c[k] * s.features[k] for k in FEATURES) / s.host_s - 1
                       for i, s in enumerate(samples) if i % 3])

    assert clean_errors(fit_host_costs(slowed)[0]).max() < 0.01
    assert np.median(clean_errors(fit_host_costs(slowed, iterations=1)[0])) > 0.05


def test_host_target_and_io_fits_by_hand():
    # host-bound (busiest device's IO below half the host time): the batch time; else the host thread's time
    assert host_target_s(_sample("a", {}, 1.0, io_s=(0.4,), batch_s=1.3)) == 1.3
    assert host_target_s(_sample("a", {}, 1.0, io_s=(0.6,), batch_s=1.3)) == 1.0
    assert host_target_s(_sample("a", {}, 1.0, batch_s=1.3)) == 1.3  # no device
    # IO busy time = 10 us per read + 2 us per page + 1 us per page of the other device
    rng = np.random.default_rng(2)
    samples = []
    for i in range(12):
        reads = rng.uniform(64, 2000, 2)
        pages = reads * rng.uniform(1, 4, 2)
        io = [1e-5 * r + 2e-6 * p + 1e-6 * (pages.sum() - p) for r, p in zip(reads, pages)]
        samples.append(_sample(f"io{i}", {}, 1.0, io_s=io, reads=reads, pages=pages))
    samples.append(_sample("few", {}, 1.0, io_s=(5.0,), reads=(10.0,), pages=(10.0,)))  # < 64 reads: left out
    per_read, per_page, per_other = fit_io_costs(samples)
    assert (per_read, per_page, per_other) == pytest.approx((1e-5, 2e-6, 1e-6), rel=1e-6)
    assert fit_io_costs([samples[-1]]) == (0.0, 0.0, 0.0)
    # hand-off: IO-bound replays' batch time minus the busiest device's IO: gaps 1, 2, 4 ms -> median 2 ms
    gaps = [_sample(f"g{k}", {}, 0.001, io_s=(0.01, 0.005), batch_s=0.01 + g) for k, g in enumerate([1e-3, 2e-3, 4e-3])]
    assert fit_io_handoff(gaps + [_sample("host", {}, 0.02, io_s=(0.001,), batch_s=0.5)]) == pytest.approx(2e-3)
    assert fit_io_handoff([_sample("host", {}, 0.02, io_s=(0.001,))]) == 0.0


def test_batch_features_count_what_the_plan_says(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    t = store.tables
    plan = Plan(store.store_id, (TablePlacement(t[0].name, t[0].rows, "ssd_raw", device=0),  # all hot
                                 TablePlacement(t[1].name, 100, "ssd_tt", t[1].tt[0].rank, device=1),
                                 TablePlacement(t[2].name, 0, "ssd_raw", device=1),
                                 TablePlacement(t[3].name, 10, "ssd_raw", device=0)),
                (DevicePlan("dev0"), DevicePlan("dev1")))
    flops = [0.0, 7.0, 0.0, 0.0]
    with Replayer(store, plan, ReplayConfig(engine="pread")) as rep, TraceReader(tiny_trace) as r:
        b = r.batch(1)
        f, reads, pages = batch_features(rep.prepare(b), 2, flops)
    ids = [b.table(k)[0] for k in range(4)]
    # naive: t0 all hot; t1 cold above 100 on TT; t2 all raw; t3 raw above 10
    raw = {2: ids[2], 3: ids[3][ids[3] >= 10]}
    tt_cold = ids[1][ids[1] >= 100]
    assert f["batch"] == 1 and f["table"] == 4 and f["lookup"] == sum(i.size for i in ids)
    assert f["raw_table"] == sum(1 for v in raw.values() if v.size) and f["raw_lookup"] == sum(v.size for v in raw.values())
    assert f["tt_table"] == 1 and f["tt_lookup"] == tt_cold.size
    assert f["tt_row"] == np.unique(tt_cold).size and f["tt_flop"] == 7.0 * np.unique(tt_cold).size
    # pages per device: distinct pages of the raw cold rows (t3 on dev0, t2 on dev1)
    lay = store.layouts
    want_pages = [np.unique(raw[3] // lay[3].rows_per_page).size, np.unique(raw[2] // lay[2].rows_per_page).size]
    assert pages == [float(x) for x in want_pages]
    assert f["read"] == sum(reads) and 0 < reads[0] <= want_pages[0] and 0 < reads[1] <= want_pages[1]
    assert f["io_device"] == 2


def test_synthetic_trace_has_the_spec_shape(tmp_path, tiny_spec):
    path = tmp_path / "syn.h5"
    write_synthetic_trace(path, tiny_spec, batches=3, batch_size=16, rng=np.random.default_rng(4))
    with TraceReader(path) as r:
        assert r.num_batches == 3 and r.batch_size == 16 and r.spec.num_tables == len(tiny_spec.tables)
        counts = np.zeros(tiny_spec.tables[1].rows, np.int64)
        for b in r.batches():
            for k, ts in enumerate(tiny_spec.tables):
                ids, off = b.table(k)
                assert off.size == 17 and (ids >= 0).all() and (ids < ts.rows).all()
            np.add.at(counts, b.table(1)[0], 1)
    # Zipf through a permutation: the hottest row of t1 is looked up far more than a uniform draw would
    assert counts.max() > 5 * counts.sum() / counts.size

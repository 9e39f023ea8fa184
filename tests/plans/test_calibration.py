"""plans.calibration and plans.host_fit: a short measurement on a scratch file; host costs fitted on real replays
of a tiny store; the fits recover known constants; device profiles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from plans.calibration import default_calibration, local_profiles, measure_calibration, smartssd_profiles
from plans.host_fit import (FEATURES, ReplaySample, calibration_plans, fit_host_costs, fit_io_costs, fit_io_handoff,
                            measure_host_costs, nnls)
from plans.types import Calibration
from tests.plans_fixtures import o_direct_supported, small_spec
from tracegen.errors import InputError


def test_short_measurement_round_trips(tmp_path):
    if not o_direct_supported(tmp_path):
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT, which the IO calibration needs")
    c = measure_calibration(tmp_path, seconds=1.0, queue_depths=(1, 8), tt_ranks=(8,), scratch_bytes=8 << 20,
                            host_costs=False)
    assert c.source == "measured" and set(c.io_iops_by_qd) == {1, 8} and c.host is None
    for v in (c.dram_lookups_per_s, c.dram_bytes_per_s, c.read_bytes_per_s, c.mem_core_lookups_per_s,
              c.compute_core_flops_per_s, c.io_iops_by_qd[1], c.tt_rows_per_s_by_rank[8]):
        assert v > 0
    assert not list(tmp_path.glob(".screc-calibrate-*"))  # the scratch file is gone
    c.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json").io_iops_by_qd == c.io_iops_by_qd
    assert "load_average" in c.machine


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        measure_calibration(tmp_path / "nope", seconds=1)
    with pytest.raises(InputError):
        measure_calibration(tmp_path, seconds=0)


def test_profiles():
    c = default_calibration()
    devs = local_profiles(c, 2, 3, queue_depth=16, ssd_capacity_bytes=10**9)
    # two devices share the disk: half of the 150k IOPS at QD 16 and half the space each
    assert [d.iops for d in devs] == [pytest.approx(75e3)] * 2 and devs[0].ssd_capacity_bytes == 5 * 10**8
    assert devs[0].cores == 3 and devs[0].modelled  # the default calibration is modelled
    # host costs present: the emulator's own execution model; without them (version-1 files): parallel
    assert devs[0].execution == "host-serial" and devs[0].queue_depth == 16
    assert local_profiles(dataclasses.replace(c, host=None), 1)[0].execution == "parallel"
    s = smartssd_profiles(4)
    assert len(s) == 4 and all(d.modelled and d.device_dram_bytes == 4 << 30 and d.execution == "parallel" for d in s)
    with pytest.raises(InputError):
        local_profiles(c, 0)


def _sample(name, features, host_s, io=(), reads=(), pages=(), batch_s=None) -> ReplaySample:
    f = dict.fromkeys(FEATURES, 0.0)
    f.update(features)
    return ReplaySample(name, 4, f, host_s, host_s if batch_s is None else batch_s, tuple(io), tuple(reads),
                        tuple(pages))


def test_fits_recover_known_constants():
    rng = np.random.default_rng(0)
    truth = {"batch": 1e-3, "table": 5e-5, "lookup": 1e-7, "raw_table": 1e-4, "read": 1e-5, "tt_row": 3e-7}
    samples = []
    for i in range(30):
        f = {"batch": 1.0, "table": float(rng.choice([26, 64])), "lookup": float(rng.integers(1000, 60000)),
             "raw_table": float(rng.integers(0, 26)), "read": float(rng.integers(0, 2000)),
             "tt_row": float(rng.integers(0, 5000))}
        samples.append(_sample(f"s{i}", f, sum(truth[k] * f[k] for k in truth)))
    coef, quality = fit_host_costs(samples)
    for k, v in coef.items():
        assert v == pytest.approx(truth.get(k, 0.0), rel=1e-6, abs=1e-12)
    assert quality["max_abs_rel_error"] < 1e-9
    # IO: 20 us per read + 5 us per page + 2 us per page of the other device, on every device with >= 64 reads
    io_samples = []
    for r0, p0, r1, p1 in ((100, 150, 0, 0), (400, 900, 0, 0), (200, 300, 250, 260), (70, 80, 300, 700)):
        io = [20e-6 * r + 5e-6 * p + 2e-6 * po if r else 0.0 for r, p, po in ((r0, p0, p1), (r1, p1, p0))]
        io_samples.append(_sample("io", {}, 1e-3, io, (r0, r1), (p0, p1)))
    assert fit_io_costs(io_samples) == pytest.approx((20e-6, 5e-6, 2e-6), rel=1e-6)
    # the hand-off gap: median of (batch - busiest IO) over IO-bound replays (IO above the host time): 3 ms
    gaps = [_sample("g", {}, 1e-3, (0.02,), (10,), (10,), batch_s=0.02 + g) for g in (2e-3, 3e-3, 9e-3)]
    assert fit_io_handoff(gaps + [_sample("host-bound", {}, 0.05, (0.01,), (5,), (5,), batch_s=0.06)]) == \
        pytest.approx(3e-3)


def test_nnls_keeps_coefficients_non_negative():
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    x = nnls(a, np.array([3.0, 2.0, 1.0]))  # unconstrained: slope -1; constrained: slope 0, mean 2
    assert x == pytest.approx([2.0, 0.0])


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from emulator.store.store import Store, StoreBuildConfig
    from emulator.store.build import build_store

    d = tmp_path_factory.mktemp("calib_store")
    if not o_direct_supported(d):
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT, which the replays need")
    return Store.open(build_store(small_spec(batch_size=32), d / "store",
                                  StoreBuildConfig(tt_ranks=(4,), tt_min_rows=1000)).path)


def test_host_costs_fitted_on_real_replays(tiny_store):
    labels = [label for label, _ in calibration_plans(tiny_store)]
    assert {"all-dram", "all-ssd", "all-ssd-2dev", "all-tt-r4"} <= set(labels)
    seen = []
    host, samples = measure_host_costs(tiny_store, default_calibration(), batches=2, batch_sizes=(32,), rounds=1,
                                       on_sample=seen.append)
    assert len(samples) == len(seen) == len(labels) + 2  # every plan, and the 64-table store all-dram and all-ssd
    by = {s.name: s for s in samples}
    lookups = by["all-dram B=32"].features["lookup"]
    # what the host did, counted from the engine's own prepared batches
    assert by["all-dram B=32"].features["raw_lookup"] == 0 and by["all-dram B=32"].reads == (0.0,)
    assert by["all-ssd B=32"].features["raw_lookup"] == lookups and by["all-ssd B=32"].features["read"] > 0
    assert by["all-tt-r4 B=32"].features["tt_table"] == 2  # tables a and b have TT cores, c (300 rows) has none
    assert by["mini 64 tables all-dram B=32"].features["table"] == 64
    assert all(s.host_s > 0 and s.batch_s >= s.host_s * 0.5 for s in samples)
    assert host.source == "measured" and host.fit["rounds"] == 1 and len(host.fit["samples"]) == len(samples)
    assert all(getattr(host, f"{k}_s") >= 0 for k in FEATURES)
    with pytest.raises(InputError):
        measure_host_costs(tiny_store, default_calibration(), batches=1)

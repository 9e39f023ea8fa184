"""plans.task_costs: fits recover known constants; real replays with the device clock give usable costs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plans.calibration import default_calibration
from plans.task_costs import (IO_FEATURES, POOL_FEATURES, PREP_FEATURES, REBUILD_FEATURES, SERIAL_FEATURES,
                              TaskCosts, TaskSamples, capture_records, fit_task_costs, measure_task_costs)
from plans.types import Calibration


def zeros(names):
    return dict.fromkeys(names, 0.0)


def test_fits_recover_known_constants():
    rng = np.random.default_rng(0)
    serial = {k: v for k, v in zip(SERIAL_FEATURES, (3e-4, 1e-5, 2e-8, 5e-8, 1e-6, 1e-7, 2e-4, 5e-5, 7e-8))}
    pool = dict(zip(POOL_FEATURES, (2e-5, 2e-8, 6e-9, 2e-9, 1e-8)))
    rebuild = dict(zip(REBUILD_FEATURES, (3e-5, 3e-7, 5e-11)))
    s = TaskSamples()
    for _ in range(200):
        x = [1.0, *rng.integers(1, 100, 1), *rng.uniform(1e3, 1e5, 4), *rng.integers(1, 5, 1), *rng.integers(1, 40, 1),
             *rng.uniform(0, 1e4, 1)]
        s.serial_x.append(x)
        s.serial_y.append(float(np.dot(x, [serial[k] for k in SERIAL_FEATURES])))
        x = [float(rng.integers(1, 9)), *rng.uniform(0, 1e5, 4)]
        s.pool_x.append(x)
        s.pool_y.append(float(np.dot(x, [pool[k] for k in POOL_FEATURES])))
        x = [1.0, float(rng.uniform(10, 1e4)), float(rng.uniform(1e5, 1e8))]
        s.rebuild_x.append(x)
        s.rebuild_y.append(float(np.dot(x, [rebuild[k] for k in REBUILD_FEATURES])))
        # visible IO = 8 us x reads + 12 us x reads per device - 0.3 x serial - 0.5 ms, every point above 0
        r, n, ser = float(rng.integers(1000, 5000)), int(rng.integers(1, 5)), float(rng.uniform(1e-3, 5e-3))
        s.io_x.append([r, r / n, ser])
        s.io_y.append(8e-6 * r + 12e-6 * r / n - 0.3 * ser - 5e-4)
    c = fit_task_costs(s)
    for got, want in ((c.serial, serial), (c.pool, pool), (c.rebuild, rebuild)):
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-3), k
    assert c.io["read_s"] == pytest.approx(8e-6) and c.io["hidden_s"] == pytest.approx(5e-4)
    assert c.io["hidden_per_serial"] == pytest.approx(0.3) and c.io["read_per_device_s"] == pytest.approx(12e-6)
    assert c.fit["serial_batches"] == 200 and c.fit["serial_median_abs_rel_error"] < 1e-6
    # 1000 reads on 2 devices: 8 ms + 6 ms - 0.3 x 1 ms - 0.5 ms; 20 reads stay hidden
    assert c.visible_io_s(1000, 2, 1e-3) == pytest.approx(13.2e-3) and c.visible_io_s(20) == 0.0


def test_task_costs_check_and_round_trip():
    t = TaskCosts(zeros(SERIAL_FEATURES), zeros(POOL_FEATURES), zeros(REBUILD_FEATURES))
    assert t.io == zeros(IO_FEATURES) and t.prep == zeros(PREP_FEATURES)
    assert TaskCosts.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="serial: missing batch"):
        TaskCosts({k: 0 for k in SERIAL_FEATURES[1:]}, zeros(POOL_FEATURES), zeros(REBUILD_FEATURES))
    with pytest.raises(ValueError, match="pool"):
        TaskCosts(zeros(SERIAL_FEATURES), {**zeros(POOL_FEATURES), "task": -1.0}, zeros(REBUILD_FEATURES))
    # by hand: 2 tasks x 1 + 10 page lookups x 0.5 + 4 bags x 0.25 = 8; a device with no cold lookups: no prep
    t = TaskCosts(zeros(SERIAL_FEATURES), {**zeros(POOL_FEATURES), "task": 1.0, "page_lookup": 0.5, "bag": 0.25},
                  zeros(REBUILD_FEATURES), prep={**zeros(PREP_FEATURES), "device": 1.0})
    assert t.pool_s(2, page=10, bags=4) == 8.0 and t.prep_s(0, 0, 0, 0) == 0.0 and t.prep_s(1, 0, 0, 0) == 1.0


def test_calibration_carries_task_costs_and_reads_files_without_them():
    cal = default_calibration()
    t = TaskCosts(zeros(SERIAL_FEATURES), zeros(POOL_FEATURES), zeros(REBUILD_FEATURES))
    with_tasks = Calibration.from_dict({**cal.to_dict(), "tasks": t.to_dict()})
    assert with_tasks.tasks == t
    old = cal.to_dict()
    old.pop("tasks")
    assert Calibration.from_dict(old).tasks is None


def test_capture_needs_the_device_clock():
    with pytest.raises(ValueError, match="device profile"):
        capture_records(type("R", (), {"emulation": None})(), [], TaskSamples())


@pytest.fixture(scope="module")
def measured(tiny_store):
    from emulator.store.store import Store

    labels = []
    costs = measure_task_costs(Store.open(tiny_store), batches=2, batch_sizes=(16,), on_plan=labels.append)
    return costs, labels


def test_measured_on_real_replays(measured):
    costs, labels = measured
    # every calibration plan with the devices pooling, the plain-SSD ones also with the host pooling
    assert any("host-pooled" in x for x in labels) and any("tt" in x for x in labels)
    f = costs.fit
    assert f["serial_batches"] > 0 and f["pool_rows"] > 0 and f["rebuild_tasks"] > 0 and f["io_batches"] > 0
    assert f["prep_device_batches"] > 0 and costs.source == "measured"
    for part in (costs.serial, costs.pool, costs.rebuild, costs.io, costs.prep):
        assert all(math.isfinite(v) and v >= 0 for v in part.values())
    # a pooling task's CPU time is never free: some per-task or per-lookup cost is measured
    assert sum(costs.pool.values()) > 0 and sum(costs.serial.values()) > 0

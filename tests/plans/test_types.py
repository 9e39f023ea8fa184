"""plans.types: JSON round trips, cost values, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plans.calibration import default_calibration
from plans.types import Budgets, Calibration, DeviceProfile, HostCosts, Perf, Storage, TableStats, WorkloadStats
from tracegen.errors import InputError


def test_calibration_round_trip_and_refusals(tmp_path):
    c = default_calibration()
    c.save(tmp_path / "c.json")
    back = Calibration.load(tmp_path / "c.json")
    assert back == c and back.iops_at(16) == pytest.approx(150e3)
    d = json.loads((tmp_path / "c.json").read_text())
    d["version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="version"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(InputError):
        Calibration.load(tmp_path / "junk.json")


def test_calibration_host_costs_round_trip_and_version_1(tmp_path):
    c = default_calibration()
    assert c.host is not None and c.host.source == "modelled"
    c.save(tmp_path / "c.json")
    back = Calibration.load(tmp_path / "c.json")
    assert back.host == c.host and isinstance(back.host, HostCosts)
    # a version-1 file (no host costs) still loads; its local devices fall back to the parallel model
    d = json.loads((tmp_path / "c.json").read_text())
    d["version"] = 1
    d.pop("host")
    (tmp_path / "v1.json").write_text(json.dumps(d))
    assert Calibration.load(tmp_path / "v1.json").host is None
    with pytest.raises(ValueError):
        HostCosts(**{**c.host.to_dict(), "table_s": -1.0})


def test_device_profile_execution_validated():
    kw = dict(name="d", cores=2, device_dram_bytes=1, ssd_capacity_bytes=1, iops=1.0, read_bytes_per_s=1.0,
              mem_core_lookups_per_s=1.0, compute_core_flops_per_s=1.0)
    assert DeviceProfile(**kw).execution == "parallel"
    with pytest.raises(ValueError):
        DeviceProfile(**kw, execution="threads")
    with pytest.raises(ValueError):
        DeviceProfile(**kw, queue_depth=0)


def test_perf_and_storage():
    p = Perf(0.1, (0.3, 0.2), (0.25, 0.0), (0.05, 0.4))
    assert p.total_s == 0.4 and p.bottleneck == "compute_core[1]"
    # host-serial: the tier parts are shares of host_s, not parallel resources; only host and IO count
    s = Perf(0.1, (0.3, 0.2), (0.25, 0.0), (0.05, 0.4), host_s=0.8, execution="host-serial")
    assert s.total_s == 0.8 and s.bottleneck == "host"
    assert Perf(0.1, (0.9,), (0.0,), (0.0,), host_s=0.8, execution="host-serial").bottleneck == "io[0]"
    cap = Storage(100, (10, 10), (50, 50))
    assert Storage(100, (10, 9), (50, 0)).fits_in(cap)
    assert not Storage(101, (10, 9), (50, 0)).fits_in(cap)
    assert not Storage(1, (11, 0), (0, 0)).fits_in(cap)


def test_table_stats_validation_and_round_trip():
    kw = dict(name="t", rows=10, row_bytes=4, rows_per_page=1024, pages_per_row=1, lookups_per_batch=5.0, pooling=1.0,
              mass=[0, 1], cold_unique_rows_per_batch=[3, 0], cold_unique_pages_per_batch=[1, 0])
    with pytest.raises(ValueError):
        TableStats(hot_rows=[1, 2], **kw)  # must start at 0
    ts = TableStats(hot_rows=[0, 4], **kw)
    assert not ts.hot_rows.flags.writeable
    w = WorkloadStats((ts,), 4)
    back = WorkloadStats.from_dict(json.loads(json.dumps(w.to_dict())))
    np.testing.assert_array_equal(back.tables[0].mass, ts.mass)
    # rows 4..9 of 4 B share one page: 4096 B on SSD; the interpolation reaches 1, 0, 0 at every row
    assert ts.ssd_raw_bytes(4) == 4096 and ts.at(10) == (1.0, 0.0, 0.0)
    # without measured reads, one read per page; with them, interpolated like the other curves
    assert ts.reads_at(2) == pytest.approx(0.5)
    tr = TableStats(hot_rows=[0, 4], cold_reads_per_batch=[0.5, 0.0], **kw)
    assert tr.reads_at(2) == pytest.approx(0.25) and tr.reads_at(10) == 0.0
    back = WorkloadStats.from_dict(json.loads(json.dumps(WorkloadStats((tr,), 4).to_dict())))
    np.testing.assert_array_equal(back.tables[0].cold_reads_per_batch, [0.5, 0.0])


def test_budgets_validation():
    with pytest.raises(ValueError):
        Budgets(-1)
    with pytest.raises(ValueError):
        Budgets(1, accuracy_mode="nope")

"""plans.calibration: a short measurement on a scratch file; device profiles."""

from __future__ import annotations

import pytest

from plans.calibration import default_calibration, local_profiles, measure_calibration, smartssd_profiles
from plans.types import Calibration
from plans_fixtures import o_direct_supported
from tracegen.errors import InputError


def test_short_measurement_round_trips(tmp_path):
    if not o_direct_supported(tmp_path):
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT, which the IO calibration needs")
    c = measure_calibration(tmp_path, seconds=1.0, queue_depths=(1, 8), tt_ranks=(8,), scratch_bytes=8 << 20)
    assert c.source == "measured" and set(c.io_iops_by_qd) == {1, 8}
    for v in (c.dram_lookups_per_s, c.dram_bytes_per_s, c.read_bytes_per_s, c.mem_core_lookups_per_s,
              c.compute_core_flops_per_s, c.io_iops_by_qd[1], c.tt_rows_per_s_by_rank[8]):
        assert v > 0
    assert not list(tmp_path.glob(".screc-calibrate-*"))  # the scratch file is gone
    c.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json").io_iops_by_qd == c.io_iops_by_qd


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
    s = smartssd_profiles(4)
    assert len(s) == 4 and all(d.modelled and d.device_dram_bytes == 4 << 30 for d in s)
    with pytest.raises(InputError):
        local_profiles(c, 0)

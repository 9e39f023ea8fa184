"""plans.machine.profile_devices: the planner's devices from device profiles, figures checked by hand."""

from __future__ import annotations

import dataclasses
import json

import pytest

from emulator.device.profile import load_profile
from plans.calibration import SMARTSSD_IOPS, default_calibration, smartssd_profiles
from plans.machine import profile_devices
from plans.planner import PlanningConfig, planning_machine
from tracegen.errors import InputError


def test_smartssd_devices_come_from_the_profile_file():
    # the cited figures of emulator/device/profiles/smartssd.toml, one SSD per device
    d = smartssd_profiles(3)
    assert len(d) == 3 and [x.name for x in d] == ["dev0", "dev1", "dev2"]
    assert d[0].iops == 540_000 == SMARTSSD_IOPS and d[0].read_bytes_per_s == 3.2e9
    assert d[0].ssd_capacity_bytes == 3_840_000_000_000 and d[0].device_dram_bytes == 4 << 30
    assert d[0].mem_core_lookups_per_s == 25e6 and d[0].compute_core_flops_per_s == 100e9
    assert d[0].cores == 8 and d[0].execution == "parallel" and d[0].modelled
    assert smartssd_profiles(1, cores=2)[0].cores == 2


def test_host_profile_scales_this_machines_rates():
    # host: speed 1 x the calibration's rates (default: 10e6 lookups/s, 5e9 flop/s); measured disk shared by
    # 2 devices: IOPS at QD 16 = 150e3 -> 75e3 each; 2.5e9 B/s -> 1.25e9 each; free 1e12 B -> 5e11 each
    cal = dataclasses.replace(default_calibration(), machine={"disk_free_bytes": 10**12})
    d = profile_devices(load_profile("host"), cal, 2, queue_depth=16)
    assert d[0].mem_core_lookups_per_s == 10e6 and d[0].compute_core_flops_per_s == 5e9
    assert d[0].iops == pytest.approx(75e3) and d[0].read_bytes_per_s == pytest.approx(1.25e9)
    assert d[0].ssd_capacity_bytes == 5 * 10**11 and d[0].queue_depth == 16
    assert d[0].cores == load_profile("host").core_count and d[0].modelled  # the default calibration is modelled


def test_speed_profile_needs_a_calibration(tmp_path):
    with pytest.raises(InputError, match="needs a calibration"):
        profile_devices(load_profile("host"), None, 1)
    with pytest.raises(InputError, match="at least one device"):
        profile_devices(load_profile("smartssd"), None, 0)


def test_planner_takes_a_profile_file(tmp_path):
    # a user profile: smartssd with a 4x faster compute core (400 GFLOP/s) and 2 cores
    d = load_profile("smartssd").to_dict()
    d["name"] = "fast-tt"
    d["cores"]["compute"]["rate"] = {"value": 400e9, "unit": "flop/s", "source": "assumption: 4x"}
    d["cores"]["count"] = {"value": 2, "unit": "cores", "source": "assumption: two"}
    f = tmp_path / "fast.json"
    f.write_text(json.dumps(d))
    cfg = PlanningConfig(dram_budget_bytes=1 << 20, model="tiny", device_profile=str(f), devices=2)
    _, devices, notes = planning_machine(cfg)
    assert [x.compute_core_flops_per_s for x in devices] == [400e9, 400e9] and devices[0].cores == 2
    assert any("fast-tt" in n.text and n.basis == "modelled" for n in notes)


def test_planner_refuses_a_bad_profile_file_up_front(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('format = "screc-device-profile"\nversion = 1\nname = "b"\n[cores]\ncount = { value = 2 }\n')
    with pytest.raises(InputError, match="field cores.count: needs a source"):
        PlanningConfig(dram_budget_bytes=0, model="tiny", device_profile=str(f))
    with pytest.raises(InputError, match="unknown device profile 'fpga'"):
        PlanningConfig(dram_budget_bytes=0, model="tiny", device_profile="fpga")

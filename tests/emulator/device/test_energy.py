"""Modelled energy against hand-computed joules, RAPL counters from a fake powercap directory."""

from __future__ import annotations

import pytest

from emulator.device.clock import DeviceTiming
from emulator.device.clock import BatchInput, CoreTask, DeviceBatch, clock_model, emulate_batch
from emulator.device.energy import (HOST_W_PER_CPU, RaplCounters, batch_device_energy_j, device_energy, host_energy,
                                    queries_per_joule, tdp_energy_j)
from emulator.device.profile import load_profile


def timing(mem_s, compute_s, io_s) -> DeviceTiming:
    return DeviceTiming("dev0", 0.0, {"mem": mem_s, "compute": compute_s}, io_s)


def test_device_energy_smartssd():
    # smartssd: idle 8 W, mem core 0.5 W, compute core 1.0 W, SSD active 6 W (all above idle)
    # batch 10 ms; 20 mem core-ms, 30 compute core-ms, reads in flight 4 ms:
    # 8 x 0.010 + 0.5 x 0.020 + 1.0 x 0.030 + 6 x 0.004 = 0.080 + 0.010 + 0.030 + 0.024 = 0.144 J
    e = device_energy(timing(0.020, 0.030, 0.004), 0.010, load_profile("smartssd").power)
    assert e.idle_j == pytest.approx(0.080) and e.cores_j == {"mem": pytest.approx(0.010),
                                                             "compute": pytest.approx(0.030)}
    assert e.ssd_j == pytest.approx(0.024) and e.total_j == pytest.approx(0.144)


def test_batch_energy_from_the_clock():
    # smartssd power, speeds 1 (rates equal to the host's): dev0 one 4 ms mem task, dev1 one 10 ms compute task,
    # no reads; the batch takes 10 ms (the slower device). Each device idles the whole batch:
    # dev0 8 x 0.010 + 0.5 x 0.004 = 0.082 J; dev1 8 x 0.010 + 1.0 x 0.010 = 0.090 J; total 0.172 J
    prof = load_profile("smartssd")
    model = clock_model(prof, host_mem_lookups_per_s=25e6, host_compute_flops_per_s=100e9)
    out = emulate_batch(BatchInput(0, (DeviceBatch("dev0", 1, 0, tasks=(CoreTask("a", "mem", 0.004),)),
                                       DeviceBatch("dev1", 0, 1, tasks=(CoreTask("b", "compute", 0.010),)))), model)
    assert out.emulated_s == pytest.approx(0.010)
    assert batch_device_energy_j(out, prof.power) == pytest.approx(0.172)


def test_queries_per_joule():
    # 1024 samples in a batch of 0.144 J -> 7111.1 queries/J
    assert queries_per_joule(1024, 0.144) == pytest.approx(7111.111, rel=1e-6)
    assert queries_per_joule(5, 0.0) == float("inf")
    with pytest.raises(ValueError):
        queries_per_joule(-1, 1.0)


def _zone(root, name, uj, max_uj=None):
    z = root / name
    z.mkdir(parents=True, exist_ok=True)
    (z / "energy_uj").write_text(f"{uj}\n")
    if max_uj is not None:
        (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


def test_rapl_two_packages_and_a_wrap(tmp_path):
    # package 0: 1,000,000 -> 3,500,000 uJ = 2.5 J; package 1 wrapped: 262,143,000,000 range,
    # 262,142,000,000 -> 500,000 uJ = (500,000 + 262,143,000,000 - 262,142,000,000) uJ = 1.5 J; sub-zone
    # intel-rapl:0:0 (core) is inside package 0 and must not be added again; total 4.0 J
    _zone(tmp_path, "intel-rapl:0", 1_000_000, 262_143_000_000)
    _zone(tmp_path, "intel-rapl:1", 262_142_000_000, 262_143_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 10)
    rapl = RaplCounters(tmp_path)
    before = rapl.read()
    assert before == {"intel-rapl:0": 1_000_000, "intel-rapl:1": 262_142_000_000}
    _zone(tmp_path, "intel-rapl:0", 3_500_000)
    _zone(tmp_path, "intel-rapl:1", 500_000)
    _zone(tmp_path, "intel-rapl:0:0", 999_999_999)
    after = rapl.read()
    assert rapl.joules_between(before, after) == pytest.approx(4.0)
    e = host_energy(before, after, cpu_seconds=1.0, elapsed_s=1.0, cpus=2, counters=rapl)
    assert e.basis == "rapl" and e.joules == pytest.approx(4.0)


def test_unreadable_rapl_falls_back_to_tdp(tmp_path):
    # no powercap directory at all -> None; utilisation x TDP: 1.5 CPU-s over 2 s on 2 CPUs = 37.5% of
    # 2 x 10 W for 2 s = 15 J (= 1.5 CPU-s x 10 W)
    rapl = RaplCounters(tmp_path / "missing")
    assert rapl.read() is None
    e = host_energy(rapl.read(), rapl.read(), cpu_seconds=1.5, elapsed_s=2.0, cpus=2, counters=rapl)
    assert e.basis == "tdp" and e.joules == pytest.approx(15.0) and "assumption" in e.detail
    assert HOST_W_PER_CPU == 10.0


def test_unreadable_counter_file(tmp_path):
    # a zone whose energy_uj is not a number (or cannot be read, as for non-root users on recent kernels)
    z = _zone(tmp_path, "intel-rapl:0", 5)
    (z / "energy_uj").write_text("permission denied\n")
    assert RaplCounters(tmp_path).read() is None


def test_wrap_without_a_range_is_not_guessed(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 100)  # no max_energy_range_uj
    rapl = RaplCounters(tmp_path)
    assert rapl.joules_between({"intel-rapl:0": 100}, {"intel-rapl:0": 50}) is None
    assert rapl.joules_between({"intel-rapl:0": 100}, {"intel-rapl:1": 150}) is None  # other zones
    e = host_energy({"intel-rapl:0": 100}, {"intel-rapl:0": 50}, cpu_seconds=0.5, elapsed_s=1.0, cpus=1,
                    counters=rapl, w_per_cpu=20.0)
    assert e.basis == "tdp" and e.joules == pytest.approx(10.0)  # 0.5 CPU-s x 20 W


def test_tdp_utilisation_is_capped():
    # 5 CPU-s in 1 s on 2 CPUs is more than possible: capped at 100% -> 2 x 10 W x 1 s = 20 J
    assert tdp_energy_j(5.0, 1.0, 2) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        tdp_energy_j(1.0, 0.0, 2)

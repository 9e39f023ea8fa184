"""Device profiles: the built-ins, round trips, user files and one-line refusals naming the field."""

from __future__ import annotations

import json

import pytest

from emulator.device.profile import BUILTIN_PROFILES, host_threads, load_profile, parse_profile
from tracegen.errors import InputError


def test_builtins_load_and_every_figure_has_a_source():
    for name in BUILTIN_PROFILES:
        p = load_profile(name)
        assert p.name == name and p.origin == f"builtin:{name}"
        assert all(f.source for _, f in p.figures())


def test_host_profile_is_the_validation_profile():
    h = load_profile("host")
    assert h.mem.speed.value == 1.0 and h.compute.speed.value == 1.0 and h.ssd.mode == "measured"
    assert h.cores.value == "auto" and h.core_count == host_threads() >= 1
    assert h.link.bytes_per_s.value == float("inf") and h.link.latency_s.value == 0.0


def test_smartssd_figures_and_sources():
    s = load_profile("smartssd")
    assert s.core_count == 8 and s.device_memory_bytes.value == 4 << 30
    assert s.ssd.iops.value == 540_000 and s.ssd.latency_s.value == pytest.approx(85e-6)
    # Little's law on the cited figures: 540e3 IO/s x 85e-6 s = 45.9 reads in flight -> 46
    assert s.ssd.internal_parallelism.value == round(540e3 * 85e-6)
    assert "PM983" in s.ssd.iops.source and "anandtech" in s.device_memory_bytes.source.lower()
    assert s.mem.rate.source.startswith("assumption") and s.modelled
    # rates given, speeds derived from this host's: 25e6 / 5e6 = 5x
    assert s.mem.speed_vs_host(5e6) == pytest.approx(5.0) and s.mem.rate_given(5e6) == 25e6


def test_round_trip_through_json_and_toml(tmp_path):
    s = load_profile("smartssd")
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(s.to_dict()))
    back = load_profile(f)
    assert back.origin == str(f) and list(back.figures()) == list(s.figures())
    t = tmp_path / "mine.toml"
    t.write_text('format = "screc-device-profile"\nversion = 1\nname = "slow"\n'
                 '[cores]\ncount = { value = 4, unit = "cores", source = "assumption: four" }\n'
                 '[cores.mem]\nspeed = { value = 0.5, unit = "x host", source = "assumption: half" }\n'
                 '[cores.compute]\nrate = { value = 1e9, unit = "flop/s", source = "assumption: 1 GFLOP/s" }\n'
                 '[memory]\ndevice_bytes = { value = 1024, unit = "B", source = "assumption" }\n'
                 '[ssd]\nmode = "measured"\n'
                 '[link]\nbytes_per_s = { value = 1e9, unit = "B/s", source = "a" }\n'
                 'latency_s = { value = 0, unit = "s", source = "a" }\n'
                 '[power]\nidle_w = { value = 1, unit = "W", source = "a" }\n'
                 'mem_core_busy_w = { value = 1, unit = "W", source = "a" }\n'
                 'compute_core_busy_w = { value = 1, unit = "W", source = "a" }\n'
                 'ssd_active_w = { value = 1, unit = "W", source = "a" }\n')
    p = load_profile(t)
    assert p.name == "slow" and p.core_count == 4 and p.mem.speed_vs_host(None) == 0.5


def _broken(mutate) -> dict:
    d = load_profile("smartssd").to_dict()
    mutate(d)
    return d


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["ssd"]["iops"].pop("source"), "field ssd.iops: needs a source"),
    (lambda d: d["ssd"].__setitem__("iops", {"value": -1, "source": "x"}), "field ssd.iops: value must be > 0"),
    (lambda d: d["ssd"].pop("latency_s"), "field ssd.latency_s: missing"),
    (lambda d: d["ssd"].__setitem__("mode", "fast"), "field ssd.mode"),
    (lambda d: d["cores"]["mem"].__setitem__("speed", {"value": 1, "source": "x"}), "field cores.mem: give exactly"),
    (lambda d: d["cores"]["count"].__setitem__("value", 2.5), "field cores.count: value must be a whole number"),
    (lambda d: d["cores"]["count"].__setitem__("value", "many"), "field cores.count: value must be a number"),
    (lambda d: d["power"]["idle_w"].__setitem__("value", float("nan")), "field power.idle_w: value must be finite"),
    (lambda d: d["power"].__setitem__("idle_w", 8.0), "field power.idle_w: must be a table"),
    (lambda d: d.pop("link"), "field link: missing section"),
    (lambda d: d.__setitem__("version", 9), "field version"),
    (lambda d: d.__setitem__("format", "screc-plan"), "field format"),
])
def test_bad_fields_name_the_field(tmp_path, mutate, field):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(_broken(mutate)))
    with pytest.raises(InputError) as e:
        load_profile(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: bad device profile: {field}") and "\n" not in msg


def test_missing_directory_unknown_and_malformed(tmp_path):
    with pytest.raises(InputError, match="unknown device profile 'fpga'"):
        load_profile("fpga")
    with pytest.raises(InputError, match="not found"):
        load_profile(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="is a directory"):
        load_profile(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(InputError, match="bad device profile"):
        load_profile(bad)
    with pytest.raises(ValueError, match="field name"):
        parse_profile({"format": "screc-device-profile", "version": 1}, "x")

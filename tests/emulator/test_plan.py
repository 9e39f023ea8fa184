"""emulator.plan: the row_format field of a table placement (default fp32, JSON round trip, old plans)."""

from __future__ import annotations

import json

import pytest

from emulator.plan import Plan, TablePlacement


def test_row_format_round_trips_and_fp32_is_left_out(tmp_path):
    plan = Plan("s", (TablePlacement("a", 3, row_format="int8"), TablePlacement("b", 2),
                      TablePlacement("c", 0, row_format="fp16")))
    plan.save(tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert [t.get("row_format") for t in doc["tables"]] == ["int8", None, "fp16"]  # fp32: no key, as before
    assert Plan.load(tmp_path / "p.json") == plan


def test_a_plan_written_before_row_formats_loads_as_fp32(tmp_path):
    old = {"format": "screc-plan", "version": 1, "store_id": "s", "planner": "manual", "devices": [{}],
           "tables": [{"table": "a", "hot_rows": 1, "cold_tier": "ssd_raw", "tt_rank": None, "device": 0,
                       "lru_rows": 0}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Plan.load(tmp_path / "old.json").placement("a").row_format == "fp32"


@pytest.mark.parametrize("kwargs, message", [
    (dict(row_format="int3"), "row_format 'int3' is not one of"),
    (dict(row_format="int4", cold_tier="ssd_tt", tt_rank=8), "serves DRAM and ssd_raw rows only"),
    (dict(row_format="int8", lru_rows=10), "not behind an LRU cache"),
])
def test_row_formats_the_engine_cannot_serve_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TablePlacement("a", 1, **kwargs)

"""plans.planner: the planning pipeline as a library, the policy presets, and the hand-edited plan checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from emulator.plan import Plan
from plans.planner import (PlanNote, PlanningConfig, PresetRequest, all_tt_plan, load_plan, lru_plan, measure_profile,
                           plan_from_profile, preset_plan, run_planning, save_planned, water_fill)
from tests.plans_fixtures import small_spec, write_zipf_trace
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig

    d = tmp_path_factory.mktemp("planner")
    spec = small_spec()
    write_zipf_trace(d / "t.h5", spec, n_batches=4, seed=7)
    # TT cores only for tables of >= 1000 rows: a (3000 rows) and b (5000), not c (300)
    build_store(spec, d / "store", StoreBuildConfig(tt_ranks=(4,), tt_min_rows=1000))
    build_store(spec, d / "raw", StoreBuildConfig(tt_ranks=()))
    return d


def _store(path):
    from emulator.store.store import Store

    return Store.open(path)


def test_water_fill_hand_values():
    # weights 1:3 of 40 -> 10 and 30 when nothing is full
    assert water_fill(np.array([1.0, 3.0]), np.array([100.0, 100.0]), 40).tolist() == [10.0, 30.0]
    # the first entry is full at 5: the 5 it leaves goes to the second (30 + 5)
    assert water_fill(np.array([1.0, 3.0]), np.array([5.0, 100.0]), 40).tolist() == [5.0, 35.0]
    # zero weight gets nothing; everything full leaves the rest unspent
    assert water_fill(np.array([0.0, 1.0]), np.array([50.0, 20.0]), 40).tolist() == [0.0, 20.0]


def test_lru_plan_shares_the_budget_by_lookups(setup):
    store = _store(setup / "store")
    budget = 10_000  # below every table's full cache (a: 3000 x 84 B), so shares are plain proportions
    with TraceReader(setup / "t.h5") as reader:
        plan = lru_plan(store, reader, budget, profile_batches=3)
        lookups = np.zeros(3)
        B = store.spec.batch_size
        for batch in reader.batches(0, 3):  # naive: table t's lookups are offsets[(t+1)B] - offsets[tB]
            offsets = np.asarray(batch.offsets)
            lookups += [offsets[(t + 1) * B] - offsets[t * B] for t in range(3)]
    per_row = [16 * 4 + 20, 64 * 4 + 20, 2048 * 4 + 20]  # row bytes + 20 B of cache metadata (key, stamp, pins)
    want = [int(budget * n / lookups.sum() // r) for n, r in zip(lookups, per_row)]
    assert [t.lru_rows for t in plan.tables] == want
    assert plan.planner == "lru" and plan.dram_budget_bytes == budget
    assert all(t.hot_rows == 0 and t.cold_tier == "ssd_raw" for t in plan.tables)


def test_all_tt_plan_uses_tt_where_the_store_has_cores(setup):
    store = _store(setup / "store")
    plan = all_tt_plan(store, "trace-id")
    assert [(t.table, t.cold_tier, t.tt_rank) for t in plan.tables] == [
        ("a", "ssd_tt", 4), ("b", "ssd_tt", 4), ("c", "ssd_raw", None)]  # c: 300 rows, no cores
    with pytest.raises(InputError, match="no TT rank 8"):
        all_tt_plan(store, None, tt_rank=8)
    with pytest.raises(InputError, match="no table of this store has TT cores"):
        all_tt_plan(_store(setup / "raw"))


def test_presets(setup, tmp_path):
    store = _store(setup / "store")
    with TraceReader(setup / "t.h5") as reader:
        dram = preset_plan("all-dram", store, reader).plan
        ssd = preset_plan("all-ssd", store, reader).plan
        with pytest.raises(InputError, match="unknown policy"):
            preset_plan("mip", store, reader)
        with pytest.raises(InputError, match="needs a directory"):
            preset_plan("static-topk", store, reader, PresetRequest(dram_budget_bytes=4096, profile_batches=2))
        topk = preset_plan("static-topk", store, reader,
                           PresetRequest(dram_budget_bytes=16384, profile_batches=2, plan_dir=str(tmp_path)))
    assert [t.hot_rows for t in dram.tables] == [3000, 5000, 300]
    assert [t.hot_rows for t in ssd.tables] == [0, 0, 0]
    assert topk.plan.planner == "static-topk" and (tmp_path / "static-topk-16384.json").is_file()
    assert topk.plan.remap == str(tmp_path / "static-topk-16384.remap.h5")  # resolved beside the plan
    assert topk.plan.predicted["storage"]["host_dram_bytes"] <= 16384
    assert any(n.basis == "measured" and "statistics measured on batches [0, 2)" in n.text for n in topk.notes)


def test_run_planning_names_the_mip_policy_screc_and_labels_its_notes(setup, tmp_path):
    cfg = PlanningConfig(dram_budget_bytes=16384, store=str(setup / "store"), trace=str(setup / "t.h5"),
                         profile_batches=2, devices=2, time_limit_s=20)
    result = run_planning(cfg)
    assert result.plan.planner == "screc" and cfg.policy_name == "screc"
    assert dataclasses.replace(cfg, planner="mip").policy_name == "screc"  # the old name still works
    bases = {n.basis for n in result.notes}
    assert "measured" in bases and "modelled" in bases and result.modelled  # no calibration: modelled rates
    assert any("no calibration given" in n.text and n.basis == "modelled" for n in result.notes)
    assert str(PlanNote("x", "modelled")) == "x [modelled]" and str(PlanNote("y")) == "y"
    assert result.plan.remap is None and result.remap is not None  # the remap is written by save_planned
    saved = save_planned(result, tmp_path / "p.json")
    assert saved.remap == str(tmp_path / "p.remap.h5") and (tmp_path / "p.remap.h5").is_file()
    assert json.loads((tmp_path / "p.json").read_text())["remap"] == "p.remap.h5"  # stored relative
    assert saved.tables == result.plan.tables
    assert result.plan.predicted["drift"]["batches"] == [2, 4]  # profiled on [0, 2): drift on [2, 4)


def test_one_profile_serves_several_budgets(setup):
    cfg = PlanningConfig(dram_budget_bytes=0, planner="static-topk", store=str(setup / "store"),
                         trace=str(setup / "t.h5"), profile_batches=2)
    profile = measure_profile(cfg)
    used = []
    for budget in (0, 8192, 65536):
        plan = plan_from_profile(profile, dataclasses.replace(cfg, dram_budget_bytes=budget)).plan
        used.append(plan.predicted["storage"]["host_dram_bytes"])
        assert used[-1] <= budget
    assert used[0] == 0 and used[2] > 0  # 64 KiB holds some of the hottest rows of a (64 B each)


def test_modelled_planning_says_so(tmp_path):
    result = run_planning(PlanningConfig(dram_budget_bytes=8192, planner="greedy", model="tiny",
                                         device_profile="smartssd", devices=2))
    assert result.remap is None and {n.basis for n in result.notes} == {"modelled"}
    assert [d.name for d in result.plan.devices] == ["dev0", "dev1"]


@pytest.mark.parametrize("kw, msg", [
    ({"planner": "nope"}, "unknown planner"),
    ({"store": None}, "needs a store and a trace"),
    ({"devices": 0}, "devices must be >= 1"),
    ({"device_profile": "fpga"}, "unknown device profile"),
])
def test_config_refuses_bad_values(setup, kw, msg):
    base = {"dram_budget_bytes": 1024, "store": str(setup / "store"), "trace": str(setup / "t.h5")}
    with pytest.raises(InputError, match=msg):
        PlanningConfig(**{**base, **kw})


def _edited(tmp_path, plan: Plan, edit) -> str:
    d = json.loads(json.dumps(plan.to_dict()))  # as a file holds it: lists, not tuples
    edit(d)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(d))
    return str(path)


@pytest.mark.parametrize("edit, msg", [
    (lambda d: d["tables"][1].update(table="bb"), "tables[1]: the store has no table 'bb'"),  # renamed
    (lambda d: d["tables"].append({"table": "zz", "hot_rows": 0}), "tables[3]: the store has no table 'zz'"),
    (lambda d: d["tables"][0].update(hot_rows=3001), "tables[0] (a): hot_rows 3001 is more than the table's 3000"),
    (lambda d: d["tables"][2].update(cold_tier="ssd_tt", tt_rank=4), "tables[2] (c): the store has no TT rank 4"),
    (lambda d: d["tables"].pop(2), "the plan places no table 'c'"),
])
def test_load_plan_refuses_hand_edits_naming_file_and_entry(setup, tmp_path, edit, msg):
    store = _store(setup / "store")
    with TraceReader(setup / "t.h5") as reader:
        plan = preset_plan("all-ssd", store, reader).plan
    path = _edited(tmp_path, plan, edit)
    with pytest.raises(InputError) as e:
        load_plan(path, store)
    assert str(e.value).startswith(f"{path}: ") and msg in str(e.value)
    assert load_plan(_edited(tmp_path, plan, lambda d: None), store).tables == plan.tables  # unedited: accepted

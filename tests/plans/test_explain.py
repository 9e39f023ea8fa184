"""plans.explain on the two-table hand instance of tests/plans/test_mip.py: every figure hand-computed."""

from __future__ import annotations

import pytest

from emulator.plan import DevicePlan, Plan, TablePlacement
from plans.baselines import make_planner
from plans.explain import explain_plan, resource_label
from plans.types import Budgets, PlannerOptions
from tests.plans.test_mip import calib, device, hand_stats

EXACT = PlannerOptions(formulation="exact", time_limit_s=30)
MIB = 1 << 20


def optimum() -> Plan:
    # the MIP's optimum at 1,000 B (test_mip.test_hand_instance_optimum): A k=10 on TT, B k=0 on TT, 0 + 2 cores
    return Plan("s", (TablePlacement("A", 10, "ssd_tt", 4), TablePlacement("B", 0, "ssd_tt", 4)),
                (DevicePlan("dev0", 0, 2),), dram_budget_bytes=1000)


def resolve(budget: int) -> float:
    plan = make_planner("mip", EXACT).plan(hand_stats(), calib(), Budgets(budget), [device()])
    return plan.predicted["perf"]["total_s"]


def test_per_table_figures():
    e = explain_plan(optimum(), hand_stats(), calib(), [device()], Budgets(1000))
    a, b = e.tables
    # A: 10 lookups, its 10 hot rows serve 80%: 8 DRAM lookups at 1 us; 2 cold TT rows x 1,000 flops at 1e6
    # flop/s = 2 ms of compute on one core, 1 ms on the plan's 2 compute cores
    assert (a.tier, a.hot_rows, a.tt_rank, a.device) == ("ssd_tt", 10, 4, 0)
    assert a.dram_share == pytest.approx(0.8) and a.cold_share == pytest.approx(0.2)
    sa = dict(a.seconds)
    assert sa["dram"] == pytest.approx(8e-6) and sa["compute_core[0]"] == pytest.approx(1e-3)
    assert sa["io[0]"] == 0 and sa["mem_core[0]"] == 0
    # B: nothing hot; 15 cold rows -> 15 ms on one core, 7.5 ms on two
    assert b.dram_share == 0 and b.cold_share == 1
    assert dict(b.seconds)["compute_core[0]"] == pytest.approx(7.5e-3)
    assert e.perf.total_s == pytest.approx(8.5e-3) and e.limited_by == "compute-centric cores of dev0"


def test_growing_a_hot_set_saves_by_the_cost_model():
    e = explain_plan(optimum(), hand_stats(), calib(), [device()], Budgets(1000))
    a, b = e.tables
    # A's next candidate is every row (mass 0.8 -> 1.0 at 100): compute (0 + 15) / 2 = 7.5 ms, 1 ms less, for
    # 90 more rows x 64 B = 5,760 B: 1e-3 s x 1,048,576 / 5,760 = 0.18204 s per MiB
    assert a.grow_to_rows == 100
    assert a.grow_saves_s_per_mib == pytest.approx(1e-3 * MIB / 5760, rel=1e-9)
    # B's next candidate is 20 rows (mass 0.5): 10 cold rows, compute (2 + 10) / 2 = 6 ms, 2.5 ms less, for
    # 20 x 64 = 1,280 B: 2.5e-3 x 1,048,576 / 1,280 = 2.048 s per MiB
    assert b.grow_to_rows == 20
    assert b.grow_saves_s_per_mib == pytest.approx(2.5e-3 * MIB / 1280, rel=1e-9)


def test_resolve_difference_and_binding_constraints():
    # re-solved at 1,000 B: 8.5 ms; at 2,280 B: A k=10 + B k=20 on TT (1,920 B) -> 6 ms: 2.5 ms saved
    e = explain_plan(optimum(), hand_stats(), calib(), [device()], Budgets(1000), resolve, 1280)
    assert e.resolved_s == pytest.approx(8.5e-3, rel=1e-6) and e.stepped_s == pytest.approx(6e-3, rel=1e-6)
    assert e.step_saves_s == pytest.approx(2.5e-3, rel=1e-6)
    c = {x.name: x for x in e.constraints}
    # host DRAM 640 of 1,000 B, yet binding: more of it buys time. Device memory: both TT cores, 400 + 600 =
    # 1,000 of 1,000 B: tight. SSD: 1,000 B of 1e9: slack.
    assert (c["host DRAM"].used, c["host DRAM"].limit, c["host DRAM"].binds) == (640, 1000, True)
    assert (c["device memory dev0"].used, c["device memory dev0"].binds) == (1000, True)
    assert not c["SSD dev0"].binds and "accuracy (weighted)" not in c
    assert e.summary() == ("compute-centric cores of dev0 limits the plan (8.5 ms per batch); binding: host DRAM, "
                           "device memory dev0; 1.25 KiB more DRAM would save 2.5 ms (modelled)")


def test_accuracy_constraint_and_a_step_that_saves_nothing():
    # weighted error: A serves 2 of the 30 lookups from TT (error 0.1), B 20 of 30 (error 0.2):
    # 2/30 x 0.1 + 20/30 x 0.2 = 0.14; a budget of 0.14 leaves no slack
    e = explain_plan(optimum(), hand_stats(), calib(), [device()], Budgets(1000, max_rel_error=0.14), resolve, 64)
    c = {x.name: x for x in e.constraints}
    assert c["accuracy (weighted)"].used == pytest.approx(0.14) and c["accuracy (weighted)"].binds
    # 64 B more (1,064 B) admits no new hot set (A's next is 6,400 B, B's 1,280 B): nothing saved, not binding
    assert e.step_saves_s == 0 and not c["host DRAM"].binds
    assert e.summary().endswith("64 B more DRAM would save nothing (modelled)")


def test_resource_labels():
    assert resource_label("io[1]") == "IO on dev1"
    assert resource_label("host") == "the host thread"
    assert resource_label("mem_core[0]") == "memory-centric cores of dev0"


def test_explanation_is_json_even_from_numpy_figures(tmp_path):
    import json

    import numpy as np

    from bench.common import write_json

    e = explain_plan(optimum(), hand_stats(), calib(), [device()], Budgets(1000), lambda b: np.float64(resolve(b)),
                     1280)
    write_json(tmp_path / "e.json", e.to_dict())
    assert json.loads((tmp_path / "e.json").read_text())["constraints"][0]["binds"] is True

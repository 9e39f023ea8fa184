"""plans.predicted: placements from chosen options; finish_plan attaches the cost model's prediction."""

from __future__ import annotations

import pytest

from emulator.plan import DevicePlan, TablePlacement
from plans.cost import StatsEstimator
from plans.predicted import finish_plan, placements
from plans.types import Budgets, PlannerOptions
from tests.plans.test_mip import calib, device, hand_stats


def _options():
    return StatsEstimator().table_options(hand_stats(), Budgets(1000), PlannerOptions())


def test_placements_record_all_hot_as_raw_and_no_device_as_device_0():
    a, b = _options()
    hot_a = next(o for o in a if not o.needs_device)  # all 100 rows of A hot: cold tier "none"
    tt_b = next(o for o in b if o.hot_rows == 20 and o.cold_tier == "ssd_tt")
    got = placements(hand_stats(), [hot_a, tt_b], [-1, 1])
    assert got == (TablePlacement("A", 100, "ssd_raw", None, 0), TablePlacement("B", 20, "ssd_tt", 4, 1))


def test_finish_plan_predicts_by_hand():
    # A all hot (10 lookups at 1 us on the host), B raw with none hot: 3 pages at 1 ms of IO on device d, and
    # its 20 lookups pooled by 2 memory cores at 1 ms each = 10 ms: the batch takes the device's 10 ms
    stats = hand_stats()
    a, b = _options()
    chosen = [next(o for o in a if not o.needs_device),
              next(o for o in b if o.hot_rows == 0 and o.cold_tier == "ssd_raw")]
    plan = finish_plan(placements(stats, chosen, [0, 0]), (DevicePlan("d", 2, 0),), stats, calib(), Budgets(10_000),
                       [device()], "hand")
    assert plan.planner == "hand" and plan.store_id == "s"
    assert plan.predicted["perf"]["total_s"] == pytest.approx(10e-3, rel=1e-9)
    assert plan.predicted["storage"]["host_dram_bytes"] == 100 * 64  # A's 100 rows of 64 B
    assert plan.predicted["tables"]["B"]["io_pages"] == pytest.approx(3.0)
    assert plan.predicted["weighted_rel_error"] == 0.0 and plan.predicted["modelled"] is False

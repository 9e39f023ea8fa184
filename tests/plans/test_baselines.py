"""plans.baselines: every planner returns a plan within the budgets; the MIP is never worse."""

from __future__ import annotations

import pytest

from plans.baselines import PLANNERS, make_planner
from plans.calibration import default_calibration, local_profiles
from plans.cost import memory_use, weighted_error
from plans.modelled import modelled_tt_variants
from plans.stats import trace_stats
from plans.types import Budgets, PlannerOptions, WorkloadStats, capacity
from tests.plans_fixtures import small_spec, write_zipf_trace
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans_baselines") / "t.h5"
    write_zipf_trace(path, small_spec(), n_batches=4, seed=3)
    with TraceReader(path) as r:
        s, _, _ = trace_stats(r)
    tables = tuple(t.with_tt(modelled_tt_variants(t.rows, t.row_bytes // 4, ranks=(4, 8))) for t in s.tables)
    return WorkloadStats(tables, s.batch_size, store_id="s", trace_id=s.trace_id)


@pytest.mark.parametrize("budget", [0, 50_000, 400_000])
def test_all_planners_respect_budgets(stats, budget):
    cal = default_calibration()
    devs = local_profiles(cal, 2, 2, device_dram_bytes=200_000, ssd_capacity_bytes=10**9)
    budgets = Budgets(budget, max_rel_error=0.05)
    totals = {}
    for name in PLANNERS:
        plan = make_planner(name, PlannerOptions(time_limit_s=20)).plan(stats, cal, budgets, devs)
        assert plan.planner == name and len(plan.tables) == 3
        assert memory_use(plan, stats).fits_in(capacity(budgets, devs))
        assert weighted_error(plan, stats) <= 0.05 + 1e-9
        assert plan.predicted["modelled"]  # the default calibration is modelled
        totals[name] = plan.predicted["perf"]["total_s"]
    assert totals["screc"] <= min(totals.values()) * (1 + 1e-6)
    assert make_planner("mip").name == "screc"  # the old name still selects the MIP
    assert totals["static-topk"] <= totals["all-ssd"] * (1 + 1e-9)


def test_unknown_planner():
    with pytest.raises(InputError):
        make_planner("nope")

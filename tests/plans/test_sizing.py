"""plans.sizing: the bisection finds what an exhaustive search over the same budget grid finds; targets turn
into hand-derived batch-time bounds; bad and unreachable targets are one-line input errors."""

from __future__ import annotations

import pytest

from plans.baselines import make_planner
from plans.sizing import (P99_OVER_MEAN, DramSizing, Shape, SizePoint, Target, budget_grid, parse_range, point_of,
                          size_dram, size_dram_over)
from plans.types import Budgets, PlannerOptions
from tests.plans.test_mip import calib, device, hand_stats
from tracegen.errors import InputError

EXACT = PlannerOptions(formulation="exact", time_limit_s=30)


def plan_at(budget: int, devices=None):
    return make_planner("mip", EXACT).plan(hand_stats(), calib(), Budgets(budget), devices or [device()])


def predicted(plan) -> dict:
    return plan.predicted


def test_targets_become_batch_time_bounds():
    assert Target("batch-ms", 7).batch_s_limit(10) == pytest.approx(7e-3)
    # 2,000 queries/s with 10 samples a batch: one batch every 10 / 2000 s = 5 ms
    assert Target("qps", 2000).batch_s_limit(10) == pytest.approx(5e-3)
    # p99 13 ms, modelled as 1.3 x the mean: mean <= 10 ms
    assert Target("p99-ms", 13, p99_factor=1.3).batch_s_limit(10) == pytest.approx(10e-3)
    assert Target("p99-ms", 13).p99_factor == P99_OVER_MEAN


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan")])
def test_zero_negative_or_infinite_target_is_refused(value):
    with pytest.raises(InputError, match="finite number > 0"):
        Target("batch-ms", value)


def test_grid_ends_at_the_all_dram_size():
    assert budget_grid(10, 4) == [0, 4, 8, 10]
    assert budget_grid(8, 4) == [0, 4, 8]
    assert budget_grid(0, 4) == [0]


# Hand instance of tests/plans/test_mip.py (1 device, 2 cores; all DRAM: A 100 x 64 B + B 200 x 64 B = 19,200 B).
# Batch time <= 7 ms needs A k=10 on TT (640 B) and B k=20 on TT (1,280 B): compute (2 + 10) / 2 = 6 ms, 1,920 B.
# Every plan with less DRAM is slower: A k=10 + B k=0 (640 B) 8.5 ms; A k=0 + B k=20 (1,280 B) (8 + 10) / 2 = 9 ms.
def test_bisection_finds_the_hand_derived_minimum():
    s = size_dram(plan_at, predicted, Target("batch-ms", 7), 10, 19_200, 64)
    assert s.found.budget_bytes == 1_920 and s.needed_bytes == 1_920
    assert s.found.batch_s == pytest.approx(6e-3, rel=1e-6)
    assert s.below is not None and s.below.budget_bytes == 1_856 and not s.below.meets
    assert s.monotone
    assert s.solves <= 2 + 9  # both ends, then halving 300 steps: at most ceil(log2 300) = 9 more


@pytest.mark.parametrize("target_ms,step", [(7, 64), (8.6, 128), (11.5, 640), (6, 1000), (0.05, 4096)])
def test_bisection_equals_exhaustive_search_over_the_grid(target_ms, step):
    grid = budget_grid(19_200, step)
    limit = target_ms * 1e-3
    first = next(b for b in grid if point_of(b, plan_at(b).predicted, limit).meets)
    s = size_dram(plan_at, predicted, Target("batch-ms", target_ms), 10, 19_200, step)
    assert s.found.budget_bytes == first


def test_budget_zero_meeting_the_target_is_the_answer():
    # budget 0: both tables on TT, (8 + 15) / 2 = 11.5 ms
    s = size_dram(plan_at, predicted, Target("batch-ms", 12), 10, 19_200, 64)
    assert s.found.budget_bytes == 0 and s.below is None and s.solves == 2


def test_unreachable_target_is_one_line():
    # all DRAM: 30 lookups at 1 us = 30 us per batch; 10 us cannot be met
    with pytest.raises(InputError) as e:
        size_dram(plan_at, predicted, Target("batch-ms", 0.01), 10, 19_200, 64)
    assert "unreachable" in str(e.value) and "0.03 ms" in str(e.value) and "\n" not in str(e.value)


def _sizing(needed: int) -> DramSizing:
    p = SizePoint(needed, needed, 1e-3, "host", True)
    return DramSizing(Target("batch-ms", 1), 1e-3, 1, 10, (p,), p, None, None)


def test_over_shapes_least_dram_then_fewest_devices_then_cores():
    needs = {(1, 2): 500, (2, 2): 300, (2, 4): 300, (3, 2): 300}

    def search(shape: Shape):
        if shape.devices == 4:
            raise InputError("target unreachable")
        return _sizing(needs[(shape.devices, shape.cores)])

    shapes = [Shape(3, 2), Shape(2, 4), Shape(2, 2), Shape(1, 2), Shape(4, 2)]
    best, outcomes = size_dram_over(shapes, search)
    assert best.needed_bytes == 300 and len(outcomes) == 5
    chosen = [s for s, r in outcomes if r is best]
    assert chosen == [Shape(2, 2)]
    assert outcomes[-1][1] == "target unreachable"
    with pytest.raises(InputError):
        size_dram_over([Shape(4, 2)], search)


def test_more_devices_need_less_dram_on_the_hand_instance():
    # one device, <= 8 ms: A k=10 + B k=0 (640 B) is 8.5 ms, so A k=10 + B k=20 on TT (1,920 B, 6 ms) again;
    # two devices of 2 cores: A's 8 TT rows on dev0 (4 ms), B's 15 alone on dev1 (7.5 ms): 7.5 ms at 0 B
    def search(shape: Shape):
        devs = [device(name=f"d{i}") for i in range(shape.devices)]
        return size_dram(lambda b: plan_at(b, devs), predicted, Target("batch-ms", 8), 10, 19_200, 64)

    best, outcomes = size_dram_over([Shape(1), Shape(2)], search)
    assert outcomes[0][1].needed_bytes == 1_920
    assert best is outcomes[1][1] and best.needed_bytes == 0


def test_ranges():
    assert parse_range("2", "--devices") == [2]
    assert parse_range("1-3", "--devices") == [1, 2, 3]
    assert parse_range("4,1,2", "--cores") == [1, 2, 4]
    for bad in ("0", "a", "2-x", ""):
        with pytest.raises(InputError):
            parse_range(bad, "--devices")

"""Ordered map on a thread pool: results in order, the look-ahead within its budget, early close cancels."""

from __future__ import annotations

import threading
import time

import pytest

from tracegen.parallel import ordered_map, thread_pool


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_results_come_in_order(workers):
    with thread_pool(workers) as pool:
        assert (pool is None) == (workers == 1)
        out = list(ordered_map(pool, lambda x: (time.sleep(0.001 * (x % 3)), x * x)[1], range(40)))
    assert out == [x * x for x in range(40)]


def test_work_ahead_stays_within_the_budget():
    lock, state = threading.Lock(), {"ahead": 0, "max": 0}

    def work(x):
        with lock:
            state["ahead"] += x
            state["max"] = max(state["max"], state["ahead"])
        return x

    with thread_pool(3) as pool:
        for x in ordered_map(pool, work, [5, 1, 7, 2, 9, 3, 3, 3], cost=lambda x: x, budget=10):
            time.sleep(0.005)
            with lock:
                state["ahead"] -= x
    # costs started but not yet consumed never exceed 10, except one item alone (9 with nothing else: allowed)
    assert state["max"] <= 10


def test_closing_early_cancels_what_has_not_started():
    started = []
    with thread_pool(2) as pool:
        it = ordered_map(pool, lambda x: (started.append(x), time.sleep(0.01))[0], range(100), budget=4)
        next(it)
        it.close()
    assert len(started) <= 6


def test_bad_worker_count():
    with pytest.raises(ValueError), thread_pool(0):
        pass

"""plans.assign: the core split against a loop over every split, device assignment against hand-derived optima
and an exhaustive search (never better than the optimum, each returned time what its assignment costs)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from plans.assign import assign_devices, split_times
from plans.machine import DeviceProfile


def device(cores=2, dram=10**9, ssd=10**12, name="d") -> DeviceProfile:
    return DeviceProfile(name, cores, dram, ssd, iops=1000.0, read_bytes_per_s=1e9, mem_core_lookups_per_s=1e3,
                         compute_core_flops_per_s=1e6)


def time_at(mem: float, comp: float, cores: int, m: int) -> float:
    """max(mem / m, comp / (cores - m)): work on no core takes forever, no work takes 0 s."""
    tm = 0.0 if mem == 0 else (math.inf if m == 0 else mem / m)
    tc = 0.0 if comp == 0 else (math.inf if m == cores else comp / (cores - m))
    return max(tm, tc)


def split_naive(mem: float, comp: float, cores: int) -> tuple[float, int]:
    """Try m = 0..cores memory cores in turn: the least time and its m."""
    return min((time_at(mem, comp, cores, m), m) for m in range(cores + 1))


def device_time_naive(work, device_of, d, cores) -> float:
    mine = [w for w, dd in zip(work, device_of) if dd == d]
    io, mem, comp = (sum(w[i] for w in mine) for i in range(3))
    return max(io, split_naive(mem, comp, cores)[0])


def test_split_times_equals_the_loop():
    # hand: 6 s of memory work and 2 s of compute on 4 cores: m=3 gives max(2, 2) = 2 s
    t, m = split_times(np.array([6.0]), np.array([2.0]), 4)
    assert (t[0], m[0]) == (2.0, 3)
    rng = np.random.default_rng(0)
    mem = rng.uniform(0, 5, 200) * (rng.random(200) > 0.2)  # some tables without memory work
    comp = rng.uniform(0, 5, 200) * (rng.random(200) > 0.2)
    for cores in (1, 2, 3, 8):
        t, m = split_times(mem, comp, cores)
        for i in range(mem.size):
            want_t, _ = split_naive(mem[i], comp[i], cores)
            assert t[i] == pytest.approx(want_t, rel=1e-12)
            assert time_at(mem[i], comp[i], cores, int(m[i])) == pytest.approx(want_t, rel=1e-12)  # m achieves it


def test_longest_first_then_a_swap_reaches_the_optimum():
    # IO only, 3 + 3 + 2 + 2 + 2 s on 2 devices: longest-first gives {3, 2, 2} = 7 against {3, 2} = 5; the swap of
    # a 3 for a 2 gives {3, 3} and {2, 2, 2}: 6 s, the optimum (15 s of work, the 3s cannot share a side with 2 twos)
    work = np.array([[3, 0, 0], [3, 0, 0], [2, 0, 0], [2, 0, 0], [2, 0, 0]], dtype=float)
    dev_of, mem_cores, t = assign_devices(work, np.zeros(5), np.zeros(5), [device(name="a"), device(name="b")])
    assert t == 6.0
    assert sorted(sorted(work[dev_of == d, 0].tolist()) for d in (0, 1)) == [[2, 2, 2], [3, 3]]
    assert mem_cores.shape == (2,)


def test_core_split_follows_the_work():
    # one device of 4 cores: 6 s of memory work and 2 s of compute -> 3 memory cores, 2 s
    work = np.array([[0.5, 6.0, 0.0], [0.0, 0.0, 2.0]])
    dev_of, mem_cores, t = assign_devices(work, np.zeros(2), np.zeros(2), [device(cores=4)])
    assert dev_of.tolist() == [0, 0] and mem_cores.tolist() == [3] and t == 2.0


def test_capacities_are_respected():
    # the big table fits only device 1's DRAM; the small ones then balance around it
    work = np.array([[4, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=float)
    dev_bytes = np.array([500, 10, 10, 10], dtype=float)
    devs = [device(dram=100, name="a"), device(dram=1000, name="b")]
    dev_of, _, t = assign_devices(work, dev_bytes, np.zeros(4), devs)
    assert dev_of[0] == 1 and t == 4.0  # {4} on b, {1, 1, 1} on a
    ssd = np.array([10, 900, 900, 10], dtype=float)  # two tables that cannot share device a's 1000 B of SSD
    dev_of, _, _ = assign_devices(work, np.zeros(4), ssd, [device(ssd=1000, name="a"), device(ssd=1000, name="b")])
    assert dev_of[1] != dev_of[2]


@pytest.mark.parametrize("seed", range(6))
def test_never_better_than_the_exhaustive_optimum(seed):
    rng = np.random.default_rng(seed)
    n, nd, cores = int(rng.integers(3, 7)), int(rng.integers(2, 4)), int(rng.integers(1, 4))
    work = rng.uniform(0, 3, (n, 3)) * (rng.random((n, 3)) > 0.3)
    devs = [device(cores=cores, name=f"d{i}") for i in range(nd)]
    dev_of, mem_cores, t = assign_devices(work, np.zeros(n), np.zeros(n), devs)
    best = min(max(device_time_naive(work, combo, d, cores) for d in range(nd))
               for combo in itertools.product(range(nd), repeat=n))
    # the returned time is what the returned assignment costs, and no assignment beats the optimum
    assert t == pytest.approx(max(device_time_naive(work, dev_of, d, cores) for d in range(nd)), rel=1e-12)
    assert t >= best * (1 - 1e-12)
    # each device's split is the best one for the work it got
    for d in range(nd):
        mine = work[dev_of == d]
        want = split_naive(mine[:, 1].sum(), mine[:, 2].sum(), cores)[0]
        assert time_at(mine[:, 1].sum(), mine[:, 2].sum(), cores, int(mem_cores[d])) == pytest.approx(want, rel=1e-12)

"""Capacity sizing: the smallest host-DRAM budget whose plan meets a target, under the cost model (modelled).

The search is a **bisection over solves**, not one MIP with the budget as its objective: every budget it
tries is planned by the ordinary pipeline (``plans.planner.plan_from_profile``: the MIP, its tie-break and
the cost model's prediction), and the prediction of that plan (``plan.predicted["perf"]["total_s"]``) is
compared with the target. Budgets lie on a grid of ``resolution_bytes`` steps from 0 to the all-DRAM size
(the last step may be shorter); the search first tries both ends (the all-DRAM end failing means the target
is unreachable), then halves the bracket ``(largest budget missing, smallest budget meeting]`` until it is
one step wide. That finds the smallest grid budget meeting the target whenever the predicted batch time
does not increase with the budget, which holds for optimal solves (a larger budget admits every plan of a
smaller one); a solve stopped by its time limit can break it, and :attr:`DramSizing.monotone` says whether
the explored curve kept it. The plan found usually holds less DRAM than its budget: that is the size
reported as needed (re-solving at it meets the target too: the same plan is still feasible).

Targets (:class:`Target`) are all turned into a bound on the predicted mean batch time:
``batch-ms`` directly; ``qps`` as ``batch_size / qps``; ``p99-ms`` as ``p99 / p99_factor``: the cost model
predicts a mean, and the 99th percentile is *modelled* as ``P99_OVER_MEAN`` times it (the p99/p50 ratios of
the replays in the README's meta-2021 table are 1.26-1.42; ``--check`` measures the real one).

:func:`size_dram_over` repeats the search for several device and core counts and keeps the smallest DRAM,
then the fewest devices, then the fewest cores. Library code: it never prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tracegen.errors import InputError

TARGET_KINDS = ("batch-ms", "qps", "p99-ms")
P99_OVER_MEAN = 1.3  # modelled p99 / mean batch time (README meta-2021 replays: p99/p50 of 1.26 to 1.42)
MONOTONE_SLACK = 1e-6  # relative: a larger budget's batch time above a smaller one's by more is a break


@dataclass(frozen=True)
class Target:
    """What the plan must reach: ``kind`` one of :data:`TARGET_KINDS`, ``value`` in ms or queries/s."""

    kind: str
    value: float
    p99_factor: float = P99_OVER_MEAN

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise InputError(f"unknown target {self.kind!r} (one of {', '.join(TARGET_KINDS)})")
        if isinstance(self.value, bool) or not (0 < self.value < math.inf):
            raise InputError(f"--target-{self.kind} must be a finite number > 0, got {self.value}")
        if not (1 <= self.p99_factor < math.inf):
            raise InputError(f"--p99-factor must be a finite number >= 1, got {self.p99_factor}")

    def batch_s_limit(self, batch_size: int) -> float:
        """The largest predicted mean batch time (seconds) that meets this target."""
        if self.kind == "batch-ms":
            return self.value * 1e-3
        if self.kind == "qps":
            return batch_size / self.value
        return self.value * 1e-3 / self.p99_factor

    def describe(self) -> str:
        if self.kind == "batch-ms":
            return f"mean batch time <= {self.value:g} ms"
        if self.kind == "qps":
            return f">= {self.value:,.0f} queries/s"
        return f"p99 batch time <= {self.value:g} ms (modelled as {self.p99_factor:g} x the mean)"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "p99_factor": self.p99_factor, "text": self.describe()}


@dataclass(frozen=True)
class SizePoint:
    """One solve of the search: its budget, the DRAM its plan holds, the predicted batch time (modelled)."""

    budget_bytes: int
    dram_used_bytes: int
    batch_s: float
    bottleneck: str
    meets: bool

    def to_dict(self) -> dict[str, Any]:
        return {"budget_bytes": self.budget_bytes, "dram_used_bytes": self.dram_used_bytes,
                "predicted_batch_s": self.batch_s, "bottleneck": self.bottleneck, "meets": self.meets}


@dataclass(frozen=True)
class DramSizing:
    """The result of one search. ``found``: the smallest grid budget meeting the target; ``below``: the
    largest budget tried that misses it (None when budget 0 already meets it); ``result``: what
    ``evaluate`` returned for ``found`` (a ``PlanResult`` when the pipeline evaluates)."""

    target: Target
    limit_s: float
    resolution_bytes: int
    max_bytes: int
    points: tuple[SizePoint, ...]  # every solve, by budget
    found: SizePoint
    below: SizePoint | None
    result: Any
    devices: int = 1
    cores: int | None = None

    @property
    def needed_bytes(self) -> int:
        """The DRAM the found plan holds: a budget this size meets the target (the same plan fits)."""
        return self.found.dram_used_bytes

    @property
    def solves(self) -> int:
        return len(self.points)

    @property
    def monotone(self) -> bool:
        """Whether the explored curve never rises with the budget (what the bisection assumes)."""
        ts = [p.batch_s for p in self.points]
        return all(b <= a * (1 + MONOTONE_SLACK) + 1e-15 for a, b in zip(ts, ts[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target.to_dict(), "limit_batch_s": self.limit_s,
                "resolution_bytes": self.resolution_bytes, "max_bytes": self.max_bytes,
                "found": self.found.to_dict(), "below": None if self.below is None else self.below.to_dict(),
                "needed_bytes": self.needed_bytes, "solves": self.solves, "monotone": self.monotone,
                "devices": self.devices, "cores": self.cores, "method": METHOD,
                "curve": [p.to_dict() for p in self.points], "basis": "modelled"}


METHOD = ("bisection over MIP solves on a grid of budgets (each budget planned by the full pipeline, the "
          "plan's predicted batch time compared with the target); assumes the predicted time does not rise "
          "with the budget, true for optimal solves")


def budget_grid(max_bytes: int, resolution_bytes: int) -> list[int]:
    """0, r, 2r, ... and ``max_bytes`` (the all-DRAM size) as the last point."""
    if resolution_bytes < 1:
        raise InputError(f"the sizing resolution must be >= 1 byte, got {resolution_bytes}")
    if max_bytes < 0:
        raise InputError(f"the all-DRAM size must be >= 0 bytes, got {max_bytes}")
    steps = -(-max_bytes // resolution_bytes)
    return [min(k * resolution_bytes, max_bytes) for k in range(steps + 1)]


def point_of(budget_bytes: int, predicted: dict, limit_s: float) -> SizePoint:
    """A :class:`SizePoint` from a plan's ``predicted`` section."""
    perf = predicted["perf"]
    t = float(perf["total_s"])
    return SizePoint(int(budget_bytes), int(predicted["storage"]["host_dram_bytes"]), t,
                     str(perf.get("bottleneck", "?")), t <= limit_s * (1 + 1e-12))


def size_dram(evaluate: Callable[[int], Any], predicted_of: Callable[[Any], dict], target: Target, batch_size: int,
              max_bytes: int, resolution_bytes: int) -> DramSizing:
    """Bisect the budget grid for the smallest budget whose plan meets ``target``.

    ``evaluate(budget_bytes)`` plans at a budget (returns anything); ``predicted_of(that)`` gives its plan's
    ``predicted`` section. Raises InputError (one line) when even the all-DRAM budget misses the target."""
    limit = target.batch_s_limit(batch_size)
    grid = budget_grid(max_bytes, resolution_bytes)
    seen: dict[int, tuple[SizePoint, Any]] = {}

    def at(i: int) -> SizePoint:
        b = grid[i]
        if b not in seen:
            r = evaluate(b)
            seen[b] = (point_of(b, predicted_of(r), limit), r)
        return seen[b][0]

    top = at(len(grid) - 1)
    if not top.meets:
        raise InputError(f"target unreachable: {target.describe()} needs a predicted batch time <= "
                         f"{limit * 1e3:.4g} ms, but even all-DRAM ({max_bytes:,} B) is predicted "
                         f"{top.batch_s * 1e3:.4g} ms (modelled; bottleneck {top.bottleneck})")
    lo, hi = -1, len(grid) - 1  # grid[lo] misses (-1: below the grid), grid[hi] meets
    if at(0).meets:
        hi = 0
    else:
        lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).meets:
            hi = mid
        else:
            lo = mid
    points = tuple(p for _, (p, _) in sorted(seen.items()))
    return DramSizing(target, limit, resolution_bytes, max_bytes, points, at(hi), None if lo < 0 else at(lo),
                      seen[grid[hi]][1])


@dataclass(frozen=True)
class Shape:
    """One device configuration to size for (``cores`` None: the profile's default)."""

    devices: int
    cores: int | None = None


def size_dram_over(shapes: Sequence[Shape], search: Callable[[Shape], DramSizing]) -> tuple[DramSizing, list]:
    """Run ``search`` for every shape; the sizing with the least DRAM needed, then the fewest devices, then
    the fewest cores, and every shape's outcome (a :class:`DramSizing` or the reason it is unreachable).
    Raises the last shape's InputError when no shape reaches the target."""
    outcomes: list[tuple[Shape, DramSizing | str]] = []
    last: InputError | None = None
    for shape in shapes:
        try:
            outcomes.append((shape, search(shape)))
        except InputError as e:
            outcomes.append((shape, e.problem))
            last = e
    ok = [(s, r) for s, r in outcomes if isinstance(r, DramSizing)]
    if not ok:
        raise last if last is not None else InputError("no device configuration to size")
    best = min(ok, key=lambda sr: (sr[1].needed_bytes, sr[0].devices, sr[0].cores or 0))[1]
    return best, outcomes


def parse_range(text: str, what: str) -> list[int]:
    """``"2"`` -> [2]; ``"1-4"`` -> [1, 2, 3, 4]; ``"1,2,8"`` -> [1, 2, 8]."""
    out: list[int] = []
    try:
        for part in str(text).split(","):
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InputError(f"{what} {text!r} is not a count, a range like 1-4 or a list like 1,2,8") from None
    if not out or min(out) < 1:
        raise InputError(f"{what} {text!r} must name counts >= 1")
    return sorted(set(out))

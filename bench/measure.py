"""Replays measured long enough, warm, and in rounds, so that their figures can be trusted.

One measured replay of a plan (:func:`measure_once`):

1. opens a fresh :class:`~emulator.replay.engine.Replayer` (its DRAM tier loaded, its kernels compiled or
   loaded from Numba's cache);
2. warms it up with ``warmup_batches`` batches that are not measured: the batches just before the measured
   range when there are (the last profiled ones, so an LRU cache starts as filled by serving), else the
   first measured ones. This pays the first-touch page faults of the tables and IO buffers before any clock
   starts;
3. replays the measured range on the same replayer, again and again if the range is shorter than
   ``min_batches`` batches or ``min_seconds`` seconds (a looped trace: said so in :func:`notes`), and keeps
   the replay summary, whose steady-state figures exclude the first measured batch.

:func:`measure_rounds` measures several plans in interleaved rounds (round-robin, the order reversed every
other round, so a drift of the machine's speed touches every plan alike) and :class:`Measurement` reports
per plan the median of the rounds' steady-state throughput and its spread (slowest to fastest round).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

from emulator.plan import Plan
from emulator.replay.counters import LatencyHistogram, ReplayStats
from emulator.replay.engine import ReplayConfig, Replayer
from tracegen.errors import InputError

FEW_BATCHES = 10  # a figure resting on fewer steady-state batches than this is flagged


@dataclass(frozen=True)
class MeasureConfig:
    """How long and how often each plan is measured."""

    min_batches: int = 20  # measured batches per round (the trace's batches looped if it has fewer)
    min_seconds: float = 2.0  # measured seconds per round and plan (batches looped until reached)
    warmup_batches: int = 3  # replayed before every measured run, not measured
    rounds: int = 3
    max_batches: int = 1_000_000  # a bound on looping when batches are very fast

    def check(self) -> None:
        if self.min_batches < 2:
            raise InputError(f"--min-batches must be >= 2 (the first batch is not steady state), got "
                             f"{self.min_batches}")
        if not 0 <= self.min_seconds < math.inf:
            raise InputError(f"--min-seconds must be a finite number >= 0, got {self.min_seconds}")
        if self.warmup_batches < 0:
            raise InputError(f"--warmup-batches must be >= 0, got {self.warmup_batches}")
        if self.rounds < 1:
            raise InputError(f"--rounds must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class BatchRange:
    """The distinct trace batches ``[start, start + count)`` a measurement replays."""

    start: int
    count: int


class TraceLoop:
    """What the replay engine reads from (``num_batches``, ``batch_size``, ``spec``, ``path``, ``batches``):
    the batches of ``batches`` in order, again and again, until at least ``min_batches`` were handed out and
    ``min_seconds`` have passed since the first (at most ``max_batches``).

    ``num_batches`` is the expected count (for progress and ETA); ``handed`` counts what was handed out.
    """

    def __init__(self, reader, batches: BatchRange, min_batches: int, min_seconds: float = 0.0,
                 max_batches: int | None = None, expected: int | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        if batches.count < 1 or batches.start < 0 or batches.start + batches.count > reader.num_batches:
            raise InputError(f"batches [{batches.start}, {batches.start + batches.count}) are not in the trace "
                             f"({reader.num_batches} batches)", reader.path)
        self._reader, self.range = reader, batches
        self.path, self.spec, self.batch_size = reader.path, reader.spec, reader.batch_size
        self.trace_id = reader.trace_id
        self.min_batches, self.min_seconds = int(min_batches), float(min_seconds)
        self.max_batches = max_batches if max_batches is not None else max(self.min_batches, 1_000_000)
        self.num_batches = max(self.min_batches, min(expected or 0, self.max_batches))
        self.clock = clock
        self.handed = 0

    def _more(self, t0: float | None) -> bool:
        if self.handed >= self.max_batches:
            return False
        if self.handed < self.min_batches:
            return True
        return t0 is not None and self.clock() - t0 < self.min_seconds

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator:
        """Every batch of the loop (the engine asks for ``[0, num_batches)``; the loop decides the count)."""
        if start != 0:
            raise ValueError("a TraceLoop is replayed from its start")
        t0 = None
        while self._more(t0):
            batch = self._reader.batch(self.range.start + self.handed % self.range.count)
            if t0 is None:
                t0 = self.clock()
            self.handed += 1
            yield batch

    @property
    def passes(self) -> float:
        return self.handed / self.range.count


@dataclass(frozen=True)
class RoundResult:
    """One measured replay: its summary (``ReplayStats.summary`` plus IO totals) and how it was run."""

    payload: dict[str, Any]
    warmup_batches: int
    warmup_first_batch_s: float | None  # the first batch of the warm-up: what a cold start pays
    batches: int
    distinct_batches: int

    @property
    def steady_qps(self) -> float | None:
        return self.payload.get("steady_qps")

    @property
    def passes(self) -> float:
        return self.batches / self.distinct_batches


def _warmup_range(measured: BatchRange, n: int) -> BatchRange | None:
    if n <= 0:
        return None
    if measured.start >= n:
        return BatchRange(measured.start - n, n)  # the batches just before: the plans' last profiled ones
    return BatchRange(measured.start, min(n, measured.count))


def measure_once(store, reader, plan: Plan, measured: BatchRange, replay: ReplayConfig, cfg: MeasureConfig,
                 watch: Callable[[ReplayStats], ContextManager] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> RoundResult:
    """Warm up a fresh replayer of ``plan``, then measure it on ``measured`` (looped as ``cfg`` asks).

    ``watch(stats)`` (e.g. a live view) is entered around the measured replay only. ``replay``'s
    ``start_batch`` and ``max_batches`` are ignored (the ranges decide)."""
    from dataclasses import replace

    rc = replace(replay, start_batch=0, max_batches=None)
    stats = ReplayStats()
    with Replayer(store, plan, rc, stats=stats, clock=clock) as rep:
        warm = _warmup_range(measured, cfg.warmup_batches)
        warm_first, expected = None, cfg.min_batches
        if warm is not None:
            loop = TraceLoop(reader, warm, warm.count, clock=clock)
            totals = rep.run(loop)
            warm_first = stats.steady_state(stats.snapshot())["first_batch_s"]
            per_batch = totals.get("steady_batch_s") or totals["elapsed_s"] / max(1, totals["batches"])
            if per_batch > 0:
                expected = max(cfg.min_batches, math.ceil(cfg.min_seconds / per_batch))
        loop = TraceLoop(reader, measured, cfg.min_batches, cfg.min_seconds, cfg.max_batches, expected, clock=clock)
        if rep.emulation is not None:
            rep.emulation.reset()  # the warm-up's batches are not measured, on either clock
        with (watch(stats) if watch is not None else contextlib.nullcontext()):
            totals = rep.run(loop)
        payload = stats.summary()
        if rep.emulation is not None:
            payload["emulated"] = rep.emulation.summary(reader.batch_size)
        payload["host_threads"] = rep.host_threads
        payload["pooled_by"] = "host" if rep.host_pooled else "devices"
        payload.update({
            "policy": plan.planner, "engine": rc.engine, "queue_depth": rc.queue_depth,
            "devices_used": len(plan.devices), "pipeline": rc.pipeline and not rc.verify,
            "ios": totals["ios"], "bytes_read": totals["bytes_read"], "dram_used_bytes": rep.dram_bytes,
            "dram_budget_bytes": plan.dram_budget_bytes,
        })
    return RoundResult(payload, 0 if warm is None else warm.count, warm_first, loop.handed, measured.count)


@dataclass(frozen=True)
class Measurement:
    """The rounds of one plan and the figures a table shows (steady state, median of the rounds)."""

    name: str
    plan: Plan
    rounds: tuple[RoundResult, ...]

    def _steady(self) -> list[float]:
        return [r.steady_qps for r in self.rounds if r.steady_qps]

    @property
    def median_qps(self) -> float | None:
        q = self._steady()
        return statistics.median(q) if q else None

    @property
    def qps_range(self) -> tuple[float, float] | None:
        q = self._steady()
        return (min(q), max(q)) if q else None

    @property
    def spread(self) -> float | None:
        """(fastest - slowest round) / median; 0 with one round."""
        q = self._steady()
        return (max(q) - min(q)) / statistics.median(q) if q else None

    @property
    def steady_batches(self) -> int:
        """Steady-state batches the median figure rests on (the fewest of any round)."""
        return min(int(r.payload.get("steady_batches") or 0) for r in self.rounds)

    def representative(self) -> RoundResult:
        """The round whose steady throughput is the median one (the lower middle for an even count)."""
        ranked = sorted(self.rounds, key=lambda r: r.steady_qps or 0.0)
        return ranked[(len(ranked) - 1) // 2]

    def latency(self) -> LatencyHistogram:
        """Every measured batch's latency, all rounds merged."""
        h = LatencyHistogram()
        for r in self.rounds:
            if r.payload.get("latency_hist"):
                h.merge(LatencyHistogram.from_dict(r.payload["latency_hist"]))
        return h

    def row(self) -> dict[str, Any]:
        """A flat-ish JSON row: the representative round's summary with the rounds' median figures on top."""
        rep = self.representative()
        p = dict(rep.payload)
        h = self.latency()
        batches = sum(r.batches for r in self.rounds)
        lo_hi = self.qps_range
        steady_lps = [r.payload.get("steady_lookups_per_s") for r in self.rounds if r.payload.get("steady_lookups_per_s")]
        p.update({
            "policy": self.name, "rounds": len(self.rounds), "steady_qps": self.median_qps,
            "steady_qps_min": lo_hi[0] if lo_hi else None, "steady_qps_max": lo_hi[1] if lo_hi else None,
            "qps_spread": self.spread, "steady_lookups_per_s": statistics.median(steady_lps) if steady_lps else None,
            "steady_batches": self.steady_batches, "measured_batches": batches,
            "distinct_batches": rep.distinct_batches, "passes": max(r.passes for r in self.rounds),
            "warmup_batches": rep.warmup_batches, "cold_first_batch_s": self.rounds[0].warmup_first_batch_s,
            "first_batch_s": statistics.median(r.payload.get("first_batch_s") or 0.0 for r in self.rounds),
            "ios_per_batch": sum(r.payload["ios"] for r in self.rounds) / batches,
            "bytes_read_per_batch": sum(r.payload["bytes_read"] for r in self.rounds) / batches,
            "latency_hist": h.to_dict(), "round_steady_qps": [r.steady_qps for r in self.rounds],
        })
        if h.count:
            p50, p95, p99 = h.percentiles([50, 95, 99])
            p["latency_s"] = {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": h.max_s,
                              "mean": h.mean_s}
        return p


def measure_rounds(store, reader, plans: Sequence[tuple[str, Plan]], measured: BatchRange, replay: ReplayConfig,
                   cfg: MeasureConfig, watch: Callable[[ReplayStats], ContextManager] | None = None,
                   on_step: Callable[[str], None] | None = None) -> list[Measurement]:
    """Measure every ``(name, plan)`` in ``cfg.rounds`` interleaved rounds; results in the order given."""
    cfg.check()
    results: dict[str, list[RoundResult]] = {name: [] for name, _ in plans}
    for r in range(cfg.rounds):
        order = list(plans) if r % 2 == 0 else list(reversed(plans))
        for name, plan in order:
            if on_step is not None:
                on_step(f"round {r + 1}/{cfg.rounds}: {name}")
            results[name].append(measure_once(store, reader, plan, measured, replay, cfg, watch))
    return [Measurement(name, plan, tuple(results[name])) for name, plan in plans]


def notes(measurements: Sequence[Measurement], cfg: MeasureConfig) -> list[str]:
    """What a reader of the figures must know: looped batches, figures on few batches."""
    out = []
    if not measurements:
        return out
    m0 = measurements[0]
    rep = m0.representative()
    out.append(f"steady state: the first measured batch of each run excluded (reported apart); "
               f"{rep.warmup_batches} warm-up batches replayed before every run, not measured; "
               f"median of {len(m0.rounds)} interleaved round(s), spread = (fastest - slowest) / median")
    looped = [m.name for m in measurements if max(r.passes for r in m.rounds) > 1.0]
    if looped:
        caches = [m.name for m in measurements if m.name in looped and any(t.lru_rows for t in m.plan.tables)]
        out.append(f"the {rep.distinct_batches} replayed trace batches were replayed again in a loop to reach "
                   f"{cfg.min_batches} batches and {cfg.min_seconds:g} s per run ({', '.join(looped)})"
                   + (f"; the LRU cache of {', '.join(caches)} sees repeated batches then, which flatters it: a "
                      f"longer trace gives a fairer figure" if caches else ""))
    few = [m.name for m in measurements if m.steady_batches < FEW_BATCHES]
    if few:
        out.append(f"fewer than {FEW_BATCHES} steady-state batches behind the figures of {', '.join(few)}: "
                   f"not a stable figure (raise --min-batches)")
    return out


def add_measure_args(p, *, rounds: int = MeasureConfig.rounds) -> None:
    """The measurement flags shared by ``compare`` and ``demo``."""
    d = MeasureConfig()
    p.add_argument("--min-batches", type=int, default=d.min_batches,
                   help=f"measured batches per policy and round, the replayed batches looped if fewer "
                        f"(default {d.min_batches})")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help=f"measured seconds per policy and round, batches looped until reached "
                        f"(default {d.min_seconds:g})")
    p.add_argument("--warmup-batches", type=int, default=d.warmup_batches,
                   help=f"batches replayed before every measured run, not measured (default {d.warmup_batches})")
    p.add_argument("--rounds", type=int, default=rounds,
                   help=f"interleaved rounds over the policies; the median is reported (default {rounds})")


def measure_config(args) -> MeasureConfig:
    cfg = MeasureConfig(min_batches=args.min_batches, min_seconds=args.min_seconds,
                        warmup_batches=args.warmup_batches, rounds=args.rounds)
    cfg.check()
    return cfg

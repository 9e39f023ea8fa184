"""Replay statistics: counters, a bounded latency histogram, and cheap snapshots.

The replay loop owns one :class:`ReplayStats` and records every batch into it;
a display thread calls :meth:`ReplayStats.snapshot` a few times a second and
gets an immutable :class:`Snapshot` (rich's ``render(snapshot)`` pattern: the
data knows nothing about the terminal).

Typical use by the engine::

    stats = ReplayStats()
    stats.start(total_batches=n, samples_per_batch=B, policy="mip", dram_budget_bytes=budget)
    for batch in trace:   # ... serve it, then:
        stats.record_batch(latency_s, B, batch.num_lookups, tiers={"dram": TierCounters(lookups=...), ...},
                           devices=[DeviceCounters("dev0", ios=...)], cores=[CoreCounters("dev0", "mem", 2, ...)],
                           tables=table_counters(prepared, work, tables))  # per table, optional
    stats.stop()
    payload = stats.summary()          # the ``replay`` result payload (see bench/cmd_report.py)

Counters passed to ``record_batch`` are per-batch *deltas*; engines that keep
cumulative counters subtract the previous value (``after - before``).

Conventions:

* A tier's ``lookups`` are the lookups sent to it. For a cache tier
  (:data:`CACHE_TIERS`, e.g. ``lru``) ``lookups`` are probes and ``hits`` the
  ones it served; a miss is counted again by the tier that then served it. The
  *share* of a tier is the fraction of all lookups it served (its hits for a
  cache, its lookups otherwise).
* A device's ``inflight_s`` is the integral of its number of in-flight IOs
  over time (equivalently the sum of the IOs' latencies), so its average queue
  depth is ``inflight_s / elapsed_s``; ``busy_s`` is the time with at least
  one IO in flight.
* A core group's busy share is ``busy_s / (elapsed_s * n_cores)``.
* MB are decimal (1e6 bytes).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


from emulator.replay.latency import LatencyHistogram, LatencySummary  # noqa: F401  (part of this API)
from emulator.replay.table_stats import BUSY_BASIS, TableCounters, TableTotals, TableView
from emulator.tiers import COUNTED_TIERS, LRU

TIER_NAMES = COUNTED_TIERS
CACHE_TIERS = (LRU,)
CORE_KINDS = ("mem", "compute")
WINDOW_S = 1.0
_WINDOW_SLOTS = 10
_BYTES_PER_MB = 1e6
TOP_TABLES = 8  # tables a snapshot carries (the busiest; the summary has every table)


# --- counters (per-batch deltas, added up by ReplayStats) ------------------------------

class _Counters:
    """``+`` and ``-`` field by field; identity fields (``_IDENTITY``) must match, ``n_cores`` is a setting."""

    _IDENTITY: tuple[str, ...] = ()

    def _combine(self, o: Any, sign: int) -> Any:
        if type(o) is not type(self):
            return NotImplemented
        for k in self._IDENTITY:
            if getattr(self, k) != getattr(o, k):
                raise ValueError(f"cannot combine {type(self).__name__} of {k} {getattr(self, k)!r} "
                                 f"with {getattr(o, k)!r}")
        vals = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(o, f.name)
            if f.name in self._IDENTITY:
                vals[f.name] = a
            elif f.name == "n_cores":
                vals[f.name] = b if sign > 0 else a
            else:
                vals[f.name] = a + sign * b
        return type(self)(**vals)

    def __add__(self, o: Any) -> Any:
        return self._combine(o, 1)

    def __sub__(self, o: Any) -> Any:  # cumulative counters -> per-batch delta: ``after - before``
        return self._combine(o, -1)


@dataclass(frozen=True)
class TierCounters(_Counters):
    """Work done by one tier: lookups sent to it, cache hits, bytes moved, busy time."""

    lookups: int = 0
    hits: int = 0
    bytes: int = 0
    busy_s: float = 0.0


@dataclass(frozen=True)
class DeviceCounters(_Counters):
    """IO done by one device: reads, bytes, busy time and the in-flight time integral."""

    _IDENTITY = ("name",)
    name: str
    ios: int = 0
    bytes: int = 0
    busy_s: float = 0.0
    inflight_s: float = 0.0


@dataclass(frozen=True)
class CoreCounters(_Counters):
    """Work done by one core group (``kind`` ``mem`` or ``compute`` cores of a device);
    adding takes the latest ``n_cores``."""

    _IDENTITY = ("device", "kind")
    device: str
    kind: str
    n_cores: int = 1
    busy_s: float = 0.0
    lookups: int = 0
    bytes: int = 0
    ios: int = 0

    def __post_init__(self) -> None:
        if self.kind not in CORE_KINDS:
            raise ValueError(f"core kind {self.kind!r} is not one of {CORE_KINDS}")


# --- snapshot -----------------------------------------------------------------------

@dataclass(frozen=True)
class TierView:
    name: str
    lookups: int
    hits: int
    bytes: int
    busy_s: float
    share: float                 # fraction of all lookups this tier served
    hit_ratio: float | None      # hits / lookups for cache tiers, else None


@dataclass(frozen=True)
class DeviceView:
    name: str
    ios: int
    bytes: int
    iops: float
    mb_per_s: float
    avg_queue_depth: float
    busy_share: float


@dataclass(frozen=True)
class CoreView:
    device: str
    kind: str
    n_cores: int
    busy_s: float
    lookups: int
    bytes: int
    ios: int
    busy_share: float


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the replay so far ("now" = the last ``window_s`` seconds)."""

    elapsed_s: float = 0.0
    batches_done: int = 0
    batches_total: int = 0
    eta_s: float | None = None
    samples_done: int = 0
    lookups_done: int = 0
    qps_now: float = 0.0
    qps_avg: float = 0.0
    lookups_per_s_now: float = 0.0
    lookups_per_s_avg: float = 0.0
    latency: LatencySummary = LatencySummary()
    latency_recent: LatencySummary = LatencySummary()
    tiers: tuple[TierView, ...] = ()
    devices: tuple[DeviceView, ...] = ()
    cores: tuple[CoreView, ...] = ()
    tables: tuple[TableView, ...] = ()  # the TOP_TABLES busiest tables (emulator.replay.table_stats)
    tables_total: int = 0  # tables with per-table figures
    dram_used_bytes: int = 0
    dram_budget_bytes: int | None = None
    policy: str = ""
    samples_per_batch: int = 0
    failed_batches: int = 0
    window_s: float = WINDOW_S
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- the accumulator ------------------------------------------------------------------

class _Slot:
    """Batches that finished within one ``window_s / 10`` slice of time (for the "now" figures)."""

    __slots__ = ("key", "samples", "lookups", "hist")

    def __init__(self, key: int, hist: LatencyHistogram):
        self.key, self.samples, self.lookups, self.hist = key, 0, 0, hist


class ReplayStats:
    """Mutable accumulator owned by the replay loop; :meth:`snapshot` is thread-safe and cheap.

    The "now" figures cover the batches that finished in the last ``window_s``
    seconds, counted in whole slots of ``window_s / 10``: the window really
    spans between ``window_s`` and ``1.1 * window_s`` (never more than the
    elapsed time), so its cost does not grow with the batch rate.
    """

    def __init__(self, window_s: float = WINDOW_S):
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.window_s = float(window_s)
        self._slot_s = self.window_s / _WINDOW_SLOTS
        self._lock = threading.Lock()
        self.start(0, 0, "", None)
        self._started = False

    def start(self, total_batches: int, samples_per_batch: int, policy: str, dram_budget_bytes: int | None,
              clock: Callable[[], float] = time.perf_counter) -> None:
        """Reset every counter and start the elapsed-time clock."""
        with self._lock:
            self._clock, self._t0, self._t_end, self._started = clock, clock(), None, True
            self.total_batches, self.samples_per_batch = int(total_batches), int(samples_per_batch)
            self.policy, self.dram_budget_bytes = str(policy), dram_budget_bytes
            self.dram_used_bytes = self.batches_done = self.failed_batches = self.samples_done = self.lookups_done = 0
            self.latency = LatencyHistogram()
            # running sums as plain lists (cheaper to add into than frozen dataclasses)
            self._tiers: dict[str, list] = {}    # name -> [lookups, hits, bytes, busy_s]
            self._devices: dict[str, list] = {}  # name -> [ios, bytes, busy_s, inflight_s]
            self._cores: dict[tuple[str, str], list] = {}  # (device, kind) -> [n_cores, busy_s, lookups, bytes, ios]
            self._tables = TableTotals()
            self._slots: collections.deque[_Slot] = collections.deque()
            self._first: tuple[float, int, int] | None = None  # first batch: (completed at, samples, lookups)

    def record_batch(self, latency_s: float, samples: int, lookups: int, *,
                     tiers: Mapping[str, TierCounters] | None = None,
                     devices: Iterable[DeviceCounters] = (), cores: Iterable[CoreCounters] = (),
                     tables: TableCounters | None = None) -> None:
        """Add one finished batch (counters are this batch's deltas; ``tables``: its per-table figures,
        :func:`emulator.replay.table_stats.table_counters`)."""
        with self._lock:
            now = self._clock()
            self.latency.record(latency_s)
            samples, lookups = int(samples), int(lookups)  # plain ints, even when handed numpy scalars
            if self.batches_done == 0:
                self._first = (now - self._t0, samples, lookups)
            self.batches_done += 1
            self.samples_done += samples
            self.lookups_done += lookups
            for name, c in (tiers or {}).items():
                _add_into(self._tiers.setdefault(name, [0, 0, 0, 0.0]),
                          (int(c.lookups), int(c.hits), int(c.bytes), float(c.busy_s)))
            for d in devices:
                _add_into(self._devices.setdefault(d.name, [0, 0, 0.0, 0.0]),
                          (int(d.ios), int(d.bytes), float(d.busy_s), float(d.inflight_s)))
            for c in cores:
                acc = self._cores.setdefault((c.device, c.kind), [0, 0.0, 0, 0, 0])
                acc[0] = int(c.n_cores)  # a setting, not a sum
                _add_into(acc, (0, float(c.busy_s), int(c.lookups), int(c.bytes), int(c.ios)))
            if tables is not None:
                self._tables.add(tables)
            key = math.floor(now / self._slot_s)
            if not self._slots or self._slots[-1].key != key:
                self._slots.append(_Slot(key, LatencyHistogram()))
                self._prune(now)
            slot = self._slots[-1]
            slot.samples += samples
            slot.lookups += lookups
            slot.hist.record(latency_s)

    def record_failure(self) -> None:
        """A batch that failed: it counts towards progress, not towards served samples."""
        with self._lock:
            self.batches_done += 1
            self.failed_batches += 1

    def set_dram_used(self, used_bytes: int) -> None:
        with self._lock:
            self.dram_used_bytes = int(used_bytes)

    def stop(self) -> None:
        """Freeze the elapsed time (snapshots after this describe the finished run)."""
        with self._lock:
            if self._t_end is None:
                self._t_end = self._clock()

    def _prune(self, now: float) -> None:  # drop slots that ended before the window
        while self._slots and (self._slots[0].key + 1) * self._slot_s <= now - self.window_s:
            self._slots.popleft()

    def latency_histogram(self) -> LatencyHistogram:
        with self._lock:
            return self.latency.copy()

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = self._t_end if self._t_end is not None else self._clock()
            self._prune(now)
            elapsed = max(0.0, now - self._t0) if self._started else 0.0
            hist = self.latency.copy()
            recent = LatencyHistogram()
            for slot in self._slots:
                recent.merge(slot.hist)
            w_samples = sum(slot.samples for slot in self._slots)
            w_lookups = sum(slot.lookups for slot in self._slots)
            w_start = self._slots[0].key * self._slot_s if self._slots else now - self.window_s
            tiers = {k: TierCounters(*v) for k, v in self._tiers.items()}
            devices = {k: DeviceCounters(k, *v) for k, v in self._devices.items()}
            cores = {k: CoreCounters(k[0], k[1], *v) for k, v in self._cores.items()}
            done, failed, total = self.batches_done, self.failed_batches, self.total_batches
            samples, lookups = self.samples_done, self.lookups_done
            dram_used, finished = self.dram_used_bytes, self._t_end is not None
            top_tables, n_tables = self._tables.views(TOP_TABLES), self._tables.num_tables
        span = min(now - w_start, elapsed)
        eta = None
        if done and total:
            eta = 0.0 if done >= total or finished else (total - done) * elapsed / done
        return Snapshot(
            elapsed_s=elapsed, batches_done=done, batches_total=total, eta_s=eta,
            samples_done=samples, lookups_done=lookups,
            qps_now=_rate(w_samples, span), qps_avg=_rate(samples, elapsed),
            lookups_per_s_now=_rate(w_lookups, span), lookups_per_s_avg=_rate(lookups, elapsed),
            latency=_summary(hist), latency_recent=_summary(recent),
            tiers=_tier_views(tiers, lookups), devices=_device_views(devices, elapsed),
            cores=_core_views(cores, elapsed), tables=top_tables, tables_total=n_tables, dram_used_bytes=dram_used, dram_budget_bytes=self.dram_budget_bytes,
            policy=self.policy, samples_per_batch=self.samples_per_batch, failed_batches=failed,
            window_s=self.window_s, finished=finished)

    def summary(self) -> dict[str, Any]:
        """The ``replay`` result payload (schema in bench/cmd_report.py), without ``verify``."""
        s = self.snapshot()
        lat = s.latency
        return {
            "policy": s.policy, "batches": s.batches_done, "failed_batches": s.failed_batches,
            "samples": s.samples_done, "lookups": s.lookups_done, "elapsed_s": s.elapsed_s,
            "qps": s.qps_avg, "lookups_per_s": s.lookups_per_s_avg,
            "latency_s": {"p50": lat.p50_s, "p95": lat.p95_s, "p99": lat.p99_s, "max": lat.max_s, "mean": lat.mean_s},
            "latency_hist": self.latency_histogram().to_dict(),
            "tiers": {t.name: {k: v for k, v in dataclasses.asdict(t).items() if k != "name"} for t in s.tiers},
            "devices": [dataclasses.asdict(d) for d in s.devices],
            "cores": [dataclasses.asdict(c) for c in s.cores],
            "tables": self.table_rows(), "tables_busy_basis": BUSY_BASIS,
            "dram_used_bytes": s.dram_used_bytes, "dram_budget_bytes": s.dram_budget_bytes,
            **self.steady_state(s),
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """Every table's totals (the summary's ``tables`` list; empty if the engine recorded none)."""
        with self._lock:
            return self._tables.rows()

    def steady_state(self, s: Snapshot) -> dict[str, Any]:
        """Throughput with the first batch excluded (it alone pays first-touch costs), and the first batch on
        its own: ``first_batch_s`` (start to its completion), ``steady_batches``, ``steady_s`` (from its
        completion to the end), ``steady_qps``, ``steady_lookups_per_s`` (None with fewer than 2 batches)."""
        with self._lock:
            first = self._first
        if first is None:
            return {"first_batch_s": None, "steady_batches": 0, "steady_s": None, "steady_qps": None,
                    "steady_lookups_per_s": None}
        at, samples, lookups = first
        span = s.elapsed_s - at
        n = s.batches_done - s.failed_batches - 1
        ok = n >= 1 and span > 0
        return {"first_batch_s": at, "steady_batches": max(0, n), "steady_s": span if ok else None,
                "steady_qps": (s.samples_done - samples) / span if ok else None,
                "steady_lookups_per_s": (s.lookups_done - lookups) / span if ok else None}


def _add_into(acc: list, values: tuple) -> None:
    for i, v in enumerate(values):
        acc[i] += v


def _rate(amount: float, seconds: float) -> float:
    return float(amount) / seconds if seconds > 0 else 0.0


def _summary(h: LatencyHistogram) -> LatencySummary:
    if h.count == 0:
        return LatencySummary()
    p50, p95, p99 = h.percentiles([50, 95, 99])
    return LatencySummary(h.count, float(p50), float(p95), float(p99), h.max_s, h.mean_s)


def _tier_order(name: str) -> tuple[int, str]:
    return (TIER_NAMES.index(name) if name in TIER_NAMES else len(TIER_NAMES), name)


def _tier_views(tiers: Mapping[str, TierCounters], lookups_done: int) -> tuple[TierView, ...]:
    out = []
    for name in sorted(tiers, key=_tier_order):
        c = tiers[name]
        is_cache = name in CACHE_TIERS or c.hits > 0
        served = c.hits if is_cache else c.lookups
        out.append(TierView(name, c.lookups, c.hits, c.bytes, c.busy_s, share=_rate(served, lookups_done),
                            hit_ratio=_rate(c.hits, c.lookups) if is_cache else None))
    return tuple(out)


def _device_views(devices: Mapping[str, DeviceCounters], elapsed_s: float) -> tuple[DeviceView, ...]:
    return tuple(
        DeviceView(d.name, d.ios, d.bytes, iops=_rate(d.ios, elapsed_s),
                   mb_per_s=_rate(d.bytes / _BYTES_PER_MB, elapsed_s), avg_queue_depth=_rate(d.inflight_s, elapsed_s), busy_share=_rate(d.busy_s, elapsed_s))
        for d in (devices[k] for k in sorted(devices)))


def _core_views(cores: Mapping[tuple[str, str], CoreCounters], elapsed_s: float) -> tuple[CoreView, ...]:
    return tuple(
        CoreView(c.device, c.kind, c.n_cores, c.busy_s, c.lookups, c.bytes, c.ios,
                 busy_share=_rate(c.busy_s, elapsed_s * c.n_cores))
        for c in (cores[k] for k in sorted(cores)))

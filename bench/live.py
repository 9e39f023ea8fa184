"""The live replay dashboard: a pure ``render(snapshot)``, a one-line fallback, and the view.

``render`` and ``plain_line`` are pure functions of an :class:`emulator.replay.counters.Snapshot`
(rich's ``live.py`` pattern: the display never touches the data). :class:`LiveView`
drives them from a background thread, so the replay loop never waits for the
terminal: with ``live=True`` it refreshes a rich ``Live`` a few times a second;
with ``live=False`` (not a terminal, ``--no-live``) it prints one plain line
every ``plain_interval_s`` seconds and a last one when the view closes.

Use::

    stats = ReplayStats()
    with LiveView(stats.snapshot, stderr_console(), live=is_live()):
        replay(..., stats=stats)
"""

from __future__ import annotations

import io
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bench.common import format_bytes
from bench.tables import fit_table, ms_cell
from emulator.replay.counters import CoreCounters, DeviceCounters, ReplayStats, Snapshot, TierCounters
from emulator.replay.table_stats import TableView

_BAR_WIDTH = 16  # the whole dashboard fits an 80-column terminal


# --- formatting ------------------------------------------------------------------------

def si(x: float, digits: int = 1) -> str:
    """``12345.6`` -> ``"12.3 k"``; ``999`` -> ``"999.0"``."""
    if x is None or not math.isfinite(x):
        return "-"
    for div, unit in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= div:
            return f"{x / div:.{digits}f}{unit}"
    return f"{x:.{digits}f}"


def ms(seconds: float, unit: bool = True) -> str:
    """``0.00123`` -> ``"1.23 ms"`` (``"1.23"`` without the unit); NaN -> ``"-"``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:.2f}{' ms' if unit else ''}"


def hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def pct(fraction: float | None) -> str:
    return "-" if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:.1f}%"


def _ms_cell(seconds: float | None) -> str:
    return "-" if seconds is None or not math.isfinite(seconds) else ms_cell(seconds)


def _count(n: int) -> str:
    """A count in at most 7 characters: ``9,999`` whole, then ``12.3 k``, ``1.2 M``."""
    return f"{n:,}" if n < 10_000 else si(n)


def _dram_text(s: Snapshot) -> str:
    used = format_bytes(s.dram_used_bytes)
    if not s.dram_budget_bytes:
        return f"{used} (no budget)"
    return f"{used} / {format_bytes(s.dram_budget_bytes)} ({pct(s.dram_used_bytes / s.dram_budget_bytes)})"


# --- the renderables ---------------------------------------------------------------

def _progress_line(s: Snapshot) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    parts: list[RenderableType] = [Text(s.policy or "replay", style="bold")]
    if s.batches_total:
        parts.append(ProgressBar(total=s.batches_total, completed=min(s.batches_done, s.batches_total),
                                 width=_BAR_WIDTH))
        parts.append(Text(f"{s.batches_done:,}/{s.batches_total:,} ({pct(s.batches_done / s.batches_total)})"))
    else:
        parts.append(Text(f"{s.batches_done:,} batches"))
    parts.append(Text(f"{hms(s.elapsed_s)} elapsed, eta {'done' if s.finished else hms(s.eta_s)}"))
    if s.failed_batches:
        parts.append(Text(f"{s.failed_batches:,} failed", style="bold red"))
    for _ in parts:
        grid.add_column()
    grid.add_row(*parts)
    return grid


def _throughput_panel(s: Snapshot) -> Panel:
    t = Table.grid(padding=(0, 2))
    t.add_column()
    t.add_column(justify="right")
    t.add_column(justify="right")
    t.add_row("", Text(f"now ({s.window_s:g} s)", style="dim"), Text("avg", style="dim"))
    t.add_row("queries/s", si(s.qps_now), si(s.qps_avg))
    t.add_row("lookups/s", si(s.lookups_per_s_now), si(s.lookups_per_s_avg))
    t.add_row("total", f"{s.samples_done:,} queries", f"{s.lookups_done:,} lookups")
    return Panel(t, title="throughput", expand=True)


def _latency_panel(s: Snapshot) -> Panel:
    """p50, p99 and max (p95 is in the summary): narrow enough for half of an 80-column terminal."""
    t = Table.grid(padding=(0, 2))
    t.add_column(no_wrap=True)
    for _ in range(3):
        t.add_column(justify="right", no_wrap=True)
    t.add_row("", *(Text(h, style="dim") for h in ("p50", "p99", "max")))
    for label, lat in ((f"now ({s.window_s:g} s)", s.latency_recent), ("overall", s.latency)):
        t.add_row(label, *(_ms_cell(v) for v in (lat.p50_s, lat.p99_s, lat.max_s)))
    return Panel(t, title="batch latency (ms)", expand=True)


def _tiers_table(s: Snapshot) -> Table:
    t = Table(title="tiers", title_justify="left", expand=True)
    for h in ("tier", "lookups", "share", "hit ratio", "bytes", "busy s"):
        t.add_column(h, justify="left" if h == "tier" else "right")
    for v in s.tiers:
        t.add_row(v.name, f"{v.lookups:,}", pct(v.share), pct(v.hit_ratio), format_bytes(v.bytes), f"{v.busy_s:.2f}")
    return t


def _devices_table(s: Snapshot) -> Table:
    t = Table(title="devices", title_justify="left", expand=True)
    for h in ("device", "IOPS", "MB/s", "avg QD", "busy", "IOs"):
        t.add_column(h, justify="left" if h == "device" else "right")
    for d in s.devices:
        t.add_row(d.name, si(d.iops), f"{d.mb_per_s:.1f}", f"{d.avg_queue_depth:.1f}", pct(d.busy_share), f"{d.ios:,}")
    return t


def _cores_table(s: Snapshot) -> Table:
    t = Table(title="cores", title_justify="left", expand=True)
    for h in ("device", "kind", "cores", "busy", "lookups", "IOs"):
        t.add_column(h, justify="left" if h in ("device", "kind") else "right")
    for c in s.cores:
        t.add_row(c.device, c.kind, str(c.n_cores), pct(c.busy_share), f"{c.lookups:,}", f"{c.ios:,}")
    return t


def tables_table(views: Sequence[TableView], total: int, label: str = "") -> Table:
    """Per-table figures: lookups served, their split (DRAM, raw pages, TT rebuilt; LRU hits per probe), bytes
    read, unique TT rows rebuilt and busy seconds (measured kernel time, shared by lookups: an attribution).
    ``total``: tables in the run (the title says "top n of total" when only some are shown). A long table
    name wraps; no figure is cut at 80 columns."""
    cells = []
    for v in views:
        n = v.lookups or 1
        cells.append([v.name, _count(v.lookups), f"{v.dram / n:.0%}", f"{v.ssd_raw / n:.0%}", f"{v.ssd_tt / n:.0%}",
                      f"{v.lru_hits / v.lru:.0%}" if v.lru else "-", format_bytes(v.bytes_read), _count(v.tt_rows),
                      f"{v.busy_s:.2f}"])
    which = f"top {len(views)} of {total} tables" if total > len(views) else "tables"
    t = fit_table(f"{label}{which} by busy s (measured, shared by lookups)",
                  ("table", "lookups", "dram", "raw", "TT", "LRU hit", "read", "TT rows", "busy s"), cells)
    t.columns[0].min_width, t.columns[0].overflow = None, "fold"
    return t


def tables_panel(s: Snapshot) -> Table:
    """The busiest tables of a snapshot (:data:`emulator.replay.counters.TOP_TABLES` of them)."""
    return tables_table(s.tables, s.tables_total)


def _dram_line(s: Snapshot) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    parts: list[RenderableType] = [Text("DRAM", style="bold")]
    if s.dram_budget_bytes:
        parts.append(ProgressBar(total=s.dram_budget_bytes, completed=min(s.dram_used_bytes, s.dram_budget_bytes),
                                 width=_BAR_WIDTH))
    parts.append(Text(_dram_text(s)))
    for _ in parts:
        grid.add_column()
    grid.add_row(*parts)
    return grid


def render(snapshot: Snapshot) -> RenderableType:
    """The dashboard for one snapshot: a pure function (no clock, no IO)."""
    s = snapshot
    panels = Table.grid(expand=True, padding=(0, 1))
    panels.add_column(ratio=1)
    panels.add_column(ratio=1)
    panels.add_row(_throughput_panel(s), _latency_panel(s))
    parts: list[RenderableType] = [_progress_line(s), panels]
    if s.tiers:
        parts.append(_tiers_table(s))
    if s.devices:
        parts.append(_devices_table(s))
    if s.cores:
        parts.append(_cores_table(s))
    if s.tables:
        parts.append(tables_panel(s))
    parts.append(_dram_line(s))
    return Group(*parts)


def plain_line(snapshot: Snapshot) -> str:
    """One line for logs and non-terminals: batches, qps, p50/p99, tier shares, IOPS, DRAM."""
    s = snapshot
    total = f"/{s.batches_total:,}" if s.batches_total else ""
    parts = [f"{s.policy or 'replay'}: batch {s.batches_done:,}{total}",
             f"{si(s.qps_now)} q/s (avg {si(s.qps_avg)})",
             f"{si(s.lookups_per_s_avg)} lookups/s",
             f"p50 {ms(s.latency.p50_s)} p99 {ms(s.latency.p99_s)}"]
    if s.tiers:
        parts.append(" ".join(f"{t.name} {pct(t.share)}" for t in s.tiers))
    if s.devices:
        parts.append(" ".join(f"{d.name} {si(d.iops)} IOPS qd {d.avg_queue_depth:.1f}" for d in s.devices))
    if s.tables:
        parts.append(f"busiest table {s.tables[0].name} ({pct(s.tables[0].busy_share)} of busy s, attributed)")
    parts.append(f"DRAM {_dram_text(s)}")
    if s.failed_batches:
        parts.append(f"{s.failed_batches:,} failed")
    parts.append("done" if s.finished else f"eta {hms(s.eta_s)}")
    return " | ".join(parts)


# --- the view ----------------------------------------------------------------------

class LiveView:
    """Show a replay's progress from a background thread while the replay runs.

    ``snapshot_fn`` is called only from the view's thread (and once more on
    exit). ``clock`` decides when a plain line is due; the thread itself wakes
    every ``1 / refresh_per_s`` seconds of real time. With ``background=False``
    no thread is started and the owner calls :meth:`tick` (tests do this with
    a fake clock). ``transient``: the live display is cleared when the view closes (for the many short runs
    of ``compare`` and ``demo``, which print their own tables). A failure of the display is reported once on the console and
    never interrupts the replay.
    """

    def __init__(self, snapshot_fn: Callable[[], Snapshot], console: Console, *, refresh_per_s: float = 4.0,
                 live: bool = True, plain_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 background: bool = True, transient: bool = False):
        if not refresh_per_s > 0 or not plain_interval_s > 0:
            raise ValueError("refresh_per_s and plain_interval_s must be > 0")
        self.snapshot_fn, self.console, self.live = snapshot_fn, console, bool(live)
        self.refresh_per_s, self.plain_interval_s = float(refresh_per_s), float(plain_interval_s)
        self.clock, self.background, self.transient = clock, background, transient
        self.error: BaseException | None = None
        self.lines_printed = 0
        self.refreshes = 0
        self.display_cpu_s = 0.0  # CPU time spent snapshotting and rendering (it holds the GIL meanwhile)
        self._live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_due = 0.0
        self._tick_lock = threading.Lock()

    def __enter__(self) -> "LiveView":
        self._next_due = self.clock() + self.plain_interval_s
        if self.live:
            self._live = Live(console=self.console, auto_refresh=False, transient=self.transient,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        if self.background:
            self._thread = threading.Thread(target=self._run, name="screc-live-view", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        period = 1.0 / self.refresh_per_s
        while not self._stop.wait(period):
            self.tick()

    def tick(self, final: bool = False) -> None:
        """Refresh the live display, or print a plain line if one is due (always when ``final``)."""
        if self.error is not None:
            return
        with self._tick_lock:
            cpu0 = time.thread_time()
            try:
                if self._live is not None:
                    self._live.update(render(self.snapshot_fn()), refresh=True)
                    self.refreshes += 1
                    return
                now = self.clock()
                if not final and now < self._next_due:
                    return
                while self._next_due <= now:
                    self._next_due += self.plain_interval_s
                self.console.print(Text(plain_line(self.snapshot_fn())), soft_wrap=True, highlight=False)
                self.lines_printed += 1
            except Exception as e:  # a display bug must not kill the replay it watches
                self.error = e
            finally:
                self.display_cpu_s += time.thread_time() - cpu0

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.tick(final=True)
        if self._live is not None:
            self._live.stop()
        if self.error is not None:
            self.console.print(Text(f"live view stopped: {type(self.error).__name__}: {self.error}"),
                               soft_wrap=True, highlight=False)


# --- overhead measurement -------------------------------------------------------------

@dataclass(frozen=True)
class Overhead:
    """Wall time of a synthetic replay loop: bare, recording stats, and recording under the view."""

    n_batches: int
    rows_per_batch: int
    bare_s: float
    stats_s: float
    view_s: float
    refreshes: int
    display_cpu_s: float  # CPU time of the view's snapshots and renders during the timed view run

    @property
    def cpu_ms_per_refresh(self) -> float:
        return self.display_cpu_s / max(1, self.refreshes) * 1e3

    @property
    def display_core_share(self) -> float:
        """Fraction of one core the display used (it holds the GIL meanwhile): a bound on its cost
        to a replay loop that holds the GIL itself, robust to other load on the machine."""
        return self.display_cpu_s / self.view_s

    @property
    def stats_overhead_pct(self) -> float:
        return (self.stats_s / self.bare_s - 1.0) * 100.0

    @property
    def view_overhead_pct(self) -> float:
        """Cost of the live display on top of recording stats."""
        return (self.view_s / self.stats_s - 1.0) * 100.0


def _fake_replay(n_batches: int, stats: ReplayStats | None, rng: np.random.Generator, rows_per_batch: int,
                 tables: int = 0) -> float:
    table = rng.standard_normal((1 << 16, 32), dtype=np.float32)
    per_table = None
    if tables:  # per-table figures of every batch, as the engine's table_counters would hand them
        from emulator.replay.table_stats import TableCounters

        z = np.zeros(tables, np.int64)
        per_table = TableCounters(tuple(f"t{i}" for i in range(tables)),
                                  np.tile(np.array([448, 64, 0, 0], np.int64), (tables, 1)) // tables, z, z + 4096, z + 1,
                                  z, np.full(tables, 1e-5 / tables))
    rows = rng.integers(0, table.shape[0], size=(n_batches, rows_per_batch))
    out = np.empty(32, dtype=np.float32)
    if stats is not None:
        stats.start(n_batches, 64, "synthetic", 1 << 30)
    t0 = time.perf_counter()
    for i in range(n_batches):
        tb = time.perf_counter()
        np.sum(table[rows[i]], axis=0, out=out)  # the "work": a gather and pool of rows_per_batch rows
        if stats is not None:
            stats.record_batch(time.perf_counter() - tb, 64, rows_per_batch,
                               tiers={"dram": TierCounters(lookups=448, bytes=448 * 128),
                                      "ssd_raw": TierCounters(lookups=64, bytes=64 * 4096, busy_s=1e-5)},
                               devices=[DeviceCounters("dev0", ios=64, bytes=64 * 4096, busy_s=1e-5, inflight_s=3e-5)],
                               cores=[CoreCounters("dev0", "mem", 2, busy_s=1e-5, lookups=64, ios=64)], tables=per_table)
            stats.set_dram_used(i)
    return time.perf_counter() - t0


def measure_overhead(n_batches: int = 10_000, repeats: int = 3, refresh_per_s: float = 4.0, seed: int = 0,
                     rows_per_batch: int = 512, tables: int = 0) -> Overhead:
    """Time a synthetic replay loop bare, with :class:`ReplayStats`, and with a live :class:`LiveView`.

    Each fake batch gathers and sums ``rows_per_batch`` random rows of a 64Ki x 32 fp32
    table in NumPy (512 rows: about 0.1 ms here), then records counters like an engine would (with
    ``tables`` > 0 also per-table figures of that many tables, which the view shows in its tables panel).

    The view renders into an in-memory terminal-like console (ANSI codes and
    all) at ``refresh_per_s``. The best of ``repeats`` interleaved runs is kept
    per variant. Wall-clock figures: expect noise on a busy machine.
    """
    rng = np.random.default_rng(seed)
    _fake_replay(100, ReplayStats(), rng, rows_per_batch, tables)  # warm up caches and code paths
    best = {"bare": math.inf, "stats": math.inf, "view": math.inf}
    refreshes, display_cpu_s = 0, 0.0
    for _ in range(repeats):
        best["bare"] = min(best["bare"], _fake_replay(n_batches, None, rng, rows_per_batch))
        best["stats"] = min(best["stats"], _fake_replay(n_batches, ReplayStats(), rng, rows_per_batch, tables))
        stats = ReplayStats()
        console = Console(file=io.StringIO(), force_terminal=True, width=100, color_system="truecolor")
        with LiveView(stats.snapshot, console, refresh_per_s=refresh_per_s, live=True) as view:
            view_s = _fake_replay(n_batches, stats, rng, rows_per_batch, tables)
        if view_s < best["view"]:
            best["view"], refreshes, display_cpu_s = view_s, view.refreshes, view.display_cpu_s
    return Overhead(n_batches, rows_per_batch, best["bare"], best["stats"], best["view"], refreshes, display_cpu_s)


if __name__ == "__main__":  # python -m bench.live [rows_per_batch [n_batches [repeats]]]: the overhead figures
    import sys

    argv = [int(a) for a in sys.argv[1:5]]  # python -m bench.live [rows [batches [repeats [tables]]]]
    o = measure_overhead(**dict(zip(("rows_per_batch", "n_batches", "repeats", "tables"), argv)))
    print(f"{o.rows_per_batch} rows per batch, {argv[3] if len(argv) > 3 else 0} tables with per-table figures, "
          f"{o.n_batches} batches: bare {o.bare_s:.3f} s, +stats {o.stats_s:.3f} s ({o.stats_overhead_pct:+.1f}%), "
          f"+live view {o.view_s:.3f} s ({o.view_overhead_pct:+.1f}% over stats, {o.refreshes} refreshes, "
          f"{o.cpu_ms_per_refresh:.1f} ms CPU each = {o.display_core_share * 100:.1f}% of a core)")

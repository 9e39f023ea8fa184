"""Tests for bench.live: the dashboard's content on a fixed-width console, the plain line, the view."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from bench.live import LiveView, hms, measure_overhead, ms, plain_line, render, si
from emulator.replay.counters import CoreView, DeviceView, LatencySummary, ReplayStats, Snapshot, TierView
from emulator.replay.table_stats import TableCounters, TableView


def _snapshot(**over) -> Snapshot:
    base = dict(
        elapsed_s=12.0, batches_done=3, batches_total=10, eta_s=28.0, samples_done=500, lookups_done=5000,
        qps_now=12_345.6, qps_avg=41.67, lookups_per_s_now=2.5e6, lookups_per_s_avg=416.7,
        latency=LatencySummary(3, 0.020, 0.040, 0.040, 0.040, 0.070 / 3),
        latency_recent=LatencySummary(2, 0.0205, 0.041, 0.041, 0.041, 0.03),
        tiers=(TierView("dram", 3300, 0, 0, 0.0, 0.66, None),
               TierView("ssd_raw", 1100, 0, 1100 * 4096, 1.5, 0.22, None),
               TierView("lru", 1000, 600, 0, 0.0, 0.12, 0.6)),
        devices=(DeviceView("dev0", 1200, 1200 * 4096, 100.0, 0.4096, 2.0, 0.5),),
        cores=(CoreView("dev0", "mem", 2, 12.0, 1200, 0, 1200, 0.5),
               CoreView("dev0", "compute", 4, 12.0, 0, 0, 0, 0.25)),
        dram_used_bytes=512 << 20, dram_budget_bytes=1 << 30, policy="screc", samples_per_batch=200)
    base.update(over)
    return Snapshot(**base)


def _text(renderable, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_formatters():
    assert si(12_345.6) == "12.3 k" and si(2.5e6) == "2.5 M" and si(41.67) == "41.7" and si(float("nan")) == "-"
    assert ms(0.02) == "20.00 ms" and ms(float("nan")) == "-"
    assert hms(28.0) == "0:00:28" and hms(3725) == "1:02:05" and hms(None) == "?"


def test_render_contains_the_figures():
    out = _text(render(_snapshot()))
    for expected in (
        "screc", "3/10 (30.0%)", "0:00:12 elapsed, eta 0:00:28",   # progress line
        "12.3 k", "41.7", "2.5 M", "416.7",                       # throughput now / avg
        "batch latency (ms)", "20.0", "40.0", "20.5", "41.0",     # overall p50, p99/max; recent p50, p99
        "66.0%", "22.0%", "12.0%", "60.0%",                       # tier shares and the lru hit ratio
        "4.30 MiB",                                               # ssd_raw bytes: 1100 * 4096 B = 4.30 MiB
        "100.0", "0.4", "2.0",                                    # dev0 IOPS, MB/s, average queue depth
        "compute", "25.0%",                                       # core group busy share
        "DRAM", "512.00 MiB / 1.00 GiB (50.0%)",
    ):
        assert expected in out, expected
    assert max(len(line) for line in out.splitlines()) <= 100


def test_render_fits_80_columns_without_cutting_a_figure():
    # a long policy name, a 4-digit batch count and latencies up to 99.6 s: still whole at 80 columns
    from emulator.replay.counters import LatencySummary as L

    snap = _snapshot(policy="static-topk", batches_done=1056, batches_total=1056,
                     latency=L(3, 1.2345, 12.3456, 93.4567, 99.5678, 1.0))
    text = _text(render(snap), width=80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for whole in ("static-topk", "1,056/1,056 (100.0%)", "eta 0:00:28", "1234  93457  99568", "12.3 k", "416.7",
                  "4.30 MiB", "512.00 MiB / 1.00 GiB (50.0%)"):
        assert whole in text, whole  # 1.2345 s = 1234 ms, 93.4567 s = 93457 ms, 99.5678 s = 99568 ms


def test_render_of_an_empty_snapshot():
    out = _text(render(Snapshot()))
    assert "0 batches" in out and "no budget" in out and "tiers" not in out


def test_render_marks_failures_and_finish():
    out = _text(render(_snapshot(failed_batches=2, finished=True, eta_s=0.0)))
    assert "2 failed" in out and "eta done" in out


def test_plain_line():
    line = plain_line(_snapshot())
    assert "\n" not in line
    for expected in ("screc: batch 3/10", "12.3 k q/s (avg 41.7)", "p50 20.00 ms p99 40.00 ms",
                     "dram 66.0% ssd_raw 22.0% lru 12.0%", "dev0 100.0 IOPS qd 2.0",
                     "DRAM 512.00 MiB / 1.00 GiB (50.0%)", "eta 0:00:28"):
        assert expected in line, expected


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_view_prints_on_its_interval():
    clock = FakeClock()
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system=None)
    calls = []

    def snap() -> Snapshot:
        calls.append(clock.t)
        return _snapshot(batches_done=len(calls))

    with LiveView(snap, console, live=False, plain_interval_s=5.0, clock=clock, background=False) as view:
        for t in (1.0, 5.0, 7.0, 10.2, 30.0):  # due at 5, 10, then 30 (15, 20, 25 were missed, not replayed)
            clock.t = t
            view.tick()
    lines = buf.getvalue().splitlines()
    assert calls == [5.0, 10.2, 30.0, 30.0]  # the last one is the closing line
    assert len(lines) == 4 and view.lines_printed == 4
    assert lines[0].startswith("screc: batch 1/10") and lines[-1].startswith("screc: batch 4/10")


def test_live_view_renders_from_its_thread_and_on_exit():
    stats = ReplayStats()
    stats.start(5, 8, "all-dram", 1 << 20)
    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=True, color_system=None)
    with LiveView(stats.snapshot, console, refresh_per_s=50, live=True) as view:
        for _ in range(5):
            stats.record_batch(1e-3, 8, 64)
    assert view.error is None and view.refreshes >= 1  # at least the closing refresh
    assert "5/5 (100.0%)" in buf.getvalue()


def test_transient_view_clears_its_display():
    outputs = {}
    for transient in (False, True):
        stats = ReplayStats()
        stats.start(5, 8, "all-dram", 1 << 20)
        buf = io.StringIO()
        console = Console(file=buf, width=100, force_terminal=True, color_system=None)
        with LiveView(stats.snapshot, console, refresh_per_s=50, live=True, transient=transient):
            for _ in range(5):
                stats.record_batch(1e-3, 8, 64)
        outputs[transient] = buf.getvalue()
    erase_line = "\x1b[2K"  # the terminal code rich sends to clear each line of a transient display
    assert outputs[True].rstrip().endswith(erase_line) and not outputs[False].rstrip().endswith(erase_line)


def test_a_failing_display_never_stops_the_replay():
    console = Console(file=io.StringIO(), width=100, color_system=None)

    def broken() -> Snapshot:
        raise RuntimeError("boom")

    with LiveView(broken, console, live=False, clock=FakeClock(), background=False) as view:
        pass
    assert isinstance(view.error, RuntimeError)
    assert "live view stopped: RuntimeError: boom" in console.file.getvalue()
    with pytest.raises(ValueError):
        LiveView(broken, console, refresh_per_s=0)


def test_measure_overhead_helper_runs():
    o = measure_overhead(n_batches=200, repeats=1, refresh_per_s=20, tables=30)
    assert o.n_batches == 200 and o.bare_s > 0 and o.stats_s > 0 and o.view_s > 0 and o.refreshes >= 1
    assert isinstance(o.view_overhead_pct, float) and o.display_core_share >= 0  # figures only, no timing asserts


def _table_views() -> tuple[TableView, ...]:
    # served = dram + raw + TT + hits: 600 + 300 + 0 + 100 = 1000; 100 hits of 400 probes; 2.5 GiB read
    return (TableView(7, "clicks", 1000, 600, 300, 0, 400, 100, 5 << 29, 300, 0, 1.5, 0.75),
            TableView(2, "a_very_long_embedding_table_name", 12_345_678, 2_345_678, 0, 10_000_000, 0, 0, 0, 0,
                      1_234_567, 123.456, 0.25))


def test_top_tables_panel_fits_80_columns_without_cutting_a_figure():
    text = _text(render(_snapshot(tables=_table_views(), tables_total=856)), width=80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "top 2 of 856 tables by busy s (measured, shared by lookups)" in text
    (row,) = [line for line in text.splitlines() if line.startswith("clicks")]
    # 1,000 lookups: 60% dram, 30% raw, 0% TT, LRU hit 100/400 = 25%, 2.50 GiB, no TT rows, 1.50 busy s
    assert row.split() == ["clicks", "1,000", "60%", "30%", "0%", "25%", "2.50", "GiB", "0", "1.50"]
    lines = text.splitlines()
    (k,) = [i for i, line in enumerate(lines) if line.startswith("a_very_long")]
    # 12.3 M lookups: 19% dram, 81% TT, no LRU, nothing read, 1.2 M TT rows; the long name wraps, never cut
    assert lines[k].split()[1:] == ["12.3", "M", "19%", "0%", "81%", "-", "0", "B", "1.2", "M", "123.46"]
    assert lines[k].split()[0] + lines[k + 1].strip() == "a_very_long_embedding_table_name"  # folded, whole
    line = plain_line(_snapshot(tables=_table_views(), tables_total=856))
    assert "| busiest table clicks (75.0% of busy s, attributed) | DRAM" in line


def test_tables_panel_only_with_per_table_figures():
    assert "tables by busy s" not in _text(render(_snapshot()))
    stats = ReplayStats()
    stats.start(1, 4, "x", None)
    z = np.zeros(2, np.int64)
    stats.record_batch(1e-3, 4, 8, tables=TableCounters(("a", "b"), np.array([[5, 0, 0, 0], [0, 3, 0, 0]]), z,
                                                        np.array([0, 8192]), z, z, np.array([0.5, 0.25])))
    text = _text(render(stats.snapshot()), width=80)
    assert "tables by busy s" in text and "top 2" not in text  # every table shown: no "top n of m"
    lines = text.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("a "))) < lines.index(next(x for x in lines
                                                                                       if x.startswith("b ")))

"""``screc report RUN... [-o DIR]``: PNG plots from result files (matplotlib, Agg backend).

Result files are written by :func:`bench.results.write_run`. The payloads this
command reads (the schema ``replay`` and ``compare`` follow):

``replay`` payload (one policy on one trace; :meth:`emulator.replay.counters.ReplayStats.summary`
produces every key but ``verify`` and ``access_curves``)::

    policy           str    name used in legends ("all-dram", "all-ssd", "all-tt", "lru", "static-topk", "screc", ...)
    batches, failed_batches, samples, lookups            int   (samples = queries)
    elapsed_s, qps, lookups_per_s                        float (qps = samples / elapsed_s)
    first_batch_s, steady_batches, steady_s, steady_qps, steady_lookups_per_s
                     the first batch on its own, and the rates without it (plots use steady_qps when present)
    store, trace     optional paths (plot titles name them; else the run's store_id / trace_id)
    latency_s        {p50, p95, p99, max, mean}           per-batch latency in seconds
    latency_hist     LatencyHistogram.to_dict()           buckets, for the latency CDF
    tiers            {tier: {lookups, hits, bytes, busy_s, share, hit_ratio}}
    devices          [{name, ios, bytes, iops, mb_per_s, avg_queue_depth, busy_share}]
    cores            [{device, kind, n_cores, busy_s, lookups, bytes, ios, busy_share}]
    dram_used_bytes, dram_budget_bytes                   int (budget may be null)
    verify           optional, free-form, e.g. {"checked_batches", "max_abs_error", "ok"}
    access_curves    optional {table: {"k": [top-k row counts], "share": [fraction of the
                     table's lookups that its k most accessed rows serve]}}
    tables           optional [{index, name, lookups, dram, ssd_raw, ssd_tt, lru, lru_hits, bytes_read, ios,
                     tt_rows, busy_s, busy_share}] per embedding table, in table order
                     (emulator.replay.table_stats.TableView): lookups served, lookups per tier (lru = cache
                     probes), hits, bytes and reads of its pages, unique TT rows rebuilt, and busy_s: measured
                     kernel time attributed to tables by lookups (``tables_busy_basis`` says how)

``compare`` and ``demo`` payloads (policies side by side on one trace)::

    dram_budget_bytes  int | null
    store, trace       paths (shared by the rows)
    rows               [replay payload, ...]              one per policy: the median round's payload
                       (bench.measure.Measurement.row) with the rounds' figures on top: steady_qps (median),
                       steady_qps_min/max, qps_spread, round_steady_qps, rounds, measured_batches,
                       distinct_batches, passes, warmup_batches, cold_first_batch_s, ios_per_batch,
                       bytes_read_per_batch, latency_s/latency_hist over every measured batch; compare adds
                       notes, prediction {predicted_batch_s, basis "modelled", measured_batch_s}, speedups
    notes              what the figures rest on (warm-up, looping, few batches)
    access_curves      optional, as above (the trace's; shared by the rows)

or, for a sweep over DRAM budgets, ``{"sweep": [{"dram_budget_bytes": b, "rows": [...]}, ...],
"access_curves": ...}``. A row without its own ``dram_budget_bytes`` takes its entry's.

Plots (each drawn when the runs carry its data): ``throughput.png`` (queries/s
by policy, bars), ``latency_cdf.png`` (per-batch latency CDF by policy),
``throughput_vs_budget.png`` (queries/s against DRAM budget, a line per policy;
needs two budgets or more), ``tier_share.png`` (share of lookups per tier,
stacked bars) and ``access_curves.png`` (share of lookups served by the top-k
rows, per table, log x). ``--tables N`` also prints the N busiest tables of every replay row.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.common import emit_json, add_json_arg, ensure_writable_dir, ensure_writable_file, stdout_console
from bench.results import load_run
from emulator.replay.counters import TIER_NAMES, LatencyHistogram
from tracegen.atomic import atomic_path
from tracegen.errors import InputError

PLOT_FILES = ("throughput.png", "latency_cdf.png", "throughput_vs_budget.png", "tier_share.png", "access_curves.png")
_GIB = 1024 ** 3
_EXAMPLE = """example:
  screc report runs/20260101T120000Z-compare-1a2b3c4d --out-dir plots/
  screc report runs/*-replay-* --out-dir plots/replays   (several runs on one set of plots)
  screc report runs/20260101T120000Z-replay-1a2b3c4d --tables 10   (also print the 10 busiest tables)"""


# --- collecting rows -------------------------------------------------------------------

def replay_rows(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every replay payload a run carries (a replay, a compare, or a compare sweep), flattened.

    Each row gets ``run_id`` and a ``dram_budget_bytes`` (its own, else its sweep entry's or
    compare payload's). Rows that are not dicts raise :class:`InputError`.
    """
    payload = run["payload"]
    where = os.path.join(run.get("run_dir", "?"), "result.json")
    if "sweep" in payload:
        groups = payload["sweep"]
    elif "rows" in payload:
        groups = [payload]
    elif "qps" in payload or "policy" in payload:
        groups = [{"dram_budget_bytes": payload.get("dram_budget_bytes"), "rows": [payload]}]
    else:
        groups = []
    out = []
    for g in groups if isinstance(groups, list) else [None]:
        if not isinstance(g, dict) or not isinstance(g.get("rows"), list):
            raise InputError("payload 'sweep'/'rows' entries must be objects holding a 'rows' list", where)
        for row in g["rows"]:
            if not isinstance(row, dict):
                raise InputError("every entry of 'rows' must be a replay payload object", where)
            r = dict(row)
            if r.get("dram_budget_bytes") is None:
                r["dram_budget_bytes"] = g.get("dram_budget_bytes")
            r["run_id"] = run.get("run_id", "")
            for key, id_key in (("store", "store_id"), ("trace", "trace_id")):
                if not r.get(key):
                    r[key] = payload.get(key) or (run[id_key][:12] if run.get(id_key) else None)
            r.setdefault("policy", "?")
            out.append(r)
    return out


def access_curves(run: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """``{table: {"k": [...], "share": [...]}}`` of a run (payload level, else its first row's)."""
    curves = run["payload"].get("access_curves")
    if curves is None:
        for row in replay_rows(run):
            if row.get("access_curves"):
                curves = row["access_curves"]
                break
    return curves if isinstance(curves, dict) else {}


def _labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Policy names, with the budget and run added only where needed to tell rows apart."""
    budgets = {r.get("dram_budget_bytes") for r in rows}
    labels = []
    for r in rows:
        label = str(r.get("policy"))
        if len(budgets) > 1 and r.get("dram_budget_bytes") is not None:
            label += f" @ {r['dram_budget_bytes'] / _GIB:.3g} GiB"
        labels.append(label)
    counts = Counter(labels)
    return [f"{lab} ({r['run_id'][-8:]})" if counts[lab] > 1 else lab for lab, r in zip(labels, rows)]


def qps_of(row: Mapping[str, Any]) -> float:
    """The row's steady-state queries/s (first batch excluded) when it has one, else its average."""
    steady = _num(row.get("steady_qps"))
    return steady if math.isfinite(steady) else _num(row.get("qps"))


def _short(path: Any) -> str:
    """The last two parts of a path (``stores/ck``, ``demo/trace.h5``): a store is often called ``store``."""
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-2] not in ("/", ".") else parts[-1]


def _names(values: Sequence[Any], what: str) -> str:
    names = sorted({_short(v) for v in values if v})
    if not names:
        return f"{what} unknown"
    return f"{what} {names[0]}" if len(names) == 1 else f"{len(names)} {what}s"


def context(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the plotted figures were measured on: ``store ck, trace ck.h5, DRAM budget 64.00 MiB``."""
    from bench.common import format_bytes

    budgets = sorted({int(b) for b in (_num(r.get("dram_budget_bytes")) for r in rows) if math.isfinite(b)})
    if not budgets:
        budget = "no DRAM budget"
    elif len(budgets) == 1:
        budget = f"DRAM budget {format_bytes(budgets[0])}"
    else:
        budget = f"DRAM budgets {format_bytes(budgets[0])} to {format_bytes(budgets[-1])}"
    return f"{_names([r.get('store') for r in rows], 'store')}, {_names([r.get('trace') for r in rows], 'trace')}, " \
           f"{budget}"


def _title(ax, what: str, rows: Sequence[Mapping[str, Any]]) -> None:
    ax.set_title(f"{what}\n{context(rows)}", fontsize=10)


def _num(x: Any) -> float:
    """A float, or NaN for anything missing or not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


# --- the plots ---------------------------------------------------------------------------

def _figure(width_in: float = 8.0, height_in: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_throughput(rows, labels, path: Path) -> Path | None:
    pts = [(lab, qps_of(r)) for lab, r in zip(labels, rows) if math.isfinite(qps_of(r))]
    if not pts:
        return None
    fig, ax = _figure(max(6.0, 0.9 * len(pts) + 2))
    policies = list(dict.fromkeys(str(r.get("policy")) for r in rows if math.isfinite(qps_of(r))))
    colors = [f"C{policies.index(str(r.get('policy'))) % 10}" for r in rows if math.isfinite(qps_of(r))]
    bars = ax.bar(range(len(pts)), [q for _, q in pts], color=colors)
    ax.bar_label(bars, labels=[f"{q:,.0f}" for _, q in pts], fontsize=8)
    ax.set_xticks(range(len(pts)), [lab for lab, _ in pts], rotation=30 if len(pts) > 4 else 0, ha="right"
                  if len(pts) > 4 else "center")
    steady = all(math.isfinite(_num(r.get("steady_qps"))) for r in rows if math.isfinite(qps_of(r)))
    ax.set_ylabel("steady-state throughput (queries/s)" if steady else "throughput (queries/s)")
    _title(ax, "Throughput by policy", rows)
    return _save(fig, path)


def plot_latency_cdf(rows, labels, path: Path) -> Path | None:
    fig, ax = _figure()
    drawn = 0
    for lab, r in zip(labels, rows):
        hist = r.get("latency_hist")
        if isinstance(hist, dict) and hist.get("count"):
            try:
                h = LatencyHistogram.from_dict(hist)
            except ValueError as e:
                raise InputError(f"bad latency_hist for policy {r.get('policy')}: {e}", r.get("run_id")) from None
            x_s, y = h.cdf()
            ax.step([h.min_s * 1e3] + list(x_s * 1e3), [0.0] + list(y), where="post", label=lab)
            drawn += 1
        elif isinstance(r.get("latency_s"), dict):  # only percentiles stored: draw them as points
            lat = r["latency_s"]
            pts = [(_num(lat.get(k)) * 1e3, q) for k, q in (("p50", .5), ("p95", .95), ("p99", .99), ("max", 1.0))]
            pts = [(x, q) for x, q in pts if math.isfinite(x) and x > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{lab} (percentiles)")
                drawn += 1
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_xlabel("batch latency (ms, log scale)")
    ax.set_ylabel("fraction of batches")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    _title(ax, "Batch latency CDF by policy", rows)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_throughput_vs_budget(rows, path: Path) -> Path | None:
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        b, q = _num(r.get("dram_budget_bytes")), qps_of(r)
        if math.isfinite(b) and math.isfinite(q):
            lines[str(r.get("policy"))].append((b / _GIB, q))
    if len({b for pts in lines.values() for b, _ in pts}) < 2:
        return None
    fig, ax = _figure()
    for policy, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([b for b, _ in pts], [q for _, q in pts], marker="o", label=policy)
    ax.set_xlabel("DRAM budget (GiB)")
    ax.set_ylabel("throughput (queries/s)")
    _title(ax, "Throughput against DRAM budget", rows)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_tier_share(rows, labels, path: Path) -> Path | None:
    rows_labels = [(lab, r["tiers"]) for lab, r in zip(labels, rows) if isinstance(r.get("tiers"), dict) and r["tiers"]]
    if not rows_labels:
        return None
    names = sorted({t for _, tiers in rows_labels for t in tiers},
                   key=lambda t: (TIER_NAMES.index(t) if t in TIER_NAMES else len(TIER_NAMES), t))
    fig, ax = _figure(max(6.0, 0.9 * len(rows_labels) + 2))
    bottom = [0.0] * len(rows_labels)
    for name in names:
        vals = []
        for _, tiers in rows_labels:
            v = _num((tiers.get(name) or {}).get("share")) * 100 if isinstance(tiers.get(name), dict) else 0.0
            vals.append(v if math.isfinite(v) else 0.0)
        ax.bar(range(len(rows_labels)), vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows_labels)), [lab for lab, _ in rows_labels], rotation=30 if len(rows_labels) > 4 else 0,
                  ha="right" if len(rows_labels) > 4 else "center")
    ax.set_ylabel("share of lookups (%)")
    _title(ax, "Lookups served per tier", rows)
    ax.legend(title="tier", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_access_curves(runs, path: Path) -> Path | None:
    fig, ax = _figure()
    drawn = 0
    with_curves = [run for run in runs if access_curves(run)]
    for run in with_curves:
        for table, curve in sorted(access_curves(run).items()):
            k, share = (curve.get("k"), curve.get("share")) if isinstance(curve, dict) else (None, None)
            if not isinstance(k, list) or not isinstance(share, list) or len(k) != len(share) or not k:
                raise InputError(f"access curve of table {table} needs equal-length 'k' and 'share' lists",
                                 run.get("run_dir"))
            label = table if len(with_curves) == 1 else f"{table} ({run.get('run_id', '')[-8:]})"
            ax.plot([_num(x) for x in k], [_num(s) * 100 for s in share], marker=".", label=label)
            drawn += 1
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_xlabel("top-k most accessed rows (k, log scale)")
    ax.set_ylabel("share of the table's lookups (%)")
    ax.set_ylim(0, 102)
    rows = [r for run in with_curves for r in replay_rows(run)]
    traces = [r.get("trace") for r in rows] or [run["payload"].get("trace") for run in with_curves]
    ax.set_title(f"Hot-set access curves\n{_names(traces, 'trace')}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if drawn > 8 else 1)
    return _save(fig, path)


def make_report(run_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Load the runs and draw every plot their data supports into ``out_dir``; returns the files written."""
    runs = [load_run(p) for p in run_paths]  # bad files are reported first, whatever is installed
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise InputError("plots need matplotlib: pip install 'screc[plots]'") from None
    rows = [r for run in runs for r in replay_rows(run)]
    has_curves = any(access_curves(run) for run in runs)
    if not rows and not has_curves:
        raise InputError("nothing to plot: the runs carry no replay rows and no access curves",
                         runs[0]["run_dir"] if len(runs) == 1 else None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = _labels(rows)
    made = [plot_throughput(rows, labels, out / PLOT_FILES[0]),
            plot_latency_cdf(rows, labels, out / PLOT_FILES[1]),
            plot_throughput_vs_budget(rows, out / PLOT_FILES[2]),
            plot_tier_share(rows, labels, out / PLOT_FILES[3]),
            plot_access_curves(runs, out / PLOT_FILES[4])]
    from bench.report_timeline import TIMELINE_FILE, plot_timeline

    made.append(plot_timeline(rows, out / TIMELINE_FILE, _figure, _save))
    return [p for p in made if p is not None]


def top_tables(row: Mapping[str, Any], n: int) -> list:
    """The ``n`` busiest tables of a replay row (busy s, then lookups, then index), as
    :class:`emulator.replay.table_stats.TableView`; [] when the row has no per-table figures."""
    from emulator.replay.table_stats import TableView

    where = os.path.join(str(row.get("run_id") or "?"), "result.json")
    entries = row.get("tables") or []
    if not isinstance(entries, list):
        raise InputError("payload 'tables' must be a list of per-table objects", where)
    try:
        views = [TableView(**e) for e in entries]
    except TypeError as e:  # a missing or unknown key, or not an object
        raise InputError(f"a 'tables' entry is not a per-table object ({e})", where) from None
    def num(x: Any) -> float:
        f = _num(x)
        return f if math.isfinite(f) else 0.0

    return sorted(views, key=lambda v: (-num(v.busy_s), -num(v.lookups), num(v.index)))[:n]


def tables_report(run_paths: Sequence[str | os.PathLike], n: int) -> list[tuple[str, int, list]]:
    """(label, tables in the run, the ``n`` busiest tables) of every replay row of the runs that has per-table
    figures."""
    rows = [r for p in run_paths for r in replay_rows(load_run(p))]
    return [(label, len(r.get("tables") or []), top_tables(r, n))
            for label, r in zip(_labels(rows), rows) if r.get("tables")]


def default_out_dir(run_paths: Sequence[str], runs_dir: str = "runs", now: datetime | None = None) -> Path:
    """``<run>/plots`` for one run; ``runs/report-<UTC time>`` for several."""
    if len(run_paths) == 1:
        p = Path(run_paths[0])
        return (p if p.is_dir() else p.parent) / "plots"
    now = now or datetime.now(timezone.utc)
    return Path(runs_dir) / f"report-{now:%Y%m%dT%H%M%SZ}"


# --- the command -----------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="draw PNG plots from result files (throughput, latency CDF, tiers, hot sets)",
        description="Draw PNG plots from replay/compare/demo result files: throughput by policy, latency CDF, "
                    "throughput against DRAM budget, per-tier shares and hot-set access curves. Every title "
                    "names the store, trace and DRAM budget the figures were measured on.",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run directory under runs/ or its result.json")
    p.add_argument("--out-dir", "-o", dest="out_dir", metavar="DIR", default=None,
                   help="where to write the PNGs (default: RUN/plots for one run, runs/report-<time> for several; "
                        "-o is kept as an alias)")
    p.add_argument("--tables", type=int, default=0, metavar="N",
                   help="also print the N busiest tables of every replay (per-table lookups by tier, LRU hits, "
                        "bytes read, TT rows, busy time); default 0: none")
    add_json_arg(p, "the plot files written (and the tables printed)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir(args.runs)
    ensure_writable_dir(out_dir)
    ensure_writable_file(args.json)
    if args.tables < 0:
        raise InputError(f"--tables must be >= 0, got {args.tables}")
    tables = tables_report(args.runs, args.tables) if args.tables else []
    files = make_report(args.runs, out_dir)
    doc: dict[str, Any] = {"out_dir": str(out_dir), "files": [str(f) for f in files]}
    if args.tables:
        doc["tables"] = [{"label": label, "tables_total": total, "top": [v.to_dict() for v in views]}
                         for label, total, views in tables]
    if emit_json(args.json, doc):
        return 0
    console = stdout_console()
    if args.tables:
        from bench.live import tables_table

        for label, total, views in tables:
            console.print(f"{label}:", highlight=False, markup=False)
            console.print(tables_table(views, total))
        if not tables:
            console.print("no per-table figures in these runs", highlight=False)
    console.print(f"wrote {len(files)} plot(s) to {out_dir}/", highlight=False)
    for f in files:
        console.print(f"  {f.name}", highlight=False)
    return 0

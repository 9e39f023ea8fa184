"""``screc bench tracegen``: ``trace gen`` of a whole batch against the write bound of the same bytes.

Generates ``--batches`` batches (default one) of ``--model`` (default ``meta-2022`` at full size: 788 tables
x 131,072 samples, 1.4G lookups, a 6.4 GB trace) into a temporary trace in ``--scratch-dir`` exactly as
``screc trace gen`` does (every core, checksummed, fsynced and renamed into place), removes it, then times
the reference in the same run on the same disk: ``numpy.tofile`` of the same number of bytes plus fsync
(:func:`tracegen.fit_check.write_bound`), the floor of any writer of this file, ``--bound-runs`` times (a
shared disk's speed varies from run to run: here 0.4 to 1.1 GB/s within minutes; all runs are reported,
their median is the bound). Reported (all measured): both times and rates, their ratio (``ratio``:
generation at this fraction of the write bound), the
process's peak resident memory, where the generator's time went (per stage, seconds summed over the threads,
which overlap) and the load average before and after (other jobs slow the generator, which needs the CPUs,
more than the bound). ``--tables`` and ``--scale`` make it small (tests; quick looks).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from tracegen.errors import InputError

EXAMPLE = """example:
  screc bench tracegen                                   (meta-2022, one full batch: 1.4G lookups, 6.4 GB)
  screc bench tracegen --model meta-2021 --params runs/meta2021_fit.json --json runs/tracegen_2021.json
  screc bench tracegen --tables 0::8 --workers 1         (every 8th table, one generator thread)
"""


@dataclass(frozen=True)
class TraceGenBenchConfig:
    model: str = "meta-2022"
    scale: float = 1.0
    batch_size: int | None = None
    batches: int = 1
    tables: str | None = None  # a selection: a slice (0::8) or names
    params: str | None = None  # generator parameters JSON (e.g. from `screc trace fit`), else the preset's Zipf
    seed: int = 0
    workers: int | None = None  # generator threads (default: every core)
    bound_runs: int = 2  # times the write bound is measured (median reported)
    scratch_dir: str = "runs"


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _load_params(path: Path):
    """Generator parameters from a JSON file (a fit document or a parameters JSON); InputError if unreadable."""
    import json

    from tracegen.fit import load_params_file

    if not path.is_file():
        raise InputError("parameters file not found", path)
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a JSON file ({e})", path) from None
    return load_params_file(doc, path)


def run_bench_tracegen(cfg: TraceGenBenchConfig, should_stop: Callable[[], bool] | None = None,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate the trace of ``cfg`` into a temporary file, remove it, time the write bound of its bytes."""
    from tracegen.fit_check import write_bound
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.parallel import default_workers
    from tracegen.presets import load_model
    from tracegen.selection import select

    spec = load_model(cfg.model, scale=cfg.scale, batch_size=cfg.batch_size)
    base = GeneratorParams() if cfg.params is None else _load_params(Path(cfg.params))
    params = GeneratorParams.from_dict({**base.to_dict(), "seed": cfg.seed, "num_batches": cfg.batches})
    spec, params = select(spec, params, cfg.tables)
    scratch = Path(cfg.scratch_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bench-tracegen-", dir=scratch))
    load_before = os.getloadavg()
    stages: dict[str, float] = {}
    try:
        path = tmp / "trace.h5"
        if progress:
            progress(f"generating {spec.name}")
        t0 = time.perf_counter()
        trace_id = generate_trace(spec, params, path, should_stop=should_stop, workers=cfg.workers, stats=stages)
        gen_s = time.perf_counter() - t0
        peak = _peak_rss_bytes()
        size = path.stat().st_size
        from tracegen.trace_io import TraceReader

        with TraceReader(path, validate=False) as r:
            lookups = r.num_lookups
        path.unlink()
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        if progress:
            progress("numpy.tofile of the same bytes")
        bound_runs = [write_bound(tmp, size, should_stop=should_stop) for _ in range(cfg.bound_runs)]
        bound_s = statistics.median(bound_runs)
    finally:
        for f in tmp.iterdir():
            f.unlink(missing_ok=True)
        tmp.rmdir()
    return {
        "config": asdict(cfg), "model": spec.name, "tables": spec.num_tables, "batches": cfg.batches,
        "workers": cfg.workers or default_workers(), "lookups": lookups, "bytes": size, "trace_id": trace_id,
        "generate_s": gen_s, "lookups_per_s": lookups / gen_s, "generate_bytes_per_s": size / gen_s,
        "tofile_s": bound_s, "tofile_runs_s": bound_runs, "tofile_bytes_per_s": size / bound_s,
        "ratio": bound_s / gen_s,
        "peak_rss_bytes": peak, "stages_s": stages, "load_avg_before": list(load_before),
        "load_avg_after": list(os.getloadavg()), "measured": True,
    }


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def render(r: dict[str, Any]) -> Table:
    from bench.common import format_bytes

    t = Table(title=f"trace gen of {r['model']} ({r['tables']} tables, {r['batches']} batch(es), "
                    f"{r['lookups']:,} lookups, {format_bytes(r['bytes'])}) against numpy.tofile + fsync of "
                    f"the same bytes (measured; load {r['load_avg_before'][0]:.1f} -> {r['load_avg_after'][0]:.1f})")
    for col in ("", "seconds", "MB/s", "M lookups/s"):
        t.add_column(col, justify="left" if not col else "right")
    t.add_row(f"trace gen ({r['workers']} workers)", f"{r['generate_s']:.2f}", _num(r["generate_bytes_per_s"] / 1e6),
              _num(r["lookups_per_s"] / 1e6))
    runs = ", ".join(f"{x:.2f}" for x in r["tofile_runs_s"])
    t.add_row(f"numpy.tofile + fsync (median of {runs})", f"{r['tofile_s']:.2f}",
              _num(r["tofile_bytes_per_s"] / 1e6), "")
    t.add_row("ratio (gen / bound)", f"{r['ratio']:.2f}x", "", "")
    t.add_row("peak RSS", format_bytes(r["peak_rss_bytes"]), "", "")
    t.add_section()
    for name, s in r["stages_s"].items():
        t.add_row(f"  stage {name.removesuffix('_s')} (thread-seconds)", f"{s:.2f}", "", "")
    return t


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_json_arg, add_out_dir_arg

    p = subparsers.add_parser("tracegen", help="trace gen of a whole batch vs numpy.tofile of the same bytes",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="meta-2022", metavar="NAME|FILE",
                   help="model spec: a preset or a .json/.toml file (default meta-2022)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every table's rows (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default the model's)")
    p.add_argument("--batches", type=int, default=1, help="batches to generate (default 1)")
    p.add_argument("--tables", default=None, help="only these tables: a slice (0::8) or names (default all)")
    p.add_argument("--params", default=None,
                   help="generator parameters JSON, e.g. from `screc trace fit` (default: the preset's Zipf skews)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="generator threads (default: every core)")
    p.add_argument("--bound-runs", type=int, default=2,
                   help="times the write bound is measured after generating (default 2; the median is used)")
    p.add_argument("--scratch-dir", default=None, metavar="DIR",
                   help="where the trace and the tofile reference are written, then removed (default: --out-dir)")
    add_json_arg(p)
    add_out_dir_arg(p)
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bench.common import (
        check_out,
        emit_result,
        ensure_writable_dir,
        make_progress,
        positive_int,
        stderr_console,
        stop_flag,
    )

    check_out(args)
    positive_int("--batches", args.batches)
    positive_int("--bound-runs", args.bound_runs)
    if args.workers is not None:
        positive_int("--workers", args.workers)
    if args.batch_size is not None:
        positive_int("--batch-size", args.batch_size)
    if not args.scale > 0:
        raise InputError(f"--scale must be > 0, got {args.scale}")
    scratch = args.scratch_dir or args.out_dir
    ensure_writable_dir(scratch)
    cfg = TraceGenBenchConfig(model=args.model, scale=args.scale, batch_size=args.batch_size, batches=args.batches,
                              tables=args.tables, params=args.params, seed=args.seed, workers=args.workers, bound_runs=args.bound_runs,
                              scratch_dir=scratch)
    with make_progress(stderr_console()) as bar, stop_flag() as stop:
        task = bar.add_task("bench tracegen", total=None)
        result = run_bench_tracegen(cfg, should_stop=stop.is_set,
                                    progress=lambda what: bar.update(task, description=what))
        if stop.is_set():
            raise KeyboardInterrupt
    emit_result("bench-tracegen", result, args, render)
    return 0

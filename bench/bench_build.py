"""``screc bench build``: ``store build`` of a model (raw rows only, and with TT ranks) against ``fio`` writing
the same number of bytes sequentially on the same filesystem, in the same run.

Sides, each run in a scratch directory under ``--out-dir`` (removed afterwards):

* ``fio``: ``fio --rw=write --bs=1M --direct=1 --size=<the store's raw bytes> --end_fsync=1``, like the build
  (:mod:`emulator.store.build` writes with O_DIRECT and makes the files durable with one flush at the end;
  fio's bandwidth includes its final fsync). Measured.
* ``build raw``: :func:`emulator.store.build.build_store` with no TT variants. Measured: the raw bytes of
  the store over the wall time of the whole call (generation, checksums, writes, manifest, the final flush),
  and the process's CPU time over the call (all threads; on a loaded machine it shows the work, the wall
  time the share of the cores the build got).
* ``build tt``: the same with ``--tt-ranks`` (default 8,16), the figure still raw bytes over wall time.

Before any clock starts a small store is built once (compiles or loads the Numba kernels). With
``--rounds N`` the sides alternate N times; the median of each is reported, with the ratios
build / fio against the goals of issue 14 (raw >= 0.5x, TT >= 0.25x) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bench.common import RUNS_DIR, format_bytes
from tracegen.errors import InputError

SIDES = ("fio", "build_raw", "build_tt")
GOALS = {"build_raw": 0.5, "build_tt": 0.25}  # ratio to fio (issue 14)
MIB = 1 << 20


@dataclass(frozen=True)
class BuildBenchConfig:
    model: str = "meta-2021"
    scale: float = 0.001  # meta-2021 x 0.001: 856 tables, 1.74 GiB of raw rows
    tt_ranks: tuple[int, ...] = (8, 16)
    workers: int | None = None  # build threads (None: the build's default, twice the cores)
    rounds: int = 1
    seed: int = 0
    out_dir: str = RUNS_DIR
    fio_binary: str = "fio"


def fio_command(fio: str, path: str | os.PathLike, size_bytes: int) -> list[str]:
    """fio's sequential O_DIRECT write of ``size_bytes`` (rounded up to 1 MiB) with a final fsync."""
    mib = max(1, -(-int(size_bytes) // MIB))
    return [fio, "--name=build-reference", f"--filename={path}", "--rw=write", "--bs=1M", f"--size={mib}M",
            "--direct=1", "--ioengine=psync", "--end_fsync=1", "--output-format=json"]


def run_fio(cmd: list[str]) -> dict[str, Any]:
    """One fio run; returns ``{"bytes", "seconds", "mib_per_s"}`` (fio's own figures). RuntimeError if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"fio exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
    write = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]["write"]
    return {"bytes": int(write["io_bytes"]), "seconds": write["runtime"] / 1e3, "mib_per_s": write["bw_bytes"] / MIB}


def _warm_up(spec, scratch: Path, config: BuildBenchConfig) -> None:
    """Build a two-table store once, untimed: Numba kernels compiled or loaded from their cache."""
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig
    from tracegen.spec import ModelSpec, TableSpec

    t = spec.tables[0]
    small = ModelSpec("warm-up", (TableSpec("a", 5000, t.dim, t.dtype), TableSpec("b", 3000, t.dim, t.dtype)))
    build_store(small, scratch / "warm-up", StoreBuildConfig(weights_seed=config.seed, tt_ranks=config.tt_ranks),
                workers=config.workers)
    shutil.rmtree(scratch / "warm-up")


def _timed_build(spec, path: Path, config: BuildBenchConfig, tt_ranks: tuple[int, ...],
                 clock: Callable[[], float]) -> dict[str, Any]:
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig

    t0, cpu0 = clock(), time.process_time()
    store = build_store(spec, path, StoreBuildConfig(weights_seed=config.seed, tt_ranks=tt_ranks),
                        workers=config.workers)
    seconds, cpu_seconds = clock() - t0, time.process_time() - cpu0
    out = {"bytes": store.raw_bytes, "seconds": seconds, "mib_per_s": store.raw_bytes / MIB / seconds,
           "cpu_seconds": cpu_seconds,  # this process's CPU time (all threads), measured
           "tt_variants": sum(len(t.tt) for t in store.tables), "tt_method": store.manifest.build.tt_method,
           "weights_generator": store.manifest.weights.generator}
    shutil.rmtree(path)
    return out


def check_config(config: BuildBenchConfig) -> None:
    if config.rounds < 1:
        raise InputError(f"--rounds must be >= 1, got {config.rounds}")
    if config.workers is not None and config.workers < 1:
        raise InputError(f"--workers must be >= 1, got {config.workers}")
    if not config.scale > 0:
        raise InputError(f"--scale must be > 0, got {config.scale}")
    if shutil.which(config.fio_binary) is None:
        raise InputError(f"{config.fio_binary} not found on PATH: bench build measures the disk with it "
                         "(apt-get install -y fio)")


def run_bench_build(config: BuildBenchConfig, on_step: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run the benchmark (see the module doc); returns a JSON-ready dict."""
    from emulator.store.layout import RowLayout
    from tracegen.presets import load_model

    check_config(config)
    spec = load_model(config.model, scale=config.scale, batch_size=None)
    raw_bytes = sum(RowLayout(t.rows, t.dim, t.dtype).file_bytes for t in spec.tables)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    if free < 1.5 * raw_bytes + (256 << 20):
        raise InputError(f"needs about {format_bytes(1.5 * raw_bytes)} free for a {format_bytes(raw_bytes)} store, "
                         f"has {format_bytes(free)}", out_dir)
    step = on_step or (lambda _msg: None)
    fio = shutil.which(config.fio_binary)
    version = subprocess.run([fio, "--version"], capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    scratch = Path(tempfile.mkdtemp(prefix=".bench-build-", dir=out_dir))
    try:
        step("warm-up build (kernels compiled, untimed)")
        _warm_up(spec, scratch, config)
        for k in range(config.rounds):
            for side in SIDES[k % len(SIDES):] + SIDES[:k % len(SIDES)]:  # the order rotates between rounds
                step(f"round {k + 1}/{config.rounds}: {side.replace('_', ' ')}")
                if side == "fio":
                    runs[side].append(run_fio(fio_command(fio, scratch / "fio.tmp", raw_bytes)))
                    (scratch / "fio.tmp").unlink()
                else:
                    ranks = config.tt_ranks if side == "build_tt" else ()
                    runs[side].append(_timed_build(spec, scratch / side, config, ranks, clock))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {s: statistics.median(r["mib_per_s"] for r in runs[s]) for s in SIDES}
    ratio = {s: median[s] / median["fio"] for s in GOALS}
    return {
        "benchmark": "build", "config": asdict(config), "model": spec.name, "tables": len(spec.tables),
        "raw_bytes": raw_bytes, "fio": fio, "fio_version": version,
        "fio_command": fio_command(config.fio_binary, "<scratch>/fio.tmp", raw_bytes),
        "mib_per_s": median, "ratio": ratio, "goal": dict(GOALS),
        "meets_goal": {s: ratio[s] >= GOALS[s] for s in GOALS}, "runs": runs,
        "conditions": {"cpus": os.cpu_count(), "loadavg_1m": load_before, "loadavg_1m_after": os.getloadavg()[0]},
    }


# -- command line -------------------------------------------------------------------------------

EXAMPLE = """example:
  screc bench build                                  meta-2021 x 0.001 (1.74 GiB), raw and TT 8,16, vs fio
  screc bench build --model tiny --scale 20 --rounds 3
  screc bench build --tt-ranks 8 --workers 1 --json runs/bench_build.json"""


def _ranks(text: str) -> tuple[int, ...]:
    try:
        ranks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--tt-ranks {text!r} is not a comma-separated list of integers like 8,16") from None
    if not ranks or min(ranks) < 1:
        raise InputError(f"--tt-ranks {text!r}: give one or more ranks >= 1")
    return ranks


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_json_arg, add_model_arg, add_out_dir_arg

    d = BuildBenchConfig()
    p = subparsers.add_parser("build", help="store build (raw rows, and with TT ranks) vs fio sequential writes",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p, default=d.model, extra=f" (default {d.model})")
    p.add_argument("--scale", type=float, default=d.scale, help=f"multiply every table's rows (default {d.scale:g})")
    p.add_argument("--tt-ranks", default="8,16", help="TT ranks of the TT build, comma separated (default 8,16)")
    p.add_argument("--workers", type=int, default=None, help="build threads (default: twice the cores)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="rounds, the sides' order rotating; medians reported")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the synthetic weights (default 0)")
    add_json_arg(p)
    add_out_dir_arg(p, what="result directory (the stores and fio's file are written and removed in a scratch "
                            "directory under it, so all sides use its filesystem)")
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bench.common import check_out, emit_result, make_progress, stderr_console

    check_out(args)
    config = BuildBenchConfig(model=args.model, scale=args.scale, tt_ranks=_ranks(args.tt_ranks),
                              workers=args.workers, rounds=args.rounds, seed=args.seed, out_dir=args.out_dir)
    check_config(config)
    with make_progress(stderr_console()) as progress:
        task = progress.add_task("bench build", total=None)
        result = run_bench_build(config, on_step=lambda msg: progress.update(task, description=msg))
    emit_result("bench-build", result, args, render)
    return 0


def render(result: dict[str, Any]):
    """The result as a rich Table under 80 columns (pure: no printing)."""
    from rich.table import Table

    c = result["config"]
    table = Table(title=f"bench build: {result['model']}, {result['tables']} tables, "
                        f"{format_bytes(result['raw_bytes'])} raw, median of {c['rounds']} (measured)")
    for col, just in (("side", "left"), ("MiB/s", "right"), ("x fio", "right"), ("goal", "right"),
                      ("seconds", "right"), ("CPU s", "right")):
        table.add_column(col, justify=just)
    labels = {"fio": "fio seq. write, direct", "build_raw": "store build, raw rows",
              "build_tt": f"store build, TT {','.join(map(str, c['tt_ranks']))}"}
    for side in SIDES:
        secs = statistics.median(r["seconds"] for r in result["runs"][side])
        ratio = result["ratio"].get(side)
        goal = result["goal"].get(side)
        table.add_row(labels[side], f"{result['mib_per_s'][side]:,.0f}", "-" if ratio is None else f"{ratio:.2f}",
                      "-" if goal is None else f">= {goal:g}" + ("" if result["meets_goal"][side] else " (missed)"),
                      f"{secs:.2f}", "-" if side == "fio" else
                      f"{statistics.median(r['cpu_seconds'] for r in result['runs'][side]):.2f}")
    cond = result["conditions"]
    table.caption = (f"{result['fio_version']}: {' '.join(result['fio_command'][1:])}; MiB/s = raw bytes / wall "
                     f"time; CPU s = the build's CPU time, all threads; load average {cond['loadavg_1m']:.2f} (after {cond['loadavg_1m_after']:.2f}) on "
                     f"{cond['cpus']} CPUs")
    return table


"""``screc bench io``: 4 KiB random O_DIRECT reads, our engine against fio on the same file, per queue depth.

For each queue depth, fio (``--ioengine=io_uring``) and the engine each run
for ``seconds`` on the same file, ``rounds`` times, taking turns at going
first; the median of each side is reported with their ratio. The engine reads uniformly random
page-aligned offsets over the whole file, ``queue_depth`` in flight, through
``read_many`` in chunks of about a quarter second (the ring drains once per
chunk, which costs well under 1%). Latency is per read, submit to reap, like
fio's ``lat`` (``--lat_percentiles=1``).

CPU time per read (user + system, from ``getrusage`` for the engine and
fio's own ``usr_cpu``/``sys_cpu``) is reported too: unlike IOPS on a shared
machine, it hardly depends on what else is running.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import check_out, emit_result, format_bytes, parse_size
from emulator.io import aligned_empty, liburing_available, make_engine, uring_available
from tracegen.atomic import atomic_path
from tracegen.errors import InputError

DEFAULT_FILE = "data/bench_io.bin"
DEFAULT_SIZE_BYTES = 2 * 1024**3
FILL_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class BenchIOConfig:
    file: str = DEFAULT_FILE
    size_bytes: int = DEFAULT_SIZE_BYTES  # used when the file has to be created
    file_given: bool = False  # an explicit --file is used as it is; the default one is (re)made to size
    queue_depths: tuple[int, ...] = (1, 32, 128)
    seconds: float = 5.0
    engine: str = "uring"
    block_bytes: int = 4096
    rounds: int = 1
    seed: int = 0
    fio_binary: str = "fio"
    buffered_io: bool = False
    engine_options: dict = field(default_factory=dict)


def ensure_test_file(path: str | os.PathLike, size_bytes: int, seed: int = 0, reuse_any_size: bool = False) -> int:
    """Create ``path`` filled with random bytes (once); returns its size. Written atomically."""
    path = Path(path)
    if path.is_file() and (reuse_any_size or path.stat().st_size == size_bytes):
        return path.stat().st_size
    if size_bytes < 4096 or size_bytes % 4096:
        raise InputError(f"test file size must be a positive multiple of 4096 bytes, got {size_bytes}", path)
    rng = np.random.default_rng(seed)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        left = size_bytes
        while left:
            n = min(left, FILL_CHUNK_BYTES)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
        f.flush()
        os.fsync(f.fileno())
    return size_bytes


def fio_command(fio: str, path: str, qd: int, seconds: float, block_bytes: int = 4096) -> list[str]:
    return [fio, "--name=r", f"--filename={path}", "--rw=randread", f"--bs={block_bytes}", "--direct=1",
            "--ioengine=io_uring", f"--iodepth={qd}", f"--runtime={max(1, round(seconds))}", "--time_based",
            "--lat_percentiles=1", "--output-format=json"]


def run_fio(fio: str, path: str, qd: int, seconds: float, block_bytes: int) -> dict[str, float]:
    """One fio run; returns iops and p50/p99 latency in microseconds. Raises RuntimeError if fio fails."""
    proc = subprocess.run(fio_command(fio, path, qd, seconds, block_bytes), capture_output=True, text=True,
                          timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"fio exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
    text = proc.stdout[proc.stdout.index("{"):]  # fio may print notes before the JSON
    job = json.loads(text)["jobs"][0]
    read = job["read"]
    pct = read.get("lat_ns", {}).get("percentile") or read["clat_ns"].get("percentile", {})
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100 * read["runtime"] / 1e3  # fio: % of the run's wall time
    return {"iops": float(read["iops"]), "p50_us": pct.get("50.000000", float("nan")) / 1e3,
            "p99_us": pct.get("99.000000", float("nan")) / 1e3,
            "cpu_us_per_io": cpu_s / max(1, read["total_ios"]) * 1e6}


def run_engine(engine, file_id: int, size_bytes: int, qd: int, seconds: float, block_bytes: int,
               rng: np.random.Generator, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Random aligned reads for ``seconds``; returns iops and p50/p99 latency in microseconds."""
    blocks = size_bytes // block_bytes
    slots = 2 * qd
    dest = aligned_empty(slots * block_bytes)
    warm = max(4 * qd, 64)
    chunk = warm
    lat_parts, n_done, busy, cpu_s = [], 0, 0.0, 0.0
    t_end = None
    while True:
        offs = rng.integers(0, blocks, chunk, dtype=np.int64) * block_bytes
        nb = np.full(chunk, block_bytes, dtype=np.int64)
        dofs = (np.arange(chunk, dtype=np.int64) % slots) * block_bytes
        fids = np.full(chunk, file_id, dtype=np.int64)
        t0, c0 = clock(), _cpu_s()
        r = engine.read_many(fids, offs, nb, dest, dofs, latency=True)
        dt, dc = clock() - t0, _cpu_s() - c0
        if t_end is None:  # that was the warm-up (also compiles kernels on first use)
            t_end = clock() + seconds
        else:
            n_done += chunk
            busy += dt
            cpu_s += dc
            lat_parts.append(r.latency_ns)
        if clock() >= t_end:
            break
        rate = chunk / max(dt, 1e-6)
        chunk = int(min(max(warm, rate * 0.25), 1 << 20))
    lat = np.concatenate(lat_parts) if lat_parts else np.zeros(1)
    p50, p99 = np.percentile(lat, [50, 99]) / 1e3
    return {"iops": n_done / busy if busy else 0.0, "p50_us": float(p50), "p99_us": float(p99),
            "cpu_us_per_io": cpu_s / max(1, n_done) * 1e6}


def _cpu_s() -> float:
    """User + system CPU time of this process (all threads: the pread engine's too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_bench_io(config: BenchIOConfig, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (``fio_iops`` and ``ratio`` are None when fio is missing)."""
    step = on_step or (lambda _msg: None)
    if config.engine in ("uring", "liburing"):
        ok, why = uring_available() if config.engine == "uring" else liburing_available()
        if not ok:
            raise InputError(f"io_uring is not available here ({why}); use --engine pread")
    qds = tuple(int(q) for q in config.queue_depths)
    if not qds or min(qds) < 1:
        raise InputError(f"queue depths must be positive integers, got {config.queue_depths}")
    size = ensure_test_file(config.file, config.size_bytes, config.seed, reuse_any_size=config.file_given)
    if size < config.block_bytes:
        raise InputError(f"file is smaller than one {config.block_bytes}-byte block", config.file)
    fio = shutil.which(config.fio_binary)
    fio_missing = None if fio else f"{config.fio_binary} not found on PATH (apt-get install -y fio)"
    fio_version = None
    if fio:
        fio_version = subprocess.run([fio, "--version"], capture_output=True, text=True).stdout.strip() or None
    rng = np.random.default_rng(config.seed)
    rows = []
    for qd in qds:
        eng_runs, fio_runs = [], []
        options = dict(config.engine_options)
        options.setdefault("allow_buffered", config.buffered_io)
        with make_engine(config.engine, queue_depth=qd, **options) as engine:
            fid = engine.open(config.file)
            for k in range(config.rounds):
                for side in (("fio", "engine") if k % 2 == 0 else ("engine", "fio")):  # alternate who goes first
                    if side == "fio" and fio and fio_missing is None:
                        step(f"fio qd={qd} round {k + 1}/{config.rounds}")
                        try:
                            fio_runs.append(run_fio(fio, config.file, qd, config.seconds, config.block_bytes))
                        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                            fio_missing = f"fio failed: {e}"
                    elif side == "engine":
                        step(f"{config.engine} qd={qd} round {k + 1}/{config.rounds}")
                        eng_runs.append(run_engine(engine, fid, size, qd, config.seconds, config.block_bytes, rng))
        med = lambda runs, key: statistics.median(r[key] for r in runs) if runs else None  # noqa: E731
        e_iops, f_iops = med(eng_runs, "iops"), med(fio_runs, "iops")
        rows.append({
            "qd": qd, "engine_iops": e_iops, "fio_iops": f_iops,
            "ratio": (e_iops / f_iops) if (f_iops and e_iops is not None) else None,
            "engine_p50_us": med(eng_runs, "p50_us"), "engine_p99_us": med(eng_runs, "p99_us"),
            "fio_p50_us": med(fio_runs, "p50_us"), "fio_p99_us": med(fio_runs, "p99_us"),
            "engine_cpu_us_per_io": med(eng_runs, "cpu_us_per_io"), "fio_cpu_us_per_io": med(fio_runs, "cpu_us_per_io"),
            "engine_iops_runs": [r["iops"] for r in eng_runs], "fio_iops_runs": [r["iops"] for r in fio_runs],
        })
    return {
        "benchmark": "io", "engine": config.engine, "file": str(config.file), "size_bytes": size,
        "block_bytes": config.block_bytes, "seconds": config.seconds, "rounds": config.rounds,
        "fio": fio, "fio_version": fio_version, "fio_missing": fio_missing,
        "conditions": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
        "config": {k: v for k, v in asdict(config).items() if k != "engine_options"},
        "results": rows,
    }


# -- command line -------------------------------------------------------------------------------

EXAMPLE = """example:
  screc bench io --qd 1,32,128 --seconds 5
  screc bench io --engine liburing --qd 1,32,128 --seconds 3
  screc bench io --file /mnt/nvme/test.bin --engine pread --qd 8 --json"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("io", help="random 4 KiB O_DIRECT reads: IO engine vs fio",
                              description="Random 4 KiB O_DIRECT reads: the IO engine against fio on the same file, "
                                          "per queue depth (IOPS, latency, CPU per read).\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=None, help=f"test file (created with --size if missing; default {DEFAULT_FILE}, "
                   "made once, git-ignored)")
    p.add_argument("--size", default="2GiB", help="size of the test file when it is created (default 2GiB)")
    p.add_argument("--qd", default="1,32,128", help="comma-separated queue depths (default 1,32,128)")
    p.add_argument("--seconds", type=float, default=5.0, help="run time per queue depth and side (default 5)")
    p.add_argument("--engine", choices=("uring", "liburing", "pread", "null"), default="uring",
                   help="engine to measure (liburing: the same reads through the liburing package's Python calls)")
    p.add_argument("--rounds", type=int, default=1, help="alternate fio/engine this many times, report medians")
    p.add_argument("--registered-buffers", action="store_true", help="uring: read into a registered buffer")
    p.add_argument("--buffered-io", action="store_true", help="allow files on filesystems without O_DIRECT")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, help="also write the JSON result to this file (e.g. runs/bench_io.json)")
    p.set_defaults(func=_handle)


def _parse_qds(text: str) -> tuple[int, ...]:
    try:
        qds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--qd {text!r} is not a comma-separated list of integers like 1,32,128") from None
    if not qds or min(qds) < 1 or max(qds) > 4096:
        raise InputError(f"--qd {text!r}: queue depths must be between 1 and 4096")
    return qds


def _handle(args: argparse.Namespace) -> int:
    from bench.common import make_progress, stderr_console

    check_out(args)
    if args.seconds <= 0 or args.rounds < 1:
        raise InputError("--seconds must be > 0 and --rounds >= 1")
    options = {"registered_buffers": True} if args.registered_buffers and args.engine == "uring" else {}
    config = BenchIOConfig(
        file=args.file or DEFAULT_FILE, size_bytes=parse_size(args.size, "--size"), file_given=args.file is not None,
        queue_depths=_parse_qds(args.qd), seconds=args.seconds, engine=args.engine, rounds=args.rounds,
        buffered_io=args.buffered_io, engine_options=options,
    )
    err = stderr_console()
    if shutil.which(config.fio_binary) is None:
        err.print("fio not found: reporting engine numbers only (install it with apt-get install -y fio)", soft_wrap=True)
    steps = len(config.queue_depths) * config.rounds * 2
    with make_progress(err) as progress:
        task = progress.add_task("bench io", total=steps)
        result = run_bench_io(config, on_step=lambda msg: progress.update(task, advance=1, description=msg))
    emit_result("bench-io", result, args, render)
    return 0


def render(result: dict[str, Any]):
    """The result as a rich Table (pure: no printing)."""
    from rich.table import Table

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    t = Table(title=f"bench io: {result['engine']} vs fio, {result['block_bytes']} B random reads, "
                    f"{format_bytes(result['size_bytes'])} file, {result['seconds']:g} s x {result['rounds']}")
    for col in ("qd", "engine IOPS", "fio IOPS", "ratio", "engine p50/p99 us", "fio p50/p99 us",
                "CPU us/read engine/fio"):
        t.add_column(col, justify="right")
    for r in result["results"]:
        t.add_row(str(r["qd"]), f(r["engine_iops"], ",.0f"), f(r["fio_iops"], ",.0f"), f(r["ratio"], ".2f"),
                  f"{f(r['engine_p50_us'], '.0f')}/{f(r['engine_p99_us'], '.0f')}",
                  f"{f(r['fio_p50_us'], '.0f')}/{f(r['fio_p99_us'], '.0f')}",
                  f"{f(r['engine_cpu_us_per_io'], '.1f')}/{f(r['fio_cpu_us_per_io'], '.1f')}")
    if result.get("fio_missing"):
        t.caption = f"fio numbers missing: {result['fio_missing']}"
    else:
        t.caption = f"{result.get('fio_version') or 'fio'}; load average {result['conditions']['loadavg_1m']:.2f} " \
                    f"on {result['conditions']['cpus']} CPUs"
    return t

"""``screc bench io``: 4 KiB random O_DIRECT reads, our engine against fio on the same file, per queue depth.

Three sides run on the same file, each for exactly ``seconds`` (fio gets
``--runtime`` in microseconds, no rounding), ``rounds`` times, the order
rotating every round so no side always goes first; medians are reported.

* ``engine``: uniformly random page-aligned offsets over the whole file, drawn
  with replacement, ``queue_depth`` in flight, through ``read_many`` in chunks
  of about a quarter second (the last one cut to the time left). The uring
  engine registers its files and submits and reaps a whole round per
  ``io_uring_enter``.
* ``fio default``: fio's io_uring engine at its defaults (one submission per
  read, no registered files, a random map that visits each block once).
* ``fio batched``: fio given the engine's advantages and its offset policy:
  ``--iodepth_batch_submit=QD --iodepth_batch_complete_max=QD
  --registerfiles`` (``--fixedbufs`` too when the engine reads into
  registered buffers) and ``--randrepeat=0 --norandommap`` (offsets drawn
  with replacement, like the engine's).

Latency is per read, submit to reap, like fio's ``lat``
(``--lat_percentiles=1``). CPU time per read (user + system: ``getrusage`` for
the engine, fio's own ``usr_cpu``/``sys_cpu``) hardly depends on what else
runs, unlike IOPS on a shared machine. Reads and bytes come from each side's
own counters (the engine's ``IOResult``, fio's ``total_ios``/``io_bytes``).
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

from bench.common import format_bytes, parse_size
from emulator.io import aligned_empty, liburing_available, make_engine, uring_available
from tracegen.atomic import atomic_path
from tracegen.errors import InputError

DEFAULT_FILE = "data/bench_io.bin"
DEFAULT_SIZE_BYTES = 2 * 1024**3
FILL_CHUNK_BYTES = 64 << 20
CHUNK_S = 0.25  # the engine's reads are issued in read_many calls of about this long
FIO_SETUPS = ("default", "batched")
SIDES = ("engine",) + tuple(f"fio_{s}" for s in FIO_SETUPS)


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


@dataclass(frozen=True)
class SideRun:
    """One timed run of one side at one queue depth (reads and bytes from that side's own counters)."""

    iops: float
    p50_us: float
    p99_us: float
    cpu_us_per_io: float
    reads: int  # requests completed in the timed window
    ios: int  # reads submitted (the engine counts retries and continuations too)
    bytes_read: int
    seconds: float  # the timed window as the side measured it
    syscalls: int | None = None  # io_uring_enter / read calls (the engine only)


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


def fio_command(fio: str, path: str, qd: int | str, seconds: float, block_bytes: int = 4096, setup: str = "default",
                fixed_buffers: bool = False) -> list[str]:
    """fio's command line for one run: ``setup`` is ``default`` or ``batched`` (see the module docstring)."""
    if setup not in FIO_SETUPS:
        raise ValueError(f"fio setup {setup!r} is not one of {FIO_SETUPS}")
    cmd = [fio, "--name=r", f"--filename={path}", "--rw=randread", f"--bs={block_bytes}", "--direct=1",
           "--ioengine=io_uring", f"--iodepth={qd}", f"--runtime={round(seconds * 1e6)}us", "--time_based",
           "--lat_percentiles=1", "--output-format=json"]
    if setup == "batched":
        cmd += [f"--iodepth_batch_submit={qd}", f"--iodepth_batch_complete_max={qd}", "--registerfiles",
                "--randrepeat=0", "--norandommap"] + (["--fixedbufs"] if fixed_buffers else [])
    return cmd


def run_fio(cmd: list[str], seconds: float) -> SideRun:
    """One fio run of ``cmd`` (from :func:`fio_command`). Raises RuntimeError if fio fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"fio exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
    text = proc.stdout[proc.stdout.index("{"):]  # fio may print notes before the JSON
    job = json.loads(text)["jobs"][0]
    read = job["read"]
    pct = read.get("lat_ns", {}).get("percentile") or read["clat_ns"].get("percentile", {})
    runtime_s = read["runtime"] / 1e3
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100 * runtime_s  # fio: % of the run's wall time
    return SideRun(iops=float(read["iops"]), p50_us=pct.get("50.000000", float("nan")) / 1e3,
                   p99_us=pct.get("99.000000", float("nan")) / 1e3,
                   cpu_us_per_io=cpu_s / max(1, read["total_ios"]) * 1e6, reads=int(read["total_ios"]),
                   ios=int(read["total_ios"]), bytes_read=int(read["io_bytes"]), seconds=runtime_s)


def run_engine(engine, file_id: int, size_bytes: int, qd: int, seconds: float, block_bytes: int,
               rng: np.random.Generator, clock: Callable[[], float] = time.perf_counter) -> SideRun:
    """Random aligned reads for ``seconds`` after a warm-up chunk (which also compiles kernels on first use)."""
    blocks = size_bytes // block_bytes
    slots = 2 * qd
    dest = aligned_empty(slots * block_bytes)
    chunk = warm = max(4 * qd, 64)
    lat_parts, reads, ios, nbytes, calls, busy, cpu_s = [], 0, 0, 0, 0, 0.0, 0.0
    t_end = None
    while True:
        offs = rng.integers(0, blocks, chunk, dtype=np.int64) * block_bytes
        nb = np.full(chunk, block_bytes, dtype=np.int64)
        dofs = (np.arange(chunk, dtype=np.int64) % slots) * block_bytes
        fids = np.full(chunk, file_id, dtype=np.int64)
        t0, c0 = clock(), _cpu_s()
        r = engine.read_many(fids, offs, nb, dest, dofs, latency=True)
        t1, dc = clock(), _cpu_s() - c0
        if t_end is None:  # that was the warm-up
            t_end = t1 + seconds
        else:
            reads += int(np.count_nonzero(r.nread == block_bytes))
            ios, nbytes, calls = ios + r.ios, nbytes + r.bytes_read, calls + r.syscalls
            busy += t1 - t0
            cpu_s += dc
            lat_parts.append(r.latency_ns)
        left = t_end - clock()
        if left <= 0:
            break
        rate = chunk / max(t1 - t0, 1e-6)
        chunk = int(min(max(warm, rate * CHUNK_S), 1 << 20, max(qd, rate * left)))
    lat = np.concatenate(lat_parts) if lat_parts else np.zeros(1)
    p50, p99 = np.percentile(lat, [50, 99]) / 1e3
    return SideRun(iops=reads / busy if busy else 0.0, p50_us=float(p50), p99_us=float(p99),
                   cpu_us_per_io=cpu_s / max(1, reads) * 1e6, reads=reads, ios=ios, bytes_read=nbytes,
                   seconds=busy, syscalls=calls)


def _cpu_s() -> float:
    """User + system CPU time of this process (all threads: the pread engine's too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def median_run(runs: list[SideRun]) -> dict[str, float] | None:
    """Per-field medians over rounds (None when the side did not run)."""
    if not runs:
        return None
    return {k: statistics.median(getattr(r, k) for r in runs)
            for k in ("iops", "p50_us", "p99_us", "cpu_us_per_io", "seconds")}


def _check(config: BenchIOConfig) -> tuple[int, ...]:
    if config.engine in ("uring", "liburing"):
        ok, why = uring_available() if config.engine == "uring" else liburing_available()
        if not ok:
            raise InputError(f"io_uring is not available here ({why}); use --engine pread")
    qds = tuple(int(q) for q in config.queue_depths)
    if not qds or min(qds) < 1:
        raise InputError(f"queue depths must be positive integers, got {config.queue_depths}")
    if not config.seconds > 0 or config.rounds < 1:
        raise InputError("seconds must be > 0 and rounds >= 1")
    return qds


def _measure_qd(config: BenchIOConfig, qd: int, size: int, fio: str | None, rng: np.random.Generator,
                step: Callable[[str], None]) -> tuple[dict[str, list[SideRun]], str | None]:
    """Every round of every side at one queue depth; returns the runs by side and why fio failed (if it did)."""
    runs: dict[str, list[SideRun]] = {side: [] for side in SIDES}
    fio_failed = None
    options = dict(config.engine_options)
    options.setdefault("allow_buffered", config.buffered_io)
    with make_engine(config.engine, queue_depth=qd, **options) as engine:
        fid = engine.open(config.file)
        fixed = bool(getattr(engine, "registered_buffers", False))
        for k in range(config.rounds):
            for side in SIDES[k % len(SIDES):] + SIDES[:k % len(SIDES)]:  # rotate who goes first
                step(f"{side} qd={qd} round {k + 1}/{config.rounds}")
                if side == "engine":
                    runs[side].append(run_engine(engine, fid, size, qd, config.seconds, config.block_bytes, rng))
                elif fio and fio_failed is None:
                    cmd = fio_command(fio, config.file, qd, config.seconds, config.block_bytes,
                                      side.removeprefix("fio_"), fixed)
                    try:
                        runs[side].append(run_fio(cmd, config.seconds))
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                        fio_failed = f"fio failed: {e}"
    return runs, fio_failed


def run_bench_io(config: BenchIOConfig, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (fio figures are None when fio is missing or failed)."""
    step = on_step or (lambda _msg: None)
    qds = _check(config)
    size = ensure_test_file(config.file, config.size_bytes, config.seed, reuse_any_size=config.file_given)
    if size < config.block_bytes:
        raise InputError(f"file is smaller than one {config.block_bytes}-byte block", config.file)
    fio = shutil.which(config.fio_binary)
    fio_missing = None if fio else f"{config.fio_binary} not found on PATH (apt-get install -y fio)"
    fio_version = subprocess.run([fio, "--version"], capture_output=True, text=True).stdout.strip() if fio else None
    rng = np.random.default_rng(config.seed)
    rows = []
    for qd in qds:
        runs, failed = _measure_qd(config, qd, size, None if fio_missing else fio, rng, step)
        fio_missing = fio_missing or failed
        med = {side: median_run(r) for side, r in runs.items()}
        e_iops = med["engine"]["iops"]
        rows.append({
            "qd": qd, **med,
            "ratio": {s: (e_iops / med[f"fio_{s}"]["iops"]) if med[f"fio_{s}"] else None for s in FIO_SETUPS},
            "runs": {side: [asdict(r) for r in rs] for side, rs in runs.items()},
        })
    return {
        "benchmark": "io", "engine": config.engine, "file": str(config.file), "size_bytes": size,
        "block_bytes": config.block_bytes, "seconds": config.seconds, "rounds": config.rounds,
        "fio": fio, "fio_version": fio_version, "fio_missing": fio_missing,
        "fio_commands": {s: fio_command(config.fio_binary, config.file, "QD", config.seconds, config.block_bytes, s,
                                        bool(config.engine_options.get("registered_buffers"))) for s in FIO_SETUPS},
        "conditions": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
        "config": {k: v for k, v in asdict(config).items() if k != "engine_options"},
        "results": rows,
    }


# -- command line -------------------------------------------------------------------------------

EXAMPLE = """example:
  screc bench io --qd 1,32,128 --seconds 5 --rounds 3
  screc bench io --engine liburing --qd 1,32,128 --seconds 3
  screc bench io --file /mnt/nvme/test.bin --engine pread --qd 8 --json runs/bench_io.json"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_engine_arg, add_json_arg, add_out_dir_arg

    p = subparsers.add_parser("io", help="random 4 KiB O_DIRECT reads: IO engine vs fio (default and batched)",
                              description="Random 4 KiB O_DIRECT reads: the IO engine against fio on the same file, "
                                          "per queue depth (IOPS, latency, CPU per read). fio runs twice: at its "
                                          "defaults, and batched like the engine (--iodepth_batch_submit=QD "
                                          "--iodepth_batch_complete_max=QD --registerfiles --randrepeat=0 "
                                          "--norandommap).\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=None, help=f"test file (created with --size if missing; default {DEFAULT_FILE}, "
                   "made once, git-ignored)")
    p.add_argument("--size", default="2GiB", help="size of the test file when it is created (default 2GiB)")
    p.add_argument("--qd", default="1,32,128", help="IO queue depth(s), comma-separated (default 1,32,128)")
    p.add_argument("--seconds", type=float, default=5.0, help="run time per queue depth, side and round (default 5)")
    add_engine_arg(p)
    p.add_argument("--rounds", type=int, default=1, help="rounds, the order of the sides rotating; medians reported")
    p.add_argument("--registered-buffers", action="store_true",
                   help="uring: read into a registered buffer (fio batched then gets --fixedbufs)")
    p.add_argument("--buffered-io", action="store_true", help="allow files on filesystems without O_DIRECT")
    add_json_arg(p)
    add_out_dir_arg(p)
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
    from bench.common import check_out, emit_result, make_progress, stderr_console

    check_out(args)
    if not args.seconds > 0 or args.rounds < 1:
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
    steps = len(config.queue_depths) * config.rounds * len(SIDES)
    with make_progress(err) as progress:
        task = progress.add_task("bench io", total=steps)
        result = run_bench_io(config, on_step=lambda msg: progress.update(task, advance=1, description=msg))
    emit_result("bench-io", result, args, render)
    return 0


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def render(result: dict[str, Any]):
    """The result as two rich Tables, each under 80 columns (pure: no printing)."""
    from rich.console import Group
    from rich.table import Table

    iops = Table(title=f"bench io: {result['engine']} vs fio, {result['block_bytes']} B random reads, "
                       f"{format_bytes(result['size_bytes'])} file, {result['seconds']:g} s x {result['rounds']}")
    for col in ("qd", "engine IOPS", "fio default", "fio batched", "x default", "x batched"):
        iops.add_column(col, justify="right")
    per_read = Table(title="per read (medians): latency, submit to reap; CPU time")
    for col, just in (("qd", "right"), ("side", "left"), ("p50 us", "right"), ("p99 us", "right"),
                      ("CPU us/read", "right")):
        per_read.add_column(col, justify=just)
    for r in result["results"]:
        fd, fb = r["fio_default"] or {}, r["fio_batched"] or {}
        iops.add_row(str(r["qd"]), _f(r["engine"]["iops"], ",.0f"), _f(fd.get("iops"), ",.0f"),
                     _f(fb.get("iops"), ",.0f"), _f(r["ratio"]["default"], ".2f"), _f(r["ratio"]["batched"], ".2f"))
        for side, label in (("engine", result["engine"]), ("fio_default", "fio default"),
                            ("fio_batched", "fio batched")):
            m = r[side] or {}
            per_read.add_row(str(r["qd"]), label, _f(m.get("p50_us"), ".0f"), _f(m.get("p99_us"), ".0f"),
                             _f(m.get("cpu_us_per_io"), ".2f"))
    if result.get("fio_missing"):
        iops.caption = f"fio numbers missing: {result['fio_missing']}"
    else:
        iops.caption = (f"{result.get('fio_version') or 'fio'}; x = engine / fio; load average "
                        f"{result['conditions']['loadavg_1m']:.2f} on {result['conditions']['cpus']} CPUs")
    return Group(iops, per_read)

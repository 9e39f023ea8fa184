"""``screc bench tt``: rebuild TT-compressed rows (the compute-centric core) against NumPy SGEMM.

For each TT rank, random TT cores of TT-Rec-like shapes (default
p=(200,220,250) rows, q=(4,4,4) -> dim 64) are built, and batches of
``batch`` row ids drawn **uniformly at random** over all rows (duplicates
within a batch removed, as the cold rows of one batch of one table would be;
``--distribution zipf`` draws Zipf(1.05)-ranked rows scattered by a fixed
permutation instead) are rebuilt by ``emulator.tt.kernels.tt_rebuild_rows``
for ``seconds``. Batches are drawn, every one rebuilt once (compiling the
kernel and touching the outputs) and the SGEMM run once, before any clock
starts. With ``threads``
> 1, that many Python threads each rebuild their own batches (the kernel
releases the GIL), as a server would rebuild several tables side by side; the
kernel's own ``prange`` split (``tt_rebuild_rows(n_threads=...)``) pays an
OpenMP barrier per call and loses at batch sizes of a few thousand rows on a
busy 2-core machine.

FLOPs are those the kernel executes (``tt_rebuild_flops``: distinct prefixes
x the partial-product GEMM + rows x the last-core GEMM, 2 per multiply-add).
The reference is NumPy SGEMM (``n x n x n`` float32 matmul, ``2 n^3`` FLOPs,
NumPy's own threads) in the same process. Each rank's ``seconds`` are cut into
``rounds`` slices (default: 0.2 s each, about one SGEMM's duration), each
preceded by one SGEMM, so both sides see the same machine load and are
sampled alike; the best slice of each side is reported (``gflops``,
``sgemm_gflops``, ``rows_per_s``) and ``fraction = gflops / sgemm_gflops``,
with the median slices (``*_median``) beside them; ``gflops_mean`` is over
the whole run; the batches cycle across slices. These are wall-clock rates; the
``*_cpu`` variants divide by the process CPU time instead (a per-core rate,
less sensitive to other load on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np

from emulator.tt.decomposition import random_tt
from emulator.tt.kernels import tt_rebuild_flops, tt_rebuild_rows, unique_prefix_counts
from tracegen.errors import InputError

FLOPS_FORMULA = ("sum_k U_k * 2 * (q_1..q_{k-1}) * r_{k-1} * q_k * r_k over distinct prefixes "
                 "+ rows * 2 * (q_1..q_{d-1}) * r_{d-1} * q_d")
DISTRIBUTIONS = ("uniform", "zipf")
ZIPF_EXPONENT = 1.05
SLICE_S = 0.2  # default kernel slice: about as long as one 2048^3 SGEMM here, so both sides sample alike


@dataclass(frozen=True)
class BenchTTConfig:
    p_shapes: tuple[int, ...] = (200, 220, 250)
    q_shapes: tuple[int, ...] = (4, 4, 4)
    ranks: tuple[int, ...] = (16, 32)
    batch: int = 4096
    seconds: float = 5.0  # per rank
    distribution: str = "uniform"
    n_threads: int = 0  # batches rebuilt concurrently (one kernel call per thread); 0: one per CPU
    seed: int = 0
    sgemm_n: int = 2048
    rounds: int = 0  # SGEMM / kernel slices, alternated, best of each reported; 0: one per SLICE_S of seconds
    n_batches: int = 16  # distinct batches drawn up front, cycled through


class Sgemm:
    """NumPy float32 ``n x n @ n x n`` (``2 n^3`` FLOPs) on fixed random matrices, NumPy's own threads."""

    def __init__(self, n: int, clock: Callable[[], float] = time.perf_counter):
        rng = np.random.default_rng(0)
        self.n, self.clock = n, clock
        self.a = rng.standard_normal((n, n), dtype=np.float32)
        self.b = rng.standard_normal((n, n), dtype=np.float32)
        self.out = np.empty((n, n), dtype=np.float32)
        np.matmul(self.a, self.b, out=self.out)  # warm up threads and caches

    def run(self) -> tuple[float, float]:
        """One product: (wall GFLOP/s, CPU GFLOP/s)."""
        w0, c0 = self.clock(), time.process_time()
        np.matmul(self.a, self.b, out=self.out)
        w1, c1 = self.clock(), time.process_time()
        return 2 * self.n**3 / max(w1 - w0, 1e-9) / 1e9, 2 * self.n**3 / max(c1 - c0, 1e-9) / 1e9


def draw_batch(rng: np.random.Generator, num_rows: int, batch: int, distribution: str) -> np.ndarray:
    """Distinct row ids of one batch (in draw order): uniform over all rows, or Zipf-ranked and scattered."""
    if distribution == "uniform":
        rows = rng.integers(0, num_rows, size=batch, dtype=np.int64)
    elif distribution == "zipf":
        ranks = rng.zipf(ZIPF_EXPONENT, size=4 * batch)
        ranks = ranks[ranks <= num_rows][:batch] - 1
        rows = (ranks.astype(np.int64) * 2654435761) % num_rows  # a fixed scatter of hot ranks over the table
    else:
        raise InputError(f"distribution {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


def run_bench_tt(config: BenchTTConfig, clock: Callable[[], float] = time.perf_counter,
                 on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"results": [per-rank dict], ...}`` (see the module docstring)."""
    import numba

    if len(config.p_shapes) != len(config.q_shapes) or not 2 <= len(config.p_shapes) <= 4:
        raise InputError(f"--rows {config.p_shapes} and --dims {config.q_shapes} need the same number (2..4) "
                         "of factors")
    if min(config.p_shapes + config.q_shapes) < 1 or not config.ranks or min(config.ranks) < 1:
        raise InputError("shapes and ranks must be positive")
    if config.batch < 1 or config.seconds <= 0:
        raise InputError("--batch must be >= 1 and --seconds > 0")
    n_threads = config.n_threads or numba.config.NUMBA_NUM_THREADS  # the CPUs Numba sees
    if config.rounds < 0:
        raise InputError("rounds must be >= 0")
    config = replace(config, rounds=config.rounds or max(1, round(config.seconds / SLICE_S)))
    rng = np.random.default_rng(config.seed)
    sgemm = Sgemm(config.sgemm_n, clock)
    d = len(config.p_shapes)
    with ThreadPoolExecutor(n_threads) as pool:
        results = [_bench_rank(config, rank, d, rng, sgemm, pool, n_threads, clock, on_step) for rank in config.ranks]
    return {
        "benchmark": "tt", "config": asdict(config), "n_threads": n_threads, "flops_formula": FLOPS_FORMULA,
        "row_distribution": config.distribution, "sgemm": f"numpy float32 matmul {config.sgemm_n}^3, best of "
        f"{config.rounds}, 2 n^3 FLOPs", "results": results,
        "conditions": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
    }


def _bench_rank(config: BenchTTConfig, rank: int, d: int, rng: np.random.Generator, sgemm: Sgemm,
                pool: ThreadPoolExecutor, n_threads: int, clock: Callable[[], float],
                on_step: Callable[[str], None] | None) -> dict[str, Any]:
    ranks = (1,) + (int(rank),) * (d - 1) + (1,)
    tt = random_tt(config.p_shapes, config.q_shapes, ranks, rng, 1.0)
    batches = [draw_batch(rng, tt.num_rows, config.batch, config.distribution) for _ in range(config.n_batches)]
    flops = [tt_rebuild_flops(tt, b.size, unique_prefix_counts(tt, b)) for b in batches]
    outs = [[np.empty((b.size, tt.dim), dtype=np.float32) for b in batches] for _ in range(n_threads)]
    for worker_outs in outs:  # compile, and touch every output buffer, before any clock
        for b, o in zip(batches, worker_outs):
            tt_rebuild_rows(tt, b, o)
    if on_step:
        on_step(f"tt rebuild rank {rank}")
    sg_wall, sg_cpu, slices = [], [], []
    cursor = list(range(n_threads))  # each worker's next batch: the batches cycle across slices
    for _ in range(config.rounds):  # alternate SGEMM and kernel slices: both see the same machine load
        w, c = sgemm.run()
        sg_wall.append(w)
        sg_cpu.append(c)
        w0, c0 = clock(), time.process_time()
        done = list(pool.map(lambda worker: _work(tt, batches, flops, outs[worker], cursor[worker], n_threads, clock,
                                                  w0 + config.seconds / config.rounds), range(n_threads)))
        cursor = [x[4] for x in done]
        elapsed = max(x[3] for x in done) - w0
        slices.append((sum(x[0] for x in done), sum(x[1] for x in done), elapsed,
                       max(time.process_time() - c0, 1e-9), sum(x[2] for x in done)))
    n_done = sum(s[4] for s in slices)
    rows_done = sum(s[0] for s in slices)
    flops_done = sum(s[1] for s in slices)
    best = max(slices, key=lambda s: s[1] / s[2])
    gflops, gflops_cpu = best[1] / best[2] / 1e9, max(s[1] / s[3] for s in slices) / 1e9
    return {
        "rank": int(rank), "tt_ranks": list(ranks), "batches": n_done, "rows": rows_done,
        "seconds": sum(s[2] for s in slices), "rows_per_batch": rows_done / n_done,
        "flops_per_row": flops_done / rows_done, "rows_per_s": best[0] / best[2], "gflops": gflops,
        "gflops_mean": flops_done / sum(s[2] for s in slices) / 1e9, "sgemm_gflops": max(sg_wall),
        "gflops_median": statistics.median(s[1] / s[2] for s in slices) / 1e9,
        "sgemm_gflops_median": statistics.median(sg_wall),
        "fraction": gflops / max(sg_wall), "gflops_cpu": gflops_cpu, "sgemm_gflops_cpu": max(sg_cpu),
        "fraction_cpu": gflops_cpu / max(sg_cpu),
        "core_bytes": tt.nbytes,
    }


def _work(tt, batches, flops, outs, k: int, n_workers: int, clock, deadline: float):
    """One worker's share of a slice: batches k, k + n_workers, ... until the deadline. Returns (rows, flops,
    batches, end time, the next k). Kernels release the GIL, so workers run in parallel."""
    rows = flops_done = n = 0
    while True:
        i = k % len(batches)
        tt_rebuild_rows(tt, batches[i], outs[i])
        rows += batches[i].size
        flops_done += flops[i]
        n += 1
        k += n_workers
        now = clock()
        if now >= deadline:
            return rows, flops_done, n, now, k


def render(result: dict[str, Any]):
    """The result as a rich Table (pure: no printing)."""
    from rich.table import Table

    cfg = result["config"]
    shape = "x".join(map(str, cfg["p_shapes"])) + " rows, dims " + "x".join(map(str, cfg["q_shapes"]))
    t = Table(title=f"bench tt: {shape}, {result['row_distribution']} batches of {cfg['batch']}, "
                    f"{result['n_threads']} thread(s), {cfg['seconds']:g} s per rank")
    for col in ("rank", "rows/s", "GFLOP/s", "median", "SGEMM", "frac.", "frac. CPU", "FLOPs/row"):
        t.add_column(col, justify="right")
    for r in result["results"]:
        t.add_row(str(r["rank"]), f"{r['rows_per_s']:,.0f}", f"{r['gflops']:.1f}", f"{r['gflops_median']:.1f}",
                  f"{r['sgemm_gflops']:.1f}", f"{r['fraction']:.2f}", f"{r['fraction_cpu']:.2f}",
                  f"{r['flops_per_row']:,.0f}")
    t.caption = (f"GFLOP/s and SGEMM (GFLOP/s): best slice; median: the kernel's median slice; frac. = GFLOP/s / "
                 f"SGEMM, on wall time or CPU time. FLOPs = {result['flops_formula']}; {result['sgemm']}; load "
                 f"average {result['conditions']['loadavg_1m']:.2f} on {result['conditions']['cpus']} CPUs")
    return t


EXAMPLE = """example:
  screc bench tt --ranks 16,32 --seconds 5
  screc bench tt --rows 100x100x100 --dims 4x4x8 --ranks 8 --batch 1024 --seconds 1 --json runs/bench_tt.json"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_json_arg, add_out_dir_arg

    p = subparsers.add_parser("tt", help="TT row rebuild (compute-centric core) vs NumPy SGEMM",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="200x220x250", help="tt_p_shapes, e.g. 200x220x250 (11M rows, the default)")
    p.add_argument("--dims", default="4x4x4", help="tt_q_shapes, e.g. 4x4x4 (dim 64, the default)")
    p.add_argument("--ranks", default="16,32", help="comma-separated TT ranks to measure (default 16,32)")
    p.add_argument("--batch", type=int, default=4096, help="row ids drawn per batch before de-duplication")
    p.add_argument("--seconds", type=float, default=5.0, help="run time per rank (default 5)")
    p.add_argument("--distribution", choices=DISTRIBUTIONS, default="uniform",
                   help="row ids: uniform (default) or zipf")
    p.add_argument("--rounds", type=int, default=0,
                   help=f"SGEMM/kernel slices per rank, best of each reported (default 0: one per {SLICE_S:g} s)")
    p.add_argument("--threads", type=int, default=0,
                   help="batches rebuilt concurrently, one single-threaded kernel call each (default 0: one per CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed for cores and batches")
    add_json_arg(p)
    add_out_dir_arg(p)
    p.set_defaults(func=_handle)


def _parse_ints(text: str, sep: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in str(text).split(sep))
    except ValueError:
        raise InputError(f"{what} {text!r} is not a {sep!r}-separated list of integers") from None
    if not values or min(values) < 1:
        raise InputError(f"{what} {text!r}: values must be >= 1")
    return values


def _handle(args: argparse.Namespace) -> int:
    from bench.common import check_out, emit_result, make_progress, stderr_console

    check_out(args)
    if args.threads < 0:
        raise InputError("--threads must be >= 0")
    config = BenchTTConfig(p_shapes=_parse_ints(args.rows, "x", "--rows"),
                           q_shapes=_parse_ints(args.dims, "x", "--dims"),
                           ranks=_parse_ints(args.ranks, ",", "--ranks"), batch=args.batch, seconds=args.seconds,
                           distribution=args.distribution, n_threads=args.threads, seed=args.seed,
                           rounds=args.rounds)
    with make_progress(stderr_console()) as progress:
        task = progress.add_task("bench tt", total=len(config.ranks))
        result = run_bench_tt(config, on_step=lambda msg: progress.update(task, advance=1, description=msg))
    emit_result("bench-tt", result, args, render)
    return 0

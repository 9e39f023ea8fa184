"""``screc bench dram``: the DRAM tier's pooling kernel against ``torch.nn.EmbeddingBag(mode="sum")``.

Both sides get the same float32 table (``rows`` x ``dim``, seeded normal
values) and the same batches of Zipf(``alpha``) lookups, ``batch`` bags of
``pooling`` lookups each, in the same CSR layout (``include_last_offset=True``
on the torch side). The Zipf ranks are drawn by inverse CDF and mapped to
rows through a seeded permutation, so hot rows are scattered over the table
as in a table that has not been remapped. The outputs are checked to agree
(allclose; whether they are also bit-identical is reported) before timing;
that first pass of each side is also its warm-up (Numba compile, torch's
first call, first touch of the table and outputs), and no clock runs during
it. Timing then alternates the two sides, one pass over all batches each,
for about ``seconds`` in total: pooled lookups per second of the best pass
(``lookups_per_s``) and of the median pass (``*_median``), for both sides, and
their ratios (``ratio``: best passes, ``ratio_median``: median passes). Both
run with ``threads`` threads (``torch.set_num_threads`` and the kernel's
``threads``), both restored afterwards. :func:`run_bench_dram_threads` runs
that for several thread counts on one workload (``--threads all``: every
count from 1 to the CPUs). Every figure is measured on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numba
import numpy as np

from bench.common import format_bytes
from emulator.kernels.pooling import pool_rows
from tracegen.errors import InputError

N_BATCHES = 4  # distinct batches per timed pass (so one batch's rows are not all cached by its repeat)
MIN_PASSES = 3  # per side, whatever ``seconds`` says


@dataclass(frozen=True)
class DramBenchConfig:
    rows: int = 1_000_000
    dim: int = 64
    batch: int = 2048  # bags per batch
    pooling: int = 32  # lookups per bag
    alpha: float = 1.05  # Zipf exponent of row popularity
    threads: int = 1
    seconds: float = 5.0  # total timing budget, both sides together
    seed: int = 0
    use_torch: bool = True  # False measures the kernel alone

    def check(self) -> None:
        for name in ("rows", "dim", "batch", "pooling"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        if not self.alpha > 0:
            raise InputError(f"--alpha must be > 0, got {self.alpha}")
        if not 1 <= self.threads <= numba.config.NUMBA_NUM_THREADS:
            raise InputError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} "
                             f"(NUMBA_NUM_THREADS), got {self.threads}")
        if not self.seconds > 0:
            raise InputError(f"--seconds must be > 0, got {self.seconds}")
        table_bytes = self.rows * self.dim * 4
        free_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if table_bytes > 0.7 * free_bytes:
            raise InputError(f"a {self.rows:,} x {self.dim} fp32 table needs {format_bytes(table_bytes)}, "
                             f"more than this machine has free ({format_bytes(free_bytes)}); lower --rows or --dim")


def zipf_indices(rows: int, n: int, alpha: float, rng: np.random.Generator,
                 perm: np.ndarray | None = None) -> np.ndarray:
    """``n`` row ids whose ranks follow P(rank r) ~ r**-alpha (r = 1..rows), by inverse CDF.

    Rank r is row ``perm[r - 1]`` (identity when ``perm`` is None). Returns int64.
    """
    cdf = np.cumsum(np.arange(1, rows + 1, dtype=np.float64) ** -float(alpha))
    ranks = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right").clip(0, rows - 1)
    return (ranks if perm is None else perm[ranks]).astype(np.int64)


def make_workload(config: DramBenchConfig) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(table, per-batch indices, offsets) for ``config``: seeded, identical for both sides."""
    rng = np.random.default_rng(config.seed)
    table = rng.standard_normal((config.rows, config.dim), dtype=np.float32)
    perm = rng.permutation(config.rows)
    n = config.batch * config.pooling
    batches = [zipf_indices(config.rows, n, config.alpha, rng, perm) for _ in range(N_BATCHES)]
    offsets = np.arange(0, n + 1, config.pooling, dtype=np.int64)
    return table, batches, offsets


def _time_passes(sides: dict[str, Callable[[], None]], seconds: float,
                 clock: Callable[[], float]) -> dict[str, list[float]]:
    """Alternate one pass of each side until ``seconds`` have gone by (at least MIN_PASSES each)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    start = clock()
    while True:
        for name, run in sides.items():
            t0 = clock()
            run()
            times[name].append(clock() - t0)
        if min(len(v) for v in times.values()) >= MIN_PASSES and clock() - start >= seconds:
            return times


def cpu_threads() -> int:
    """The most threads both sides may use: the CPUs (Numba's thread count, which defaults to them)."""
    return max(1, min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS))


def run_bench_dram_threads(config: DramBenchConfig, thread_counts: list[int],
                           on_step: Callable[[str], None] | None = None,
                           clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """:func:`run_bench_dram` at each of ``thread_counts`` on one workload (built once); returns
    ``{"benchmark": "dram", "thread_counts": [...], "runs": [one result per count]}``."""
    if not thread_counts:
        raise InputError("no thread counts to run")
    for n in thread_counts:
        replace(config, threads=n).check()
    step = on_step or (lambda _msg: None)
    step("building table and Zipf batches")
    workload = make_workload(config)
    runs = [run_bench_dram(replace(config, threads=n), on_step=lambda msg, n=n: step(f"{n} thread(s): {msg}"),
                           clock=clock, workload=workload) for n in thread_counts]
    return {"benchmark": "dram", "thread_counts": list(thread_counts), "runs": runs,
            "conditions": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}}


def run_bench_dram(config: DramBenchConfig, on_step: Callable[[str], None] | None = None,
                   clock: Callable[[], float] = time.perf_counter,
                   workload: tuple[np.ndarray, list[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (torch figures are None when torch is missing).
    ``workload`` (``make_workload(config)``'s result) is built when None."""
    config.check()
    step = on_step or (lambda _msg: None)
    torch = None
    torch_missing = None
    if config.use_torch:
        try:
            import torch
        except ImportError:
            torch_missing = "torch is not installed (pip install screc[torch]); kernel figures only"
    else:
        torch_missing = "torch comparison switched off"

    if workload is None:
        step("building table and Zipf batches")
        workload = make_workload(config)
    table, batches, offsets = workload
    n_per_pass = N_BATCHES * config.batch * config.pooling
    outs = [np.empty((config.batch, config.dim), np.float32) for _ in batches]

    def kernel_pass() -> None:
        for idx, out in zip(batches, outs):
            pool_rows(table, idx, offsets, out, threads=config.threads)

    sides: dict[str, Callable[[], None]] = {"kernel": kernel_pass}
    step("compiling / warming up")
    kernel_pass()
    agree = bit_exact = max_abs_diff = None
    torch_threads_before = None
    if torch is not None:
        torch_threads_before = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        bag = torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(table), mode="sum", freeze=True,
                                                    include_last_offset=True)
        t_batches = [torch.from_numpy(idx) for idx in batches]
        t_offsets = torch.from_numpy(offsets)

        def torch_pass() -> None:
            with torch.inference_mode():
                for idx in t_batches:
                    bag(idx, t_offsets)

        with torch.inference_mode():
            ref = [bag(idx, t_offsets).numpy() for idx in t_batches]
        max_abs_diff = float(max(np.max(np.abs(r - o)) for r, o in zip(ref, outs)))
        agree = all(np.allclose(o, r, rtol=1e-5, atol=1e-5) for o, r in zip(outs, ref))
        bit_exact = all(np.array_equal(o, r) for o, r in zip(outs, ref))
        if not agree:
            torch.set_num_threads(torch_threads_before)
            raise RuntimeError(f"pool_rows and torch.nn.EmbeddingBag disagree (max abs diff {max_abs_diff:g})")
        sides["torch"] = torch_pass
    try:
        step(f"timing for about {config.seconds:g} s")
        times = _time_passes(sides, config.seconds, clock)
    finally:
        if torch_threads_before is not None:
            torch.set_num_threads(torch_threads_before)
    lookups_per_s = n_per_pass / min(times["kernel"])
    torch_lookups_per_s = n_per_pass / min(times["torch"]) if "torch" in times else None
    torch_median = n_per_pass / statistics.median(times["torch"]) if "torch" in times else None
    kernel_median = n_per_pass / statistics.median(times["kernel"])
    return {
        "benchmark": "dram",
        "config": asdict(config),
        "threads": config.threads,
        "table_bytes": int(table.nbytes),
        "lookups_per_pass": n_per_pass,
        "lookups_per_s": lookups_per_s,
        "torch_lookups_per_s": torch_lookups_per_s,
        "ratio": lookups_per_s / torch_lookups_per_s if torch_lookups_per_s else None,
        "lookups_per_s_median": kernel_median,
        "torch_lookups_per_s_median": torch_median,
        "ratio_median": kernel_median / torch_median if torch_median else None,
        "warm_up": "one untimed pass per side (the outputs compared) before any clock",
        "passes": len(times["kernel"]),
        "torch_passes": len(times.get("torch", [])),
        "outputs_allclose": agree,
        "outputs_bit_exact": bit_exact,
        "max_abs_diff": max_abs_diff,
        "torch_version": getattr(torch, "__version__", None),
        "torch_missing": torch_missing,
        "conditions": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
    }


# -- command line -------------------------------------------------------------------------------

EXAMPLE = """example:
  screc bench dram --rows 1000000 --dim 64 --batch 2048 --pooling 32 --alpha 1.05 --seconds 5
  screc bench dram --threads all --json runs/bench_dram.json   # every thread count from 1 to the CPUs"""


def parse_threads(text: str) -> list[int]:
    """``--threads``: ``N`` -> [N]; ``all`` -> [1, ..., CPUs]. Bad text raises InputError."""
    if text.strip().lower() == "all":
        return list(range(1, cpu_threads() + 1))
    try:
        n = int(text)
    except ValueError:
        raise InputError(f"--threads must be a positive integer or 'all', got {text!r}") from None
    return [n]


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_json_arg, add_out_dir_arg

    p = subparsers.add_parser("dram", help="DRAM-tier pooling kernel vs torch.nn.EmbeddingBag",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DramBenchConfig()
    p.add_argument("--rows", type=int, default=d.rows, help=f"table rows (default {d.rows})")
    p.add_argument("--dim", type=int, default=d.dim, help=f"embedding dimension (default {d.dim})")
    p.add_argument("--batch", type=int, default=d.batch, help=f"bags per batch (default {d.batch})")
    p.add_argument("--pooling", type=int, default=d.pooling, help=f"lookups per bag (default {d.pooling})")
    p.add_argument("--alpha", type=float, default=d.alpha, help=f"Zipf exponent of row popularity (default {d.alpha})")
    p.add_argument("--threads", default=None, metavar="N|all",
                   help="threads for both sides, or 'all' for every count from 1 to the CPUs "
                        f"(default: the CPUs, {cpu_threads()})")
    p.add_argument("--seconds", type=float, default=d.seconds,
                   help=f"timing budget per thread count, both sides (default {d.seconds:g})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the table and the lookups (default 0)")
    p.add_argument("--no-torch", action="store_true", help="measure the kernel alone")
    add_json_arg(p)
    add_out_dir_arg(p)
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bench.common import check_out, emit_result, is_live, stderr_console

    check_out(args)
    counts = parse_threads(args.threads) if args.threads is not None else [cpu_threads()]
    config = DramBenchConfig(rows=args.rows, dim=args.dim, batch=args.batch, pooling=args.pooling, alpha=args.alpha,
                             threads=counts[0], seconds=args.seconds, seed=args.seed, use_torch=not args.no_torch)
    for n in counts:
        replace(config, threads=n).check()
    err = stderr_console()
    if is_live():
        with err.status("bench dram") as status:
            result = _run(config, counts, lambda msg: status.update(f"bench dram: {msg}"))
    else:
        result = _run(config, counts, None)
    first = result["runs"][0] if "runs" in result else result
    if first["torch_missing"] and config.use_torch:
        err.print(first["torch_missing"], soft_wrap=True)
    emit_result("bench-dram", result, args, render)
    return 0


def _run(config: DramBenchConfig, counts: list[int], on_step) -> dict[str, Any]:
    """One count: the plain result (as ``run_bench_dram``); several: the sweep."""
    if len(counts) == 1:
        return run_bench_dram(config, on_step=on_step)
    return run_bench_dram_threads(config, counts, on_step=on_step)


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:,.1f} M"


def render(result: dict[str, Any]):
    """The result (one thread count or a sweep) as a rich Table (pure: no printing)."""
    from rich.table import Table

    runs = result["runs"] if "runs" in result else [result]
    first = runs[0]
    c = first["config"]
    t = Table(title=f"bench dram (measured): {c['rows']:,} x {c['dim']} fp32 ({format_bytes(first['table_bytes'])}), "
                    f"{c['batch']} bags x {c['pooling']} lookups, Zipf {c['alpha']:g}")
    t.add_column("threads", justify="right")
    t.add_column("pooling", justify="left")
    t.add_column("lookups/s median", justify="right")
    t.add_column("best", justify="right")
    t.add_column("vs torch", justify="right")
    for r in runs:
        has_torch = r["torch_lookups_per_s"] is not None
        t.add_row(str(r["threads"]), "screc pool_rows (Numba)", _rate(r["lookups_per_s_median"]),
                  _rate(r["lookups_per_s"]), "-" if r["ratio_median"] is None else f"{r['ratio_median']:.2f}x")
        t.add_row("", f"torch EmbeddingBag {r['torch_version'] or ''}".rstrip(),
                  _rate(r["torch_lookups_per_s_median"]), _rate(r["torch_lookups_per_s"]),
                  "1.00x" if has_torch else "-", end_section=True)
    conditions = result.get("conditions", first["conditions"])
    notes = [f"median and best of >= {min(r['passes'] for r in runs)} alternating passes of "
             f"{first['lookups_per_pass']:,} lookups after an untimed one; vs torch: ratio of medians",
             f"load average {conditions['loadavg_1m']:.2f} on {conditions['cpus']} CPUs"]
    if first["torch_missing"]:
        notes.append(first["torch_missing"])
    else:
        exact = all(r["outputs_bit_exact"] for r in runs)
        notes.append("outputs bit-identical" if exact else
                     f"outputs allclose (max abs diff {max(r['max_abs_diff'] for r in runs):.2g})")
    t.caption = "; ".join(notes)
    return t

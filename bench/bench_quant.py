"""``screc bench quant``: dequantize-and-pool kernels against FBGEMM's CPU TBE and torch's EmbeddingBag.

The workload is ``tables`` tables of ``rows`` x ``dim`` (seeded normal
float32 rows), each stored in every row format of ``formats``
(emulator/store/quant.py), and ``N_BATCHES`` batches of ``batch`` bags of
``pooling`` Zipf(``alpha``) lookups per table (hot rows scattered by a seeded
permutation, as in ``bench dram``). Three sides pool the same lookups:

* screc: :func:`emulator.kernels.quant.pool_quantized`, one call per table,
  into the table's columns of a (batch, tables x dim) output;
* FBGEMM: ``IntNBitTableBatchedEmbeddingBagsCodegen`` (fbgemm-gpu-cpu, one
  module per format over all the tables, one forward per batch), run by
  ``bench/fbgemm_tbe.py`` in the virtualenv of ``scripts/fbgemm_env.sh`` on
  the same rows and lookups written as .npy files (skipped, with the reason,
  when that environment is missing or fails);
* torch: ``torch.nn.EmbeddingBag(mode="sum")`` on the float32 rows, one per table.

Every side pools each batch once, untimed, before any clock (outputs compared
there: screc against FBGEMM per format, and each format's pooled sums against
the float32 ones). Then ``rounds`` rounds, the sides' order rotating each
round; in a round each side times passes over all batches, at least 2 and for
at least ``seconds``, per format. Figures: pooled lookups per second of the
best and of the median pass over all rounds, and the ratio screc / FBGEMM per
format. All sides run one thread (torch.set_num_threads(1) on both torch sides).
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

import numpy as np

from bench.bench_dram import zipf_indices
from bench.common import RUNS_DIR, format_bytes
from emulator.kernels.quant import pool_quantized
from emulator.store.quant import ROW_FORMATS, RowFormat, quantize_rows
from tracegen.errors import InputError

N_BATCHES = 2
MIN_PASSES = 2
FBGEMM_PYTHON = "runs/fbgemm-venv/bin/python"
FBGEMM_SCRIPT = Path(__file__).with_name("fbgemm_tbe.py")


@dataclass(frozen=True)
class QuantBenchConfig:
    tables: int = 8
    rows: int = 1_000_000
    dim: int = 64
    batch: int = 2048  # bags per table per batch
    pooling: int = 32  # lookups per bag
    alpha: float = 1.05
    formats: tuple[str, ...] = ROW_FORMATS
    rounds: int = 3
    seconds: float = 1.0  # per side and format in each round (at least MIN_PASSES passes)
    seed: int = 0
    fbgemm_python: str | None = FBGEMM_PYTHON  # None: FBGEMM side off
    use_torch: bool = True

    def check(self) -> None:
        for name in ("tables", "rows", "dim", "batch", "pooling", "rounds"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        if not self.alpha > 0 or not self.seconds > 0:
            raise InputError(f"--alpha and --seconds must be > 0, got {self.alpha} and {self.seconds}")
        bad = [f for f in self.formats if f not in ROW_FORMATS]
        if bad or not self.formats or len(set(self.formats)) != len(self.formats):
            raise InputError(f"--formats {','.join(self.formats)}: give distinct names among {','.join(ROW_FORMATS)}")
        need = self.tables * self.rows * sum(RowFormat(f, self.dim).row_bytes for f in {"fp32", *self.formats})
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if need > 0.6 * free:
            raise InputError(f"{self.tables} tables of {self.rows:,} x {self.dim} in {', '.join(self.formats)} need "
                             f"{format_bytes(need)}, more than this machine has free ({format_bytes(free)})")


@dataclass(frozen=True)
class Workload:
    weights: tuple[np.ndarray, ...]  # per table, float32 (rows, dim)
    stored: dict[str, tuple[np.ndarray, ...]]  # format -> per table (rows, row_bytes) uint8
    indices: tuple[tuple[np.ndarray, ...], ...]  # batch -> table -> int64 lookups
    offsets: np.ndarray  # int64, one table's bags (the same for every table)

    @property
    def lookups_per_pass(self) -> int:
        return sum(int(i.size) for batch in self.indices for i in batch)


def make_workload(config: QuantBenchConfig) -> Workload:
    rng = np.random.default_rng(config.seed)
    n = config.batch * config.pooling
    weights, stored = [], {f: [] for f in config.formats}
    perms = []
    for _ in range(config.tables):
        w = rng.standard_normal((config.rows, config.dim), dtype=np.float32)
        weights.append(w)
        for f in config.formats:
            stored[f].append(w.view(np.uint8) if f == "fp32" else quantize_rows(w, f))
        perms.append(rng.permutation(config.rows))
    indices = tuple(tuple(zipf_indices(config.rows, n, config.alpha, rng, perms[t]) for t in range(config.tables))
                    for _ in range(N_BATCHES))
    return Workload(tuple(weights), {f: tuple(v) for f, v in stored.items()}, indices,
                    np.arange(0, n + 1, config.pooling, dtype=np.int64))


def screc_pass(work: Workload, fmt: str, outs: list[np.ndarray]) -> None:
    """Pool every batch of every table from ``fmt`` rows into ``outs[batch][:, table columns]``."""
    dim = work.weights[0].shape[1]
    for batch, out in zip(work.indices, outs):
        for t, idx in enumerate(batch):
            pool_quantized(work.stored[fmt][t], fmt, dim, idx, work.offsets, out[:, t * dim:(t + 1) * dim])


class FbgemmSide:
    """``bench/fbgemm_tbe.py`` in its own virtualenv, driven a round at a time over stdin/stdout."""

    def __init__(self, python: str, work: Workload, formats: tuple[str, ...], data_dir: Path):
        self.data_dir = data_dir
        self.formats = formats
        dim = work.weights[0].shape[1]
        for f in formats:
            for t, rows in enumerate(work.stored[f]):
                np.save(data_dir / f"t{t}_{f}.npy", rows)
        # TBE order: table-major lookups, offsets over all tables' bags (every bag has `pooling` lookups)
        for b, batch in enumerate(work.indices):
            np.save(data_dir / f"indices_{b}.npy", np.concatenate(batch).astype(np.int32))
        total, pooling = sum(i.size for i in work.indices[0]), int(work.offsets[1] - work.offsets[0])
        np.save(data_dir / "offsets.npy", np.arange(0, total + 1, pooling, dtype=np.int32))
        (data_dir / "config.json").write_text(json.dumps(
            {"tables": len(work.weights), "rows": work.weights[0].shape[0], "dim": dim, "formats": list(formats),
             "batches": len(work.indices)}))
        self.proc = subprocess.Popen([python, str(FBGEMM_SCRIPT), str(data_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.info = self._reply("ready")

    def _reply(self, key: str) -> dict:
        line = self.proc.stdout.readline()
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {}
        if key not in msg:
            self.proc.kill()
            err = [s for s in self.proc.stderr.read().splitlines() if s.strip()]
            raise RuntimeError(f"the FBGEMM side stopped ({err[-1] if err else 'no message'})")
        return msg

    def outputs(self) -> dict[str, np.ndarray]:
        return {f: np.load(self.data_dir / f"out_{f}.npy") for f in self.formats}

    def run(self, seconds: float) -> dict[str, list[float]]:
        self.proc.stdin.write(f"run {seconds}\n")
        self.proc.stdin.flush()
        return self._reply("times")["times"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def _start_fbgemm(config: QuantBenchConfig, work: Workload, data_dir: Path) -> tuple[FbgemmSide | None, str | None]:
    if config.fbgemm_python is None:
        return None, "FBGEMM side switched off"
    if not Path(config.fbgemm_python).is_file():
        return None, f"FBGEMM skipped: {config.fbgemm_python} not found (make it with scripts/fbgemm_env.sh)"
    try:
        return FbgemmSide(config.fbgemm_python, work, tuple(config.formats), data_dir), None
    except (RuntimeError, OSError) as e:
        return None, f"FBGEMM skipped: {e}"


def _timed(run: Callable[[], None], seconds: float, clock: Callable[[], float]) -> list[float]:
    times: list[float] = []
    start = clock()
    while len(times) < MIN_PASSES or clock() - start < seconds:
        t0 = clock()
        run()
        times.append(clock() - t0)
    return times


def _torch_side(config: QuantBenchConfig, work: Workload):
    """(one pass over every batch, its batch-0 output) of torch.nn.EmbeddingBag on the float32 rows."""
    import torch

    bags = [torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(w), mode="sum", freeze=True,
                                                  include_last_offset=True) for w in work.weights]
    t_idx = [[torch.from_numpy(i) for i in batch] for batch in work.indices]
    t_off = torch.from_numpy(work.offsets)

    def run() -> None:
        with torch.inference_mode():
            for batch in t_idx:
                for bag, idx in zip(bags, batch):
                    bag(idx, t_off)

    with torch.inference_mode():
        first = np.concatenate([bag(idx, t_off).numpy() for bag, idx in zip(bags, t_idx[0])], axis=1)
    return run, first


def _compare(screc: dict[str, np.ndarray], fbgemm: dict[str, np.ndarray], torch_out) -> dict[str, Any]:
    ref = screc.get("fp32")
    out: dict[str, Any] = {}
    for f, o in screc.items():
        row: dict[str, Any] = {}
        if ref is not None:
            row["max_abs_vs_fp32"] = float(np.abs(o - ref).max())
            row["rel_fro_vs_fp32"] = float(np.linalg.norm(o - ref) / np.linalg.norm(ref))
        if f in fbgemm:
            row["fbgemm_max_abs_diff"] = float(np.abs(o - fbgemm[f]).max())
            row["fbgemm_bit_exact"] = bool(np.array_equal(o, fbgemm[f]))
        out[f] = row
    if torch_out is not None and ref is not None:
        out["fp32"]["torch_bit_exact"] = bool(np.array_equal(ref, torch_out))
    return out


def _rates(times: list[float], n: int) -> dict[str, float]:
    return {"best": n / min(times), "median": n / statistics.median(times), "passes": len(times)}


def run_bench_quant(config: QuantBenchConfig, on_step: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.perf_counter, runs_dir: str = RUNS_DIR) -> dict[str, Any]:
    """Run the benchmark; a JSON-ready dict. Missing references are None with the reason in ``*_missing``."""
    config.check()
    step = on_step or (lambda _msg: None)
    step("making tables and lookups")
    work = make_workload(config)
    n = work.lookups_per_pass
    dim = config.dim
    outs = {f: [np.empty((config.batch, config.tables * dim), np.float32) for _ in work.indices]
            for f in config.formats}
    step("warming up (untimed, outputs compared)")
    for f in config.formats:
        screc_pass(work, f, outs[f])
    torch_run = torch_out = torch_missing = None
    if config.use_torch:
        try:
            import torch
        except ImportError:
            torch_missing = "torch is not installed (pip install screc[torch])"
    else:
        torch_missing = "torch side switched off"
    threads_before = None
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix=".bench-quant-", dir=runs_dir))
    fb = None
    try:
        if torch_missing is None:
            threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
            torch_run, torch_out = _torch_side(config, work)
        step("starting the FBGEMM side")
        fb, fb_missing = _start_fbgemm(config, work, data_dir)
        compared = _compare({f: outs[f][0] for f in config.formats}, fb.outputs() if fb else {}, torch_out)
        times = _rounds(config, work, outs, torch_run, fb, clock, step)
    finally:
        if fb is not None:
            fb.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        if threads_before is not None:
            torch.set_num_threads(threads_before)
    return _result(config, work, n, times, compared, torch_missing, fb_missing, fb.info if fb else None)


def _rounds(config, work, outs, torch_run, fb, clock, step) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {"screc": {f: [] for f in config.formats}, "fbgemm": {}, "torch": {}}
    sides = ["screc", "fbgemm", "torch"]
    for r in range(config.rounds):
        order = sides[r % 3:] + sides[:r % 3]
        for side in order:
            step(f"round {r + 1}/{config.rounds}: {side}")
            if side == "screc":
                for f in config.formats:
                    times["screc"][f] += _timed(lambda f=f: screc_pass(work, f, outs[f]), config.seconds, clock)
            elif side == "torch" and torch_run is not None:
                times["torch"].setdefault("fp32", []).extend(_timed(torch_run, config.seconds, clock))
            elif side == "fbgemm" and fb is not None:
                for f, ts in fb.run(config.seconds).items():
                    times["fbgemm"].setdefault(f, []).extend(ts)
    return times


def _result(config, work, n, times, compared, torch_missing, fb_missing, fb_info) -> dict[str, Any]:
    rates = {side: {f: _rates(ts, n) for f, ts in by_fmt.items()} for side, by_fmt in times.items()}
    torch_rate = rates["torch"].get("fp32", {}).get("best")
    per_format = {}
    for f in config.formats:
        mine, fbg = rates["screc"][f], rates["fbgemm"].get(f)
        per_format[f] = {"row_bytes": RowFormat(f, config.dim).row_bytes,
                         "table_bytes": int(sum(s.nbytes for s in work.stored[f])),
                         "screc": mine, "fbgemm": fbg,
                         "ratio_vs_fbgemm": mine["best"] / fbg["best"] if fbg else None,
                         "ratio_vs_torch_fp32": mine["best"] / torch_rate if torch_rate else None,
                         **compared[f]}
    return {"benchmark": "quant", "config": {**asdict(config), "formats": list(config.formats)},
            "lookups_per_pass": n, "formats": per_format, "torch_fp32": rates["torch"].get("fp32"),
            "torch_missing": torch_missing, "fbgemm_missing": fb_missing, "fbgemm_versions": fb_info,
            "warm_up": "every side pools each batch once, untimed, before any clock",
            "conditions": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "threads": 1}}


# -- command line -------------------------------------------------------------------------------

EXAMPLE = """example:
  scripts/fbgemm_env.sh        # once: runs/fbgemm-venv with torch 2.14.1 and fbgemm-gpu-cpu 1.9.0
  screc bench quant --tables 8 --rows 1000000 --dim 64 --rounds 3
  screc bench quant --rows 100000 --formats int8,int4 --json runs/bench_quant.json

columns:
  fmt          row format (fp32 raw, fp16, int8 / int4 with per-row scale and bias, FBGEMM's layouts)
  row B        bytes per row;  screc, FBGEMM   pooled lookups per second (millions) of the best pass
  med          the same for the median pass;  x FBGEMM  screc / FBGEMM (best passes)
  max diff     largest |screc - FBGEMM| of one pooled element (FBGEMM's int8 keeps fp16 scale and bias)
  vs fp32      largest |format - fp32| of one pooled element (the format's own error)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.common import add_json_arg, add_out_dir_arg

    p = subparsers.add_parser("quant", help="dequantize-and-pool kernels vs FBGEMM's TBE and torch EmbeddingBag",
                              description=__doc__.splitlines()[0] + "\n\n" + EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    d = QuantBenchConfig()
    for name, typ, text in (("tables", int, "tables"), ("rows", int, "rows per table"), ("dim", int, "row width"),
                            ("batch", int, "bags per table per batch"), ("pooling", int, "lookups per bag"),
                            ("alpha", float, "Zipf exponent of row popularity"), ("rounds", int, "timing rounds"),
                            ("seconds", float, "seconds per side and format in a round"), ("seed", int, "seed")):
        p.add_argument(f"--{name}", type=typ, default=getattr(d, name), help=f"{text} (default {getattr(d, name)})")
    p.add_argument("--formats", default=",".join(d.formats), help=f"row formats (default {','.join(d.formats)})")
    p.add_argument("--fbgemm-python", default=FBGEMM_PYTHON,
                   help=f"python of the FBGEMM virtualenv (default {FBGEMM_PYTHON}, made by scripts/fbgemm_env.sh)")
    p.add_argument("--no-fbgemm", action="store_true", help="skip the FBGEMM side")
    p.add_argument("--no-torch", action="store_true", help="skip the torch side")
    add_json_arg(p)
    add_out_dir_arg(p)
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from bench.common import check_out, emit_result, is_live, stderr_console

    check_out(args)
    config = QuantBenchConfig(tables=args.tables, rows=args.rows, dim=args.dim, batch=args.batch,
                              pooling=args.pooling, alpha=args.alpha, rounds=args.rounds, seconds=args.seconds,
                              seed=args.seed, formats=tuple(x.strip() for x in args.formats.split(",") if x.strip()),
                              fbgemm_python=None if args.no_fbgemm else args.fbgemm_python, use_torch=not args.no_torch)
    config.check()
    err = stderr_console()
    if is_live():
        with err.status("bench quant") as status:
            result = run_bench_quant(config, on_step=lambda m: status.update(f"bench quant: {m}"),
                                     runs_dir=args.out_dir or RUNS_DIR)
    else:
        result = run_bench_quant(config, runs_dir=args.out_dir or RUNS_DIR)
    for key in ("fbgemm_missing", "torch_missing"):
        if result[key]:
            err.print(result[key], soft_wrap=True)
    emit_result("bench-quant", result, args, render)
    return 0


def render(result: dict[str, Any]):
    """The result as an 80-column table (pure)."""
    from bench.tables import fit_table, num

    c = result["config"]
    cells = []
    for f, r in result["formats"].items():
        fb = r["fbgemm"] or {}
        cells.append([f, str(r["row_bytes"]), num(r["screc"]["best"], ".1f", 1e-6), num(r["screc"]["median"], ".1f", 1e-6),
                      num(fb.get("best"), ".2f", 1e-6), num(fb.get("median"), ".2f", 1e-6),
                      num(r["ratio_vs_fbgemm"], ".1f"), num(r.get("fbgemm_max_abs_diff"), ".1e"),
                      num(r.get("max_abs_vs_fp32"), ".1e")])
    title = (f"bench quant (measured): {c['tables']} tables of {c['rows']:,} x {c['dim']}, {c['batch']} bags x "
             f"{c['pooling']} lookups, Zipf {c['alpha']:g}, 1 thread; M lookups/s")
    t = fit_table(title, ["fmt", "row B", "screc", "med", "FBGEMM", "med", "x FBGEMM", "max diff", "vs fp32"], cells)
    tr = result["torch_fp32"]
    notes = [f"torch EmbeddingBag fp32: {tr['best'] / 1e6:.1f} M/s best, {tr['median'] / 1e6:.1f} median"
             if tr else (result["torch_missing"] or "no torch")]
    if result["fbgemm_missing"]:
        notes.append(result["fbgemm_missing"])
    elif result["fbgemm_versions"]:
        v = result["fbgemm_versions"]
        notes.append(f"FBGEMM: fbgemm_gpu {v.get('fbgemm_gpu')}, torch {v.get('torch')}")
    notes.append(f"load average {result['conditions']['loadavg_1m']:.2f} on {result['conditions']['cpus']} CPUs")
    t.caption = "; ".join(notes)
    return t


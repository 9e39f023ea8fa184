"""The replays the host thread's costs are fitted on (see :mod:`plans.host_fit`).

Synthetic traces drawn with a store's own table shapes and skew
(:func:`write_synthetic_trace`), the plans that exercise every host path
(:func:`calibration_plans`: all-DRAM, all-SSD on one and two devices, all-TT
at each rank, half-hot and mostly-hot mixes, each with a random remap), a
scratch store of many tiny tables, and one timed (replayer, trace) pair
(:class:`ReplayJob`) that counts what the host does per batch
(:func:`batch_features`, from the engine's own ``prepare`` output) and times
its runs; :func:`calibration_jobs` sets them all up and :func:`run_interleaved`
runs them in shuffled rounds, opening one plan's replayer at a time (a replayer
holds its plan's DRAM tables, TT cores and read buffers: all of them open at
once took 23 GB for a 1.7 GiB store).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from emulator.tiers import SSD_RAW, SSD_TT
from plans.cost import tt_flops_per_row
from plans.types import PAGE_BYTES

FEATURES = ("batch", "table", "lookup", "raw_table", "raw_lookup", "read", "tt_table", "tt_lookup", "tt_row",
            "tt_flop", "io_device")
MINI_TABLES = 64  # tables of the scratch store that separates per-table from per-batch costs
MINI_ROWS = 256
DRAM_LIMIT_BYTES = 256 << 20  # a calibration plan never pins more than this much of the store in host memory
REMAP_ROWS_LIMIT = 1 << 24  # tables up to this many rows get a (random) remap in the calibration plans
MAX_BATCH_LOOKUPS = 1 << 22  # expected lookups per calibration batch at most (meta-2021's 65,536 samples of
# 13,535 lookups each are 887M lookups, 7 GB of indices per batch: the synthetic trace alone took ~18 GiB)


@dataclass(frozen=True)
class ReplaySample:
    """One calibration replay: what the host did per batch (``features``) and how long it took."""

    name: str
    batches: int
    features: dict[str, float]
    host_s: float  # per batch: (elapsed - IO wait) / batches
    batch_s: float  # per batch: elapsed / batches
    io_s: tuple[float, ...]  # per device, engine busy time per batch
    reads: tuple[float, ...]  # per device, reads per batch
    pages: tuple[float, ...]  # per device, pages per batch

    def to_dict(self) -> dict:
        return {"name": self.name, "batches": self.batches, "features": self.features, "host_s": self.host_s,
                "batch_s": self.batch_s, "io_s": list(self.io_s), "reads": list(self.reads),
                "pages": list(self.pages)}


# --- synthetic traces --------------------------------------------------------------------------


def write_synthetic_trace(path: Path, spec, batches: int, batch_size: int, rng: np.random.Generator) -> None:
    """Zipf(``zipf_alpha``) lookups through a random permutation per table, pooling as in ``spec``."""
    from tracegen.trace_io import TraceWriter

    perms, cdfs = [], []
    for t in spec.tables:
        perms.append(rng.permutation(t.rows))
        n = min(t.rows, 1 << 20)  # the head carries the mass; beyond it, draw uniformly in the tail
        p = np.arange(1, n + 1, dtype=np.float64) ** -max(t.zipf_alpha, 0.0)
        cdfs.append(np.cumsum(p) / p.sum())
    with TraceWriter(path, spec, seed=int(rng.integers(1 << 31)), params={"calibration": True},
                     batch_size=batch_size) as w:
        for _ in range(batches):
            idx, lens = [], []
            for t, perm, cdf in zip(spec.tables, perms, cdfs):
                pool = t.pooling
                if pool.kind == "fixed":
                    n = np.full(batch_size, int(pool.mean), np.int64)
                else:
                    n = np.clip(rng.poisson(max(pool.mean_lookups, 0.0), batch_size), pool.min, pool.max)
                ranks = np.minimum(np.searchsorted(cdf, rng.random(int(n.sum()))), cdf.size - 1)
                idx.append(perm[ranks])
                lens.append(n)
            w.append(np.concatenate(idx), np.concatenate([[0], np.cumsum(np.concatenate(lens))]))


def calibration_batch_sizes(spec, max_lookups: int = MAX_BATCH_LOOKUPS) -> list[int]:
    """The batch sizes the host costs are fitted on: the spec's batch size and a quarter of it, each capped so
    that a batch holds at most about ``max_lookups`` lookups (by the spec's mean pooling); a store whose batches
    are that small already keeps its own sizes."""
    per_sample = max(1.0, sum(max(0.0, t.pooling.mean_lookups) for t in spec.tables))
    b = max(1, min(int(spec.batch_size), int(max_lookups // per_sample)))
    return [b, max(1, b // 4)]


def _mini_spec(dim: int, batch_size: int):
    from tracegen.spec import ModelSpec, PoolingSpec, TableSpec

    return ModelSpec("calibration-mini", tuple(TableSpec(f"m{i}", rows=MINI_ROWS, dim=dim, pooling=PoolingSpec.fixed(1),
                                                         zipf_alpha=1.0) for i in range(MINI_TABLES)),
                     batch_size=batch_size)


# --- plans to calibrate on ---------------------------------------------------------------------


def write_random_remap(store, path: Path, rng: np.random.Generator) -> Path:
    """A dense random renumbering of every table of at most ``REMAP_ROWS_LIMIT`` rows (larger ones keep their
    order): plans from ``screc plan solve`` always carry a remap, and translating ids costs the host time."""
    from plans.remap import Remap, TableRemap

    tables = [TableRemap(t.name, int(t.rows), perm=rng.permutation(int(t.rows)).astype(np.int64))
              for t in store.tables if int(t.rows) <= REMAP_ROWS_LIMIT]
    Remap(tables, {"source": "calibration: random"}).save(path)
    return path


def calibration_plans(store, remap: Path | None = None) -> list:
    """Plans exercising every host path: (label, Plan), each with ``remap`` (a remap file) if given. Hot sets
    are capped at ``DRAM_LIMIT_BYTES`` in total."""
    from emulator.plan import DevicePlan, Plan, TablePlacement

    tabs = store.tables
    ranks = sorted({int(v.rank) for t in tabs for v in t.tt})
    budget = DRAM_LIMIT_BYTES

    def hot_cap(rows_wanted: list[int]) -> list[int]:
        total = sum(r * t.row_bytes for r, t in zip(rows_wanted, tabs))
        if total <= budget:
            return rows_wanted
        f = budget / total
        return [int(r * f) for r in rows_wanted]

    def tier(t, rank: int | None) -> tuple[str, int | None]:
        have = {int(v.rank) for v in t.tt}
        return (SSD_TT, rank) if rank is not None and rank in have else (SSD_RAW, None)

    def plan(label: str, hot: list[int], rank: int | None, devices: int = 1, mask: list[bool] | None = None):
        hot = hot_cap(hot)
        pls = []
        for i, (t, k) in enumerate(zip(tabs, hot)):
            use_rank = rank if mask is None or mask[i] else None
            ct, r = tier(t, use_rank)
            pls.append(TablePlacement(t.name, int(k), ct, r, i % devices))
        devs = tuple(DevicePlan(f"cal{d}", 1, 1) for d in range(devices))
        return label, Plan(store.store_id, tuple(pls), devs, planner=f"calibration:{label}",
                           remap=None if remap is None else str(remap))

    rows = [int(t.rows) for t in tabs]
    n = len(tabs)
    out = [plan("all-dram", rows, None), plan("all-ssd", [0] * n, None), plan("all-ssd-2dev", [0] * n, None, 2),
           plan("half-hot-ssd", [r // 2 for r in rows], None),
           plan("alternate-dram-ssd", [r if i % 2 else 0 for i, r in enumerate(rows)], None, 2),
           plan("mostly-hot-ssd-2dev", [r - max(1, r // 20) for r in rows], None, 2)]  # few reads on both devices
    for rank in ranks:
        out.append(plan(f"all-tt-r{rank}", [0] * n, rank))
    if ranks:
        out.append(plan(f"half-hot-tt-r{ranks[0]}", [r // 2 for r in rows], ranks[0]))
        out.append(plan(f"alternate-tt-ssd-r{ranks[-1]}", [0] * n, ranks[-1], 2, [i % 2 == 0 for i in range(n)]))
        out.append(plan(f"mostly-hot-tt-2dev-r{ranks[0]}", [r - max(1, r // 10) for r in rows], ranks[0], 2))
    return out


# --- one replay --------------------------------------------------------------------------------


def _flops_by_table(store, plan) -> list[float]:
    out = []
    for t in store.tables:
        p = plan.placement(t.name)
        f = 0.0
        if p.cold_tier == SSD_TT:
            v = t.tt_variant(p.tt_rank)
            f = tt_flops_per_row(v.tt_q_shapes, v.tt_ranks)
        out.append(f)
    return out


def batch_features(prepared, n_devices: int, flops: Sequence[float]) -> tuple[dict[str, float], list, list]:
    """What the host does for one prepared batch (see :data:`FEATURES`), and reads and pages per device."""
    from emulator.tiers import KIND_PAGE, KIND_STAGED

    f = dict.fromkeys(FEATURES, 0.0)
    f["batch"] = 1.0
    f["table"] = float(len(prepared.kinds))
    f["lookup"] = float(prepared.batch.num_lookups)
    for kind, rows, fl in zip(prepared.kinds, prepared.tt_rows, flops):
        n_page = int(np.count_nonzero(kind == KIND_PAGE))
        f["raw_table"] += n_page > 0
        f["raw_lookup"] += n_page
        if rows is not None:
            f["tt_table"] += 1
            f["tt_lookup"] += int(np.count_nonzero(kind == KIND_STAGED))
            f["tt_row"] += rows.size
            f["tt_flop"] += rows.size * fl
    reads, pages = [0.0] * n_devices, [0.0] * n_devices
    for d, r in enumerate(prepared.reads):
        if r is not None:
            reads[d] = float(r.count)
            pages[d] = float(r.total_bytes) / PAGE_BYTES
    f["read"] = float(sum(reads))
    f["io_device"] = float(sum(1 for x in reads if x > 0))
    return f, reads, pages


class PlanTarget:
    """One calibration plan on a store: its replayer (and with it the plan's DRAM tables, TT cores, IO rings and
    buffers) exists only between :meth:`open` and :meth:`close`, so that :func:`run_interleaved` can bound how many
    are held at once."""

    def __init__(self, store, plan, config):
        self.store, self.plan, self.config = store, plan, config
        self.rep = None
        self.blocked = [0.0]
        self.flops = _flops_by_table(store, plan)

    def open(self) -> None:
        from emulator.replay.engine import Replayer

        self.rep = Replayer(self.store, self.plan, self.config)
        self.blocked = _time_blocking(self.rep)

    def close(self) -> None:
        rep, self.rep = self.rep, None
        if rep is not None:
            rep.close()


class ReplayJob:
    """One (plan, trace) pair of the calibration: what the host does per batch, and its timed runs. Its plan's
    replayer must be open (:class:`PlanTarget`) while it is counted or run."""

    def __init__(self, label: str, target: PlanTarget, reader):
        self.label, self.target, self.reader = label, target, reader
        self.features: dict[str, float] = {}
        self.reads: tuple[float, ...] = ()
        self.pages: tuple[float, ...] = ()
        self.batches = 0
        self.runs: list[tuple[float, float, list[float]]] = []  # (host s, batch s, IO s per device), per batch

    @property
    def rep(self):
        if self.target.rep is None:
            raise RuntimeError(f"calibration job {self.label}: its replayer is not open")
        return self.target.rep

    def count(self) -> None:
        """What the host does per batch: a counting pass, prepare only, no reads issued."""
        rep = self.rep
        nd = len(rep.engines)
        feats, reads, pages = [], [], []
        for b in self.reader.batches(0, self.reader.num_batches):
            f, r, p = batch_features(rep.prepare(b), nd, self.target.flops)
            feats.append(f)
            reads.append(r)
            pages.append(p)
        self.features = {k: float(np.mean([f[k] for f in feats])) for k in FEATURES}
        self.reads = tuple(np.mean(reads, axis=0).tolist())
        self.pages = tuple(np.mean(pages, axis=0).tolist())
        self.batches = len(feats)

    def run(self) -> None:
        """One timed replay of the whole trace, as ``screc replay`` runs it (pipelined, with live statistics)."""
        from emulator.replay.counters import ReplayStats

        rep, blocked = self.rep, self.target.blocked
        c0 = [e.counters() for e in rep.engines]
        blocked[0] = 0.0
        rep.stats = ReplayStats()
        tot = rep.run(self.reader)
        c1 = [e.counters() for e in rep.engines]
        nb = max(1, tot["batches"])
        wait = sum(b.wait_s - a.wait_s for a, b in zip(c0, c1))
        self.runs.append(((tot["elapsed_s"] - wait - blocked[0]) / nb, tot["elapsed_s"] / nb,
                          [(b.busy_s - a.busy_s) / nb for a, b in zip(c0, c1)]))

    def sample(self) -> ReplaySample:
        """The run of median batch time (robust to a burst of load from other processes)."""
        host, total, io = self.runs[int(np.argsort([r[1] for r in self.runs])[len(self.runs) // 2])]
        return ReplaySample(self.label, self.batches, self.features, host, total, tuple(io), self.reads, self.pages)

    def run_samples(self) -> list[ReplaySample]:
        """One sample per timed run (the host fit weighs them robustly)."""
        return [ReplaySample(self.label, self.batches, self.features, host, total, tuple(io), self.reads, self.pages)
                for host, total, io in self.runs]


def _time_blocking(rep) -> list[float]:
    """Time the replay's host thread spends inside each engine's ``start`` (it blocks there while the engine
    still serves the previous batch): the engines' ``start`` is wrapped on these instances only."""
    blocked = [0.0]
    for eng in rep.engines:
        def timed_start(*args, _start=eng.start, **kw):
            t0 = time.perf_counter()
            try:
                return _start(*args, **kw)
            finally:
                blocked[0] += time.perf_counter() - t0

        eng.start = timed_start
    return blocked


def _mini_target(store, tmp: Path, batch_size: int, rng: np.random.Generator) -> tuple:
    """The scratch store of ``MINI_TABLES`` tiny tables and its all-DRAM and all-SSD plans, which tell per-table
    from per-batch costs apart: (store, spec, [(label, plan)], label prefix)."""
    from emulator.plan import DevicePlan, Plan, TablePlacement
    from emulator.store.build import build_store
    from emulator.store.store import Store, StoreBuildConfig

    mspec = _mini_spec(int(store.tables[0].dim), batch_size)
    mstore = Store.open(build_store(mspec, tmp / "mini", StoreBuildConfig(tt_ranks=())).path)
    names = [t.name for t in mstore.tables]
    mremap = str(write_random_remap(mstore, tmp / "mini-remap.h5", rng))
    mplans = [(label, Plan(mstore.store_id, tuple(TablePlacement(n, hot) for n in names),
                           (DevicePlan("cal0"),), planner=f"calibration:mini-{label}", remap=mremap))
              for label, hot in (("all-dram", MINI_ROWS), ("all-ssd", 0))]
    return mstore, mspec, mplans, f"mini {MINI_TABLES} tables "


def calibration_jobs(store, tmp: Path, stack: contextlib.ExitStack, *, batches: int, sizes: Sequence[int],
                     queue_depth: int, mini: bool, rng: np.random.Generator) -> list[ReplayJob]:
    """One job per (plan, batch size) on ``store`` (and on the scratch store when ``mini``), plan by plan; the
    trace readers are entered on ``stack``, the traces and remaps written under ``tmp``. No replayer is opened
    here: :func:`run_interleaved` opens them."""
    from emulator.replay.engine import ReplayConfig
    from tracegen.trace_io import TraceReader

    config = ReplayConfig(queue_depth=queue_depth, pipeline=True)
    targets = [(store, store.spec, calibration_plans(store, write_random_remap(store, tmp / "remap.h5", rng)), "")]
    if mini:
        targets.append(_mini_target(store, tmp, sizes[0], rng))
    jobs: list[ReplayJob] = []
    for st, sp, plans, prefix in targets:
        readers = []
        for b in sizes:
            path = tmp / f"{prefix.strip().replace(' ', '-') or 'store'}-b{b}.h5"
            write_synthetic_trace(path, sp, batches, b, rng)
            readers.append((b, stack.enter_context(TraceReader(path))))
        for label, plan in plans:
            target = PlanTarget(st, plan, config)
            for b, reader in readers:
                jobs.append(ReplayJob(f"{prefix}{label} B={b}", target, reader))
    return jobs


def run_interleaved(jobs: Sequence[ReplayJob], rounds: int, seed: int, max_open: int = 1) -> None:
    """Replay every job: ``max_open`` plans at a time (each plan's replayer holds its DRAM tables, TT cores and
    read buffers: opening every plan at once exhausts the memory of a large store). For each set of plans:
    open their replayers, count each job's batches, one untimed warm-up run of every job (first touch of
    buffers, engine threads), then ``rounds`` timed runs each, in a new random order every round so that no
    job always follows the same one, and close the replayers before the next set."""
    if max_open < 1:
        raise ValueError(f"max_open must be >= 1, got {max_open}")
    targets: list[PlanTarget] = []
    for job in jobs:
        if not any(job.target is t for t in targets):
            targets.append(job.target)
    order = np.random.default_rng(seed)
    for a in range(0, len(targets), max_open):
        window = targets[a:a + max_open]
        mine = [job for job in jobs if any(job.target is t for t in window)]
        try:
            for t in window:
                t.open()
            for job in mine:
                job.count()
            for job in mine:
                job.rep.run(job.reader)
            for _ in range(rounds):
                for j in order.permutation(len(mine)):
                    mine[int(j)].run()
        finally:
            for t in window:
                t.close()
            gc.collect()  # the engines' timed ``start`` wrappers form reference cycles: free their buffers now

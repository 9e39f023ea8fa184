"""This host's costs of the device-worker engine's tasks, per unit of work, measured as thread-CPU time.

The device clock (:mod:`emulator.device.emulate`) composes a batch from tasks whose durations are the thread-CPU
seconds of real kernel calls on this machine, scaled by a device profile. To predict what it composes, the
planner needs what each kind of task costs here per unit of work. :func:`measure_task_costs` replays synthetic
batches of a store (:mod:`plans.host_replays`' traces and calibration plans) with the device clock on, captures
every batch's record (its device requests and responses, the host's pooling tasks, the main thread's CPU
seconds) and fits, by non-negative least squares on relative residuals:

* pooling tasks (host DRAM pooling, device memory-centric pooling of raw rows from pages, compute-centric
  pooling of rebuilt TT rows; the host's pooling of every row for plain-SSD policies): seconds per task, per
  lookup of each source (DRAM row, page row, staged TT row) and per output bag, lookups and bags counted in
  rows of :data:`DIM_UNIT` floats (a 256-float row counts 4: the kernels' work grows with the row);
* TT rebuild tasks: seconds per task, per row and per flop of the rows' rebuild;
* the host's serial work (main thread, per batch; fitted apart for replays whose host pools every row): per
  batch, table, lookup, cold lookup (raw or TT), read
  request, unique TT row, device served (its request sent, its response awaited), device pooling task dispatched
  and partial row merged;
* a device's preparation (planning its page reads, de-duplicating its TT rows: device work under a target
  profile, :mod:`emulator.device.emulate`), per device: per device with cold lookups, raw lookup, TT lookup,
  read and unique TT row (the serial fit is on the main thread's seconds without it);
* this machine's disk under the engine: how long after a batch's dispatch its last read completes, against
  the batch's reads (every device's reads share the one disk; each device's ring keeps its own queue full, so
  more devices read faster: a term per read over the devices reading), and the main thread's serial seconds
  (the reads run while it works): ``max(0, read_s x reads + read_per_device_s x reads / devices reading -
  hidden_per_serial x serial - hidden_s)`` (non-negative least squares on the batches whose reads outlast the
  dispatch; fitted on the reads themselves, not through the calibration's IOPS curve, which is measured at
  another moment of a shared disk). The device clock places reads at their real submission times, so under
  any profile a batch's reads end no earlier than this disk lets them (reads are pipelined: submitted while
  the previous batch is served).

Each device task's fit is on single tasks (their lookups and bags are in the request); the host's pooling tasks
are fitted per batch on their summed CPU seconds (their split is not recorded). All figures are measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SERIAL_FEATURES", "TaskCosts", "TaskSamples", "capture_records", "fit_task_costs", "measure_task_costs"]

SERIAL_FEATURES = ("batch", "table", "lookup", "cold_lookup", "read", "tt_row", "device", "pool_task", "merge_row")
POOL_FEATURES = ("task", "dram_lookup", "page_lookup", "staged_lookup", "bag")
DIM_UNIT = 64  # pooling lookups and bags are counted in rows of this many floats
REBUILD_FEATURES = ("task", "row", "flop")
IO_FEATURES = ("read_s", "read_per_device_s", "hidden_per_serial", "hidden_s")
PREP_FEATURES = ("device", "raw_lookup", "tt_lookup", "read", "tt_row")


@dataclass(frozen=True)
class TaskCosts:
    """Thread-CPU seconds per unit of each task kind on this host (see the module docstring). ``serial``:
    main-thread seconds per :data:`SERIAL_FEATURES` unit; ``pool``: a pooling task's seconds per
    :data:`POOL_FEATURES` unit; ``rebuild``: a TT rebuild task's per :data:`REBUILD_FEATURES` unit; ``fit``:
    the samples' counts and residuals; ``source``: "measured" or "modelled"."""

    serial: Mapping[str, float]
    pool: Mapping[str, float]
    rebuild: Mapping[str, float]
    io: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(IO_FEATURES, 0.0))
    prep: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(PREP_FEATURES, 0.0))
    serial_host: Mapping[str, float] | None = None  # the main thread's when the host pools every row
    fit: Mapping[str, Any] = field(default_factory=dict)
    source: str = "measured"

    def __post_init__(self) -> None:
        if self.serial_host is None:
            object.__setattr__(self, "serial_host", dict(self.serial))
        for name, keys in (("serial", SERIAL_FEATURES), ("pool", POOL_FEATURES), ("rebuild", REBUILD_FEATURES),
                           ("io", IO_FEATURES), ("prep", PREP_FEATURES), ("serial_host", SERIAL_FEATURES)):
            d = {k: float(v) for k, v in dict(getattr(self, name)).items()}
            missing = [k for k in keys if k not in d]
            if missing:
                raise ValueError(f"task costs {name}: missing {', '.join(missing)}")
            if any(not 0 <= v < float("inf") for v in d.values()):
                raise ValueError(f"task costs {name}: every figure must be finite and >= 0")
            object.__setattr__(self, name, d)

    def serial_s(self, counts: Mapping[str, float], host_pooled: bool = False) -> float:
        """Main-thread seconds of a batch with these counts (``host_pooled``: the host pools every row, its
        devices only read: fitted apart, the main thread's work differs)."""
        c = self.serial_host if host_pooled else self.serial
        return sum(c[k] * float(counts.get(k, 0.0)) for k in SERIAL_FEATURES)

    def pool_s(self, tasks: float, dram: float = 0.0, page: float = 0.0, staged: float = 0.0,
               bags: float = 0.0) -> float:
        """CPU seconds of ``tasks`` pooling tasks covering these lookups and output bags in all (counted in rows
        of :data:`DIM_UNIT` floats)."""
        p = self.pool
        return (p["task"] * tasks + p["dram_lookup"] * dram + p["page_lookup"] * page + p["staged_lookup"] * staged
                + p["bag"] * bags)

    def rebuild_s(self, tasks: float, rows: float, flops: float) -> float:
        r = self.rebuild
        return r["task"] * tasks + r["row"] * rows + r["flop"] * flops

    def prep_s(self, raw: float, tt: float, reads: float, tt_rows: float) -> float:
        """CPU seconds of one device's preparation of a batch (0 without cold lookups)."""
        p = self.prep
        if raw <= 0 and tt <= 0:
            return 0.0
        return p["device"] + p["raw_lookup"] * raw + p["tt_lookup"] * tt + p["read"] * reads + p["tt_row"] * tt_rows

    def visible_io_s(self, reads: float, devices: int = 1, serial_s: float = 0.0) -> float:
        """Seconds after a batch's dispatch until its ``reads`` (of ``devices`` devices reading) are in on this
        machine, the main thread's serial work taking ``serial_s`` meanwhile."""
        io = self.io
        if reads <= 0:
            return 0.0
        return max(0.0, io["read_s"] * reads + io["read_per_device_s"] * reads / max(1, devices)
                   - io["hidden_per_serial"] * serial_s - io["hidden_s"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fit"] = dict(self.fit)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskCosts":
        return cls(**dict(d))


# --- what one batch's record holds -------------------------------------------------------------


@dataclass
class TaskSamples:
    """Rows of the three fits, gathered over captured batches."""

    serial_x: list = field(default_factory=list)
    serial_y: list = field(default_factory=list)
    pool_x: list = field(default_factory=list)
    pool_y: list = field(default_factory=list)
    rebuild_x: list = field(default_factory=list)
    rebuild_y: list = field(default_factory=list)
    io_x: list = field(default_factory=list)
    io_y: list = field(default_factory=list)
    prep_x: list = field(default_factory=list)
    prep_y: list = field(default_factory=list)
    serial_host_x: list = field(default_factory=list)
    serial_host_y: list = field(default_factory=list)

    def extend(self, other: "TaskSamples") -> None:
        for name in ("serial_x", "serial_y", "pool_x", "pool_y", "rebuild_x", "rebuild_y", "io_x", "io_y",
                     "prep_x", "prep_y", "serial_host_x", "serial_host_y"):
            getattr(self, name).extend(getattr(other, name))


def _serial_counts(p, responses) -> dict[str, float]:
    """What the main thread did for prepared batch ``p`` (see :data:`SERIAL_FEATURES`)."""
    from emulator.tiers import KIND_DRAM

    c = dict.fromkeys(SERIAL_FEATURES, 0.0)
    c["batch"] = 1.0
    c["table"] = float(p.batch.num_tables)
    c["lookup"] = float(p.batch.num_lookups)
    for w in p.works:
        c["cold_lookup"] += float(np.count_nonzero(w.kind != KIND_DRAM))
        c["tt_row"] += float(sum(rows.size for _, rows in w.tt_rows))
    for lk in p.slow:
        c["cold_lookup"] += float(np.count_nonzero(lk.kind != KIND_DRAM))
        c["tt_row"] += float(lk.tt_rows.size) if lk.tt_rows is not None else 0.0
    c["read"] = float(sum(r.count for r in p.reads if r is not None))
    for _, req, _ in responses:
        c["device"] += 1.0
        c["pool_task"] += len(req.pools)
        c["merge_row"] += float(sum(t.bags.size for t in req.pools))
    return c


def _prep_rows(p, n_dev: int) -> list[list[float]]:
    """Per device: [has cold lookups, raw lookups, TT lookups, reads, unique TT rows] of prepared batch ``p``."""
    from emulator.tiers import SSD_RAW, SSD_TT

    raw, tt = p.dev_lookups[SSD_RAW], p.dev_lookups[SSD_TT]
    rows = [0.0] * n_dev
    for w in p.works:
        for m, r in w.tt_rows:
            rows[int(w.group.device[m])] += r.size
    out = []
    for d in range(n_dev):
        reads = float(p.reads[d].count) if d < len(p.reads) and p.reads[d] is not None else 0.0
        out.append([float(raw[d] + tt[d] > 0), float(raw[d]), float(tt[d]), reads, float(rows[d])])
    return out


def _pool_row(task) -> list[float]:
    from emulator.tiers import KIND_DRAM, KIND_PAGE, KIND_STAGED

    k = task.kinds
    u = task.dim / DIM_UNIT
    return [1.0, u * float(np.count_nonzero(k == KIND_DRAM)), u * float(np.count_nonzero(k == KIND_PAGE)),
            u * float(np.count_nonzero(k == KIND_STAGED)), u * float(task.bags.size)]


def batch_samples(p, serial_s: float, record, flops_of: Sequence[float], host_pooled: bool) -> TaskSamples:
    """One captured batch as fit rows: its serial counts, each device task, and the host's pooling tasks
    (summed: their split over the host's threads is not recorded)."""
    from emulator.tiers import KIND_DRAM, KIND_PAGE, KIND_STAGED

    out = TaskSamples()
    t0, responses, host_cpu, after_cpu, prep = (tuple(record) + (None,))[:5]
    counts = _serial_counts(p, responses)
    xs, ys = (out.serial_host_x, out.serial_host_y) if host_pooled else (out.serial_x, out.serial_y)
    xs.append([counts[k] for k in SERIAL_FEATURES])
    # under the host profile a device's preparation ran on the main thread: fitted apart
    own = serial_s - (float(np.sum(prep)) if prep is not None else 0.0)
    ys.append(own)
    if prep is not None:
        for d, row in enumerate(_prep_rows(p, len(prep))):
            if row[0]:
                out.prep_x.append(row)
                out.prep_y.append(float(prep[d]))
    ios = [resp.io for _, _, resp in responses if resp.io is not None and resp.io.submit_ns.size]
    if ios:
        last = max(int((io.submit_ns + io.latency_ns).max()) for io in ios)
        reads = float(sum(io.submit_ns.size for io in ios))
        out.io_x.append([reads, reads / len(ios), max(0.0, own)])
        out.io_y.append(max(0.0, (last - t0) * 1e-9))
    for _, req, resp in responses:
        cpu = {r.task_id: r.cpu_s for r in resp.tasks}
        for t in req.pools:
            out.pool_x.append(_pool_row(t))
            out.pool_y.append(cpu[t.task_id])
        for t in req.rebuilds:
            rows = float(sum(r.size for _, r, _ in t.parts))
            flops = float(sum(r.size * flops_of[tab] for tab, r, _ in t.parts))
            out.rebuild_x.append([1.0, rows, flops])
            out.rebuild_y.append(cpu[t.task_id])
    tasks = after_cpu if host_pooled else host_cpu
    if tasks:
        dram = page = staged = bags = 0.0
        for w in p.works:
            u = w.group.dim / DIM_UNIT
            dram += u * float(np.count_nonzero(w.kind == KIND_DRAM))
            bags += u * float(w.offsets.size - 1)
            if host_pooled:
                page += u * float(np.count_nonzero(w.kind == KIND_PAGE))
                staged += u * float(np.count_nonzero(w.kind == KIND_STAGED))
        out.pool_x.append([float(len(tasks)), dram, page, staged, bags])
        out.pool_y.append(float(sum(tasks)))
    return out


def capture_records(rep, flops_of: Sequence[float], into: TaskSamples) -> None:
    """Wrap replayer ``rep`` (emulating: ``rep.emulation`` set) so that every finished batch's record is added
    to ``into`` (on this instance only; the replay runs as usual)."""
    if rep.emulation is None:
        raise ValueError("capturing task records needs a replayer with a device profile (the device clock)")
    pending: dict[int, Any] = {}
    finish, add = rep.finish, rep.emulation.add

    def finish_and_keep(p):
        out = finish(p)
        pending[p.batch.index] = p
        return out

    def add_and_capture(batch, serial_s, record, measured_s):
        p = pending.pop(batch, None)
        if p is not None and record is not None:
            into.extend(batch_samples(p, serial_s, record, flops_of, rep.host_pooled))
        return add(batch, serial_s, record, measured_s)

    rep.finish = finish_and_keep
    rep.emulation.add = add_and_capture


# --- fitting -----------------------------------------------------------------------------------


def _fit(x: list, y: list, names: Sequence[str], iterations: int = 20) -> tuple[dict[str, float], float]:
    """Non-negative coefficients minimising relative residuals (reweighted towards absolute deviations, robust
    to a task a burst of load slowed down); and the median |relative residual|."""
    from plans.host_fit import nnls

    if not y:
        return dict.fromkeys(names, 0.0), float("nan")
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # relative residuals: a sample timed near zero (a difference of two noisy times) would outweigh every other
    keep = b > 0
    if keep.any():
        keep &= b >= 0.1 * np.median(b[keep])
    a, b = a[keep], b[keep]
    if not b.size:
        return dict.fromkeys(names, 0.0), float("nan")
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    an = a / scale / b[:, None]
    w = np.ones_like(b)
    coef = np.zeros(a.shape[1])
    for _ in range(iterations):
        sw = np.sqrt(w)
        coef = nnls(an * sw[:, None], sw)
        w = 1.0 / np.maximum(np.abs(an @ coef - 1.0), 0.02)
    coef = coef / scale
    rel = a @ coef / b - 1.0
    return dict(zip(names, coef.tolist())), float(np.median(np.abs(rel)))


def _fit_visible_io(x: list, y: list) -> tuple[dict[str, float], float]:
    """:data:`IO_FEATURES` of ``max(0, read_s x reads + read_per_device_s x reads / devices - hidden_per_serial x
    serial - hidden_s)`` by non-negative least squares on the batches whose reads outlast the dispatch; and the
    median |residual| / median y (rows of ``x``: reads, reads per device reading, serial seconds)."""
    from plans.host_fit import nnls

    a, b = np.asarray(x, dtype=np.float64).reshape(-1, 3), np.asarray(y, dtype=np.float64)
    keep = b > 0
    if keep.sum() < 3:
        return dict.fromkeys(IO_FEATURES, 0.0), float("nan")
    cols = np.column_stack([a[keep, 0], a[keep, 1], -a[keep, 2], -np.ones(int(keep.sum()))])
    scale = np.abs(cols).max(axis=0)
    scale[scale == 0] = 1.0
    coef = nnls(cols / scale, b[keep]) / scale
    io = dict(zip(IO_FEATURES, coef.tolist()))
    pred = np.maximum(0.0, a[:, 0] * io["read_s"] + a[:, 1] * io["read_per_device_s"]
                      - a[:, 2] * io["hidden_per_serial"] - io["hidden_s"])
    return io, float(np.median(np.abs(pred - b)) / max(np.median(b[keep]), 1e-12))


def fit_task_costs(samples: TaskSamples) -> TaskCosts:
    serial, e_serial = _fit(samples.serial_x, samples.serial_y, SERIAL_FEATURES)
    serial_host, e_host = _fit(samples.serial_host_x, samples.serial_host_y, SERIAL_FEATURES) \
        if samples.serial_host_y else (None, float("nan"))
    pool, e_pool = _fit(samples.pool_x, samples.pool_y, POOL_FEATURES)
    rebuild, e_rebuild = _fit(samples.rebuild_x, samples.rebuild_y, REBUILD_FEATURES)
    io, e_io = _fit_visible_io(samples.io_x, samples.io_y)
    prep, e_prep = _fit(samples.prep_x, samples.prep_y, PREP_FEATURES)
    fit = {"serial_batches": len(samples.serial_y), "pool_rows": len(samples.pool_y),
           "rebuild_tasks": len(samples.rebuild_y), "io_batches": len(samples.io_y),
           "serial_median_abs_rel_error": e_serial, "pool_median_abs_rel_error": e_pool,
           "rebuild_median_abs_rel_error": e_rebuild, "io_median_abs_rel_error": e_io,
           "prep_device_batches": len(samples.prep_y), "prep_median_abs_rel_error": e_prep,
           "serial_host_batches": len(samples.serial_host_y), "serial_host_median_abs_rel_error": e_host}
    return TaskCosts(serial, pool, rebuild, io, prep, serial_host, fit)


# --- measuring ---------------------------------------------------------------------------------


def _flops_of(store, plan) -> list[float]:
    from emulator.tiers import SSD_TT
    from plans.cost import tt_flops_per_row

    out = []
    for t in store.tables:
        p = plan.placement(t.name)
        if p.cold_tier == SSD_TT and p.tt_rank is not None:
            v = t.tt_variant(p.tt_rank)
            out.append(tt_flops_per_row(v.tt_q_shapes, v.tt_ranks))
        else:
            out.append(0.0)
    return out


def _spread(plan, n_dev: int, cores: int):
    """``plan`` on ``n_dev`` devices of ``cores`` cores of each kind, table i on device i mod n_dev."""
    from emulator.plan import DevicePlan

    devs = tuple(DevicePlan(f"cal{d}", cores, cores) for d in range(n_dev))
    return dataclasses.replace(plan, devices=devs, tables=tuple(dataclasses.replace(t, device=i % n_dev)
                                                                for i, t in enumerate(plan.tables)))


#: (devices, cores of each kind per device), cycled over the calibration plans so that the devices served and
#: the pooling tasks per batch vary apart from each other
LAYOUTS = ((1, 1), (2, 3), (4, 8), (1, 8), (2, 1), (4, 3))


def measure_task_costs(store, *, batches: int = 6, batch_sizes: Sequence[int] | None = None,
                       queue_depth: int = 128, seed: int = 0, on_plan=None) -> TaskCosts:
    """Replay synthetic batches of ``store`` under the calibration plans with the device clock on (the ``host``
    profile) and fit :class:`TaskCosts` on the captured tasks (module docstring). Each plan is replayed with
    the devices pooling (its tables spread over the devices of one of :data:`LAYOUTS`, cycled) and the
    plain-SSD plans also with the host pooling every row, on traces of the
    calibration's batch sizes; a warm-up pass over each trace first, then one captured pass."""
    from emulator.device.profile import load_profile
    from emulator.replay.counters import ReplayStats
    from emulator.replay.engine import ReplayConfig, Replayer
    from plans.host_replays import calibration_batch_sizes, calibration_plans, write_random_remap, \
        write_synthetic_trace
    from tracegen.trace_io import TraceReader

    rng = np.random.default_rng(seed)
    sizes = list(batch_sizes or calibration_batch_sizes(store.spec))
    host = load_profile("host")
    samples = TaskSamples()
    with tempfile.TemporaryDirectory(prefix="screc-task-costs-") as tmp, contextlib.ExitStack() as stack:
        readers = []
        for b in sizes:
            path = Path(tmp) / f"trace-b{b}.h5"
            write_synthetic_trace(path, store.spec, max(2, batches), b, rng)
            readers.append(stack.enter_context(TraceReader(path)))
        remap = write_random_remap(store, Path(tmp) / "remap.h5", rng)
        runs = []
        for k, (label, plan) in enumerate(calibration_plans(store, remap)):
            n_dev, cores = LAYOUTS[k % len(LAYOUTS)]
            runs.append((f"{label} on {n_dev}x{cores} cores", _spread(plan, n_dev, cores), "device"))
            if "tt" not in label and "dram" not in label:
                n_dev = LAYOUTS[(k + 2) % len(LAYOUTS)][0]
                runs.append((f"{label} host-pooled on {n_dev}", _spread(plan, n_dev, 1), "host"))
        for label, plan, offload in runs:
            if on_plan:
                on_plan(label)
            cfg = ReplayConfig(queue_depth=queue_depth, offload=offload, device_profile=host)
            with Replayer(store, plan, cfg, stats=ReplayStats()) as rep:  # live statistics, as replays run
                for reader in readers:
                    rep.run(reader)  # warm-up: first touches, threads
                capture_records(rep, _flops_of(store, plan), samples)
                for reader in readers:
                    rep.run(reader)
    costs = fit_task_costs(samples)
    fit = {**costs.fit, "batch_sizes": sizes, "batches": batches, "plans": [r[0] for r in runs],
           "store_id": store.store_id}
    return dataclasses.replace(costs, fit=fit)

"""The host thread's costs, measured by running the real replay engine (:class:`emulator.replay.engine.Replayer`).

On this machine every emulated core shares one host thread: per batch it
reads the trace, then per table splits lookups by tier and plans page reads
(``prepare``), hands the reads to the device's io_uring thread, rebuilds the
unique TT rows and pools every table (``finish``). With pipelining the next
batch's reads overlap this batch's compute, so a batch takes about
``max(host thread time, IO time)``.

:func:`measure_host_costs` replays a few batches of small synthetic traces
(drawn with the store's own table shapes and skew; :mod:`plans.host_replays`
sets the replays up and times them) under several plans
(all-DRAM, all-SSD on one and two devices, all-TT at each rank, half-hot and
mostly-hot mixes, each with a random remap as planned plans carry one)
against the store, and against a scratch store of many tiny tables so
that per-table and per-batch costs can be told apart. For each run it counts,
from the engine's own ``prepare`` output, what the host did per batch
(:data:`FEATURES`), and it measures the host thread's time per batch as
``(elapsed - time blocked waiting for reads) / batches``. The constants of
:class:`plans.types.HostCosts` are the non-negative least-squares fit
(relative errors) of those times on those counts (of the batch time itself
when the host is the bottleneck, so that the time it loses handing reads to
the IO threads is counted, per device with reads); each device's IO busy time
per batch is fitted on its reads and pages (and the other devices' pages);
the gap between batches of an IO-bound replay is the median excess of its
batch time over its busiest device's IO.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from plans.host_replays import (FEATURES, ReplaySample, batch_features, calibration_batch_sizes, calibration_jobs,
                                calibration_plans, run_interleaved, write_synthetic_trace)
from plans.types import Calibration, HostCosts
from tracegen.errors import InputError

__all__ = ["FEATURES", "ReplaySample", "batch_features", "calibration_plans", "fit_host_costs", "fit_io_costs",
           "fit_io_handoff", "host_target_s", "measure_host_costs", "nnls", "write_synthetic_trace"]

# --- fitting -----------------------------------------------------------------------------------


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares by active-set elimination: refit without the most negative coefficient
    until none is negative (small problems only)."""
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0.0
            x[active] = sol
            return x
        active.pop(int(np.argmin(sol)))
    return x


def host_target_s(s: ReplaySample) -> float:
    """What the host model must explain in one replay: its batch time when the host is the bottleneck (so the
    time it spends blocked handing reads to the IO threads counts), else the host thread's own time."""
    return s.batch_s if not s.io_s or max(s.io_s) < 0.5 * s.host_s else s.host_s


def fit_host_costs(samples: Sequence[ReplaySample], iterations: int = 30) -> tuple[dict[str, float], dict[str, float]]:
    """Per-feature seconds minimising the sum of absolute relative errors of the predicted host time
    (:func:`host_target_s`): non-negative least squares, reweighted by 1 / |residual| (robust to the runs a burst
    of load from other processes slowed down); and the fit's quality (over the samples' medians per name)."""
    a = np.array([[s.features[k] for k in FEATURES] for s in samples], dtype=np.float64)
    y = np.array([host_target_s(s) for s in samples], dtype=np.float64)
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    an = a / scale / y[:, None]  # relative residuals: (a c - y) / y
    w = np.ones_like(y)
    coef = np.zeros(a.shape[1])
    for _ in range(max(1, iterations)):
        sw = np.sqrt(w)
        coef = nnls(an * sw[:, None], sw)
        rel = an @ coef - 1.0
        w = 1.0 / np.maximum(np.abs(rel), 0.01)
    coef = coef / scale
    rel = a @ coef / y - 1.0
    names = sorted({s.name for s in samples})
    per_name = [float(np.median([r for r, s in zip(rel, samples) if s.name == n])) for n in names]
    return dict(zip(FEATURES, coef.tolist())), {"max_abs_rel_error": float(np.max(np.abs(per_name))),
                                                 "rms_rel_error": float(np.sqrt(np.mean(np.square(per_name)))),
                                                 "median_abs_rel_error_runs": float(np.median(np.abs(rel)))}


def fit_io_costs(samples: Sequence[ReplaySample], min_reads: float = 64.0) -> tuple[float, float, float]:
    """(seconds per read, per page, per page of the other devices) fitted, relative errors, on every device's
    engine busy time per batch in the replays with at least ``min_reads`` reads (fewer: latency-bound, the
    one-latency floor of ``plans.cost.local_io_times_s`` covers them)."""
    rows, ys = [], []
    for s in samples:
        total = sum(s.pages)
        for io, r, p in zip(s.io_s, s.reads, s.pages):
            if r >= min_reads and io > 0:
                rows.append([r, p, total - p])
                ys.append(io)
    if not rows:
        return 0.0, 0.0, 0.0
    a, y = np.array(rows, dtype=np.float64), np.array(ys)
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    coef = nnls(a / scale / y[:, None], np.ones_like(y)) / scale
    return float(coef[0]), float(coef[1]), float(coef[2])


def fit_io_handoff(samples: Sequence[ReplaySample]) -> float:
    """Median of (batch time - busiest device's IO time) over the IO-bound replays: the gap between one
    batch's reads and the next (thread hand-offs, GIL and scheduling), 0 without IO-bound replays."""
    gaps = [s.batch_s - max(s.io_s) for s in samples if s.io_s and max(s.io_s) > s.host_s]
    return max(0.0, float(np.median(gaps))) if gaps else 0.0


def measure_host_costs(store, calib: Calibration, *, batches: int = 8, batch_sizes: Sequence[int] | None = None,
                       queue_depth: int = 128, rounds: int = 5, seed: int = 0, mini: bool = True,
                       on_sample: Callable[[ReplaySample], None] | None = None) -> tuple[HostCosts, list[ReplaySample]]:
    """Replay synthetic traces under :func:`calibration_plans` and fit :class:`HostCosts` (see the module doc).

    Every (plan, trace) pair is replayed once per round, one plan's replayer open at a time (memory), the rounds
    of its pairs interleaved in time so that a burst of load from other processes hits different pairs; each
    pair keeps its run of median batch time."""
    if batches < 2:
        raise InputError(f"need at least 2 batches per calibration replay, got {batches}")
    if rounds < 1:
        raise InputError(f"need at least 1 round of calibration replays, got {rounds}")
    rng = np.random.default_rng(seed)
    sizes = list(batch_sizes or calibration_batch_sizes(store.spec))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="screc-calibrate-") as tmp, contextlib.ExitStack() as stack:
        jobs = calibration_jobs(store, Path(tmp), stack, batches=batches, sizes=sizes, queue_depth=queue_depth,
                                mini=mini, rng=rng)
        run_interleaved(jobs, rounds, seed + 1)
        samples = [job.sample() for job in jobs]
        runs = [r for job in jobs for r in job.run_samples()]
    for s in samples:
        if on_sample:
            on_sample(s)
    coef, quality = fit_host_costs(runs)
    io_read, io_page, io_other = fit_io_costs(samples)
    handoff = fit_io_handoff(samples)
    fit = {"samples": [s.to_dict() for s in samples], "seconds": time.perf_counter() - t0, "queue_depth": queue_depth,
           "rounds": rounds, "store_id": store.store_id, **quality}
    return HostCosts(**{f"{k}_s": v for k, v in coef.items()}, io_read_s=io_read, io_page_s=io_page,
                     io_other_page_s=io_other, io_handoff_s=handoff, fit=fit), samples

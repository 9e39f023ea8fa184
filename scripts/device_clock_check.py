"""A first look at the device clock against real execution (issue 12), before device workers exist.

Real pooling tasks (``emulator.kernels.pooling.pool_rows``, a Numba ``nogil`` kernel, 1M x 64 fp32 rows, bags
of 32) run on 1 and then 2 host threads taking tasks from one queue; each task's thread-CPU time is recorded and
the device clock schedules them under the ``host`` profile (speed 1, one shared pool of as many cores as
threads). It prints the measured wall makespan, the emulated makespan and their ratio (median of 5 rounds),
then the clock's own cost on a large synthetic batch (4 SmartSSD-like devices x 2000 tasks x 20000 reads).

On a quiet machine with no more threads than CPUs the ratio should be near 1; on a shared machine the wall
time includes waiting for a CPU, which thread-CPU time does not, so the ratio drops below 1. State the load
average with the figures. Run: ``python scripts/device_clock_check.py``
"""

from __future__ import annotations

import os
import queue
import threading
import time

import numpy as np

from emulator.device.clock import (BatchInput, CoreTask, DeviceBatch, IOGroup, LinkTransfer, clock_model,
                                   emulate_batch)
from emulator.device.profile import load_profile
from emulator.kernels.pooling import pool_rows

N_TASKS, ROUNDS = 48, 5


def make_jobs(rng: np.random.Generator, table: np.ndarray) -> list:
    jobs = []
    for _ in range(N_TASKS):
        bags = int(rng.integers(200, 1200))
        idx = rng.integers(0, table.shape[0], size=bags * 32, dtype=np.int64)
        jobs.append((idx, np.arange(0, idx.size + 1, 32, dtype=np.int64), np.empty((bags, 64), np.float32)))
    return jobs


def run_round(table: np.ndarray, jobs: list, workers: int) -> tuple[float, float]:
    """(measured wall seconds, emulated seconds) of the jobs on ``workers`` threads."""
    todo: queue.Queue = queue.Queue()
    for k, job in enumerate(jobs):
        todo.put((k, job))
    cpu = [0.0] * len(jobs)

    def work() -> None:
        while True:
            try:
                k, (idx, off, out) = todo.get_nowait()
            except queue.Empty:
                return
            t0 = time.thread_time()
            pool_rows(table, idx, off, out)
            cpu[k] = time.thread_time() - t0

    threads = [threading.Thread(target=work) for _ in range(workers)]
    w0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - w0
    tasks = tuple(CoreTask(f"pool{k}", "mem", cpu[k]) for k in range(len(jobs)))
    batch = BatchInput(0, (DeviceBatch("dev0", workers, 0, tasks=tasks, shared_cores=True),))
    return wall, emulate_batch(batch, clock_model(load_profile("host"))).emulated_s


def clock_cost_s(seconds: float = 2.0) -> tuple[float, float]:
    """(seconds per emulate_batch call, emulated batch seconds) on a large synthetic SmartSSD-like batch."""
    model = clock_model(load_profile("smartssd"), host_mem_lookups_per_s=10e6, host_compute_flops_per_s=5e9)
    groups = tuple(IOGroup(f"pages{i}", np.zeros(10), np.full(10, 4096)) for i in range(2000))
    tasks = tuple(CoreTask(f"t{i}", "mem" if i % 2 else "compute", 1e-5, after=(f"pages{i}",)) for i in range(2000))
    transfers = tuple(LinkTransfer(f"p{i}", 65536, after=(f"t{i * 31}",)) for i in range(64))
    batch = BatchInput(0, tuple(DeviceBatch(f"dev{d}", 4, 4, tasks=tasks, io_groups=groups, transfers=transfers)
                                for d in range(4)), host_merge_s=1e-4)
    out = emulate_batch(batch, model)  # compiles the SSD kernel
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        emulate_batch(batch, model)
        n += 1
    return (time.perf_counter() - t0) / n, out.emulated_s


def main() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((1 << 20, 64), dtype=np.float32)
    jobs = make_jobs(rng, table)
    pool_rows(table, jobs[0][0], jobs[0][1], jobs[0][2])  # compile
    print(f"CPUs {os.cpu_count()}, load average {os.getloadavg()} (before)")
    for workers in (1, 2):
        rounds = [run_round(table, jobs, workers) for _ in range(ROUNDS)]
        ratios = sorted(e / w for w, e in rounds)
        print(f"{workers} thread(s): measured wall {np.median([w for w, _ in rounds]) * 1e3:.1f} ms, emulated "
              f"(host profile) {np.median([e for _, e in rounds]) * 1e3:.1f} ms, emulated/measured median "
              f"{ratios[len(ratios) // 2]:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f})")
    per_call, emulated = clock_cost_s()
    print(f"clock cost (measured): {per_call * 1e3:.1f} ms per batch of 4 devices x (2000 tasks, 20000 reads, "
          f"64 transfers); that batch's emulated time (smartssd, modelled rates): {emulated * 1e3:.2f} ms")
    print(f"load average {os.getloadavg()} (after)")


if __name__ == "__main__":
    main()

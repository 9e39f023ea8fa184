"""Measuring this machine, and turning a calibration into device profiles.

:func:`measure_calibration` measures, in about ``seconds``:

* random 4 KiB O_DIRECT reads by queue depth (IOPS and mean latency) and the
  bandwidth of large random reads, on the store's raw files or on a scratch
  file in a directory, with ``emulator.io``'s io_uring engine (the pread engine
  when io_uring is unavailable; either way the calibration's ``notes`` say);
* the host DRAM gather-and-pool rate at two row sizes (fitted to a per-lookup
  plus a per-byte cost), with ``emulator.kernels.pooling.pool_rows`` (NumPy when
  that module is missing);
* one memory-centric core: rows extracted from 4 KiB page buffers and pooled
  (NumPy);
* one compute-centric core: TT rows rebuilt per second by rank, on a reference
  shape (``emulator.tt.kernels.tt_rebuild_rows`` when it exists, else the
  NumPy reference), expressed in flops too;
* the replay host thread's costs (``Calibration.host``): the real engine
  replays synthetic batches under several plans and the per-batch, per-table,
  per-lookup, per-read and per-TT-row costs are fitted (``plans.host_fit``),
  on the store, or on a small scratch store built in the directory.

Device profiles: :func:`local_profiles` (measured: this machine's disk shared
by ``n`` emulated devices, costed with the host-serial model of
``plans.cost``), :func:`profile_devices` (any device profile of
``emulator.device.profile``: ``host``, ``smartssd`` or a user file, costed with
the parallel-resource model) and :func:`smartssd_profiles` (the ``smartssd``
profile: SmartSSD-like figures, each with its source, in
``emulator/device/profiles/smartssd.toml``).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from emulator.device.profile import load_profile
from plans.cost import tt_flops_per_row
from plans.machine import profile_devices  # noqa: F401  (re-exported: devices of any device profile)
from plans.task_costs import TaskCosts
from plans.types import PAGE_BYTES, Calibration, DeviceProfile, HostCosts
from tracegen.errors import InputError

DEFAULT_QUEUE_DEPTHS = (1, 4, 16, 64, 128, 256)
SCRATCH_FILE_BYTES = 256 << 20
LARGE_READ_BYTES = 128 << 10
LARGE_READ_QUEUE_DEPTH = 32
TT_REFERENCE_P_SHAPES = (100, 100, 100)
TT_REFERENCE_Q_SHAPES = (4, 4, 4)
TT_REFERENCE_RANKS = (8, 16, 32, 64)
DEFAULT_DEVICE_DRAM_BYTES = 4 << 30
DEFAULT_QUEUE_DEPTH = 128  # the replay's default reads in flight per device (`screc replay --qd`)

# SmartSSD-like device (modelled): the figures, each with its source (AnandTech on the SmartSSD CSD, Samsung's
# PM983 datasheet, or a stated assumption for the FPGA cores), live in emulator/device/profiles/smartssd.toml,
# the one source of truth for the planner and the device clock (`screc plan profiles` lists them).
_SMARTSSD = load_profile("smartssd")
SMARTSSD_SSD_CAPACITY_BYTES = int(_SMARTSSD.ssd.capacity_bytes.value)
SMARTSSD_DEVICE_DRAM_BYTES = int(_SMARTSSD.device_memory_bytes.value)
SMARTSSD_READ_BYTES_PER_S = float(_SMARTSSD.ssd.read_bytes_per_s.value)
SMARTSSD_IOPS = float(_SMARTSSD.ssd.iops.value)
SMARTSSD_CORES = _SMARTSSD.core_count
SMARTSSD_MEM_CORE_LOOKUPS_PER_S = float(_SMARTSSD.mem.rate.value)
SMARTSSD_COMPUTE_CORE_FLOPS_PER_S = float(_SMARTSSD.compute.rate.value)

# Modelled host-thread costs for the local profile when nothing was measured (rounded from three `screc calibrate`
# runs on the demo store, 2-core VM, load 0.3-2.3; labelled modelled): seconds per unit, see plans.types.HostCosts.
MODELLED_HOST = {"batch_s": 400e-6, "table_s": 2e-6, "lookup_s": 50e-9, "raw_table_s": 20e-6, "raw_lookup_s": 120e-9,
                 "read_s": 1.2e-6, "tt_table_s": 80e-6, "tt_lookup_s": 30e-9, "tt_row_s": 150e-9, "tt_flop_s": 0.1e-12,
                 "io_device_s": 350e-6, "io_read_s": 15e-6, "io_page_s": 3e-6, "io_other_page_s": 9e-6,
                 "io_handoff_s": 1.5e-3}


# --- device profiles ---------------------------------------------------------------------------


def local_profiles(calib: Calibration, n_devices: int = 1, cores: int | None = None, *,
                   queue_depth: int = DEFAULT_QUEUE_DEPTH, device_dram_bytes: int = DEFAULT_DEVICE_DRAM_BYTES,
                   ssd_capacity_bytes: int | None = None) -> list[DeviceProfile]:
    """``n_devices`` emulated devices on this machine; they share its one disk, so each gets 1/n of
    the measured IOPS, bandwidth and free space (``modelled`` only when the calibration is). With host
    costs in the calibration they are costed as the emulator runs here (``execution="host-serial"``)."""
    if n_devices < 1:
        raise InputError(f"need at least one device, got {n_devices}")
    cores = int(cores if cores is not None else max(2, os.cpu_count() or 2))
    if cores < 1:
        raise InputError(f"need at least one core per device, got {cores}")
    if queue_depth < 1:
        raise InputError(f"queue depth must be >= 1, got {queue_depth}")
    free = ssd_capacity_bytes if ssd_capacity_bytes is not None else int(calib.machine.get("disk_free_bytes", 1 << 40))
    modelled = calib.source != "measured" or (calib.host is not None and calib.host.source != "measured")
    execution = "host-serial" if calib.host is not None else "parallel"
    return [DeviceProfile(name=f"dev{d}", cores=cores, device_dram_bytes=int(device_dram_bytes),
                          ssd_capacity_bytes=int(free // n_devices), iops=calib.iops_at(queue_depth) / n_devices,
                          read_bytes_per_s=calib.read_bytes_per_s / n_devices,
                          mem_core_lookups_per_s=calib.mem_core_lookups_per_s,
                          compute_core_flops_per_s=calib.compute_core_flops_per_s, modelled=modelled,
                          execution=execution, queue_depth=int(queue_depth))
            for d in range(n_devices)]


def smartssd_profiles(n_devices: int = 1, cores: int = SMARTSSD_CORES) -> list[DeviceProfile]:
    """SmartSSD-like devices (modelled: the ``smartssd`` device profile, every figure with its source)."""
    return profile_devices(_SMARTSSD, None, n_devices, cores)


Clock = Callable[[], float]


# --- IO ----------------------------------------------------------------------------------------


def _make_engine(queue_depth: int, notes: list[str]):
    try:
        from emulator.io.uring import UringEngine

        return UringEngine(queue_depth=queue_depth)
    except (ImportError, OSError) as e:
        from emulator.io.pread import PreadEngine

        msg = f"io_uring unavailable ({e.__class__.__name__}: {e}); IO measured with the pread engine (threads)"
        if msg not in notes:
            notes.append(msg)
        return PreadEngine(queue_depth=queue_depth)


def _scratch_file(directory: Path, nbytes: int, rng: np.random.Generator) -> Path:
    path = directory / f".screc-calibrate-{os.getpid()}.bin"
    block = rng.integers(0, 256, size=4 << 20, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // len(block))):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    return path


def _random_reads(engine, file_ids: list[int], sizes: list[int], n: int, read_bytes: int,
                  rng: np.random.Generator) -> tuple[float, float]:
    """(reads per second, mean latency seconds) of ``n`` aligned random reads of ``read_bytes``."""
    from emulator.io.buffers import aligned_empty

    sizes_arr = np.array(sizes, dtype=np.int64)
    which = rng.choice(len(file_ids), size=n, p=sizes_arr / sizes_arr.sum())
    slots = sizes_arr[which] // read_bytes
    offsets = (rng.integers(0, np.maximum(slots, 1)) * read_bytes).astype(np.int64)
    depth = min(n, 256)
    dest = aligned_empty(depth * read_bytes)
    fids = np.array(file_ids, dtype=np.int64)[which]
    dest_off = (np.arange(n, dtype=np.int64) % depth) * read_bytes  # reads may share a slot: data is discarded
    res = engine.read_many(fids, offsets, np.full(n, read_bytes, np.int64), dest, dest_off, latency=True)
    lat = float(np.mean(res.latency_ns)) / 1e9 if res.latency_ns is not None and res.latency_ns.size else float("nan")
    return n / res.elapsed_s, lat


def measure_io(paths: Sequence[Path], seconds: float, queue_depths: Sequence[int], rng: np.random.Generator,
               notes: list[str]) -> tuple[dict[int, float], dict[int, float], float, str]:
    sizes = [p.stat().st_size for p in paths]
    if sum(sizes) < PAGE_BYTES:
        raise InputError("no data to read for the IO calibration", paths[0] if paths else None)
    iops, lat = {}, {}
    per_step = seconds / (len(queue_depths) + 1)
    engine_name = "?"
    for qd in queue_depths:
        with _make_engine(qd, notes) as eng:
            engine_name = eng.name
            ids = [eng.open(p) for p in paths]
            rate, _ = _random_reads(eng, ids, sizes, max(64, 4 * qd), PAGE_BYTES, rng)  # warm-up and probe
            n = int(min(max(256, rate * per_step), 2_000_000))
            iops[int(qd)], lat[int(qd)] = _random_reads(eng, ids, sizes, n, PAGE_BYTES, rng)
    with _make_engine(LARGE_READ_QUEUE_DEPTH, notes) as eng:
        ids = [eng.open(p) for p in paths]
        big = [s for s in sizes]
        read = min(LARGE_READ_BYTES, max(PAGE_BYTES, (min(big) // PAGE_BYTES) * PAGE_BYTES))
        rate, _ = _random_reads(eng, ids, big, 64, read, rng)
        n = int(min(max(64, rate * per_step), 200_000))
        rate, _ = _random_reads(eng, ids, big, n, read, rng)
    return iops, lat, rate * read, engine_name


# --- host DRAM, memory-centric and compute-centric cores ----------------------------------------


def _timed(fn: Callable[[], object], seconds: float, clock: Clock) -> float:
    """Mean seconds per call of ``fn``, repeated for about ``seconds`` (after one warm-up call)."""
    fn()
    n, t0 = 0, clock()
    while True:
        fn()
        n += 1
        el = clock() - t0
        if el >= seconds or n >= 1000:
            return el / n


POOL_BAG = 16  # lookups pooled per bag in the rate measurements


def _pool_numpy(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Gather rows ``ids`` and sum every ``POOL_BAG`` consecutive ones (fixed-size bags)."""
    return table[ids].reshape(-1, POOL_BAG, table.shape[1]).sum(axis=1)


def measure_dram(seconds: float, rng: np.random.Generator, notes: list[str], clock: Clock) -> tuple[float, float]:
    """(lookups per second, bytes per second) of one host thread gathering and pooling rows."""
    try:
        from emulator.kernels.pooling import pool_rows

        def pool(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
            offsets = np.arange(0, ids.size + 1, POOL_BAG, dtype=np.int64)
            return pool_rows(table, ids, offsets, np.empty((offsets.size - 1, table.shape[1]), np.float32))

        notes.append("DRAM rate measured with emulator.kernels.pooling.pool_rows (1 thread)")
    except ImportError:
        pool = _pool_numpy
        notes.append("DRAM rate measured with NumPy gather + fixed-bag sums (emulator.kernels.pooling unavailable)")
    per_lookup_s = []
    row_bytes = []
    for dim in (16, 256):
        rows = (64 << 20) // (dim * 4)
        table = rng.standard_normal((rows, dim), dtype=np.float32)
        n = 1 << 14
        ids = rng.integers(0, rows, size=n, dtype=np.int64)
        t = _timed(lambda: pool(table, ids), seconds / 2, clock)
        per_lookup_s.append(t / n)
        row_bytes.append(dim * 4)
    # per_lookup = a + b * row_bytes  ->  dram_lookups_per_s = 1/a, dram_bytes_per_s = 1/b
    b = max((per_lookup_s[1] - per_lookup_s[0]) / (row_bytes[1] - row_bytes[0]), 1e-15)
    a = max(per_lookup_s[0] - b * row_bytes[0], 1e-12)
    return 1.0 / a, 1.0 / b


def measure_mem_core(seconds: float, rng: np.random.Generator, clock: Clock) -> float:
    """Rows per second one core extracts from 4 KiB page buffers and pools (dim 64 fp32, 16 rows/page;
    NumPy gather + fixed-bag sums)."""
    dim, rpp = 64, PAGE_BYTES // 256
    pages = 1 << 14
    buf = rng.standard_normal(pages * rpp * dim, dtype=np.float32).reshape(pages, rpp, dim)
    n = 1 << 14
    page_idx = rng.integers(0, pages, size=n)
    slot = rng.integers(0, rpp, size=n)
    t = _timed(lambda: buf[page_idx, slot].reshape(-1, POOL_BAG, dim).sum(axis=1), seconds, clock)
    return n / t


def measure_tt(seconds: float, ranks: Sequence[int], rng: np.random.Generator, notes: list[str],
               clock: Clock) -> tuple[dict[int, float], float]:
    """TT rows rebuilt per second per rank on one core, and the median flops per second."""
    from emulator.tt.decomposition import random_tt, tt_rebuild_rows_reference

    rebuild = tt_rebuild_rows_reference
    try:
        from emulator.tt.kernels import tt_rebuild_rows

        rebuild = tt_rebuild_rows
        notes.append("TT rate measured with emulator.tt.kernels.tt_rebuild_rows")
    except ImportError:
        notes.append("TT rate measured with the NumPy reference (emulator.tt.kernels unavailable)")
    rates, flops = {}, []
    rows_total = int(np.prod(TT_REFERENCE_P_SHAPES))
    for r in ranks:
        ranks_full = (1, r, r, 1)
        tt = random_tt(TT_REFERENCE_P_SHAPES, TT_REFERENCE_Q_SHAPES, ranks_full, rng)
        n = 512
        ids = rng.integers(0, rows_total, size=n)
        try:
            t = _timed(lambda: rebuild(tt, ids), seconds / len(ranks), clock)
        except TypeError:  # a kernel with another signature: fall back to the reference
            rebuild = tt_rebuild_rows_reference
            notes.append("emulator.tt.kernels.tt_rebuild_rows has another signature; NumPy reference used")
            t = _timed(lambda: rebuild(tt, ids), seconds / len(ranks), clock)
        rates[int(r)] = n / t
        flops.append(rates[int(r)] * tt_flops_per_row(TT_REFERENCE_Q_SHAPES, ranks_full))
    return rates, float(np.median(flops))


def _scratch_store(directory: Path, seed: int):
    """A small store (8 tables, two of them TT-compressed) to fit host costs on when no store is given."""
    from emulator.store.store import Store, StoreBuildConfig
    from emulator.store.build import build_store
    from tracegen.spec import ModelSpec, PoolingSpec, TableSpec

    rows = (20000, 5000, 2000, 500, 200, 50, 10, 1)
    spec = ModelSpec("calibration-scratch", tuple(TableSpec(f"s{i}", rows=r, dim=16, pooling=PoolingSpec.fixed(1),
                                                            zipf_alpha=1.0) for i, r in enumerate(rows)),
                     batch_size=512)
    return Store.open(build_store(spec, directory, StoreBuildConfig(weights_seed=seed, tt_ranks=(8, 16),
                                                                     tt_min_rows=2000)).path)


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _machine_info(where: Path, engine: str, seconds: float) -> dict:
    """What was measured where: CPU, versions, the IO engine, the disk's free and total bytes, the load."""
    usage = shutil.disk_usage(where)
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "io_engine": engine, "disk_path": str(where),
            "disk_free_bytes": int(usage.free), "disk_total_bytes": int(usage.total),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": float(seconds),
            "load_average": _load_average()}


def _measure_io_of(store, where: Path, seconds: float, queue_depths: Sequence[int], scratch_bytes: int,
                   rng: np.random.Generator, notes: list[str]):
    """IO rates on the store's raw files, or on a scratch file written in ``where`` (removed afterwards)."""
    if store is not None:
        notes.append(f"IO measured on the raw files of store {store.store_id[:12]}")
        return measure_io([store.table_path(i) for i in range(len(store.tables))], seconds, queue_depths, rng, notes)
    scratch = _scratch_file(where, scratch_bytes, rng)
    notes.append(f"IO measured on a {scratch_bytes >> 20} MiB scratch file")
    try:
        return measure_io([scratch], seconds, queue_depths, rng, notes)
    finally:
        scratch.unlink(missing_ok=True)


def _fit_host(store, where: Path, calib: Calibration, notes: list[str], *, replay_batches: int, queue_depth: int,
              seed: int, on_sample) -> tuple[HostCosts, TaskCosts]:
    """The host thread's costs and the device-worker tasks' costs (:mod:`plans.task_costs`) fitted on replays
    of the store (or of a scratch store written in ``where``)."""
    from plans.host_fit import measure_host_costs
    from plans.task_costs import measure_task_costs

    if store is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix=".screc-calibrate-", dir=where) as tmp:
            scratch = _scratch_store(Path(tmp) / "store", seed)
            host, _ = measure_host_costs(scratch, calib, batches=replay_batches, queue_depth=queue_depth,
                                         seed=seed, on_sample=on_sample)
            tasks = measure_task_costs(scratch, queue_depth=queue_depth, seed=seed)
        notes.append("host and task costs fitted on replays of a scratch store (8 tables) and of 64 tiny tables")
    else:
        host, _ = measure_host_costs(store, calib, batches=replay_batches, queue_depth=queue_depth, seed=seed,
                                     on_sample=on_sample)
        tasks = measure_task_costs(store, queue_depth=queue_depth, seed=seed)
        notes.append(f"host costs fitted on replays of store {store.store_id[:12]} and of 64 tiny tables; task "
                     "costs (thread-CPU time of the device workers' tasks) on replays of the store")
    return host, tasks


def measure_calibration(store_or_dir, seconds: float = 10.0, *, queue_depths: Sequence[int] = DEFAULT_QUEUE_DEPTHS,
                        tt_ranks: Sequence[int] = TT_REFERENCE_RANKS, seed: int = 0,
                        scratch_bytes: int = SCRATCH_FILE_BYTES, clock: Clock = time.perf_counter,
                        host_costs: bool = True, replay_batches: int = 16,
                        queue_depth: int = DEFAULT_QUEUE_DEPTH, on_sample=None) -> Calibration:
    """Measure this machine. ``store_or_dir``: an ``emulator.store.store.Store`` (its raw files are read and its
    tables replayed) or a directory on the disk to measure (a scratch file, and for the host costs a small
    scratch store, are written there and removed). ``seconds`` budgets the rate measurements; the host-cost
    replays (``host_costs``) take as long as ``replay_batches`` batches under each calibration plan need."""
    if seconds <= 0:
        raise InputError(f"calibration time must be > 0 seconds, got {seconds}")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    store = store_or_dir if hasattr(store_or_dir, "tables") and hasattr(store_or_dir, "table_path") else None
    where = Path(store.path) if store is not None else Path(store_or_dir)
    if store is None and not where.is_dir():
        raise InputError("calibration directory not found", where)
    iops, lat, bw, engine = _measure_io_of(store, where, 0.6 * seconds, queue_depths, scratch_bytes, rng, notes)
    dram_lps, dram_bps = measure_dram(0.1 * seconds, rng, notes, clock)
    mem = measure_mem_core(0.1 * seconds, rng, clock)
    tt_rates, flops = measure_tt(0.2 * seconds, tt_ranks, rng, notes, clock)
    machine = _machine_info(where, engine, seconds)
    calib = Calibration(dram_lookups_per_s=dram_lps, dram_bytes_per_s=dram_bps, io_iops_by_qd=iops,
                        io_latency_s_by_qd=lat, read_bytes_per_s=bw, mem_core_lookups_per_s=mem,
                        tt_rows_per_s_by_rank=tt_rates, compute_core_flops_per_s=flops, io_read_bytes=PAGE_BYTES,
                        machine=machine, notes=tuple(notes), source="measured")
    host = tasks = None
    if host_costs:
        host, tasks = _fit_host(store, where, calib, notes, replay_batches=replay_batches, queue_depth=queue_depth,
                                seed=seed, on_sample=on_sample)
    machine["load_average_after"] = _load_average()
    return calib if host is None else dataclasses.replace(calib, host=host, tasks=tasks, notes=tuple(notes),
                                                          machine=machine)


def default_calibration() -> Calibration:
    """A labelled, modelled stand-in for when nothing was measured (a typical NVMe host)."""
    return Calibration(dram_lookups_per_s=20e6, dram_bytes_per_s=5e9, io_iops_by_qd={1: 12e3, 16: 150e3, 128: 500e3},
                       io_latency_s_by_qd={1: 80e-6, 16: 100e-6, 128: 250e-6}, read_bytes_per_s=2.5e9,
                       mem_core_lookups_per_s=10e6, tt_rows_per_s_by_rank={8: 2e6, 16: 8e5, 32: 2.5e5},
                       compute_core_flops_per_s=5e9, machine={"note": "not measured"},
                       notes=("modelled default: run `screc calibrate` to measure this machine",), source="modelled",
                       host=default_host_costs())


def default_host_costs() -> HostCosts:
    """Modelled host-thread costs (rounded from one calibration of a 2-core VM under load; labelled modelled)."""
    return HostCosts(batch_s=MODELLED_HOST["batch_s"], table_s=MODELLED_HOST["table_s"],
                     lookup_s=MODELLED_HOST["lookup_s"], raw_table_s=MODELLED_HOST["raw_table_s"],
                     raw_lookup_s=MODELLED_HOST["raw_lookup_s"], read_s=MODELLED_HOST["read_s"],
                     tt_table_s=MODELLED_HOST["tt_table_s"], tt_lookup_s=MODELLED_HOST["tt_lookup_s"],
                     tt_row_s=MODELLED_HOST["tt_row_s"], tt_flop_s=MODELLED_HOST["tt_flop_s"],
                     io_device_s=MODELLED_HOST["io_device_s"], io_read_s=MODELLED_HOST["io_read_s"],
                     io_page_s=MODELLED_HOST["io_page_s"],
                     io_other_page_s=MODELLED_HOST["io_other_page_s"], io_handoff_s=MODELLED_HOST["io_handoff_s"],
                     fit={"note": "modelled, not fitted on this machine"}, source="modelled")


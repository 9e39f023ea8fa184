"""IO engines for the emulator: io_uring (O_DIRECT, Numba-driven ring), liburing (the same reads through the
liburing package, Python per read), pread, null; page-read planning;
several devices; background (pipelined) reads.

Typical use::

    from emulator.io import UringEngine, aligned_empty, plan_row_reads

    with UringEngine(queue_depth=128) as eng:
        fid = eng.open("stores/s/raw/t0.bin")
        plan = plan_row_reads(rows, rows_per_page=32, pages_per_row=1, row_bytes=128)
        dest = aligned_empty(plan.dest_bytes)
        eng.read_many(np.full(plan.num_reads, fid), plan.read_offsets, plan.read_nbytes, dest, plan.dest_offsets)
        row_j = dest[plan.row_dest_offsets[j]:][:128]
"""

from emulator.io.base import IOEngine, ReadHandle, open_for_reading
from emulator.io.buffers import AlignedBufferPool, aligned_empty, is_aligned
from emulator.io.devices import DeviceSet
from emulator.io.liburing_engine import LiburingEngine, liburing_available
from emulator.io.null import NullEngine, null_pattern
from emulator.io.pages import RowReadPlan, plan_page_reads, plan_row_reads
from emulator.io.pread import PreadEngine
from emulator.io.types import DIRECT_ALIGN_BYTES, PAGE_BYTES, Completions, IOCounters, IOFailure, IOResult
from emulator.io.uring import UringEngine, uring_available

ENGINES = {"uring": UringEngine, "liburing": LiburingEngine, "pread": PreadEngine, "null": NullEngine}


def make_engine(name: str, **options) -> IOEngine:
    """Build an engine by name (``uring``, ``liburing``, ``pread``, ``null``) with its options."""
    if name not in ENGINES:
        raise ValueError(f"unknown IO engine {name!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[name](**options)


__all__ = [
    "AlignedBufferPool", "Completions", "DIRECT_ALIGN_BYTES", "DeviceSet", "ENGINES", "IOCounters", "IOEngine",
    "IOFailure", "IOResult", "LiburingEngine", "NullEngine", "PAGE_BYTES", "PreadEngine", "ReadHandle", "RowReadPlan",
    "UringEngine", "aligned_empty", "is_aligned", "liburing_available", "make_engine", "null_pattern",
    "open_for_reading", "plan_page_reads", "plan_row_reads", "uring_available",
]

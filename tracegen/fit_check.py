"""Out-of-sample checks of a fit on generated batches, and the generator's speed against the write bound.

:func:`full_batch_check` generates one full batch at the published batch size
from fitted parameters, writes it as a trace file (streamed table by table,
bounded memory), counts its locality histograms back from the file (again
table by table) and measures the distances to the target. It also times the
generation end to end (sampling, permutation, checksums, the HDF5 write and
fsync) and, in the same run, :func:`write_bound`: writing the same number of
bytes with ``numpy.tofile`` and fsync, the floor any generator writing this
file to this disk pays.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tracegen.fit import Distances, FitTarget, distances
from tracegen.generate import GeneratorParams, generate_trace
from tracegen.locality import trace_stats
from tracegen.selection import select
from tracegen.spec import ModelSpec
from tracegen.trace_io import TraceReader

WRITE_BUFFER_BYTES = 64 << 20


def write_bound(directory: str | os.PathLike, nbytes: int, clock: Callable[[], float] = time.perf_counter,
                should_stop: Callable[[], bool] | None = None) -> float:
    """Seconds to write ``nbytes`` bytes to a new file in ``directory`` with ``numpy.tofile`` (64 MiB at a
    time from one buffer) and fsync it; the file is removed. ``should_stop()`` is asked after every 64 MiB
    (:class:`KeyboardInterrupt` when it says so)."""
    buf = np.random.default_rng(0).integers(0, 2**31 - 1, size=WRITE_BUFFER_BYTES // 4, dtype=np.int32)
    fd, name = tempfile.mkstemp(prefix=".tofile-", dir=directory)
    try:
        t0 = clock()
        with os.fdopen(fd, "wb") as f:
            left = int(nbytes)
            while left > 0:
                part = buf if left >= buf.nbytes else buf[: max(1, left // 4)]
                part.tofile(f)
                left -= part.nbytes
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
            f.flush()
            os.fsync(f.fileno())
        return clock() - t0
    finally:
        Path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class BatchCheck:
    """A generated batch, measured."""

    distances: Distances
    lookups: int
    bytes: int
    generate_s: float
    count_s: float
    tofile_s: float | None
    tables: str  # the selection ("all" or e.g. "1::2")

    @property
    def lookups_per_s(self) -> float:
        return self.lookups / self.generate_s if self.generate_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "distances"}
        d["lookups_per_s"] = self.lookups_per_s
        if self.tofile_s:
            d["tofile_bytes_per_s"] = self.bytes / self.tofile_s
            d["generate_vs_tofile"] = self.tofile_s / self.generate_s
        return d


def full_batch_check(spec: ModelSpec, params: GeneratorParams, target: FitTarget, directory: str | os.PathLike,
                     tables: str | None = None, with_write_bound: bool = True,
                     should_stop: Callable[[], bool] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> BatchCheck:
    """Generate batch 0 of ``(spec, params)`` (only ``tables``, a selection, if given) into a temporary trace in
    ``directory``, count it back from the file and measure its distances to ``target``; the file is removed."""
    sub, p = select(spec, dataclasses.replace(params, num_batches=1), tables)
    Path(directory).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fit-check-", dir=directory))
    try:
        path = tmp / "batch.h5"
        t0 = clock()
        generate_trace(sub, p, path, should_stop=should_stop)
        gen_s = clock() - t0
        size = path.stat().st_size
        t1 = clock()
        with TraceReader(path, validate=False) as r:
            st = trace_stats(r)
        count_s = clock() - t1
        path.unlink()
        loc = st.locality
        d = distances(np.array(loc.col_size_share) * loc.avg_unique, np.array(loc.index_share) * loc.avg_indices,
                      target)
        bound = write_bound(tmp, size, clock) if with_write_bound else None
        return BatchCheck(d, int(st.lookups), int(size), gen_s, count_s, bound, tables or "all")
    finally:
        for f in tmp.glob("*"):
            f.unlink(missing_ok=True)
        for f in tmp.glob(".*"):
            f.unlink(missing_ok=True)
        tmp.rmdir()

"""Shared vocabulary of the IO engines: results, completions, counters and the failure type."""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass

import numpy as np

#: O_DIRECT needs offsets, lengths and buffer addresses aligned to the device's logical block
#: (512 bytes on this machine's disk). Engines check against this unless told otherwise.
DIRECT_ALIGN_BYTES = 512
#: Reads longer than this are refused (an SQE length is 32 bits and a result a signed 32-bit int).
MAX_READ_BYTES = 1 << 30
#: Buffers from :func:`emulator.io.buffers.aligned_empty` are aligned to a page.
PAGE_BYTES = 4096


# Slots of the int64 stats array every engine's batch loop fills (the uring kernel writes it in place).
ST_FAILED_INDEX = 0  # request index of the first hard failure; -1 none; -2 the ring itself failed
ST_ERRNO = 1
ST_SUBMITTED = 2  # reads submitted, retries and continuations included
ST_SYSCALLS = 3
ST_MAX_IN_FLIGHT = 4
ST_RETRIES = 5
ST_BYTES = 6
ST_SHORT = 7  # reads that reached end of file (rest of their destination zero-filled)
N_STATS = 8


def new_stats():
    stats = np.zeros(N_STATS, dtype=np.int64)
    stats[ST_FAILED_INDEX] = -1
    return stats


class IOFailure(OSError):
    """A read failed for good (not EINTR/EAGAIN, not a short read): names the file, offset and errno."""

    def __init__(self, err: int, path: str, offset: int, nbytes: int, what: str = "read"):
        msg = f"{what} of {nbytes} bytes at offset {offset} of {path} failed: {os.strerror(err)} (errno {err}"
        msg += f" {_errno.errorcode.get(err, '?')})"
        super().__init__(err, msg)
        self.path = path
        self.offset = int(offset)
        self.nbytes = int(nbytes)

    def __str__(self) -> str:  # OSError's default would print "[Errno n] msg"
        return self.strerror


@dataclass(frozen=True)
class Completions:
    """What :meth:`IOEngine.reap` returns: parallel arrays, one entry per finished read.

    ``results[i]`` is the number of bytes read (possibly short) or ``-errno``.
    """

    tags: np.ndarray  # int64
    results: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.tags.shape[0])


@dataclass(frozen=True)
class IOResult:
    """Outcome of one :meth:`IOEngine.read_many`.

    ``nread[i]`` equals the requested length except for reads that reached end
    of file, whose destination bytes past ``nread[i]`` were zero-filled.
    ``latency_ns`` is per read (submit of its first piece to its completion)
    when asked for, else ``None``.
    """

    nread: np.ndarray
    ios: int  # reads submitted, retries and continuations included
    bytes_read: int
    retries: int
    short_reads: int
    max_in_flight: int
    syscalls: int
    elapsed_s: float
    latency_ns: np.ndarray | None = None
    #: per read, when it was submitted (CLOCK_MONOTONIC ns, the clock of ``time.perf_counter_ns`` on Linux);
    #: given with ``latency_ns``. The device clock places each read at its real submission and completion.
    submit_ns: np.ndarray | None = None
    #: CPU seconds of the thread that drove the batch (submissions, completions; not the kernel's own work)
    cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return int(self.nread.shape[0])

    @property
    def reads_per_s(self) -> float:
        """Requests completed per second of this batch (0 for an empty or instantaneous batch)."""
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class IOCounters:
    """A snapshot of an engine's cumulative counters (for the live view).

    ``busy_s``: time spent inside ``read_many`` (including waiting for the
    device); ``wait_s``: time callers spent blocked in ``wait`` on a
    pipelined read (the part of IO that computation did not hide).
    """

    engine: str
    ios: int = 0
    requests: int = 0
    bytes_read: int = 0
    retries: int = 0
    short_reads: int = 0
    syscalls: int = 0
    busy_s: float = 0.0
    wait_s: float = 0.0
    max_in_flight: int = 0

    def __add__(self, other: "IOCounters") -> "IOCounters":
        return IOCounters(
            engine=self.engine if self.engine == other.engine else f"{self.engine}+{other.engine}",
            ios=self.ios + other.ios, requests=self.requests + other.requests,
            bytes_read=self.bytes_read + other.bytes_read, retries=self.retries + other.retries,
            short_reads=self.short_reads + other.short_reads, syscalls=self.syscalls + other.syscalls,
            busy_s=self.busy_s + other.busy_s, wait_s=self.wait_s + other.wait_s,
            max_in_flight=max(self.max_in_flight, other.max_in_flight),
        )

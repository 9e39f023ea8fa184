"""The SSD side of the device clock, on arrays: when each read starts and completes.

* Measured SSD: a read completes at ``submit_s + latency_s``, its measured completion latency (what the
  device's ring recorded).
* Target SSD: reads are taken in submission order (request order on ties); each holds one of
  ``internal_parallelism`` flash slots from ``max(submit, the earliest a slot frees)``, waits ``latency_s``, then
  streams ``nbytes`` over the SSD's one read channel at ``read_bytes_per_s`` (one read at a time, in that
  order); its slot frees when its data is out. Alone, a read takes ``latency_s + nbytes / read_bytes_per_s``.

Pure functions of their inputs; the target model's loop is a Numba kernel (a read costs nanoseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracegen.jit import njit


@dataclass(frozen=True)
class TargetSSD:
    latency_s: float
    read_bytes_per_s: float
    internal_parallelism: int

    def __post_init__(self) -> None:
        if not (self.latency_s >= 0 and self.read_bytes_per_s > 0 and self.internal_parallelism >= 1):
            raise ValueError("a target SSD needs latency_s >= 0, read_bytes_per_s > 0, internal_parallelism >= 1")


@njit
def _target_kernel(order, submit, nbytes, latency_s, bytes_per_s, parallelism, start, done):  # pragma: no cover
    slots = np.full(parallelism, -np.inf)  # when each flash slot frees
    channel_free = -np.inf
    for j in range(order.size):
        k = order[j]
        m = 0
        for s in range(1, parallelism):  # the earliest-free slot
            if slots[s] < slots[m]:
                m = s
        st = max(submit[k], slots[m])
        d = max(st + latency_s, channel_free) + nbytes[k] / bytes_per_s
        channel_free = d
        slots[m] = d
        start[k] = st
        done[k] = d


def complete_reads(submit_s: np.ndarray, nbytes: np.ndarray, latency_s: np.ndarray,
                   ssd: TargetSSD | None) -> tuple[np.ndarray, np.ndarray]:
    """(start, completion) seconds of every read, in request order. ``latency_s`` (NaN where unknown) is used
    only by a measured SSD (``ssd`` None), which needs it for every read."""
    submit = np.ascontiguousarray(submit_s, dtype=np.float64)
    size = np.ascontiguousarray(nbytes, dtype=np.float64)
    if ssd is None:
        lat = np.asarray(latency_s, dtype=np.float64)
        bad = np.flatnonzero(~(lat >= 0))
        if bad.size:
            raise ValueError(f"read {int(bad[0])}: a measured SSD needs every read's measured latency_s >= 0")
        return submit.copy(), submit + lat
    start, done = np.empty_like(submit), np.empty_like(submit)
    order = np.argsort(submit, kind="stable")
    _target_kernel(order, submit, size, float(ssd.latency_s), float(ssd.read_bytes_per_s),
                   int(ssd.internal_parallelism), start, done)
    return start, done


def busy_union_s(start: np.ndarray, done: np.ndarray) -> float:
    """Seconds with at least one read in flight: the length of the union of the intervals [start, done)."""
    if start.size == 0:
        return 0.0
    order = np.argsort(start, kind="stable")
    s, e = start[order], done[order]
    reach = np.maximum.accumulate(e)  # how far the intervals so far extend
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]  # a gap: a new stretch of busy time begins
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, s.size - 1)
    return float(np.sum(reach[last] - s[first]))

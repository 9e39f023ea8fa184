"""Temporal reuse across batches: a lookup repeats the one ``L`` places back in its table's stream.

With probability ``p`` a lookup is replaced by the row its table looked up
``L`` lookups earlier (across batch boundaries), ``L`` drawn from a truncated
power law ``P(L) ~ L ** -beta`` on ``1 .. min(window, history)``; the other
lookups keep their fresh draw from the table's popularity model. This is the
reuse-distance view of 2DIO and of DLRM's ``trace_generate_lru`` (which draws
LRU stack distances): short lags are what small LRU caches catch, so ``beta``
sets the slope of the miss-ratio curve at small sizes and ``p`` its height.

:class:`ReuseHistory` keeps each table's last ``window`` lookups in a ring.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tracegen.jit import NJIT_OPTIONS
from tracegen.popularity import next_uniform


@numba.njit(**NJIT_OPTIONS)
def _lag_reuse_kernel(out, ring, pos, filled, seed, p, beta):
    window = ring.size
    state = np.uint64(seed)
    one_minus = 1.0 - beta
    for i in range(out.size):
        state, u = next_uniform(state)
        if u < p and filled > 0:
            state, v = next_uniform(state)
            m = float(min(filled, window))
            if abs(one_minus) < 1e-9:
                x = math.exp(v * math.log(m + 1.0))
            else:
                x = math.pow(1.0 + v * (math.pow(m + 1.0, one_minus) - 1.0), 1.0 / one_minus)
            lag = min(max(np.int64(x), 1), np.int64(m))
            j = pos - lag
            if j < 0:
                j += window
            out[i] = ring[j]
        ring[pos] = out[i]
        pos += 1
        if pos == window:
            pos = 0
        if filled < window:
            filled += 1
    return pos, filled


class ReuseHistory:
    """One table's ring of its last ``window`` lookups, and the lag-reuse step."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"reuse window must be >= 1, got {window}")
        self.ring = np.zeros(int(window), dtype=np.int64)
        self.pos = 0
        self.filled = 0

    def apply(self, out: np.ndarray, seed: int, p: float, beta: float) -> None:
        """Replace a share ``p`` of ``out`` (contiguous int64, this batch's lookups in order) by lagged repeats,
        and push ``out`` into the history."""
        if out.dtype != np.int64 or out.ndim != 1 or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous 1-d int64 array")
        if not (0.0 <= p <= 1.0 and beta >= 0.0):
            raise ValueError(f"bad reuse p={p} beta={beta}")
        self.pos, self.filled = _lag_reuse_kernel(out, self.ring, self.pos, self.filled, np.uint64(seed),
                                                  float(p), float(beta))

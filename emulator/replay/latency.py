"""A bounded latency histogram (log-spaced buckets, mergeable) and the summary the replay reports of it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    count: int = 0
    p50_s: float = math.nan
    p95_s: float = math.nan
    p99_s: float = math.nan
    max_s: float = math.nan
    mean_s: float = math.nan



# --- latency histogram --------------------------------------------------------------

class LatencyHistogram:
    """Bounded-memory latency recorder with log-spaced buckets (HDR-histogram style).

    Buckets cover ``[lowest_s, highest_s)`` with edges ``lowest_s * growth**i``;
    values below or above land in an underflow or overflow bucket. Count, min,
    max and mean are exact; a percentile is the geometric middle of the bucket
    holding the nearest-rank sample (clamped to [min, max]), so its relative
    error is at most ``sqrt(growth) - 1`` (0.4 % by default) inside the range.
    """

    def __init__(self, lowest_s: float = 1e-6, highest_s: float = 1e3, growth: float = 1.008):
        if not (0 < lowest_s < highest_s) or not (1 < growth < 2):
            raise ValueError("need 0 < lowest_s < highest_s and 1 < growth < 2")
        self.lowest_s, self.highest_s, self.growth = float(lowest_s), float(highest_s), float(growth)
        self._log_growth = math.log(self.growth)
        self.n_buckets = int(math.ceil(math.log(self.highest_s / self.lowest_s) / self._log_growth))
        self.counts = np.zeros(self.n_buckets + 2, dtype=np.int64)  # [underflow, buckets..., overflow]
        self.count, self.sum_s, self.min_s, self.max_s = 0, 0.0, math.inf, -math.inf

    def record(self, value_s: float) -> None:
        v = float(value_s)
        if not 0.0 <= v < math.inf:  # also refuses NaN
            raise ValueError(f"latency must be finite and >= 0, got {value_s!r}")
        i = 0 if v < self.lowest_s else min(int(math.log(v / self.lowest_s) / self._log_growth) + 1, self.n_buckets + 1)
        self.counts[i] += 1
        self.count += 1
        self.sum_s += v
        if v < self.min_s:
            self.min_s = v
        if v > self.max_s:
            self.max_s = v

    def record_many(self, values_s: np.ndarray) -> None:
        v = np.asarray(values_s, dtype=np.float64).ravel()
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError("latencies must be finite and >= 0")
        idx = np.zeros(v.size, dtype=np.int64)
        pos = v >= self.lowest_s
        idx[pos] = np.minimum(np.log(v[pos] / self.lowest_s) / self._log_growth, self.n_buckets).astype(np.int64) + 1
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.count += int(v.size)
        self.sum_s += float(v.sum())
        self.min_s = min(self.min_s, float(v.min()))
        self.max_s = max(self.max_s, float(v.max()))

    @property
    def mean_s(self) -> float:
        return self.sum_s / self.count if self.count else math.nan

    def _value_of_bucket(self, i: int) -> float:  # geometric middle, clamped to the exact extremes
        if i <= 0 or i > self.n_buckets:
            return self.min_s if i <= 0 else self.max_s
        return min(max(self.lowest_s * self.growth ** (i - 0.5), self.min_s), self.max_s)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100, nearest rank); NaN when empty."""
        return float(self.percentiles([q])[0])

    def percentiles(self, qs: Iterable[float]) -> np.ndarray:
        qs = np.asarray(list(qs), dtype=np.float64)
        if np.any((qs < 0) | (qs > 100)):
            raise ValueError("percentiles must be within 0..100")
        if self.count == 0:
            return np.full(qs.shape, math.nan)
        cum = np.cumsum(self.counts)
        out = np.empty(qs.shape)
        for j, q in enumerate(qs):
            if q <= 0:
                out[j] = self.min_s
            elif q >= 100:
                out[j] = self.max_s
            else:
                rank = max(1, math.ceil(q / 100.0 * self.count))
                out[j] = self._value_of_bucket(int(np.searchsorted(cum, rank)))
        return out

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """Add ``other``'s samples into this histogram (same layout required); returns self."""
        if (other.lowest_s, other.highest_s, other.growth) != (self.lowest_s, self.highest_s, self.growth):
            raise ValueError("cannot merge latency histograms with different bucket layouts")
        self.counts += other.counts
        self.count += other.count
        self.sum_s += other.sum_s
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)
        return self

    def copy(self) -> "LatencyHistogram":
        return LatencyHistogram(self.lowest_s, self.highest_s, self.growth).merge(self)

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """``(upper_edge_s, cumulative_fraction)`` of the non-empty buckets (edges clamped to max_s)."""
        nz = np.flatnonzero(self.counts)
        edges = np.minimum(self.lowest_s * self.growth ** np.minimum(nz, self.n_buckets), self.max_s)
        edges[nz > self.n_buckets] = self.max_s
        return (edges, np.cumsum(self.counts[nz]) / self.count) if nz.size else (np.empty(0), np.empty(0))

    def to_dict(self) -> dict[str, Any]:
        """Sparse export (non-empty buckets only) that :meth:`from_dict` restores exactly."""
        nz = np.flatnonzero(self.counts)
        return {"lowest_s": self.lowest_s, "highest_s": self.highest_s, "growth": self.growth,
                "count": self.count, "sum_s": self.sum_s,
                "min_s": self.min_s if self.count else None, "max_s": self.max_s if self.count else None,
                "index": nz.tolist(), "counts": self.counts[nz].tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LatencyHistogram":
        try:
            h = cls(float(d["lowest_s"]), float(d["highest_s"]), float(d["growth"]))
            idx = np.asarray(d["index"], dtype=np.int64)
            counts = np.asarray(d["counts"], dtype=np.int64)
            if idx.shape != counts.shape or np.any(idx < 0) or np.any(idx >= h.counts.size) or np.any(counts < 0):
                raise ValueError("bucket index/counts do not fit the layout")
            np.add.at(h.counts, idx, counts)
            h.count = int(d["count"])
            if h.count != int(counts.sum()):
                raise ValueError("count does not equal the sum of the buckets")
            h.sum_s = float(d["sum_s"])
            if h.count:
                h.min_s, h.max_s = float(d["min_s"]), float(d["max_s"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a latency histogram: {e}") from None
        return h



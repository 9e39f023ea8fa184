"""Bag sizes (pooling factors): drawing them, and scaling a table's pooling.

Kept apart from :mod:`tracegen.generate` (which re-exports both functions) so
that the generator module stays short.
"""

from __future__ import annotations

import math

import numpy as np

from tracegen.spec import PoolingSpec

__all__ = ["bag_sizes", "scale_pooling"]


def bag_sizes(pooling: PoolingSpec, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``batch_size`` pooling factors (int64) drawn from ``pooling``, clipped to ``[min, max]``."""
    p = pooling
    if p.kind == "fixed":
        return np.full(batch_size, int(p.mean), dtype=np.int64)
    if p.kind == "uniform":
        return rng.integers(p.min, p.max + 1, size=batch_size, dtype=np.int64)
    if p.kind == "poisson":
        n = rng.poisson(max(p.mean, 0.0), size=batch_size)
    else:  # lognormal with mean p.mean: mu = log(mean) - sigma^2 / 2
        if p.mean <= 0:
            n = np.zeros(batch_size)
        else:
            n = np.rint(rng.lognormal(math.log(p.mean) - p.sigma**2 / 2, p.sigma, size=batch_size))
    return np.clip(n, p.min, p.max).astype(np.int64)



def scale_pooling(p: PoolingSpec, scale: float) -> PoolingSpec:
    """``p`` with its mean bag size multiplied by ``scale``: ``fixed`` rounds the mean, the bounds become
    ``floor(min * scale)`` and ``max(that, ceil(max * scale))``."""
    if scale == 1.0:
        return p
    lo = int(math.floor(p.min * scale))
    hi = max(lo, int(math.ceil(p.max * scale)))
    if p.kind == "fixed":
        return PoolingSpec.fixed(int(round(p.mean * scale)))
    if p.kind == "uniform":
        return PoolingSpec(kind="uniform", mean=(lo + hi) / 2.0, min=lo, max=hi)
    return PoolingSpec(kind=p.kind, mean=p.mean * scale, min=lo, max=hi, sigma=p.sigma)

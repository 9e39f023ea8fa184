"""Plain NumPy references the replay's ``--verify`` compares against.

Sums run in lookup order with a float32 accumulator, position by position
(vectorised over bags), which is exactly the order the pooling kernels use;
raw and DRAM results must therefore be bit-identical.
"""

from __future__ import annotations

import numpy as np


def pool_reference(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``out[b] = rows[offsets[b]] + rows[offsets[b]+1] + ...`` (float32, left to right)."""
    rows = np.asarray(rows).astype(np.float32, copy=False)
    offsets = np.asarray(offsets, dtype=np.int64)
    n_bags = offsets.size - 1
    out = np.zeros((n_bags, rows.shape[1] if rows.ndim == 2 else 0), dtype=np.float32)
    lengths = np.diff(offsets)
    if n_bags == 0:
        return out
    for k in range(int(lengths.max(initial=0))):
        bags = np.flatnonzero(lengths > k)
        out[bags] += rows[offsets[bags] + k]
    return out

"""Small traces for the planner tests (plans/*): i.i.d. Zipf lookups through a fixed random permutation."""

from __future__ import annotations

import numpy as np

from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import TraceWriter


def small_spec(batch_size: int = 64) -> ModelSpec:
    return ModelSpec("plans-small", (
        TableSpec("a", rows=3000, dim=16, pooling=PoolingSpec.fixed(3), zipf_alpha=1.0),   # 64 B rows: 64 per page
        TableSpec("b", rows=5000, dim=64, pooling=PoolingSpec.fixed(2), zipf_alpha=0.8),   # 256 B rows: 16 per page
        TableSpec("c", rows=300, dim=2048, pooling=PoolingSpec.fixed(1), zipf_alpha=1.2),  # 8 KiB rows: 2 pages each
    ), batch_size=batch_size)


def write_zipf_trace(path, spec: ModelSpec, n_batches: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(t.rows) for t in spec.tables]
    probs = []
    for t in spec.tables:
        p = np.arange(1, t.rows + 1, dtype=np.float64) ** -t.zipf_alpha
        probs.append(p / p.sum())
    B = spec.batch_size
    with TraceWriter(path, spec, seed=seed, params={"test": "plans"}) as w:
        for _ in range(n_batches):
            idx, lens = [], []
            for t, perm, p in zip(spec.tables, perms, probs):
                n = rng.integers(0, 2 * int(t.pooling.mean) + 1, size=B)
                idx.append(perm[rng.choice(t.rows, size=int(n.sum()), p=p)])
                lens.append(n)
            w.append(np.concatenate(idx), np.concatenate([[0], np.cumsum(np.concatenate(lens))]))


def o_direct_supported(directory) -> bool:
    """Whether files in ``directory`` open with O_DIRECT (tmpfs refuses it)."""
    import os

    probe = directory / ".o_direct_probe"
    probe.write_bytes(b"\0" * 4096)
    try:
        os.close(os.open(probe, os.O_RDONLY | getattr(os, "O_DIRECT", 0)))
        return hasattr(os, "O_DIRECT")
    except OSError:
        return False
    finally:
        probe.unlink()

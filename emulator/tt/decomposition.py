"""TT-SVD: compress a table (in memory or streamed in row blocks) into :class:`emulator.tt.cores.TTCores`.

The cores' layout, the rebuilds and the HDF5 format are in :mod:`emulator.tt.cores`
(re-exported here for callers that import them with the decomposition).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Callable

import numpy as np

from emulator.tt.cores import (_SVD_MAX_ELEMENTS, TTCores, factorize_dim, factorize_rows, load_tt,  # noqa: F401
                               random_tt, reconstruction_error, row_digits, save_tt, tt_rebuild_range,
                               tt_rebuild_rows_reference)

# ---------------------------------------------------------------------------------------------- TT-SVD


def tt_svd(matrix, p_shapes, q_shapes, max_rank: int | None = None, rel_tol: float | None = None) -> TTCores:
    """TT-SVD (Oseledets 2011) of a table held in memory, computed in float64.

    Rows are padded with zeros to ``prod(p_shapes)``. Each unfolding keeps at
    most ``max_rank`` singular vectors and, with ``rel_tol``, the fewest whose
    dropped tail has norm <= ``rel_tol / sqrt(d-1) * ||W||_F`` (so the whole
    error is <= ``rel_tol * ||W||_F``). Neither given: exact (full ranks).
    """
    w = np.asarray(matrix)
    p, q = _check_shapes(w.shape if w.ndim == 2 else None, p_shapes, q_shapes, max_rank, rel_tol)
    padded = np.zeros((math.prod(p), w.shape[1]), dtype=np.float64)
    padded[:w.shape[0]] = w
    delta = _delta(rel_tol, len(p), float(np.linalg.norm(padded)))
    cores, ranks = _tt_svd_cores(padded, p, q, max_rank, delta)
    return TTCores(p, q, ranks, tuple(cores))


def _check_shapes(shape, p_shapes, q_shapes, max_rank, rel_tol):
    p, q = tuple(int(x) for x in p_shapes), tuple(int(x) for x in q_shapes)
    if shape is None:
        raise ValueError("the table must be a 2-D array (rows, dim)")
    if len(p) != len(q) or not p:
        raise ValueError(f"tt_p_shapes {p} and tt_q_shapes {q} must be non-empty and of equal length")
    if shape[0] > math.prod(p):
        raise ValueError(f"rows={shape[0]} exceeds prod(tt_p_shapes)={math.prod(p)}")
    if shape[1] != math.prod(q):
        raise ValueError(f"dim={shape[1]} is not prod(tt_q_shapes)={math.prod(q)}")
    if max_rank is not None and int(max_rank) < 1:
        raise ValueError(f"max_rank={max_rank} must be >= 1")
    if rel_tol is not None and not 0 <= float(rel_tol) < 1:
        raise ValueError(f"rel_tol={rel_tol} must be in [0, 1)")
    return p, q


def _delta(rel_tol, d, norm):
    """Per-unfolding truncation budget (absolute Frobenius norm)."""
    if rel_tol is None or d < 2:
        return 0.0
    return float(rel_tol) / math.sqrt(d - 1) * norm


def _pick_rank(s2: np.ndarray, max_rank, delta) -> int:
    """Fewest leading singular values whose dropped tail energy is <= delta**2, capped at max_rank."""
    s2 = np.clip(s2, 0.0, None)
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tail[r] = sum of s2[r:]
    r = int(np.argmax(tail <= max(delta, 0.0) ** 2))  # delta 0: drop exact zeros only
    if max_rank is not None:
        r = min(r, int(max_rank))
    return max(1, min(r, len(s2)))


def _truncated_svd(c: np.ndarray, max_rank, delta):
    """Leading left singular vectors ``u`` (m, r) and the remainder ``u.T @ c`` (r, n)."""
    m, n = c.shape
    if m <= n and m * n > _SVD_MAX_ELEMENTS:
        w, v = np.linalg.eigh(c @ c.T)
        order = np.argsort(w)[::-1]
        w, v = w[order], v[:, order]
        r = _pick_rank(w, max_rank, delta)
        u = np.ascontiguousarray(v[:, :r])
        return u, u.T @ c
    u, s, vt = np.linalg.svd(c, full_matrices=False)
    r = _pick_rank(s**2, max_rank, delta)
    return np.ascontiguousarray(u[:, :r]), s[:r, None] * vt[:r]


def _tt_svd_cores(w: np.ndarray, p, q, max_rank, delta):
    """Left-to-right TT-SVD of a padded float64 table ``w`` (prod p, prod q) -> (cores, ranks)."""
    d = len(p)
    t = w.reshape(p + q).transpose([ax for k in range(d) for ax in (k, d + k)])
    c = np.ascontiguousarray(t).reshape(p[0] * q[0], -1)
    ranks, cores = [1], []
    for k in range(d - 1):
        c = c.reshape(ranks[-1] * p[k] * q[k], -1)
        u, c = _truncated_svd(c, max_rank, delta)
        r = u.shape[1]
        cores.append(u.reshape(ranks[-1], p[k], q[k], r).transpose(1, 0, 2, 3).astype(np.float32))
        ranks.append(r)
    cores.append(c.reshape(ranks[-1], p[-1], q[-1], 1).transpose(1, 0, 2, 3).astype(np.float32))
    ranks.append(1)
    return cores, ranks


def tt_svd_streamed(read_rows: Callable[[int, int], np.ndarray], rows: int, dim: int, p_shapes, q_shapes,
                    max_rank: int | None, rel_tol: float | None = None, chunk_rows: int = 1 << 16,
                    max_in_memory_bytes: int = 256 << 20, tmp_dir: str | os.PathLike | None = None) -> TTCores:
    """TT-SVD of a table too large for memory, streaming ``read_rows(start, stop) -> (stop-start, dim)``.

    Right to left: one pass accumulates (float64) the Gram matrix of the last
    unfolding ``(i_1 j_1 .. i_{d-1} j_{d-1}) x (i_d j_d)``, whose top
    eigenvectors give the last core; a second pass projects the table on them,
    leaving a tensor ``rows*dim/(p_d q_d) * r_{d-1}`` big. That tensor is
    TT-SVD'd in memory when it fits in ``max_in_memory_bytes``, otherwise
    streamed the same way from a temporary ``np.memmap`` under ``tmp_dir``.
    Truncation follows :func:`tt_svd` (same ``max_rank`` / ``rel_tol`` meaning).
    """
    p, q = _check_shapes((int(rows), int(dim)), p_shapes, q_shapes, max_rank, rel_tol)
    opts = dict(chunk_rows=max(1, int(chunk_rows)), max_in_memory_bytes=int(max_in_memory_bytes), tmp_dir=tmp_dir)
    delta_of_norm = (lambda norm: _delta(rel_tol, len(p), norm))
    cores, ranks = _streamed_cores(read_rows, int(rows), p, q, max_rank, delta_of_norm, **opts)
    return TTCores(p, q, ranks, tuple(cores))


def _read_padded(read_rows, rows, start, stop, dim):
    block = np.zeros((stop - start, dim), dtype=np.float64)
    if start < rows:
        got = np.asarray(read_rows(start, min(stop, rows)))
        if got.shape != (min(stop, rows) - start, dim):
            raise ValueError(f"read_rows({start}, {min(stop, rows)}) returned shape {got.shape}")
        block[:got.shape[0]] = got
    return block


def _streamed_cores(read_rows, rows, p, q, max_rank, delta_of_norm, *, chunk_rows, max_in_memory_bytes, tmp_dir):
    d, dim = len(p), math.prod(q)
    total = math.prod(p)
    if d == 1:
        w = _read_padded(read_rows, rows, 0, total, dim)
        return [w.reshape(1, p[0], q[0], 1).transpose(1, 0, 2, 3).astype(np.float32)], [1, 1]
    pd, qd, q_lead = p[-1], q[-1], dim // q[-1]
    step = max(pd, chunk_rows // pd * pd)

    def unfold(start, stop):  # rows of the last unfolding for table rows [start, stop): (blocks*q_lead, pd*qd)
        x = _read_padded(read_rows, rows, start, stop, dim)
        return x.reshape(-1, pd, q_lead, qd).transpose(0, 2, 1, 3).reshape(-1, pd * qd)

    gram = np.zeros((pd * qd, pd * qd), dtype=np.float64)
    for start in range(0, total, step):
        x = unfold(start, min(start + step, total))
        gram += x.T @ x
    delta = delta_of_norm(math.sqrt(max(float(np.trace(gram)), 0.0)))
    w, v = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    r = _pick_rank(w[order], max_rank, delta)
    v = np.ascontiguousarray(v[:, order[:r]])
    last = v.T.reshape(r, pd, qd, 1).transpose(1, 0, 2, 3).astype(np.float32)

    lead_rows = total // pd
    y_bytes = lead_rows * q_lead * r * 8
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="tt-svd-") as tmp:
        if y_bytes <= max_in_memory_bytes:
            y = np.empty((lead_rows, q_lead * r), dtype=np.float64)
        else:
            y = np.lib.format.open_memmap(os.path.join(tmp, "y.npy"), mode="w+", dtype=np.float64,
                                          shape=(lead_rows, q_lead * r))
        for start in range(0, total, step):
            stop = min(start + step, total)
            y[start // pd:stop // pd] = (unfold(start, stop) @ v).reshape(-1, q_lead * r)
        q_left = q[:-2] + (q[-2] * r,)
        if isinstance(y, np.memmap):
            y.flush()
            cores, ranks = _streamed_cores(lambda s, e: y[s:e], lead_rows, p[:-1], q_left, max_rank,
                                           lambda _norm: delta, chunk_rows=max(1, chunk_rows * dim // (q_lead * r)),
                                           max_in_memory_bytes=max_in_memory_bytes, tmp_dir=tmp_dir)
        else:
            cores, ranks = _tt_svd_cores(y, p[:-1], q_left, max_rank, delta)
        del y
    pk, rk = cores[-1].shape[:2]
    cores[-1] = np.ascontiguousarray(cores[-1].reshape(pk, rk, q[-2], r))
    return cores + [last], ranks[:-1] + [r, 1]



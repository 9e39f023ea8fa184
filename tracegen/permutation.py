"""The seeded hash permutation of a table's rows: rank ``k`` (0-based) -> row ``perm(k)``.

A 4-round Feistel network with modular addition over ``[0, a) x [0, b)``,
``a*b >= rows``, cycle-walking back into range. No permutation array is stored
beyond the head (40M-row tables cost nothing), the hot rows are scattered over
the table rather than being the low ids, and the key depends only on
``(seed, table)``, so a row keeps its popularity across batches.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tracegen.jit import NJIT_OPTIONS as _NJIT_OPTIONS

PERM_HEAD_ROWS = 1 << 16  # rows of the hottest ranks kept in memory (512 KiB per table)
FEISTEL_ROUNDS = 4
PERMUTE_BLOCK = 1 << 14  # ranks drawn then permuted per block by the fused samplers (128 KiB, in cache)
_M1 = np.uint64(0x9E3779B97F4A7C15)
_S32 = np.uint64(32)
_MASK32 = np.uint64(0xFFFFFFFF)

# --- seeded hash permutation -----------------------------------------------------------------
# A 4-round Feistel network over [0, a) x [0, b) with addition modulo each side (the FFX / FE2
# construction of format-preserving encryption), a = ceil(sqrt(rows)), b = ceil(rows / a): each
# round adds a keyed hash of one side to the other, which is a bijection whatever the hash is.
# x in [0, a*b) splits as (x // b, x % b). Values that land in [rows, a*b) (a*b - rows < a, so
# fewer than 1 in sqrt(rows)) are permuted again ("cycle walking") until they are below rows.

@numba.njit
def _round_hash(v, key):  # 32 well-mixed bits of (v, key)
    h = (v ^ key) * _M1
    h ^= h >> _S32
    return h & _MASK32


@numba.njit
def _permute_one(x, n, a, b, keys):
    while True:
        left = x // b
        right = x - left * b
        for r in range(keys.size):
            if r % 2 == 0:
                left += (_round_hash(right, keys[r]) * a) >> _S32  # + (hash mapped to [0, a))
                if left >= a:
                    left -= a
            else:
                right += (_round_hash(left, keys[r]) * b) >> _S32
                if right >= b:
                    right -= b
        x = left * b + right
        if x < n:
            return x


@numba.njit(**_NJIT_OPTIONS)
def _permute_kernel(x, head, rows, a, b, keys, out):
    # out may be x. head[k] == perm(k) for k < head.size (a gather is cheaper than the rounds).
    n, ua, ub = np.uint64(rows), np.uint64(a), np.uint64(b)
    for i in range(x.size):
        k = x[i]
        if k < head.size:
            out[i] = head[k]
        else:
            out[i] = np.int64(_permute_one(np.uint64(k), n, ua, ub, keys))


def permutation_shape(rows: int) -> tuple[int, int]:
    """The Feistel domain ``(a, b)``: ``a = ceil(sqrt(rows))``, ``b = ceil(rows / a)``, ``a * b >= rows``."""
    a = max(1, math.isqrt(rows - 1) + 1) if rows > 1 else 1
    return a, -(-rows // a)


def permutation_keys(seed: int, table_index: int, rounds: int = FEISTEL_ROUNDS) -> np.ndarray:
    """The round keys of table ``table_index``'s permutation (uint64, one per round)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(1, int(table_index)))
    return ss.generate_state(rounds, dtype=np.uint64)


def hash_permute(x: np.ndarray, rows: int, keys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``perm(x)`` for every ``x`` in ``[0, rows)``: a bijection on ``[0, rows)`` keyed by ``keys``.

    ``out`` (contiguous int64, may be ``x`` itself) receives the result.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.int64 or x.ndim != 1 or not x.flags.c_contiguous:
        raise ValueError("hash_permute needs a contiguous 1-d int64 array")
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    if not 1 <= rows < 2**62:
        raise ValueError(f"rows must be in [1, 2**62), got {rows}")
    if x.size and (int(x.min()) < 0 or int(x.max()) >= rows):
        raise ValueError(f"hash_permute input outside [0, {rows})")
    if out is None:
        out = np.empty_like(x)
    elif out.dtype != np.int64 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous int64 array shaped like x")
    a, b = permutation_shape(int(rows))
    _permute_kernel(x, np.zeros(0, dtype=np.int64), int(rows), a, b, keys, out)
    return out


class HashPermutation:
    """Table ``table_index``'s row permutation: rank ``k`` (0-based) -> row ``perm(k)``.

    The rows of the ``head_rows`` hottest ranks are materialised (512 KiB by
    default); the rest are computed.
    """

    def __init__(self, rows: int, keys: np.ndarray, head_rows: int = PERM_HEAD_ROWS):
        self.rows = int(rows)
        self.keys = np.ascontiguousarray(keys, dtype=np.uint64)
        self.shape = permutation_shape(self.rows)
        self.head = hash_permute(np.arange(min(self.rows, head_rows), dtype=np.int64), self.rows, self.keys)

    def kernel_args(self) -> tuple:
        """``(head, rows, a, b, keys)``: what ``_permute_kernel`` (and the samplers' fused kernels) take."""
        return (self.head, self.rows, *self.shape, self.keys)

    def apply(self, ranks: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = perm(ranks[i])``; ``out`` may be ``ranks``. Ranks must lie in ``[0, rows)`` (not checked)."""
        for a in (ranks, out):
            if a.dtype != np.int64 or a.ndim != 1 or not a.flags.c_contiguous:
                raise ValueError("ranks and out must be contiguous 1-d int64 arrays")
        if out.size != ranks.size:
            raise ValueError("out must have the size of ranks")
        _permute_kernel(ranks, self.head, self.rows, *self.shape, self.keys, out)

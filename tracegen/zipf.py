"""Exact Zipf ranks over a finite support (the classic per-table generator; see :mod:`tracegen.generate`)."""

from __future__ import annotations

import math

import numba
import numpy as np

from tracegen.jit import NJIT_OPTIONS as _NJIT_OPTIONS
from tracegen.permutation import PERMUTE_BLOCK, HashPermutation, _permute_kernel
from tracegen.popularity import _M1, cell_starts, find_cell, guide_table, next_uniform

CELL_BITS = 9  # 2**9 Zipf cells per octave of ranks: acceptance above 0.998

# --- Zipf over a finite support ---------------------------------------------------------------
# Rank r (1-based) has weight w(r) = r**-alpha. Ranks are grouped into cells: ranks below
# 2**(CELL_BITS + 1) are cells of one rank; each octave [2**j, 2**(j+1)) above is split into
# 2**CELL_BITS cells of equal width. A cell c of n ranks starting at rank lo has envelope mass
# n * w(lo) >= its true mass (w decreases). Sampling: pick a cell by inverse CDF over the
# envelope masses (guide table + binary search), a rank r uniformly in the cell (from the same
# uniform, rescaled), and accept it with probability w(r) / w(lo) (one more uniform; a squeeze
# (lo / hi)**alpha decides without a pow() almost always); on rejection start again. Accepted
# ranks have probability proportional to w(r): exact. Cells grow with the rank, so the tables
# are O(2**CELL_BITS * log2(rows)) (about 9K cells for 40M rows), and the acceptance rate is
# above 0.998.

@numba.njit(**_NJIT_OPTIONS)
def _zipf_ranks_kernel(seed, cdf, guide, cell_lo, cell_n, squeeze, alpha, out):
    state = np.uint64(seed)
    used = 0
    for j in range(out.size):
        while True:
            state, x = next_uniform(state)
            used += 1
            c = find_cell(cdf, guide, x)  # first cell c with cdf[c] > x
            k = cell_lo[c]  # 0-based rank
            cnt = cell_n[c]
            if cnt > 1:
                below = cdf[c - 1] if c > 0 else 0.0
                pos = np.int64((x - below) / (cdf[c] - below) * cnt)  # x rescaled: uniform in the cell
                k += min(max(pos, 0), cnt - 1)
                state, y = next_uniform(state)
                used += 1
                if y >= squeeze[c] and y * math.pow((k + 1.0) / (cell_lo[c] + 1.0), alpha) > 1.0:
                    continue  # rejected: y > w(k+1) / w(lo)
            out[j] = k
            break
    return used


@numba.njit(**_NJIT_OPTIONS)
def _zipf_permuted_kernel(seed, cdf, guide, cell_lo, cell_n, squeeze, alpha, head, rows, a, b, keys, out):
    # _zipf_ranks_kernel then the permutation, block by block while the block is in cache: the same values
    state = np.uint64(seed)
    used = 0
    for lo in range(0, out.size, PERMUTE_BLOCK):
        blk = out[lo : min(out.size, lo + PERMUTE_BLOCK)]
        u = _zipf_ranks_kernel(state, cdf, guide, cell_lo, cell_n, squeeze, alpha, blk)
        state += np.uint64(u) * _M1  # SplitMix64 steps its state by _M1 per uniform
        used += u
        _permute_kernel(blk, head, rows, a, b, keys, blk)
    return used


def zipf_cells(rows: int, alpha: float, cell_bits: int = CELL_BITS) -> dict[str, np.ndarray]:
    """The cell tables of Zipf(``alpha``) over ``rows`` ranks (see the comment above).

    ``lo`` (0-based first rank), ``n`` (ranks in the cell), ``cdf`` (cumulative
    envelope mass, normalised, last exactly 1), ``squeeze`` (a lower bound of
    ``w(r) / w(lo)`` in the cell, 1 for one-rank cells) and ``guide``.
    """
    lo1, n = cell_starts(rows, cell_bits)
    env = n * lo1.astype(np.float64) ** -alpha
    cdf = np.cumsum(env)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    hi1 = (lo1 + n - 1).astype(np.float64)
    squeeze = np.where(n > 1, (lo1 / hi1) ** alpha * (1.0 - 1e-12), 1.0)
    return {"lo": lo1 - 1, "n": n, "cdf": cdf, "squeeze": squeeze, "guide": guide_table(cdf)}


class ZipfSampler:
    """Exact Zipf(``alpha``) ranks (0-based) over ``rows`` ranks; ``alpha == 0`` is uniform."""

    def __init__(self, rows: int, alpha: float, cell_bits: int = CELL_BITS):
        self.rows = int(rows)
        self.alpha = float(alpha)
        if self.rows < 1 or not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"bad Zipf support rows={rows} alpha={alpha}")
        self.cells = zipf_cells(self.rows, self.alpha, cell_bits) if self.alpha > 0 else None

    def fill(self, rng: np.random.Generator, out: np.ndarray, perm: HashPermutation | None = None) -> None:
        """Fill ``out`` (contiguous int64) with ranks; takes one 64-bit seed from ``rng``. With ``perm``, with
        the rows of those ranks (``perm.apply`` fused in, block by block: the same values)."""
        if self.cells is None:
            out[:] = rng.integers(0, self.rows, size=out.size, dtype=np.int64)
            if perm is not None:
                perm.apply(out, out)
            return
        zipf_ranks(int(rng.integers(0, 2**64, dtype=np.uint64)), self, out, perm)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(int(size), dtype=np.int64)
        self.fill(rng, out)
        return out


def zipf_ranks(seed: int, sampler: ZipfSampler, out: np.ndarray, perm: HashPermutation | None = None) -> int:
    """Kernel wrapper: fill ``out`` with ranks drawn from the SplitMix64 stream started at ``seed`` (then
    mapped through ``perm`` when given, fused).

    Returns how many uniforms were used (one per rank, two in cells of more
    than one rank, more after the rare rejections). Needs ``sampler.alpha > 0``.
    """
    if not isinstance(out, np.ndarray) or out.dtype != np.int64 or out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous 1-d int64 array")
    if sampler.cells is None:
        raise ValueError(f"zipf_ranks needs alpha > 0 (alpha={sampler.alpha})")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed {seed} is not a 64-bit unsigned integer")
    c = sampler.cells
    args = (c["cdf"], c["guide"], c["lo"], c["n"], c["squeeze"], sampler.alpha)
    if perm is None:
        return int(_zipf_ranks_kernel(np.uint64(seed), *args, out))
    return int(_zipf_permuted_kernel(np.uint64(seed), *args, *perm.kernel_args(), out))

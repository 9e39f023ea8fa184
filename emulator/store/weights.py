"""Where embedding weights come from: synthetic (low TT rank + noise) or imported files.

Synthetic weights are deterministic per (seed, table, row) and are produced a
block at a time, so a table larger than RAM never sits in memory. The signal is
the dense expansion of a random TT of rank ``signal_rank``; noise of standard
deviation ``noise_ratio`` x (signal std) is added, so the error of a TT
compression is a real measurement, not zero by design.

Two generators (``SyntheticWeightsConfig.generator``; a store's manifest names
the one it was built with):

* ``tt-hash`` (the default): one Numba kernel (nogil, so build threads run it
  on every core at once) expands the signal row by row in a fixed summation
  order, and draws the noise from a counter-based hash: a 32-bit seed per row
  (SplitMix64 of seed, table and row), then per element a 32-bit mix
  (lowbias32) of the row seed and the column, whose four bytes are summed
  (Irwin-Hall: scaled to mean 0 and variance 1, bounded by about 3.4, close to
  Gaussian). Every value depends only on its row and column, never on how a
  table is split into reads, and uses only integer and correctly rounded
  float32 operations: the same bits on every machine. About 8x faster per core
  than ``tt-gauss`` (NumPy's Gaussian sampler was the build's bottleneck).
* ``tt-gauss`` (stores built before the generator was recorded): the signal by
  BLAS GEMMs over aligned row blocks and Gaussian noise from NumPy's PCG64 per
  block of ``NOISE_BLOCK_ROWS`` rows. Kept so that those stores can be rebuilt
  byte for byte.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tracegen.errors import InputError
from tracegen.jit import njit
from tracegen.spec import TableSpec

NOISE_BLOCK_ROWS = 65536  # noise is seeded per block of this many rows, independent of chunking
SIGNAL_BLOCK_ROWS = 4096  # the signal is expanded per aligned block of this many rows (see SyntheticRows.read)
SIGNAL_STD = 0.1
GENERATORS = ("tt-hash", "tt-gauss")
DEFAULT_GENERATOR = "tt-hash"
LEGACY_GENERATOR = "tt-gauss"  # what a manifest without a generator was built with


@dataclass(frozen=True)
class SyntheticWeightsConfig:
    seed: int = 0
    signal_rank: int = 8
    noise_ratio: float = 0.05
    generator: str = DEFAULT_GENERATOR

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise InputError(f"weights generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        if self.signal_rank < 1:
            raise InputError(f"signal rank must be >= 1, got {self.signal_rank}")
        if not (self.noise_ratio >= 0):
            raise InputError(f"noise ratio must be >= 0, got {self.noise_ratio}")


class RowSource(Protocol):
    rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as an (n, dim) array."""


def synthetic_rows(table: TableSpec, table_index: int, config: SyntheticWeightsConfig) -> "RowSource":
    """The rows of synthetic table number ``table_index``, from ``config.generator``."""
    cls = HashSyntheticRows if config.generator == "tt-hash" else SyntheticRows
    return cls(table, table_index, config)


class SyntheticRows:
    """Rows of one synthetic table, generated on demand (the ``tt-gauss`` generator)."""

    def __init__(self, table: TableSpec, table_index: int, config: SyntheticWeightsConfig):
        from emulator.tt.decomposition import factorize_dim, factorize_rows, random_tt

        self.rows, self.dim = table.rows, table.dim
        self.table_index = table_index
        self.config = config
        p = factorize_rows(table.rows, 3)
        q = factorize_dim(table.dim, 3)
        ranks = (1, config.signal_rank, config.signal_rank, 1)
        rng = np.random.default_rng([config.seed, table_index, 0x5157])
        tt = random_tt(p, q, ranks, rng, 1.0)
        # Scale the first core so that the signal has standard deviation SIGNAL_STD.
        sample = self._expand(tt, 0, min(table.rows, 4096))
        std = float(sample.std()) or 1.0
        from emulator.tt.decomposition import TTCores

        cores = list(tt.cores)
        cores[0] = (cores[0] * np.float32(SIGNAL_STD / std)).astype(np.float32)
        self.signal = TTCores(p_shapes=tt.p_shapes, q_shapes=tt.q_shapes, ranks=tt.ranks, cores=tuple(cores))
        self.noise_std = np.float32(config.noise_ratio * SIGNAL_STD)

    @staticmethod
    def _expand(tt, start: int, stop: int) -> np.ndarray:
        from emulator.tt.decomposition import tt_rebuild_range

        return tt_rebuild_range(tt, start, stop)

    def _signal(self, start: int, stop: int) -> np.ndarray:
        """The signal rows ``[start, stop)``, each computed inside its aligned block.

        BLAS kernels may round a row differently depending on the shape of the
        GEMM it falls in (vector tails, FMA or not: seen on AVX2 machines), so
        every row is always computed within the same aligned block of
        ``SIGNAL_BLOCK_ROWS`` rows: any split of a table into reads gives the
        same bits.
        """
        b0, b1 = start // SIGNAL_BLOCK_ROWS, -(-stop // SIGNAL_BLOCK_ROWS)
        if b1 - b0 == 1 and stop - start == min((b0 + 1) * SIGNAL_BLOCK_ROWS, self.rows) - b0 * SIGNAL_BLOCK_ROWS:
            return self._expand(self.signal, start, stop)
        out = np.empty((stop - start, self.dim), dtype=np.float32)
        for b in range(b0, b1):
            lo, hi = b * SIGNAL_BLOCK_ROWS, min((b + 1) * SIGNAL_BLOCK_ROWS, self.rows)
            s, e = max(lo, start), min(hi, stop)
            out[s - start : e - start] = self._expand(self.signal, lo, hi)[s - lo : e - lo]
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        out = self._signal(start, stop)
        if self.noise_std > 0:
            b0, b1 = start // NOISE_BLOCK_ROWS, -(-stop // NOISE_BLOCK_ROWS)
            for b in range(b0, b1):
                lo, hi = b * NOISE_BLOCK_ROWS, min((b + 1) * NOISE_BLOCK_ROWS, self.rows)
                rng = np.random.default_rng([self.config.seed, self.table_index, 0x401E, b])
                noise = rng.standard_normal((hi - lo, self.dim), dtype=np.float32)
                s, e = max(lo, start), min(hi, stop)
                out[s - start : e - start] += self.noise_std * noise[s - lo : e - lo]
        return out


_M1 = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_G32 = np.uint32(0x9E3779B9)
_F1 = np.uint32(0x7FEB352D)  # lowbias32 (C. Wellons' hash prospector): a 32-bit mixer with good avalanche
_F2 = np.uint32(0x846CA68B)
_HALF_SUM = np.int32(510)  # mean of the sum of four uniform bytes
_HASH_UNIT = np.float32(1.0 / np.sqrt(4 * (256**2 - 1) / 12.0))  # (sum - mean) x this has variance 1


@njit
def _hash_rows_kernel(g1, g2, g3x, p2, p3, start, stop, key, noise_scale, out):  # pragma: no cover (compiled)
    """Rows ``[start, stop)`` of the TT ``g1 (p1, q1, r1)``, ``g2 (p2, r1, q2, r2)``, ``g3 (p3, r2, q3)`` into
    ``out (stop-start, dim)``, plus ``noise_scale`` x the hash noise of each element (see the module doc).
    ``g3x[i3, b, (j1 j2 j3)] = g3[i3, b, j3]`` (tiled to the row width, so the inner loop runs over a whole
    row whatever ``q3`` is)."""
    q1, r1 = g1.shape[1], g1.shape[2]
    q2, r2 = g2.shape[2], g2.shape[3]
    dim = g3x.shape[2]
    q3 = dim // (q1 * q2)
    leftx = np.empty((r2, dim), dtype=np.float32)  # leftx[b, (j1 j2 j3)] = left[j1 j2, b]
    prev = -1
    for row in range(start, stop):
        i3 = row % p3
        i12 = row // p3
        if i12 != prev:  # left[j1 j2, b] = sum_a g1[i1, j1, a] g2[i2, a, j2, b], in a fixed order
            i1, i2 = i12 // p2, i12 % p2
            for j1 in range(q1):
                for j2 in range(q2):
                    for b in range(r2):
                        acc = np.float32(0.0)
                        for a in range(r1):
                            acc += g1[i1, j1, a] * g2[i2, a, j2, b]
                        base = (j1 * q2 + j2) * q3
                        for j3 in range(q3):
                            leftx[b, base + j3] = acc
            prev = i12
        orow = out[row - start]  # 1-D views: LLVM vectorizes the loops over k (2-D indexing defeats it)
        lrow, grow = leftx[0], g3x[i3, 0]
        for k in range(dim):
            orow[k] = lrow[k] * grow[k]
        for b in range(1, r2):
            lrow, grow = leftx[b], g3x[i3, b]
            for k in range(dim):
                orow[k] += lrow[k] * grow[k]
        if noise_scale != 0:  # a 32-bit seed per row (SplitMix64), then a 32-bit mix per element (vectorizes)
            z = key + np.uint64(row + 1) * _M1
            z = (z ^ (z >> np.uint64(30))) * _C1
            z = (z ^ (z >> np.uint64(27))) * _C2
            z ^= z >> np.uint64(31)
            row_seed = np.uint32(z >> np.uint64(32))
            for c in range(dim):
                h = np.uint32(row_seed + np.uint32(c) * _G32)
                h = np.uint32((h ^ (h >> np.uint32(16))) * _F1)
                h = np.uint32((h ^ (h >> np.uint32(15))) * _F2)
                h = np.uint32(h ^ (h >> np.uint32(16)))
                s = ((h & np.uint32(0xFF)) + ((h >> np.uint32(8)) & np.uint32(0xFF))
                     + ((h >> np.uint32(16)) & np.uint32(0xFF)) + (h >> np.uint32(24)))
                orow[c] += noise_scale * np.float32(np.int32(s) - _HALF_SUM)


class HashSyntheticRows:
    """Rows of one synthetic table, generated on demand (the ``tt-hash`` generator; see the module doc).

    The signal's cores are Gaussian, the first scaled so that the signal's root mean square over the TT's
    whole index range is ``SIGNAL_STD`` (computed from the cores, exactly: no sample of rows).
    """

    def __init__(self, table: TableSpec, table_index: int, config: SyntheticWeightsConfig):
        from emulator.tt.decomposition import factorize_dim, factorize_rows

        self.rows, self.dim = table.rows, table.dim
        p = factorize_rows(table.rows, 3)
        q = factorize_dim(table.dim, 3)
        r = config.signal_rank
        rng = np.random.default_rng([config.seed, table_index, 0x5157])
        g1 = rng.standard_normal((p[0], q[0], r), dtype=np.float32)
        g2 = rng.standard_normal((p[1], r, q[1], r), dtype=np.float32)
        g3 = rng.standard_normal((p[2], r, q[2]), dtype=np.float32)
        # ||W||^2 = sum over the cores' contraction: a (r x r) Gram matrix carried from core to core
        gram = np.einsum("ija,ijb->ab", g1, g1, dtype=np.float64)
        gram = np.einsum("iajc,ab,ibjd->cd", g2, gram, g2, dtype=np.float64)
        total = float(np.einsum("iaj,ab,ibj->", g3, gram, g3, dtype=np.float64))
        rms = np.sqrt(total / (math.prod(p) * table.dim)) or 1.0
        g1 *= np.float32(SIGNAL_STD / rms)
        self._p = p
        self._q = q
        self._r = r
        self._g = (g1, g2, np.ascontiguousarray(np.tile(g3, (1, 1, q[0] * q[1]))))  # g3 tiled for the kernel
        self._key = np.uint64(np.random.SeedSequence([config.seed, table_index, 0x401E]).generate_state(1,
                                                                                                       np.uint64)[0])
        self.noise_std = np.float32(config.noise_ratio * SIGNAL_STD)
        self._noise_scale = np.float32(self.noise_std * _HASH_UNIT)

    @property
    def signal(self):
        """The signal as :class:`emulator.tt.cores.TTCores`."""
        from emulator.tt.decomposition import TTCores

        p, q, r = self._p, self._q, self._r
        g3 = self._g[2][:, :, :q[2]]
        return TTCores(p_shapes=p, q_shapes=q, ranks=(1, r, r, 1),
                       cores=(self._g[0][:, None], self._g[1], np.ascontiguousarray(g3[..., None])))

    def read(self, start: int, stop: int, out: np.ndarray | None = None, noise: bool = True) -> np.ndarray:
        """Rows ``[start, stop)`` as float32 ``(n, dim)``, into ``out`` (C-contiguous, float32) when given."""
        if not 0 <= start <= stop <= self.rows:
            raise ValueError(f"rows [{start}, {stop}) are not within [0, {self.rows}]")
        if out is None:
            out = np.empty((stop - start, self.dim), dtype=np.float32)
        elif out.shape != (stop - start, self.dim) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32 of shape {(stop - start, self.dim)}")
        _hash_rows_kernel(self._g[0], self._g[1], self._g[2], self._p[1], self._p[2], start, stop, self._key,
                          self._noise_scale if noise else np.float32(0.0), out)
        return out


class ArrayRows:
    """Rows of an imported table: a ``.npy`` file (memory-mapped) or an HDF5 dataset."""

    def __init__(self, table: TableSpec, path: str | os.PathLike):
        self.rows, self.dim = table.rows, table.dim
        spec = str(path)
        self._h5 = None
        file, dataset = spec, ""  # "weights.h5:dataset" names one dataset of an HDF5 file
        for ext in (".h5:", ".hdf5:"):
            if ext in spec:
                cut = spec.index(ext) + len(ext) - 1
                file, dataset = spec[:cut], spec[cut + 1 :]
        p = Path(file)
        if not p.is_file():
            raise InputError(f"weights file for table {table.name} not found", p)
        try:
            if p.suffix == ".npy":
                arr = np.load(p, mmap_mode="r")
            else:
                import h5py

                self._h5 = h5py.File(p, "r")
                name = dataset or table.name
                if name not in self._h5:
                    raise InputError(f"no dataset {name!r} for table {table.name}", p)
                arr = self._h5[name]
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot read weights ({e.__class__.__name__}: {e})", p) from None
        if arr.ndim != 2 or arr.shape != (table.rows, table.dim):
            raise InputError(f"weights of shape {tuple(arr.shape)} do not match table {table.name} "
                             f"({table.rows} x {table.dim})", p)
        if np.dtype(arr.dtype).kind != "f":
            raise InputError(f"weights dtype {arr.dtype} is not floating point", p)
        self._arr = arr

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._arr[start:stop], dtype=np.float32)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()

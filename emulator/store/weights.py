"""Where embedding weights come from: synthetic (low TT rank + noise) or imported files.

Synthetic weights are deterministic per (seed, table, block of rows) and are
produced a block at a time, so a table larger than RAM never sits in memory.
The signal is the dense expansion of a random TT of rank ``signal_rank``;
Gaussian noise of standard deviation ``noise_ratio`` x (signal std) is added,
so the error of a TT compression is a real measurement, not zero by design.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tracegen.errors import InputError
from tracegen.spec import TableSpec

NOISE_BLOCK_ROWS = 65536  # noise is seeded per block of this many rows, independent of chunking
SIGNAL_BLOCK_ROWS = 4096  # the signal is expanded per aligned block of this many rows (see SyntheticRows.read)
SIGNAL_STD = 0.1


@dataclass(frozen=True)
class SyntheticWeightsConfig:
    seed: int = 0
    signal_rank: int = 8
    noise_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.signal_rank < 1:
            raise InputError(f"signal rank must be >= 1, got {self.signal_rank}")
        if not (self.noise_ratio >= 0):
            raise InputError(f"noise ratio must be >= 0, got {self.noise_ratio}")


class RowSource(Protocol):
    rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as an (n, dim) array."""


class SyntheticRows:
    """Rows of one synthetic table, generated on demand."""

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

"""Argument checks of the pooling kernels' public wrappers (:mod:`emulator.kernels.pooling`).

Each check is cheap (attributes and flags only) or runs after a kernel has
refused its input, to name the first bad value in the message. Wrong dtypes
raise TypeError; wrong shapes, layouts and values ValueError; positions out of
range IndexError.
"""

from __future__ import annotations

import numba
import numpy as np

DTYPE_FP32 = 0
DTYPE_FP16 = 1
ITEM_BYTES = (4, 2)  # per dtype code
from emulator.tiers import KIND_DRAM, KIND_PAGE, KIND_STAGED  # noqa: F401  (the kernels' lookup kinds)


def table_view(table: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous (rows, dim) fp32/fp16 table as a flat float32 / uint16 (fp16 bits) view."""
    if not isinstance(table, np.ndarray) or table.ndim != 2:
        raise ValueError(f"{what} must be a 2-D numpy array (rows, dim), got {describe(table)}")
    if table.dtype not in (np.float32, np.float16):
        raise TypeError(f"{what} must be float32 or float16, got {table.dtype}")
    if not table.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (use np.ascontiguousarray)")
    flat = table.reshape(-1)
    return flat.view(np.uint16) if table.dtype == np.float16 else flat


def int_array(a: np.ndarray, dtype, what: str) -> np.ndarray:
    """``a`` itself, if it is a contiguous 1-D array of exactly ``dtype`` (no silent conversion)."""
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D numpy array, got {describe(a)}")
    if a.dtype != dtype:
        name = np.dtype(dtype).name
        raise TypeError(f"{what} must be {name}, got {a.dtype} (convert with .astype(np.{name}))")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be contiguous (use np.ascontiguousarray)")
    return a


def out_view(out: np.ndarray, n_rows: int, dim: int) -> tuple[np.ndarray, int]:
    """A writable float32 (n_rows, dim) output whose rows are contiguous (the row stride may be larger,
    e.g. a column slice of a (B, T*dim) DLRM output) -> (flat float32 view, row stride in elements)."""
    if not isinstance(out, np.ndarray) or out.ndim != 2:
        raise ValueError(f"out must be a 2-D numpy array, got {describe(out)}")
    if out.dtype != np.float32:
        raise TypeError(f"out must be float32, got {out.dtype}")
    if out.shape != (n_rows, dim):
        raise ValueError(f"out has shape {out.shape}, expected {(n_rows, dim)}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if n_rows == 0 or dim == 0:
        return np.empty(0, np.float32), dim
    row_stride, col_stride = out.strides
    if col_stride != 4 or row_stride < 4 * dim or row_stride % 4:
        raise ValueError(f"out rows must be contiguous float32 rows (strides {out.strides}); use np.ascontiguousarray")
    if out.flags.c_contiguous:
        return out.reshape(-1), dim
    span = (n_rows - 1) * (row_stride // 4) + dim  # the flat extent from out[0, 0] to out[-1, -1]
    return np.lib.stride_tricks.as_strided(out, shape=(span,), strides=(4,)), row_stride // 4


def check_offsets(offsets: np.ndarray) -> None:
    """Type and layout only: the values are checked by the kernel's entry point (one pass, no dispatch)."""
    int_array(offsets, np.int64, "offsets")
    if offsets.size == 0:
        raise ValueError("offsets must have length n_bags + 1 >= 1")


def raise_for_offsets(offsets: np.ndarray, n_lookups: int) -> None:
    """After a kernel refused its input: raise for the first bad offset, if any (NumPy, slow path)."""
    if offsets[0] < 0:
        raise ValueError(f"offsets[0] = {int(offsets[0])} is negative")
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        b = int(drops[0])
        raise ValueError(f"offsets decrease at bag {b} ({int(offsets[b])} -> {int(offsets[b + 1])})")
    if offsets[-1] > n_lookups:
        raise ValueError(f"last offset {int(offsets[-1])} exceeds the {n_lookups} lookups")


def check_threads(threads: int) -> int:
    """An integer in ``[1, NUMBA_NUM_THREADS]`` (Numba cannot use more threads than it launched)."""
    if not isinstance(threads, (int, np.integer)) or not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be an integer in [1, {numba.config.NUMBA_NUM_THREADS}], got {threads!r}")
    return int(threads)


def check_sources(kinds, locs, dram, pages, staged, code, dim):
    """Shared checks of pool_sources / extract_rows; returns (dram flat, staged flat, page_half)."""
    int_array(kinds, np.uint8, "kinds")
    int_array(locs, np.int64, "locs")
    if kinds.size != locs.size:
        raise ValueError(f"kinds ({kinds.size}) and locs ({locs.size}) differ in length")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if code not in (DTYPE_FP32, DTYPE_FP16):
        raise ValueError(f"dtype_code {code!r} is not DTYPE_FP32 ({DTYPE_FP32}) or DTYPE_FP16 ({DTYPE_FP16})")
    dram_flat = table_view(dram, "dram")
    if dram.shape[1] != dim:
        raise ValueError(f"dram rows have {dram.shape[1]} values, expected dim = {dim}")
    if not isinstance(pages, np.ndarray) or pages.ndim != 1 or pages.dtype != np.uint8:
        raise TypeError(f"pages must be a 1-D uint8 array (a buffer of read pages), got {describe(pages)}"
                        + (f" of {pages.dtype}" if isinstance(pages, np.ndarray) else ""))
    if not pages.flags.c_contiguous:
        raise ValueError("pages must be contiguous")
    if not isinstance(staged, np.ndarray) or staged.ndim != 2 or staged.dtype != np.float32:
        raise TypeError(f"staged must be a 2-D float32 array (S, dim), got {describe(staged)}"
                        + (f" of {staged.dtype}" if isinstance(staged, np.ndarray) else ""))
    if staged.shape[1] != dim or not staged.flags.c_contiguous:
        raise ValueError(f"staged must be C-contiguous with {dim} columns, got shape {staged.shape}")
    return dram_flat, staged.reshape(-1), code == DTYPE_FP16


def location_limits(dram, pages, staged, code, dim) -> np.ndarray:
    """Exclusive upper bound of ``locs`` per kind; a page row must end inside the buffer."""
    return np.array([dram.shape[0], max(pages.size - dim * ITEM_BYTES[code] + 1, 0), staged.shape[0]], np.uint64)


def raise_for_locations(kinds, locs, lo, hi, limits, dram, pages, staged, code, dim) -> None:
    """After a kernel refused its input: raise for the first lookup outside ``limits`` (slow path)."""
    row_bytes = dim * ITEM_BYTES[code]
    kind_used = np.minimum(kinds[lo:hi], 3)
    bad = lo + int(np.flatnonzero(locs[lo:hi].astype(np.uint64) >= np.append(limits, 0)[kind_used])[0])
    kind, loc = int(kinds[bad]), int(locs[bad])
    if kind == KIND_DRAM:
        raise IndexError(f"lookup {bad}: dram row {loc} out of range for {dram.shape[0]} rows")
    if kind == KIND_PAGE:
        raise IndexError(f"lookup {bad}: a {row_bytes}-byte row at byte offset {loc} "
                         f"does not fit in the {pages.size}-byte pages buffer")
    if kind == KIND_STAGED:
        raise IndexError(f"lookup {bad}: staged row {loc} out of range for {staged.shape[0]} rows")
    raise ValueError(f"lookup {bad}: kind {kind} is not KIND_DRAM (0), KIND_PAGE (1) or KIND_STAGED (2)")


def describe(a) -> str:
    return f"{type(a).__name__} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__

"""Row-wise storage formats beside the raw rows and TT: fp16, and int8 / int4 with per-row scale and bias.

The layouts are FBGEMM's fused row-wise formats (``fbgemm/QuantUtils.h``,
``FloatToFused8BitRowwiseQuantizedSBFloat`` and
``FloatToFusedNBitRowwiseQuantizedSBHalf``), one row of ``row_bytes`` bytes per
table row, little-endian, nothing between rows:

    fp16   dim x float16                                          row_bytes = 2 * dim
    int8   dim x uint8,            then float32 scale, float32 bias   row_bytes = dim + 8
    int4   ceil(dim / 2) x uint8,  then float16 scale, float16 bias   row_bytes = ceil(dim / 2) + 4
           (column 2j in the low nibble of byte j, column 2j + 1 in its high nibble;
           an odd dim leaves the last high nibble 0)

Quantizing a row ``x`` (float32 arithmetic throughout, rounding half to even as ``lrintf``):

    int8   scale = (max - min) / 255, bias = min,
           q = rint((x - min) * (255 / (max - min + 1e-8)))
    int4   bias = fp16(min);  scale = fp16((max - bias) / 15)  (1 if the range or the fp16 scale is 0,
           or its reciprocal overflows);  q = clip(rint((x - bias) * (1 / scale)), 0, 15)

Dequantizing: ``x' = float32(q) * scale + bias`` with the scale and bias widened
to float32, a product then a sum, each rounded to float32 (no fused
multiply-add), which is what the pooling kernels in
:mod:`emulator.kernels.quant` and the NumPy references compute bit for bit.
(FBGEMM's inference TBE, ``IntNBitTableBatchedEmbeddingBagsCodegen``, keeps a
different in-memory layout: fp16 scale and bias *before* the data for int8 and
int4 alike; ``screc bench quant`` converts to it.)

On disk a format's rows are laid out in 4 KiB pages like raw rows
(:class:`FormatLayout`: rows never straddle a page), so a narrower row means
more rows per page and fewer pages read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.store.layout import RowLayout

ROW_FORMATS = ("fp32", "fp16", "int8", "int4")  # fp32: the raw rows themselves
STORED_FORMATS = ("fp16", "int8", "int4")  # written beside the raw rows by `store build --row-formats`
_INT8_EPS = np.float32(1e-8)  # FBGEMM's kEpsilon in the int8 inverse scale


@dataclass(frozen=True)
class RowFormat:
    """One row format of a ``dim``-wide table: its bytes per row and where the scale and bias sit."""

    name: str
    dim: int

    def __post_init__(self) -> None:
        if self.name not in ROW_FORMATS:
            raise ValueError(f"row format {self.name!r} is not one of {', '.join(ROW_FORMATS)}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) or self.dim < 1:
            raise ValueError(f"row format dim must be a whole number >= 1, got {self.dim!r}")

    @property
    def bits(self) -> int:
        return {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}[self.name]

    @property
    def data_bytes(self) -> int:
        """Bytes of the row's values (before the scale and bias)."""
        return -(-self.dim * self.bits // 8)

    @property
    def scale_bias_bytes(self) -> int:
        return {"int8": 8, "int4": 4}.get(self.name, 0)

    @property
    def row_bytes(self) -> int:
        return self.data_bytes + self.scale_bias_bytes


def row_format(name: str, dim: int) -> RowFormat:
    return RowFormat(name, int(dim))


@dataclass(frozen=True)
class FormatLayout(RowLayout):
    """Pages of a row-format file: :class:`RowLayout` with ``dtype`` naming the format and rows of
    ``RowFormat.row_bytes`` bytes (viewed as uint8)."""

    @property
    def row_format(self) -> RowFormat:
        return RowFormat(self.dtype, self.dim)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def row_bytes(self) -> int:
        return self.row_format.row_bytes


def _check_values(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 2 or v.shape[1] < 1:
        raise ValueError(f"values must be a 2-D (rows, dim) array, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values must be finite to quantize")
    return np.ascontiguousarray(v, dtype=np.float32)


def quantize_rows(values: np.ndarray, fmt: str) -> np.ndarray:
    """``values`` (n, dim) as ``fmt`` rows: a (n, row_bytes) uint8 array in the layout above."""
    v = _check_values(values)
    f = RowFormat(fmt, v.shape[1])
    if f.name == "fp32":
        return v.view(np.uint8).reshape(v.shape[0], f.row_bytes).copy()
    if f.name == "fp16":
        return v.astype(np.float16).view(np.uint8).reshape(v.shape[0], f.row_bytes)
    out = np.zeros((v.shape[0], f.row_bytes), dtype=np.uint8)
    lo = v.min(axis=1, keepdims=True)
    hi = v.max(axis=1, keepdims=True)
    if f.name == "int8":
        rng = hi - lo
        inv = np.float32(255.0) / (rng + _INT8_EPS)
        out[:, :f.dim] = np.rint((v - lo) * inv).astype(np.uint8)
        sb = np.concatenate([rng / np.float32(255.0), lo], axis=1).astype(np.float32)
    else:
        bias16 = lo.astype(np.float16)
        bias = bias16.astype(np.float32)
        rng = hi - bias
        scale = np.where(rng == 0, np.float32(1.0), rng / np.float32(15.0)).astype(np.float16).astype(np.float32)
        with np.errstate(divide="ignore", over="ignore"):
            scale = np.where(scale == 0, np.float32(1.0), scale)
            inv = np.float32(1.0) / scale
        bad = np.isinf(inv)
        scale, inv = np.where(bad, np.float32(1.0), scale), np.where(bad, np.float32(1.0), inv)
        q = np.clip(np.rint((v - bias) * inv), 0, 15).astype(np.uint8)
        if f.dim % 2:
            q = np.concatenate([q, np.zeros((q.shape[0], 1), np.uint8)], axis=1)
        out[:, :f.data_bytes] = q[:, 0::2] | (q[:, 1::2] << 4)
        sb = np.concatenate([scale.astype(np.float16), bias16], axis=1)
    out[:, f.data_bytes:] = np.ascontiguousarray(sb).view(np.uint8).reshape(v.shape[0], -1)
    return out


def scale_bias(rows: np.ndarray, fmt: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (scale, bias) widened to float32 (int8 and int4 only)."""
    f = _check_rows(rows, fmt, dim)
    sb = np.ascontiguousarray(rows[:, f.data_bytes:])
    wide = sb.view(np.float32) if f.name == "int8" else sb.view(np.float16).astype(np.float32)
    return wide[:, 0].copy(), wide[:, 1].copy()


def codes(rows: np.ndarray, fmt: str, dim: int) -> np.ndarray:
    """The integer codes (n, dim) of int8 or int4 rows, as uint8."""
    f = _check_rows(rows, fmt, dim)
    data = rows[:, :f.data_bytes]
    if f.name == "int8":
        return np.ascontiguousarray(data)
    both = np.empty((rows.shape[0], 2 * f.data_bytes), np.uint8)
    both[:, 0::2] = data & 15
    both[:, 1::2] = data >> 4
    return both[:, :dim]


def _check_rows(rows: np.ndarray, fmt: str, dim: int) -> RowFormat:
    f = RowFormat(fmt, dim)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2 \
            or rows.shape[1] != f.row_bytes:
        raise ValueError(f"{fmt} rows of dim {dim} must be a (n, {f.row_bytes}) uint8 array, "
                         f"got {getattr(rows, 'dtype', type(rows).__name__)} {getattr(rows, 'shape', '')}")
    return f


def dequantize_rows(rows: np.ndarray, fmt: str, dim: int) -> np.ndarray:
    """``fmt`` rows (n, row_bytes) back to float32 (n, dim): ``float32(q) * scale + bias`` (see above)."""
    f = _check_rows(rows, fmt, dim)
    data = np.ascontiguousarray(rows[:, :f.data_bytes])
    if f.name == "fp32":
        return data.view(np.float32).copy()
    if f.name == "fp16":
        return data.view(np.float16).astype(np.float32)
    scale, bias = scale_bias(rows, fmt, dim)
    return codes(rows, fmt, dim).astype(np.float32) * scale[:, None] + bias[:, None]


def reconstruction_error(raw: np.ndarray, stored: np.ndarray, fmt: str) -> dict[str, float | int]:
    """Errors of ``stored`` (``fmt`` rows) against the ``raw`` float rows they were made from:
    ``rel_fro_error`` = ||dequantized - raw||_F / ||raw||_F and ``max_abs_error`` (as TT's)."""
    raw = np.asarray(raw, dtype=np.float64)
    diff = dequantize_rows(stored, fmt, raw.shape[1]).astype(np.float64) - raw
    norm = float(np.linalg.norm(raw))
    err = float(np.linalg.norm(diff))
    return {"rel_fro_error": err / norm if norm > 0 else err, "max_abs_error": float(np.abs(diff).max(initial=0.0)),
            "sample_rows": int(raw.shape[0])}


def format_bytes_per_row(fmt: str, dim: int) -> int:
    """Bytes one row takes in ``fmt`` (for the planner's DRAM and page arithmetic)."""
    return RowFormat(fmt, dim).row_bytes


def pages_for(rows: int, fmt: str, dim: int) -> int:
    """4 KiB pages a table of ``rows`` rows takes in ``fmt``."""
    return FormatLayout(int(rows), int(dim), fmt).pages


def compression_ratio(fmt: str, dim: int) -> float:
    """fp32 row bytes / ``fmt`` row bytes (per row, before page padding)."""
    return 4 * dim / RowFormat(fmt, dim).row_bytes


__all__ = ["ROW_FORMATS", "STORED_FORMATS", "FormatLayout", "RowFormat", "codes", "compression_ratio",
           "dequantize_rows", "format_bytes_per_row", "pages_for", "quantize_rows", "reconstruction_error",
           "row_format", "scale_bias"]

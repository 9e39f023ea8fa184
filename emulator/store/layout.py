"""Where a raw row lives in its table file: pages of 4 KiB, rows never straddling a page.

``rows_per_page = max(1, page_bytes // row_bytes)`` rows share a page;
a row wider than a page takes ``pages_per_row`` whole pages. Row ``r`` starts at
``(r // rows_per_page) * pages_per_row * page_bytes + (r % rows_per_page) * row_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracegen.spec import DTYPE_BYTES, NUMPY_DTYPE

PAGE_BYTES = 4096


@dataclass(frozen=True)
class RowLayout:
    rows: int
    dim: int
    dtype: str  # "fp32" | "fp16"
    page_bytes: int = PAGE_BYTES

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(NUMPY_DTYPE[self.dtype])

    @property
    def row_bytes(self) -> int:
        return self.dim * DTYPE_BYTES[self.dtype]

    @property
    def rows_per_page(self) -> int:
        return max(1, self.page_bytes // self.row_bytes)

    @property
    def pages_per_row(self) -> int:
        return -(-self.row_bytes // self.page_bytes)

    @property
    def span_bytes(self) -> int:
        """Bytes of one page group (one page, or several for a wide row)."""
        return self.pages_per_row * self.page_bytes

    @property
    def groups(self) -> int:
        """Number of page groups (= pages when rows fit in a page)."""
        return -(-self.rows // self.rows_per_page)

    @property
    def pages(self) -> int:
        return self.groups * self.pages_per_row

    @property
    def file_bytes(self) -> int:
        return self.groups * self.span_bytes

    @property
    def dense(self) -> bool:
        """True when rows pack pages with no padding (row_bytes divides the page)."""
        return self.rows_per_page * self.row_bytes == self.span_bytes

    def row_offsets(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        rpp = self.rows_per_page
        return (rows // rpp) * self.span_bytes + (rows % rpp) * self.row_bytes

    def row_pages(self, rows: np.ndarray) -> np.ndarray:
        """First page of each row."""
        return (np.asarray(rows, dtype=np.int64) // self.rows_per_page) * self.pages_per_row

    def pack(self, values: np.ndarray) -> np.ndarray:
        """Lay ``values`` (n, dim), n a multiple of rows_per_page or the table's tail, out as file bytes."""
        values = np.ascontiguousarray(values, dtype=self.np_dtype)
        n = values.shape[0]
        if self.dense:
            raw = values.view(np.uint8).reshape(-1)
            pad = (-raw.size) % self.span_bytes
            return raw if pad == 0 else np.concatenate([raw, np.zeros(pad, np.uint8)])
        groups = -(-n // self.rows_per_page)
        buf = np.zeros((groups, self.span_bytes), dtype=np.uint8)
        used = self.rows_per_page * self.row_bytes
        body = buf[:, :used].reshape(groups, self.rows_per_page, self.row_bytes)  # a view
        src = values.view(np.uint8).reshape(n, self.row_bytes)
        full = n // self.rows_per_page
        body[:full] = src[: full * self.rows_per_page].reshape(full, self.rows_per_page, self.row_bytes)
        tail = n - full * self.rows_per_page
        if tail:
            body[full, :tail] = src[full * self.rows_per_page :]
        return buf.reshape(-1)

    def rows_view(self, file_bytes: np.ndarray) -> np.ndarray:
        """A (groups, rows_per_page, dim) view of a whole file's (or chunk's) bytes; no copy."""
        groups = file_bytes.size // self.span_bytes
        used = self.rows_per_page * self.row_bytes
        g = file_bytes[: groups * self.span_bytes].reshape(groups, self.span_bytes)[:, :used]
        return g.reshape(groups, self.rows_per_page, self.row_bytes).view(self.np_dtype)

"""Page-read planning: which pages to read, coalesced into as few reads as allowed, and where they land.

Destination buffers are packed: the pages a plan reads occupy consecutive
page slots of ``dest`` in file order, so two pages that are neighbours in the
file are neighbours in ``dest`` too (a row spanning several pages stays
contiguous). A run of neighbouring pages becomes one read of up to
``max_read_bytes``; with ``max_gap_pages > 0`` a hole of that many unneeded
pages is read through as well (trading bandwidth for fewer reads), and the
hole's pages take slots in ``dest``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.io.types import PAGE_BYTES
from emulator.kernels.jit import njit


@njit
def _plan_page_reads(pages, page_bytes, max_pages_per_read, max_gap_pages, read_offsets, read_nbytes,
                     dest_offsets, page_slot):
    n_reads = 0
    read_start_page = 0
    read_start_slot = 0
    last = 0
    for i in range(pages.shape[0]):
        p = pages[i]
        if n_reads > 0 and p - last - 1 <= max_gap_pages and p - read_start_page + 1 <= max_pages_per_read:
            read_nbytes[n_reads - 1] = (p - read_start_page + 1) * page_bytes
        else:
            if n_reads > 0:
                read_start_slot += last - read_start_page + 1
            read_start_page = p
            read_offsets[n_reads] = p * page_bytes
            read_nbytes[n_reads] = page_bytes
            dest_offsets[n_reads] = read_start_slot * page_bytes
            n_reads += 1
        page_slot[i] = read_start_slot + (p - read_start_page)
        last = p
    return n_reads


def plan_page_reads(page_ids_sorted_unique: np.ndarray, page_bytes: int = PAGE_BYTES, max_read_bytes: int = 131072,
                    max_gap_pages: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coalesce sorted unique page ids into reads.

    Returns ``(read_offsets, read_nbytes, dest_offsets, page_slot)``: byte
    offsets in the file, byte lengths and byte offsets in ``dest`` of each
    read, and for each input page the page slot of ``dest`` it lands in (its
    bytes are ``dest[page_slot[i] * page_bytes:][:page_bytes]``). The buffer
    needs ``read_nbytes.sum()`` bytes.
    """
    pages = np.ascontiguousarray(page_ids_sorted_unique, dtype=np.int64).reshape(-1)
    page_bytes, max_read_bytes, max_gap_pages = int(page_bytes), int(max_read_bytes), int(max_gap_pages)
    if page_bytes <= 0:
        raise ValueError(f"page_bytes must be positive, got {page_bytes}")
    if max_read_bytes < page_bytes or max_read_bytes % page_bytes:
        raise ValueError(f"max_read_bytes ({max_read_bytes}) must be a positive multiple of page_bytes ({page_bytes})")
    if max_gap_pages < 0:
        raise ValueError(f"max_gap_pages must be >= 0, got {max_gap_pages}")
    if pages.shape[0] and (pages[0] < 0 or (np.diff(pages) <= 0).any()):
        raise ValueError("page ids must be non-negative, sorted and unique")
    n = pages.shape[0]
    read_offsets = np.empty(n, dtype=np.int64)
    read_nbytes = np.empty(n, dtype=np.int64)
    dest_offsets = np.empty(n, dtype=np.int64)
    page_slot = np.empty(n, dtype=np.int64)
    k = _plan_page_reads(pages, page_bytes, max_read_bytes // page_bytes, max_gap_pages, read_offsets, read_nbytes,
                         dest_offsets, page_slot)
    return read_offsets[:k], read_nbytes[:k], dest_offsets[:k], page_slot


@dataclass(frozen=True)
class RowReadPlan:
    """Reads that fetch a set of rows of one raw table file, and where each row lands in ``dest``."""

    pages: np.ndarray  # int64, sorted unique page ids read (holes excluded)
    read_offsets: np.ndarray  # int64, bytes into the file
    read_nbytes: np.ndarray  # int64
    dest_offsets: np.ndarray  # int64, bytes into dest
    page_slot: np.ndarray  # int64, per entry of ``pages``
    row_dest_offsets: np.ndarray  # int64, per input row: its first byte in dest
    dest_bytes: int  # size dest needs

    @property
    def num_reads(self) -> int:
        return int(self.read_offsets.shape[0])


def plan_row_reads(rows: np.ndarray, rows_per_page: int, pages_per_row: int, row_bytes: int,
                   page_bytes: int = PAGE_BYTES, max_read_bytes: int = 131072, max_gap_pages: int = 0) -> RowReadPlan:
    """Plan the page reads for ``rows`` (any order, repeats allowed) of a table stored in the store layout.

    Row ``r`` starts at byte ``(r // rows_per_page) * pages_per_row * page_bytes
    + (r % rows_per_page) * row_bytes`` of the file (a row never straddles a
    page boundary unless it is longer than a page, then it starts a page).
    After ``read_many``, row ``rows[j]`` is ``dest[row_dest_offsets[j]:][:row_bytes]``.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    rows_per_page, pages_per_row, row_bytes = int(rows_per_page), int(pages_per_row), int(row_bytes)
    if rows_per_page < 1 or pages_per_row < 1 or row_bytes < 1:
        raise ValueError("rows_per_page, pages_per_row and row_bytes must be >= 1")
    if rows_per_page * row_bytes > pages_per_row * page_bytes or (pages_per_row > 1 and rows_per_page != 1):
        raise ValueError(f"layout rows_per_page={rows_per_page}, pages_per_row={pages_per_row}, "
                         f"row_bytes={row_bytes} does not fit {page_bytes}-byte pages")
    if rows.shape[0] and rows.min() < 0:
        raise ValueError("row ids must be non-negative")
    first_page = (rows // rows_per_page) * pages_per_row
    if pages_per_row == 1:
        pages = np.unique(first_page)
    else:
        pages = np.unique((first_page[:, None] + np.arange(pages_per_row, dtype=np.int64)).reshape(-1))
    read_offsets, read_nbytes, dest_offsets, page_slot = plan_page_reads(pages, page_bytes, max_read_bytes,
                                                                         max_gap_pages)
    row_slot = page_slot[np.searchsorted(pages, first_page)]
    row_dest = row_slot * page_bytes + (rows % rows_per_page) * row_bytes
    return RowReadPlan(pages=pages, read_offsets=read_offsets, read_nbytes=read_nbytes, dest_offsets=dest_offsets,
                       page_slot=page_slot, row_dest_offsets=row_dest, dest_bytes=int(read_nbytes.sum()))

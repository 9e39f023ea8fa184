"""Slow, obviously right reference implementations that the tests compare kernels against.

Each engineer appends the references for their kernels below (stumpy's tests/naive.py).
"""

from __future__ import annotations

import numpy as np


# --- IO engineer: page-read planning (emulator/io/pages.py) -------------------------------------


def plan_page_reads_naive(pages, page_bytes=4096, max_read_bytes=131072, max_gap_pages=0):
    """Reference for ``emulator.io.pages.plan_page_reads``: greedy runs, one Python step per page."""
    runs = []  # [first_page, last_page] of each read
    for p in (int(x) for x in pages):
        if runs and p - runs[-1][1] - 1 <= max_gap_pages and (p - runs[-1][0] + 1) * page_bytes <= max_read_bytes:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    read_offsets, read_nbytes, dest_offsets, first_slot = [], [], [], []
    slot = 0
    for first, last in runs:
        read_offsets.append(first * page_bytes)
        read_nbytes.append((last - first + 1) * page_bytes)
        dest_offsets.append(slot * page_bytes)
        first_slot.append(slot)
        slot += last - first + 1
    page_slot = []
    for p in (int(x) for x in pages):
        k = next(k for k, (first, last) in enumerate(runs) if first <= p <= last)
        page_slot.append(first_slot[k] + p - runs[k][0])
    as64 = lambda xs: np.array(xs, dtype=np.int64)  # noqa: E731
    return as64(read_offsets), as64(read_nbytes), as64(dest_offsets), as64(page_slot)


# --- IO engineer: what read_many must produce (emulator/io/_uring_kernels.py and the other engines) ---


def read_many_naive(paths, file_ids, offsets, nbytes, dest_size, dest_offsets, fill=0):
    """Reference for ``IOEngine.read_many``: buffered reads, one at a time.

    Returns ``(dest, nread)``: bytes past end of file are zero; untouched bytes of dest are ``fill``.
    """
    dest = np.full(int(dest_size), fill, dtype=np.uint8)
    nread = np.zeros(len(file_ids), dtype=np.int64)
    for i, (f, o, n, d) in enumerate(zip(file_ids, offsets, nbytes, dest_offsets)):
        with open(paths[int(f)], "rb") as fh:
            fh.seek(int(o))
            data = fh.read(int(n))
        dest[int(d) : int(d) + int(n)] = 0
        dest[int(d) : int(d) + len(data)] = np.frombuffer(data, dtype=np.uint8)
        nread[i] = len(data)
    return dest, nread


# --- emulator/kernels.py (pooling kernels) -------------------------------------------------------


def pool_rows_ref(table, indices, offsets, out=None, accumulate=False):
    """out[b] (+)= table[indices[offsets[b]:offsets[b+1]]] summed in lookup order in float32."""
    n_bags, dim = len(offsets) - 1, table.shape[1]
    result = np.zeros((n_bags, dim), np.float32) if out is None else np.array(out, np.float32)
    for b in range(n_bags):
        acc = result[b].copy() if accumulate else np.zeros(dim, np.float32)
        for k in range(offsets[b], offsets[b + 1]):
            acc += table[indices[k]].astype(np.float32)
        result[b] = acc
    return result


def source_row_ref(kind, loc, dram, pages, staged, dtype_code, dim):
    """The row one lookup names: 0 dram[loc], 1 the dim values at byte ``loc`` of ``pages``
    (dtype_code 0 fp32, 1 fp16), 2 staged[loc]; as float32."""
    if kind == 0:
        return dram[loc].astype(np.float32)
    if kind == 1:
        dtype = np.dtype("<f4") if dtype_code == 0 else np.dtype("<f2")
        return np.frombuffer(pages.tobytes(), dtype=dtype, count=dim, offset=int(loc)).astype(np.float32)
    return staged[loc].astype(np.float32)


def pool_sources_ref(offsets, kinds, locs, dram, pages, staged, dtype_code, dim, out=None, accumulate=False):
    """Mixed-tier pooling: the sequential float32 sum of each bag's rows, whatever tier holds them."""
    n_bags = len(offsets) - 1
    result = np.zeros((n_bags, dim), np.float32) if out is None else np.array(out, np.float32)
    for b in range(n_bags):
        acc = result[b].copy() if accumulate else np.zeros(dim, np.float32)
        for k in range(offsets[b], offsets[b + 1]):
            acc += source_row_ref(kinds[k], locs[k], dram, pages, staged, dtype_code, dim)
        result[b] = acc
    return result


def extract_rows_ref(kinds, locs, dram, pages, staged, dtype_code, dim):
    """The rows the lookups name, one per lookup, without pooling."""
    rows = [source_row_ref(k, l, dram, pages, staged, dtype_code, dim) for k, l in zip(kinds, locs)]
    return np.array(rows, np.float32).reshape(len(rows), dim)

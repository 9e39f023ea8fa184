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


# --- TT engineer: row rebuild from TT cores (emulator/tt.py, emulator/tt_kernels.py) ----------------


def tt_rebuild_rows_naive(cores, p_shapes, q_shapes, rows):
    """Reference for ``tt_rebuild_rows``: one row and one column at a time, a chain of small matrix products.

    Core k has shape (p_k, r_k, q_k, r_{k+1}); row r -> (i_1..i_d) and column j -> (j_1..j_d) in mixed
    radix, most significant first; W[r, j] = core_1[i_1][:, j_1, :] @ ... @ core_d[i_d][:, j_d, :] (a 1x1 matrix).
    """
    dim = int(np.prod(q_shapes))
    out = np.zeros((len(rows), dim), dtype=np.float64)
    for n, row in enumerate(int(x) for x in rows):
        i_digits = []
        for p in reversed(p_shapes):
            i_digits.append(row % p)
            row //= p
        i_digits.reverse()
        for col in range(dim):
            j_digits, c = [], col
            for q in reversed(q_shapes):
                j_digits.append(c % q)
                c //= q
            j_digits.reverse()
            acc = np.ones((1, 1))
            for core, i, j in zip(cores, i_digits, j_digits):
                acc = acc @ np.asarray(core, dtype=np.float64)[i, :, j, :]
            out[n, col] = acc[0, 0]
    return out.astype(np.float32)


# --- tracegen engineer: Zipf ranks, hash permutation, locality (tracegen/generate.py, locality.py) ---

_MASK64 = (1 << 64) - 1


def splitmix64_uniforms_naive(seed, n):
    """The first ``n`` doubles of the SplitMix64 stream started at ``seed`` (Python integers)."""
    state, out = int(seed), []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        out.append((z >> 11) * 2.0**-53)
    return out


def zipf_ranks_naive(seed, cells, alpha, size):
    """Reference for ``tracegen.generate.zipf_ranks``: one rank at a time, cells found by ``np.searchsorted``.

    Returns ``(ranks, uniforms used)``.
    """
    cdf, lo, n, squeeze = cells["cdf"], cells["lo"], cells["n"], cells["squeeze"]
    stream = iter(splitmix64_uniforms_naive(seed, 4 * size + 64))
    ranks, used = [], 0
    while len(ranks) < size:
        x = next(stream)
        used += 1
        c = int(np.searchsorted(cdf, x, side="right"))  # first cell with cdf > x
        k = int(lo[c])
        if n[c] > 1:
            below = cdf[c - 1] if c > 0 else 0.0
            k += min(max(int((x - below) / (cdf[c] - below) * int(n[c])), 0), int(n[c]) - 1)
            y = next(stream)
            used += 1
            if y >= squeeze[c] and y > ((lo[c] + 1.0) / (k + 1.0)) ** alpha:  # accept iff y <= w(k+1) / w(lo+1)
                continue
        ranks.append(k)
    return np.array(ranks, dtype=np.int64), used


def hash_permute_naive(x, rows, keys):
    """Reference for ``tracegen.generate.hash_permute``: the modular Feistel network on Python integers."""
    import math

    a = math.isqrt(rows - 1) + 1 if rows > 1 else 1
    b = -(-rows // a)

    def round_hash(v, key):
        h = ((v ^ int(key)) * 0x9E3779B97F4A7C15) & _MASK64
        h ^= h >> 32
        return h & 0xFFFFFFFF

    out = []
    for y in (int(v) for v in x):
        while True:
            left, right = divmod(y, b)
            for r, key in enumerate(keys):
                if r % 2 == 0:
                    left = (left + ((round_hash(right, key) * a) >> 32)) % a
                else:
                    right = (right + ((round_hash(left, key) * b) >> 32)) % b
            y = left * b + right
            if y < rows:
                break
        out.append(y)
    return np.array(out, dtype=np.int64)


def locality_hist_naive(tables):
    """Reference for ``tracegen.locality.batch_locality``: ``tables`` is a list of index lists (one per table).

    Returns ``(indices, unique, col_size_hist, index_hist)`` over the 17 bins (0,1], (1,2], (2,4], ..., (32768+.
    """
    from collections import Counter

    col, idx = [0] * 17, [0] * 17
    indices = unique = 0
    for rows in tables:
        for _, c in Counter(int(r) for r in rows).items():
            b = 0
            while b < 16 and c > 2**b:  # bin b holds (2**(b-1), 2**b]; bin 16 everything above 32768
                b += 1
            col[b] += 1
            idx[b] += c
            unique += 1
            indices += c
    return indices, unique, col, idx

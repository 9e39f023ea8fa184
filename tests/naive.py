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


# --- planner engineer: access statistics (plans/stats.py) ----------------------------------------


def batch_cold_counts_naive(new_ids, k, rows_per_page, pages_per_row=1):
    """Reference for one batch of ``plans.stats.measure_stats`` at hot size ``k``: (lookups with
    new id < k, distinct rows with id >= k, distinct 4 KiB pages holding those rows). One Python step per id."""
    hits, cold_rows, cold_pages = 0, set(), set()
    for r in (int(x) for x in new_ids):
        if r < k:
            hits += 1
        else:
            cold_rows.add(r)
            cold_pages.add(r // rows_per_page)
    return hits, len(cold_rows), len(cold_pages) * pages_per_row


def access_counts_naive(batches, table, rows):
    """Reference for ``plans.stats.count_accesses``: a dict-free loop over every lookup of ``table``."""
    counts = [0] * rows
    for b in batches:
        ids, _ = b.table(table)
        for r in ids:
            counts[int(r)] += 1
    return np.array(counts, dtype=np.int64)


# --- LRU row cache (emulator/cache.py) ------------------------------------------------------------


def cache_set_naive(key, seed, n_sets):
    """Reference for the cache's key -> set hash: the SplitMix64 finaliser of key + (seed + 1) * golden,
    its high 32 bits scaled to [0, n_sets) (multiply-shift)."""
    z = (int(key) + ((int(seed) + 1) * 0x9E3779B97F4A7C15)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return ((z >> 32) * n_sets) >> 32


class RowCacheNaive:
    """Reference for ``emulator.replay.cache.RowCache``: Python lists, one key at a time, the same rules
    (victim = unpinned way with the smallest stamp, empty stamp -1; each probe / admit takes a tick)."""

    def __init__(self, capacity_rows, dim, ways=16, seed=0, prefix_rows=0):
        self.ways = min(ways, capacity_rows)
        self.n_sets = capacity_rows // self.ways
        cap = self.n_sets * self.ways
        self.seed, self.base, self.dim = seed, prefix_rows, dim
        self.keys, self.stamps, self.pins = [-1] * cap, [-1] * cap, [0] * cap
        self.rows = [None] * cap  # the row bytes each slot holds
        self.tick = 0
        self.hits = self.misses = self.inserted = self.evictions = self.conflicts = 0

    def _set(self, k):
        s = cache_set_naive(k, self.seed, self.n_sets)
        return range(s * self.ways, (s + 1) * self.ways)

    def lookup(self, keys, pin=False):
        out = []
        for k in (int(x) for x in keys):
            hit = [j for j in self._set(k) if self.keys[j] == k]
            if hit:
                j = hit[0]
                self.stamps[j] = self.tick
                self.pins[j] += int(pin)
                out.append(self.base + j)
                self.hits += 1
            else:
                out.append(-1)
                self.misses += 1
            self.tick += 1
        return np.array(out, dtype=np.int64)

    def admit(self, keys, src_pages, byte_offsets, row_bytes):
        out = []
        for k, o in zip((int(x) for x in keys), (int(x) for x in byte_offsets)):
            ways = list(self._set(k))
            hit = [j for j in ways if self.keys[j] == k]
            if hit:
                self.stamps[hit[0]] = self.tick
                out.append(self.base + hit[0])
            else:
                free = [j for j in ways if self.pins[j] == 0]
                if not free:
                    out.append(-1)
                    self.conflicts += 1
                else:
                    j = min(free, key=lambda j: (self.stamps[j], j))
                    self.evictions += self.keys[j] >= 0
                    self.keys[j], self.stamps[j] = k, self.tick
                    self.rows[j] = bytes(src_pages[o : o + row_bytes])
                    self.inserted += 1
                    out.append(self.base + j)
            self.tick += 1
        return np.array([s if s >= 0 and self.keys[s - self.base] == int(k) else -1
                         for s, k in zip(out, keys)], dtype=np.int64)

    def unpin(self, slots):
        for s in (int(x) for x in slots):
            if s >= 0:
                self.pins[s - self.base] -= 1


def lru_hits_ordereddict_naive(batches, capacity):
    """A textbook fully associative LRU (``collections.OrderedDict``) fed as the engine feeds the cache:
    look the whole batch up (hits move to the end), then insert the batch's distinct misses in sorted
    order, evicting the least recently used. Returns the hit count."""
    from collections import OrderedDict

    lru, hits = OrderedDict(), 0
    for batch in batches:
        missed = set()
        for k in (int(x) for x in batch):
            if k in lru:
                lru.move_to_end(k)
                hits += 1
            else:
                missed.add(k)
        for k in sorted(missed):
            lru[k] = True
            lru.move_to_end(k)
            if len(lru) > capacity:
                lru.popitem(last=False)
    return hits


# --- dense model and accuracy report (emulator/dense.py, emulator/accuracy.py) -------------------


def interact_features_naive(bottom_out, embeddings):
    """DLRM's dot interaction, one sample and one pair at a time: [x_0, then x_i . x_j for i > j, row by row]."""
    vecs = [np.asarray(bottom_out, np.float64)] + [np.asarray(e, np.float64) for e in embeddings]
    n, batch = len(vecs), vecs[0].shape[0]
    out = []
    for b in range(batch):
        row = list(vecs[0][b])
        for i in range(n):
            for j in range(i):
                row.append(sum(float(u) * float(v) for u, v in zip(vecs[i][b], vecs[j][b])))
        out.append(row)
    return np.array(out, dtype=np.float64)


def auc_naive(scores, labels):
    """AUC by counting every (positive, negative) pair: 1 when the positive scores higher, 1/2 on a tie."""
    pos = [float(s) for s, y in zip(scores, labels) if y]
    neg = [float(s) for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def batch_cold_reads_naive(old_ids, new_ids, k, rows_per_page, pages_per_row=1, max_read_pages=32):
    """Reference for the pages and reads of ``plans.stats.cold_pages_and_reads`` at hot size ``k``: the pages
    (store order) of every row whose new id is >= k, then one read per run of neighbouring pages, a new read
    after ``max_read_pages`` pages. One Python step per id and per page."""
    pages = set()
    for old, new in zip((int(x) for x in old_ids), (int(x) for x in new_ids)):
        if new >= k:
            first = (old // rows_per_page) * pages_per_row
            pages.update(range(first, first + pages_per_row))
    reads, run, last = 0, 0, None
    for p in sorted(pages):
        if last is not None and p == last + 1 and run < max_read_pages:
            run += 1
        else:
            reads += 1
            run = 1
        last = p
    return len(pages), reads


# --- trace reader: HDF5's fletcher32 and the batch checks (tracegen/trace_fast.py, tracegen/trace_io.py) ---


def fletcher32_naive(data: bytes) -> int:
    """HDF5's ``H5_checksum_fletcher32`` transcribed: big-endian 16-bit words, both sums folded to 16 bits
    every 360 words, a last odd byte counting as ``byte << 8``, and a final fold."""
    n, p, s1, s2 = len(data) // 2, 0, 0, 0
    while n:
        run = min(n, 360)
        n -= run
        for _ in range(run):
            s1 = (s1 + ((data[p] << 8) | data[p + 1])) & 0xFFFFFFFF
            s2 = (s2 + s1) & 0xFFFFFFFF
            p += 2
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    if len(data) % 2:
        s1 += data[p] << 8
        s2 += s1
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    return (s2 << 16) | s1


def check_batch_naive(offsets, indices, rows, batch_size, index):
    """The problem ``check_csr`` then ``check_rows`` report for a batch (``None`` when it is fine), one
    Python step per offset and per index."""
    off, idx = [int(x) for x in offsets], [int(x) for x in indices]
    if not off or off[0] != 0:
        return f"batch {index}: offsets do not start at 0"
    if any(b < a for a, b in zip(off, off[1:])):
        return f"batch {index}: offsets are not monotonic (negative bag length)"
    if off[-1] != len(idx):
        return f"batch {index}: last offset {off[-1]} != number of indices {len(idx)}"
    for t, r in enumerate(int(x) for x in rows):
        vals = idx[off[t * batch_size] : off[(t + 1) * batch_size]]
        if vals and (min(vals) < 0 or max(vals) >= r):
            bad = min(vals) if min(vals) < 0 else max(vals)
            return f"batch {index}: index {bad} out of range for table {t} with {r} rows"
    return None


# --- row formats (emulator/store/quant.py, emulator/kernels/quant.py) -----------------------------


def quantize_row_naive(x, fmt):
    """One float32 row as FBGEMM's fused row bytes, element by element (FloatToFused8BitRowwiseQuantizedSBFloat
    and FloatToFusedNBitRowwiseQuantizedSBHalf's reference loops, in float32)."""
    x = [np.float32(v) for v in x]
    dim = len(x)
    if fmt == "fp16":
        return np.array(x, dtype=np.float16).view(np.uint8)
    lo, hi = min(x), max(x)
    if fmt == "int8":
        rng = np.float32(hi - lo)
        inv = np.float32(255.0) / np.float32(rng + np.float32(1e-8))
        data = [int(np.rint(np.float32((v - lo) * inv))) for v in x]
        tail = np.array([np.float32(rng / np.float32(255.0)), lo], dtype=np.float32).view(np.uint8)
        return np.concatenate([np.array(data, dtype=np.uint8), tail])
    bias16 = np.float16(lo)
    bias = np.float32(bias16)
    rng = np.float32(hi - bias)
    scale = np.float32(np.float16(np.float32(1.0) if rng == 0 else np.float32(rng / np.float32(15.0))))
    if scale == 0:
        scale = np.float32(1.0)
    with np.errstate(divide="ignore"):
        inv = np.float32(np.float32(1.0) / scale)
    if np.isinf(inv):
        scale, inv = np.float32(1.0), np.float32(1.0)
    data = np.zeros((dim + 1) // 2, dtype=np.uint8)
    for c, v in enumerate(x):
        q = min(max(int(np.rint(np.float32((v - bias) * inv))), 0), 15)
        data[c // 2] |= q << (4 * (c % 2))
    return np.concatenate([data, np.array([np.float16(scale), bias16], dtype=np.float16).view(np.uint8)])


def dequantize_row_naive(row, fmt, dim):
    """One row of fused bytes back to float32: float32(q) * scale, then + bias, each rounded to float32."""
    row = np.asarray(row, dtype=np.uint8)
    if fmt == "fp32":
        return row.view(np.float32).copy()
    if fmt == "fp16":
        return row.view(np.float16).astype(np.float32)
    nbytes = dim if fmt == "int8" else (dim + 1) // 2
    if fmt == "int8":
        scale, bias = row[nbytes:nbytes + 4].view(np.float32)[0], row[nbytes + 4:nbytes + 8].view(np.float32)[0]
        q = [int(row[c]) for c in range(dim)]
    else:
        scale = np.float32(row[nbytes:nbytes + 2].view(np.float16)[0])
        bias = np.float32(row[nbytes + 2:nbytes + 4].view(np.float16)[0])
        q = [(int(row[c // 2]) >> (4 * (c % 2))) & 15 for c in range(dim)]
    return np.array([np.float32(np.float32(v) * scale) + bias for v in q], dtype=np.float32)


def pool_quantized_ref(rows, fmt, dim, indices, offsets, out=None, accumulate=False):
    """Reference for ``emulator.kernels.quant.pool_quantized``: dequantize each looked-up row, add in order."""
    n_bags = len(offsets) - 1
    res = np.zeros((n_bags, dim), np.float32) if out is None or not accumulate else out.copy()
    for b in range(n_bags):
        acc = np.zeros(dim, np.float32) if not accumulate else res[b].copy()
        for k in range(int(offsets[b]), int(offsets[b + 1])):
            acc += dequantize_row_naive(rows[int(indices[k])], fmt, dim)
        res[b] = acc
    return res


# --- trace engineer: LRU miss-ratio curves (tracegen/mrc.py) --------------------------------------


def lru_miss_ratio_naive(keys, capacity):
    """A textbook LRU cache of ``capacity`` entries (``collections.OrderedDict``) fed one lookup at a time;
    returns misses / lookups (a reference for ``tracegen.mrc``)."""
    from collections import OrderedDict

    lru, misses = OrderedDict(), 0
    for k in (int(x) for x in keys):
        if k in lru:
            lru.move_to_end(k)
        else:
            misses += 1
            lru[k] = True
            if len(lru) > capacity:
                lru.popitem(last=False)
    return misses / max(len(keys), 1)


def pool_sources_quantized_ref(offsets, kinds, locs, dram, pages, fmt, dim):
    """Reference for ``emulator.kernels.quant.pool_sources_quantized``: each lookup's fused row bytes from
    the DRAM rows (kind 0: row loc) or the pages (kind 1: bytes at loc), dequantized and added in order."""
    row_bytes = dram.shape[1]
    out = np.zeros((len(offsets) - 1, dim), np.float32)
    for b in range(len(offsets) - 1):
        acc = np.zeros(dim, np.float32)
        for k in range(int(offsets[b]), int(offsets[b + 1])):
            loc = int(locs[k])
            row = dram[loc] if int(kinds[k]) == 0 else pages[loc:loc + row_bytes]
            acc += dequantize_row_naive(row, fmt, dim)
        out[b] = acc
    return out


def pool_split_ref(rows, offsets, host):
    """The engine's grouping with device workers, bag by bag in plain Python order: the ``host`` lookups' rows
    summed in lookup order (float32, from +0.0), the other lookups' rows likewise, the two partials added."""
    rows = np.asarray(rows, dtype=np.float32)
    out = np.zeros((len(offsets) - 1, rows.shape[1]), np.float32)
    for b in range(len(offsets) - 1):
        h = np.zeros(rows.shape[1], np.float32)
        d = np.zeros(rows.shape[1], np.float32)
        for k in range(offsets[b], offsets[b + 1]):
            if host[k]:
                h = h + rows[k]
            else:
                d = d + rows[k]
        out[b] = h + d
    return out

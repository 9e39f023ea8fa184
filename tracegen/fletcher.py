"""HDF5's fletcher32 checksum of a chunk, bit for bit, as a Numba kernel: verified by the fast trace reader
(:mod:`tracegen.trace_fast`) and stored by the trace writer's direct chunk writes (:mod:`tracegen.chunk_writer`),
which both skip HDF5's own filter (it sums one 16-bit word at a time, at about 1 GB/s).
"""

from __future__ import annotations

import numpy as np

from tracegen.jit import njit

FLETCHER_LEN = 4  # bytes of the checksum stored after each chunk's data (little-endian uint32)
_BLOCK_PAIRS = 1 << 16  # per block of uint32 pairs: sums < 2^48, sum of k * pair < 2^64


@njit
def _fletcher32_words(u: np.ndarray) -> np.uint32:
    """HDF5's ``H5_checksum_fletcher32`` of the bytes behind ``u`` (uint16 words in memory order, the data
    4-byte aligned).

    HDF5 reads big-endian 16-bit words ``w`` and keeps ``sum1 = sum(w)`` and ``sum2 = sum((n - i) * w_i)``
    folded mod 65535 (its fold keeps the residue: 65536 == 1). A little-endian load ``x`` of the same bytes
    has ``w == 256 * x (mod 65535)``, and a little-endian uint32 load ``y_k`` of words ``2k, 2k+1`` has
    ``y_k == x_2k + x_2k+1``, so ``sum(x) == sum(y)`` and ``sum(i * x_i) == 2 * sum(k * y_k) + sum(y_k >> 16)``:
    sums over blocks of pairs, with no serial dependency, so the loop vectorises. HDF5 ends with a residue
    in 1..65535 unless the true sum is 0, i.e. unless every word is 0: 65535 stands for a nonzero multiple.
    """
    n = u.size
    m = np.uint64(65535)
    pairs = n // 2
    y = u[: 2 * pairs].view(np.uint32)
    s_tot = np.uint64(0)  # sum of x_i
    t_tot = np.uint64(0)  # sum of k * y_k
    h_tot = np.uint64(0)  # sum of y_k >> 16 (the odd words)
    nonzero = False
    base = 0
    while base < pairs:
        v = y[base : base + _BLOCK_PAIRS]
        s = np.uint64(0)
        t = np.uint64(0)
        h = np.uint64(0)
        for k in range(v.size):
            w = v[k]
            s += np.uint64(w)
            t += np.uint64(np.uint32(k)) * np.uint64(w)  # both < 2^32: one 32x32->64 multiply
            h += np.uint64(w >> np.uint32(16))
        if s != 0:
            nonzero = True
        s_tot = (s_tot + s % m) % m
        t_tot = (t_tot + (np.uint64(base) % m) * (s % m) + t % m) % m
        h_tot = (h_tot + h % m) % m
        base += _BLOCK_PAIRS
    t_tot = (np.uint64(2) * t_tot + h_tot) % m  # sum of i * x_i
    if n % 2:
        x = np.uint64(u[n - 1])
        if x != 0:
            nonzero = True
        s_tot = (s_tot + x) % m
        t_tot = (t_tot + (np.uint64(n - 1) % m) * x) % m
    s1 = (s_tot * np.uint64(256)) % m
    t1 = (t_tot * np.uint64(256)) % m
    s2 = ((np.uint64(n) % m) * s1 + m - t1) % m  # sum((n - i) * w_i) = n * sum(w) - sum(i * w_i)
    if nonzero:
        if s1 == 0:
            s1 = m
        if s2 == 0:
            s2 = m
    return np.uint32((s2 << np.uint64(16)) | s1)


def fletcher32(data: np.ndarray) -> int:
    """HDF5's fletcher32 checksum of the bytes of a C-contiguous array (what its filter stores per chunk)."""
    data = np.asarray(data)
    if not data.flags.c_contiguous:
        raise ValueError("fletcher32 needs a C-contiguous array")
    b = data.reshape(-1).view(np.uint8)
    if b.size % 2 or b.ctypes.data % 4:  # a last odd byte counts as the word (byte << 8): pad with a zero
        b = np.concatenate([b, np.zeros(b.size % 2, np.uint8)])
    return int(_fletcher32_words(b.view(np.uint16)))


def _fletcher_matches(stored: int, computed: int) -> bool:
    """HDF5 also accepts the checksum with the bytes of each 16-bit half swapped (written before 1.6.3)."""
    swapped = ((computed & 0x00FF00FF) << 8) | ((computed >> 8) & 0x00FF00FF)
    return stored == computed or stored == swapped

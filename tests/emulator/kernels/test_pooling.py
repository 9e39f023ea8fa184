"""emulator.kernels.pooling: pooling kernels equal the NumPy references in tests/naive.py bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kernels.pooling import (DTYPE_FP16, DTYPE_FP32, KIND_DRAM, KIND_PAGE, KIND_STAGED, dtype_code,
                              extract_rows, gather_rows, pool_rows, pool_sources)
from tests import naive


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Exactly equal: same shape, same float32 bits everywhere except that a NaN need only meet a NaN
    (IEEE leaves the payload of a NaN sum unspecified, and the kernels' contract excludes it)."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert np.array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


def random_csr(rng, n_bags: int, max_len: int, n_rows: int, lead: int = 0):
    """Bags of random length in [0, max_len] (empty bags included); ``lead`` unused lookups in front."""
    lengths = rng.integers(0, max_len + 1, n_bags)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64) + lead
    indices = rng.integers(0, n_rows, int(offsets[-1])).astype(np.int64)
    return indices, offsets


def table(rng, rows: int, dim: int, dtype) -> np.ndarray:
    return (rng.standard_normal((rows, dim)) * 3).astype(dtype)


# ---------------------------------------------------------------- pool_rows


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [1, 16, 17, 32, 48, 64, 100, 128, 130, 256])
def test_pool_rows_equals_reference(dtype, dim):
    rng = np.random.default_rng(dim)
    t = table(rng, 50, dim, dtype)
    indices, offsets = random_csr(rng, 40, 9, 50)
    out = np.full((40, dim), np.nan, np.float32)  # every row must be overwritten
    pool_rows(t, indices, offsets, out)
    assert_same_bits(out, naive.pool_rows_ref(t, indices, offsets))


def test_pool_rows_hand_example():
    # rows 0..2 = [1, 2], [10, 20], [100, 200]; bags {0, 2}, {}, {1}, {2, 2, 0}
    t = np.array([[1, 2], [10, 20], [100, 200]], np.float32)
    out = np.empty((4, 2), np.float32)
    pool_rows(t, np.array([0, 2, 1, 2, 2, 0], np.int64), np.array([0, 2, 2, 3, 6], np.int64), out)
    np.testing.assert_array_equal(out, [[101, 202], [0, 0], [10, 20], [201, 402]])


def test_pool_rows_sums_in_lookup_order():
    # float32: (1e8 + 1) + -1e8 = 0 (the 1 is lost), but (1e8 + -1e8) + 1 = 1; order must be kept
    t = np.array([[1e8], [1.0], [-1e8]], np.float32)
    out = np.empty((2, 1), np.float32)
    pool_rows(t, np.array([0, 1, 2, 0, 2, 1], np.int64), np.array([0, 3, 6], np.int64), out)
    np.testing.assert_array_equal(out[:, 0], [0.0, 1.0])


def test_pool_rows_empty_bags_bags_of_one_and_no_bags():
    rng = np.random.default_rng(1)
    t = table(rng, 10, 24, np.float32)
    out = np.full((3, 24), 7.0, np.float32)
    pool_rows(t, np.array([4], np.int64), np.array([0, 0, 1, 1], np.int64), out)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1], t[4])
    np.testing.assert_array_equal(out[2], 0.0)
    none = pool_rows(t, np.zeros(0, np.int64), np.zeros(1, np.int64), np.empty((0, 24), np.float32))
    assert none.shape == (0, 24)


def test_pool_rows_offsets_into_a_longer_indices_array():
    rng = np.random.default_rng(2)
    t = table(rng, 30, 20, np.float32)
    indices, offsets = random_csr(rng, 12, 5, 30, lead=7)
    indices[:7] = 10**9  # lookups before offsets[0] are never read (nor checked)
    out = np.empty((12, 20), np.float32)
    pool_rows(t, indices, offsets, out)
    assert_same_bits(out, naive.pool_rows_ref(t, indices, offsets))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [16, 70, 96])  # one whole vector; a block and a masked tail; a block and 2 vectors
def test_pool_rows_accumulate_continues_the_sum(dtype, dim):
    rng = np.random.default_rng(3)
    t = table(rng, 40, dim, dtype)
    first, second = random_csr(rng, 25, 6, 40), random_csr(rng, 25, 6, 40)
    out = np.empty((25, dim), np.float32)
    pool_rows(t, *first, out)
    pool_rows(t, *second, out, accumulate=True)
    # pooling each bag's lookups of both calls in one go gives the same bits
    both = [np.concatenate([first[0][first[1][b]:first[1][b + 1]], second[0][second[1][b]:second[1][b + 1]]])
            for b in range(25)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in both])]).astype(np.int64)
    assert_same_bits(out, naive.pool_rows_ref(t, np.concatenate(both), offsets))


@pytest.mark.parametrize("dim", [20, 32, 64])  # a masked tail; whole vectors; a whole block
def test_pool_rows_into_a_column_slice_of_a_wider_output(dim):
    # a DLRM-style (B, T*dim) output: table 1 pools into columns [dim, 2 dim) and leaves the rest alone
    rng = np.random.default_rng(4)
    t = table(rng, 30, dim, np.float32)
    indices, offsets = random_csr(rng, 8, 5, 30)
    wide = np.full((8, 3 * dim), -1.0, np.float32)
    pool_rows(t, indices, offsets, wide[:, dim:2 * dim])
    assert_same_bits(np.ascontiguousarray(wide[:, dim:2 * dim]), naive.pool_rows_ref(t, indices, offsets))
    np.testing.assert_array_equal(wide[:, :dim], -1.0)
    np.testing.assert_array_equal(wide[:, 2 * dim:], -1.0)


def test_pool_rows_fp16_every_bit_pattern():
    # all 65536 half values (subnormals, infinities, NaNs included), pooled in bags of 4 consecutive rows
    t = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(-1, 32)
    rng = np.random.default_rng(5)
    indices = rng.permutation(t.shape[0]).astype(np.int64)
    offsets = np.arange(0, indices.size + 1, 4, dtype=np.int64)
    out = np.empty((offsets.size - 1, 32), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        want = naive.pool_rows_ref(t, indices, offsets)
    assert_same_bits(pool_rows(t, indices, offsets, out), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_pool_rows_parallel_equals_serial(dtype):
    rng = np.random.default_rng(6)
    t = table(rng, 200, 80, dtype)
    indices, offsets = random_csr(rng, 301, 40, 200)
    serial = pool_rows(t, indices, offsets, np.empty((301, 80), np.float32), threads=1)
    parallel = pool_rows(t, indices, offsets, np.empty((301, 80), np.float32), threads=2)
    assert np.array_equal(serial.view(np.uint32), parallel.view(np.uint32))
    assert_same_bits(serial, naive.pool_rows_ref(t, indices, offsets))


# ---------------------------------------------------------------- pool_sources


def mixed_sources(rng, dim: int, code: int, dram_dtype, n_bags: int = 30, max_len: int = 8):
    """DRAM rows, rows written into a random-bytes page buffer at arbitrary (odd too) byte offsets,
    staged float32 rows, and lookups mixing all three kinds."""
    item = 4 if code == DTYPE_FP32 else 2
    dram = table(rng, 20, dim, dram_dtype)
    staged = table(rng, 15, dim, np.float32)
    page_rows = table(rng, 12, dim, np.float32 if code == DTYPE_FP32 else np.float16)
    row_bytes = dim * item
    pages = rng.integers(0, 256, max(3 * 4096, 16 * row_bytes), dtype=np.uint8)
    starts = rng.choice(pages.size // row_bytes - 1, 12, replace=False) * row_bytes + rng.integers(0, 4, 12)
    starts[0] = pages.size - row_bytes  # a row that ends exactly at the end of the buffer
    for r, s in enumerate(starts):
        pages[s:s + row_bytes] = np.frombuffer(page_rows[r].astype(page_rows.dtype.newbyteorder("<")).tobytes(),
                                               np.uint8)
    lengths = rng.integers(0, max_len + 1, n_bags)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    kinds = rng.integers(0, 3, n).astype(np.uint8)
    locs = np.where(kinds == KIND_DRAM, rng.integers(0, 20, n),
                    np.where(kinds == KIND_PAGE, starts[rng.integers(0, 12, n)], rng.integers(0, 15, n)))
    return offsets, kinds, locs.astype(np.int64), dram, pages, staged


@pytest.mark.parametrize("code,dram_dtype", [(DTYPE_FP32, np.float32), (DTYPE_FP16, np.float16),
                                             (DTYPE_FP16, np.float32)])
@pytest.mark.parametrize("dim", [3, 16, 32, 64, 77, 128, 256])
def test_pool_sources_equals_reference(code, dram_dtype, dim):
    rng = np.random.default_rng(dim + 10 * code)
    offsets, kinds, locs, dram, pages, staged = mixed_sources(rng, dim, code, dram_dtype)
    assert {0, 1, 2} <= set(kinds.tolist())
    assert (locs[kinds == KIND_PAGE] % 2).any()  # some rows sit at odd byte offsets
    out = np.full((offsets.size - 1, dim), np.nan, np.float32)
    pool_sources(offsets, kinds, locs, dram, pages, staged, code, dim, out)
    assert_same_bits(out, naive.pool_sources_ref(offsets, kinds, locs, dram, pages, staged, code, dim))


def test_pool_sources_any_tier_mix_equals_the_plain_sum():
    # the same rows served from DRAM, from pages and from staging pool to the same bits
    rng = np.random.default_rng(11)
    dim = 40
    t = table(rng, 25, dim, np.float32)
    indices, offsets = random_csr(rng, 20, 7, 25)
    pages = t.tobytes()  # row r at byte offset r * dim * 4
    pages = np.frombuffer(pages, np.uint8).copy()
    kinds = rng.integers(0, 3, indices.size).astype(np.uint8)
    locs = np.where(kinds == KIND_PAGE, indices * dim * 4, indices).astype(np.int64)
    out = np.empty((20, dim), np.float32)
    pool_sources(offsets, kinds, locs, t, pages, t.copy(), DTYPE_FP32, dim, out)
    assert np.array_equal(out.view(np.uint32), pool_rows(t, indices, offsets, np.empty_like(out)).view(np.uint32))


@pytest.mark.parametrize("code,dram_dtype", [(DTYPE_FP16, np.float16),  # the per-tier kernel
                                             (DTYPE_FP32, np.float32)])  # every tier float32: branch-free
@pytest.mark.parametrize("dim", [50, 128])  # the row's tail only; two whole 64-column blocks
def test_pool_sources_accumulate_and_parallel(dim, code, dram_dtype):
    rng = np.random.default_rng(12)
    offsets, kinds, locs, dram, pages, staged = mixed_sources(rng, dim, code, dram_dtype, n_bags=120)
    start = table(rng, 120, dim, np.float32)
    serial = pool_sources(offsets, kinds, locs, dram, pages, staged, code, dim, start.copy(), accumulate=True)
    parallel = pool_sources(offsets, kinds, locs, dram, pages, staged, code, dim, start.copy(),
                            accumulate=True, threads=2)
    assert np.array_equal(serial.view(np.uint32), parallel.view(np.uint32))
    want = naive.pool_sources_ref(offsets, kinds, locs, dram, pages, staged, code, dim, out=start,
                                  accumulate=True)
    assert_same_bits(serial, want)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 140), code=st.sampled_from([DTYPE_FP32, DTYPE_FP16]),
       n_bags=st.integers(0, 12), max_len=st.integers(0, 10))
def test_pool_sources_property(seed, dim, code, n_bags, max_len):
    rng = np.random.default_rng(seed)
    offsets, kinds, locs, dram, pages, staged = mixed_sources(rng, dim, code, np.float32, n_bags, max_len)
    out = np.empty((n_bags, dim), np.float32)
    pool_sources(offsets, kinds, locs, dram, pages, staged, code, dim, out)
    assert_same_bits(out, naive.pool_sources_ref(offsets, kinds, locs, dram, pages, staged, code, dim))


# ---------------------------------------------------------------- gather / extract


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gather_rows(dtype):
    rng = np.random.default_rng(13)
    t = table(rng, 30, 33, dtype)
    rows = rng.integers(0, 30, 50).astype(np.int64)
    assert_same_bits(gather_rows(t, rows), t[rows].astype(np.float32))


def test_gather_rows_fp16_widening_is_exact_except_signalling_nan_payloads():
    t = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(-1, 64)
    got = gather_rows(t, np.arange(t.shape[0], dtype=np.int64))
    bits = t.view(np.uint16).reshape(-1)
    signalling = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x03FF) != 0) & ((bits & 0x0200) == 0)
    want = t.astype(np.float32).reshape(-1).view(np.uint32)
    assert np.array_equal(got.reshape(-1).view(np.uint32)[~signalling], want[~signalling])
    assert np.isnan(got.reshape(-1)[signalling]).all()  # quieted by the hardware conversion, still NaN


@pytest.mark.parametrize("code", [DTYPE_FP32, DTYPE_FP16])
def test_extract_rows(code):
    rng = np.random.default_rng(14)
    offsets, kinds, locs, dram, pages, staged = mixed_sources(rng, 21, code, np.float32)
    got = extract_rows(kinds, locs, dram, pages, staged, code, 21)
    assert_same_bits(got, naive.extract_rows_ref(kinds, locs, dram, pages, staged, code, 21))


def test_dtype_code():
    assert dtype_code("fp32") == dtype_code(np.float32) == dtype_code(np.dtype("<f4")) == DTYPE_FP32
    assert dtype_code("fp16") == dtype_code(np.float16) == DTYPE_FP16
    with pytest.raises(ValueError, match="not fp32 or fp16"):
        dtype_code("bf16")


# ---------------------------------------------------------------- bad input


def _rows_args():
    t = np.zeros((10, 8), np.float32)
    return t, np.array([1, 2, 3], np.int64), np.array([0, 1, 3], np.int64), np.empty((2, 8), np.float32)


@pytest.mark.parametrize("change,error,message", [
    (lambda a: (a[0].astype(np.float64), *a[1:]), TypeError, "table must be float32 or float16"),
    (lambda a: (np.zeros((10, 16), np.float32)[:, ::2], *a[1:]), ValueError, "C-contiguous"),
    (lambda a: (a[0][0], *a[1:]), ValueError, "2-D"),
    (lambda a: (a[0], a[1].astype(np.int32), *a[2:]), TypeError, "indices must be int64"),
    (lambda a: (a[0], np.array([1, 2, 3, 4, 5, 6], np.int64)[::2], *a[2:]), ValueError, "indices must be contiguous"),
    (lambda a: (*a[:2], a[2].astype(np.int32), a[3]), TypeError, "offsets must be int64"),
    (lambda a: (*a[:2], np.array([0, 2, 1], np.int64), a[3]), ValueError, "offsets decrease at bag 1"),
    (lambda a: (*a[:2], np.array([-1, 1, 3], np.int64), a[3]), ValueError, "negative"),
    (lambda a: (*a[:2], np.array([0, 1, 4], np.int64), a[3]), ValueError, "exceeds the 3 lookups"),
    (lambda a: (*a[:3], np.empty((2, 8), np.float64)), TypeError, "out must be float32"),
    (lambda a: (*a[:3], np.empty((3, 8), np.float32)), ValueError, r"expected \(2, 8\)"),
    (lambda a: (*a[:3], np.empty((8, 2), np.float32).T), ValueError, "contiguous float32 rows"),
    (lambda a: (a[0], np.array([1, 10, 3], np.int64), *a[2:]), IndexError, "lookup 1: row 10 out of range"),
    (lambda a: (a[0], np.array([1, 2, -1], np.int64), *a[2:]), IndexError, "row -1 out of range"),
])
def test_pool_rows_rejects_bad_input(change, error, message):
    with pytest.raises(error, match=message):
        pool_rows(*change(_rows_args()))


def test_pool_rows_rejects_read_only_out_and_bad_threads():
    t, i, o, out = _rows_args()
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        pool_rows(t, i, o, out)
    for threads in (0, 10**6, 1.5):
        with pytest.raises(ValueError, match="threads must be an integer"):
            pool_rows(t, i, o, np.empty((2, 8), np.float32), threads=threads)


def _sources_args():
    dram = np.zeros((4, 8), np.float32)
    pages = np.zeros(4096, np.uint8)
    staged = np.zeros((3, 8), np.float32)
    return dict(offsets=np.array([0, 3], np.int64), kinds=np.array([0, 1, 2], np.uint8),
                locs=np.array([3, 4096 - 32, 2], np.int64), dram=dram, pages=pages, staged=staged,
                dtype_code=DTYPE_FP32, dim=8, out=np.empty((1, 8), np.float32))


@pytest.mark.parametrize("key,value,error,message", [
    ("kinds", np.array([0, 1, 2], np.int64), TypeError, "kinds must be uint8"),
    ("locs", np.array([3, 4, 2], np.int32), TypeError, "locs must be int64"),
    ("kinds", np.array([0, 1], np.uint8), ValueError, "differ in length"),
    ("kinds", np.array([0, 3, 2], np.uint8), ValueError, "lookup 1: kind 3 is not"),
    ("locs", np.array([4, 0, 0], np.int64), IndexError, "lookup 0: dram row 4 out of range"),
    ("locs", np.array([0, 4096 - 31, 0], np.int64), IndexError, "lookup 1: a 32-byte row at byte offset 4065"),
    ("locs", np.array([0, -1, 0], np.int64), IndexError, "byte offset -1"),
    ("locs", np.array([0, 0, 3], np.int64), IndexError, "lookup 2: staged row 3 out of range"),
    ("pages", np.zeros(1024, np.float32), TypeError, "pages must be a 1-D uint8 array"),
    ("staged", np.zeros((3, 8), np.float16), TypeError, "staged must be a 2-D float32"),
    ("staged", np.zeros((3, 9), np.float32), ValueError, "with 8 columns"),
    ("dram", np.zeros((4, 9), np.float32), ValueError, "expected dim = 8"),
    ("dram", np.zeros((4, 8), np.int16), TypeError, "dram must be float32 or float16"),
    ("dtype_code", 2, ValueError, "dtype_code 2"),
    ("dim", 0, ValueError, "dim must be a positive integer"),
])
def test_pool_sources_rejects_bad_input(key, value, error, message):
    args = _sources_args()
    args[key] = value
    with pytest.raises(error, match=message):
        pool_sources(**args)


def test_pool_sources_fp16_page_rows_use_half_the_bytes():
    # 8 fp16 values = 16 bytes: offset 4080 fits exactly in a 4096-byte buffer, 4081 does not
    args = _sources_args()
    args.update(dtype_code=DTYPE_FP16, locs=np.array([0, 4080, 0], np.int64))
    pool_sources(**args)
    args["locs"] = np.array([0, 4081, 0], np.int64)
    with pytest.raises(IndexError, match="16-byte row"):
        pool_sources(**args)


def test_empty_tiers_and_empty_bags():
    # no DRAM rows, no pages, nothing staged, three empty bags: zeros (the replay's all-cold warm-up shape)
    out = np.full((3, 5), 9.0, np.float32)
    pool_sources(np.zeros(4, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros((0, 5), np.float16),
                 np.zeros(0, np.uint8), np.zeros((0, 5), np.float32), DTYPE_FP16, 5, out)
    np.testing.assert_array_equal(out, 0.0)
    pool_rows(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), np.zeros(3, np.int64), out[:2])
    with pytest.raises(IndexError, match="table of 0 rows"):
        pool_rows(np.zeros((0, 5), np.float32), np.zeros(1, np.int64), np.array([0, 1], np.int64), out[:1])


def test_bad_lookup_is_caught_before_it_is_read():
    # rows are checked where they are prefetched (24 lookups ahead in a whole 64-column block, 32 in the
    # row's tail) and the first 32 up front: a bad row anywhere raises IndexError naming it; nothing
    # outside the table is read
    rng = np.random.default_rng(15)
    t = table(rng, 50, 70, np.float32)
    indices, offsets = random_csr(rng, 60, 8, 50)
    for pos in (0, 15, 16, 17, 23, 24, 25, 31, 32, 33, indices.size // 2, indices.size - 1):
        for bad_row in (50, -1, 2**62):
            bad = indices.copy()
            bad[pos] = bad_row
            for threads in (1, 2):
                with pytest.raises(IndexError, match=f"lookup {pos}: row {bad_row} out of range"):
                    pool_rows(t, bad, offsets, np.empty((60, 70), np.float32), threads=threads)


def test_bad_location_leaves_out_untouched():
    args = _sources_args()
    args["out"][:] = 5.0
    args["locs"] = np.array([0, 0, 7], np.int64)
    with pytest.raises(IndexError):
        pool_sources(**args)
    np.testing.assert_array_equal(args["out"], 5.0)

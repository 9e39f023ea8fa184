"""Tests for emulator/tt_kernels.py: the Numba row rebuild equals the NumPy references; FLOP formula."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.tt.decomposition import random_tt, tt_rebuild_rows_reference
from emulator.tt.kernels import tt_rebuild_flops, tt_rebuild_rows, unique_prefix_counts
from tests.naive import tt_rebuild_rows_naive

# Shapes that exercise every code path: d = 1..4; ranks below, at and above 16 lanes (masked loads);
# last-core widths q_d = 4 (4x4 tree sums) and others; GEMM widths over 64 columns and odd row counts.
SHAPES = [
    ((7,), (5,), (1, 1)),
    ((30, 40), (4, 8), (1, 6, 1)),
    ((9, 11), (3, 4), (1, 17, 1)),
    ((5, 6, 7), (2, 4, 2), (1, 3, 5, 1)),
    ((20, 22, 25), (4, 4, 4), (1, 16, 16, 1)),
    ((8, 9, 10), (4, 4, 4), (1, 33, 20, 1)),
    ((6, 7, 8), (3, 5, 4), (1, 7, 19, 1)),
    ((6, 7, 8), (4, 8, 8), (1, 8, 12, 1)),  # q2*r2 = 96 columns, 32 rows in the last stage
    ((3, 4, 5, 6), (2, 2, 2, 2), (1, 3, 4, 2, 1)),
    ((4, 5, 6, 7), (2, 3, 2, 4), (1, 5, 17, 6, 1)),
]


def assert_rows_close(got, ref):
    """float32 tolerance relative to each row's norm (the kernel reassociates sums)."""
    scale = np.linalg.norm(ref, axis=1, keepdims=True) + 1e-30
    assert np.all(np.abs(got - ref) <= 1e-5 * scale + 1e-7)


@pytest.mark.parametrize("p, q, ranks", SHAPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_kernel_equals_reference(p, q, ranks, n_threads):
    rng = np.random.default_rng(sum(p) + len(q))
    tt = random_tt(p, q, ranks, rng)
    rows = rng.integers(0, tt.num_rows, size=300)
    got = tt_rebuild_rows(tt, rows, n_threads=n_threads)
    assert got.dtype == np.float32 and got.shape == (300, tt.dim)
    assert_rows_close(got, tt_rebuild_rows_reference(tt, rows))
    assert_rows_close(got[:5], tt_rebuild_rows_naive(tt.cores, p, q, rows[:5]))


@pytest.mark.parametrize("p, q, ranks", [SHAPES[2], SHAPES[4], SHAPES[8]])
def test_repeated_rows_and_shared_prefixes(p, q, ranks):
    rng = np.random.default_rng(1)
    tt = random_tt(p, q, ranks, rng)
    p_last = p[-1]
    # all rows of one prefix, then the same rows again shuffled, then a few scattered ones
    block = np.arange(3 * p_last, 4 * p_last)
    rows = np.concatenate([block, rng.permutation(block), [0, tt.num_rows - 1, 0, 5, 5]])
    got = tt_rebuild_rows(tt, rows)
    assert_rows_close(got, tt_rebuild_rows_reference(tt, rows))
    np.testing.assert_array_equal(got[:p_last][rows[p_last:2 * p_last] - 3 * p_last], got[p_last:2 * p_last])
    np.testing.assert_array_equal(got[-2], got[-1])
    # every row of the table, in reverse order, over 2 threads
    every = np.arange(tt.num_rows)[::-1]
    assert_rows_close(tt_rebuild_rows(tt, every, n_threads=2), tt_rebuild_rows_reference(tt, every))


def test_empty_input_and_out_argument():
    tt = random_tt((5, 6, 7), (2, 4, 2), (1, 3, 5, 1), np.random.default_rng(2))
    empty = tt_rebuild_rows(tt, np.array([], dtype=np.int64))
    assert empty.shape == (0, 16) and empty.dtype == np.float32
    assert tt_rebuild_rows(tt, []).shape == (0, 16)
    out = np.full((3, 16), np.nan, np.float32)
    res = tt_rebuild_rows(tt, np.array([4, 0, 209], dtype=np.int32), out=out)
    assert res is out
    assert_rows_close(out, tt_rebuild_rows_reference(tt, [4, 0, 209]))


@pytest.mark.parametrize("kwargs, text", [
    (dict(rows=[210]), "row id 210"),
    (dict(rows=[-1]), "row id -1"),
    (dict(rows=[0.5]), "integer"),
    (dict(rows=[[1, 2]]), "1-D"),
    (dict(rows=[1], out=np.zeros((1, 16), np.float64)), "float32"),
    (dict(rows=[1], out=np.zeros((2, 16), np.float32)), "shape"),
    (dict(rows=[1, 2], out=np.zeros((16, 2), np.float32).T), "C-contiguous"),
    (dict(rows=[1], n_threads=0), "n_threads"),
])
def test_rejects_bad_arguments(kwargs, text):
    tt = random_tt((5, 6, 7), (2, 4, 2), (1, 3, 5, 1), np.random.default_rng(3))
    with pytest.raises(ValueError, match=text):
        tt_rebuild_rows(tt, **kwargs)


def test_flops_formula_hand_computed():
    tt = random_tt((200, 220, 250), (4, 4, 4), (1, 32, 32, 1), np.random.default_rng(4))
    # prefix GEMM (4 x 32) @ (32 x 128): 2*4*32*128 = 32768; last core (16 x 32) @ (32 x 4): 2*16*32*4 = 4096
    assert tt_rebuild_flops(tt, 1, 1) == 36864
    assert tt_rebuild_flops(tt, 10, 3) == 3 * 32768 + 10 * 4096
    # rows 0..249 share prefix (0, 0); row 250 starts prefix (0, 1); 55000 = 220*250 starts (1, 0)
    assert unique_prefix_counts(tt, [0, 249, 250, 55000, 55001]) == (3,)
    tt4 = random_tt((2, 3, 4, 5), (2, 2, 2, 2), (1, 3, 4, 2, 1), np.random.default_rng(5))
    # level 2: 2*q1*r1*q2*r2 = 2*2*3*2*4 = 96; level 3: 2*(q1 q2)*r2*q3*r3 = 2*4*4*2*2 = 128;
    # last: 2*(q1 q2 q3)*r3*q4 = 2*8*2*2 = 64
    assert tt_rebuild_flops(tt4, 7, (2, 3)) == 2 * 96 + 3 * 128 + 7 * 64
    # rows 0 and 5 share (i1, i2, i3) = (0, 0, 0) / (0, 0, 1): 1 level-2 prefix, 2 level-3 prefixes
    assert unique_prefix_counts(tt4, [0, 5, 4]) == (1, 2)
    tt2 = random_tt((3, 4), (2, 3), (1, 5, 1), np.random.default_rng(6))
    assert tt_rebuild_flops(tt2, 4, ()) == 4 * 2 * 2 * 5 * 3  # last core only: 2 * q1 * r1 * q2 per row
    with pytest.raises(ValueError, match="counts"):
        tt_rebuild_flops(tt4, 7, 2)

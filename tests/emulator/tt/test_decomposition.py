"""Tests for emulator/tt.py: shapes, cores, TT-SVD (in memory and streamed), rebuild, errors, HDF5."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from emulator.tt.decomposition import (TTCores, factorize_dim, factorize_rows, load_tt, random_tt, reconstruction_error, row_digits,
                         save_tt, tt_rebuild_range, tt_rebuild_rows_reference, tt_svd, tt_svd_streamed)
from emulator.tt.decomposition import (GRAM_METHOD, RANDOMIZED_METHOD, Unfolding, scatter_rows, tt_svd_fast,
                                       tt_svd_gram, tt_svd_randomized, unfolding_shape, zero_padding_rows)
from tests.naive import tt_rebuild_rows_naive
from tracegen.errors import InputError


def dense(tt: TTCores) -> np.ndarray:
    return tt_rebuild_range(tt, 0, tt.num_rows)


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------------- shapes


def test_factorize_rows_examples():
    assert factorize_rows(11_000_000) == (200, 220, 250)  # TT-Rec's shape, exact
    assert factorize_rows(1000) == (10, 10, 10)
    assert factorize_rows(1) == (1, 1, 1)
    assert factorize_rows(12, d=2) == (3, 4)  # 12 = 3 * 4, waste 0, ratio 4/3


@pytest.mark.parametrize("rows", [5, 7, 97, 1000, 1_000_003, 26_000_000, 10**9])
@pytest.mark.parametrize("d", [2, 3, 4])
def test_factorize_rows_covers_with_small_waste(rows, d):
    f = factorize_rows(rows, d)
    assert len(f) == d and list(f) == sorted(f)
    assert math.prod(f) >= rows
    # never worse than the balanced ceiling (ceil(rows^(1/d)))^d, always a candidate
    assert math.prod(f) <= math.ceil(rows ** (1 / d) - 1e-9) ** d
    if rows >= 10**6:
        assert math.prod(f) - rows <= 0.01 * rows
    assert f[-1] / f[0] <= 1.5 or rows < 100  # tiny tables may need a coarser split


def test_factorize_dim_examples():
    assert factorize_dim(128) == (4, 4, 8)
    assert factorize_dim(16) == (2, 2, 4)
    assert factorize_dim(64) == (4, 4, 4)
    assert factorize_dim(96) == (4, 4, 6)
    assert factorize_dim(64, d=2) == (8, 8)
    assert factorize_dim(13) == (1, 1, 13)  # a prime has no other split
    for dim in (1, 2, 24, 100, 256, 1024):
        assert math.prod(factorize_dim(dim, 3)) == dim


@pytest.mark.parametrize("call, text", [
    (lambda: factorize_rows(0), "rows=0"),
    (lambda: factorize_rows(10, d=0), "d=0"),
    (lambda: factorize_dim(-4), "dim=-4"),
    (lambda: factorize_dim(8, d=0), "d=0"),
])
def test_factorize_rejects_impossible_values(call, text):
    with pytest.raises(ValueError, match=text):
        call()


# ---------------------------------------------------------------------------------------------- cores


def test_ttcores_properties_hand_computed():
    rng = np.random.default_rng(0)
    tt = random_tt((2, 3), (4, 5), (1, 6, 1), rng)
    assert tt.d == 2 and tt.num_rows == 6 and tt.dim == 20
    # core 0: 2*1*4*6 = 48 floats, core 1: 3*6*5*1 = 90 floats -> 138 * 4 bytes
    assert tt.nbytes == 552
    assert tt.compression_ratio(6, 80) == pytest.approx(480 / 552)
    assert all(c.dtype == np.float32 and c.flags.c_contiguous for c in tt.cores)


def test_ttcores_rejects_bad_core_naming_its_index():
    rng = np.random.default_rng(0)
    good = random_tt((2, 3, 4), (2, 2, 2), (1, 3, 2, 1), rng)
    bad = list(good.cores)
    bad[1] = np.zeros((3, 3, 2, 5), np.float32)  # r_2 should be 2
    with pytest.raises(ValueError, match="core 1"):
        TTCores(good.p_shapes, good.q_shapes, good.ranks, tuple(bad))
    bad = list(good.cores)
    bad[2] = np.full((4, 2, 2, 1), np.nan, np.float32)
    with pytest.raises(ValueError, match="core 2"):
        TTCores(good.p_shapes, good.q_shapes, good.ranks, tuple(bad))
    with pytest.raises(ValueError, match="tt_ranks"):
        TTCores(good.p_shapes, good.q_shapes, (2, 3, 2, 1), good.cores)
    with pytest.raises(ValueError, match="2 cores given"):
        TTCores(good.p_shapes, good.q_shapes, good.ranks, good.cores[:2])


def test_random_tt_has_the_requested_scale():
    tt = random_tt((20, 20, 20), (4, 4, 4), (1, 8, 8, 1), np.random.default_rng(1), scale=0.5)
    assert dense(tt).std() == pytest.approx(0.5, rel=0.15)


def test_row_digits_mixed_radix():
    # row 23 over p=(2,3,4): 23 = 1*12 + 2*4 + 3 -> (1, 2, 3)
    assert [int(x[0]) for x in row_digits(np.array([23]), (2, 3, 4))] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- rebuild


@pytest.mark.parametrize("p, q, ranks", [((5,), (6,), (1, 1)), ((4, 5), (2, 3), (1, 3, 1)),
                                         ((3, 4, 5), (2, 2, 3), (1, 2, 3, 1)),
                                         ((2, 3, 2, 3), (2, 1, 2, 2), (1, 2, 3, 2, 1))])
def test_rebuild_reference_and_range_equal_naive(p, q, ranks):
    tt = random_tt(p, q, ranks, np.random.default_rng(2))
    rows = np.arange(tt.num_rows)
    naive = tt_rebuild_rows_naive(tt.cores, p, q, rows)
    np.testing.assert_allclose(tt_rebuild_rows_reference(tt, rows), naive, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tt_rebuild_range(tt, 0, tt.num_rows), naive, rtol=1e-5, atol=1e-6)
    for start, stop in ((1, 2), (3, tt.num_rows - 2), (tt.num_rows - 1, tt.num_rows), (0, 0)):
        np.testing.assert_allclose(tt_rebuild_range(tt, start, stop), naive[start:stop], rtol=1e-5, atol=1e-6)


def test_rebuild_rejects_out_of_range():
    tt = random_tt((2, 3), (2, 2), (1, 2, 1), np.random.default_rng(0))
    with pytest.raises(ValueError):
        tt_rebuild_range(tt, 2, 7)
    with pytest.raises(ValueError):
        tt_rebuild_rows_reference(tt, [6])


def test_reconstruction_error_hand_computed():
    tt = random_tt((3, 4), (2, 2), (1, 2, 1), np.random.default_rng(3))
    table = dense(tt)
    # true rows are twice the rebuilt ones: ||2W - W|| / ||2W|| = 1/2, max |2W - W| = max |W|
    err = reconstruction_error(tt, lambda ids: 2 * table[ids], np.arange(12))
    assert err["rel_fro_error"] == pytest.approx(0.5, rel=1e-6)
    assert err["max_abs_error"] == pytest.approx(float(np.abs(table).max()), rel=1e-6)
    assert err["sample_rows"] == 12
    assert reconstruction_error(tt, lambda ids: table[ids], [0, 5])["rel_fro_error"] < 1e-6


# ---------------------------------------------------------------------------------------------- TT-SVD


P3, Q3 = (6, 7, 8), (2, 4, 2)  # 336 rows x 16 columns


def test_tt_svd_recovers_a_tt_table_at_the_true_rank():
    tt = random_tt(P3, Q3, (1, 4, 4, 1), np.random.default_rng(4))
    table = dense(tt)
    got = tt_svd(table, P3, Q3, max_rank=4)
    assert got.ranks == (1, 4, 4, 1)
    assert rel_err(dense(got), table) < 1e-5
    assert rel_err(dense(tt_svd(table, P3, Q3, max_rank=3)), table) > 1e-3  # below the true rank it is not exact
    exact = tt_svd(table, P3, Q3)  # no truncation: full ranks, still exact
    assert rel_err(dense(exact), table) < 1e-5


def test_tt_svd_on_a_noisy_table_reports_the_noise():
    rng = np.random.default_rng(5)
    signal = dense(random_tt(P3, Q3, (1, 3, 5, 1), rng))
    noise = 0.1 * signal.std() * rng.standard_normal(signal.shape).astype(np.float32)
    table = signal + noise
    got = tt_svd(table, P3, Q3, max_rank=5)
    err = reconstruction_error(got, lambda ids: table[ids], np.arange(table.shape[0]))
    # the rank-5 fit keeps the signal and a small share of the noise: the error is the noise, a bit less
    noise_rel = float(np.linalg.norm(noise) / np.linalg.norm(table))  # about 0.1
    assert 0.7 * noise_rel < err["rel_fro_error"] < 1.01 * noise_rel
    assert err["max_abs_error"] > 0


def test_tt_svd_rank_from_tolerance():
    rng = np.random.default_rng(6)
    tt = random_tt(P3, Q3, (1, 3, 5, 1), rng)
    table = dense(tt)
    assert tt_svd(table, P3, Q3, rel_tol=1e-4).ranks == (1, 3, 5, 1)  # exact low rank: the true ranks
    noisy = table + 0.2 * table.std() * rng.standard_normal(table.shape).astype(np.float32)
    for tol in (0.05, 0.2, 0.5):
        got = tt_svd(noisy, P3, Q3, rel_tol=tol)
        assert rel_err(dense(got), noisy) <= tol + 1e-6  # Oseledets' guarantee
    assert max(tt_svd(noisy, P3, Q3, rel_tol=0.5).ranks) < max(tt_svd(noisy, P3, Q3, rel_tol=0.05).ranks)
    capped = tt_svd(noisy, P3, Q3, max_rank=2, rel_tol=0.01)
    assert max(capped.ranks) == 2


def test_tt_svd_pads_rows_and_checks_shapes():
    table = np.random.default_rng(7).standard_normal((300, 16)).astype(np.float32)
    got = tt_svd(table, P3, Q3)  # 300 rows padded to 336; exact at full rank
    assert rel_err(tt_rebuild_range(got, 0, 300), table) < 1e-5
    assert np.abs(tt_rebuild_range(got, 300, 336)).max() < 1e-4  # the padding rows stay zero
    with pytest.raises(ValueError, match="exceeds"):
        tt_svd(np.zeros((400, 16)), P3, Q3)
    with pytest.raises(ValueError, match="dim=15"):
        tt_svd(np.zeros((10, 15)), P3, Q3)
    with pytest.raises(ValueError, match="max_rank"):
        tt_svd(table, P3, Q3, max_rank=0)


@pytest.mark.parametrize("p, q, ranks, rows", [
    (P3, Q3, (1, 3, 5, 1), 336),
    (P3, Q3, (1, 3, 5, 1), 301),  # padding inside the last chunk
    ((20, 25), (4, 4), (1, 4, 1), 500),
    ((4, 5, 5, 5), (2, 2, 2, 2), (1, 3, 3, 3, 1), 500),
])
@pytest.mark.parametrize("in_memory", [True, False])
def test_streamed_equals_in_memory(p, q, ranks, rows, in_memory, tmp_path):
    rng = np.random.default_rng(8)
    signal = dense(random_tt(p, q, ranks, rng))[:rows]
    table = signal + 0.05 * signal.std() * rng.standard_normal(signal.shape).astype(np.float32)
    calls = []

    def read_rows(start, stop):
        calls.append((start, stop))
        return table[start:stop]

    max_rank = max(ranks)
    mem = tt_svd(table, p, q, max_rank=max_rank)
    streamed = tt_svd_streamed(read_rows, rows, table.shape[1], p, q, max_rank, chunk_rows=37,
                               max_in_memory_bytes=1 << 30 if in_memory else 0, tmp_dir=tmp_path)
    assert streamed.ranks == mem.ranks
    assert max(stop - start for start, stop in calls) <= 37 + p[-1]  # bounded reads (chunks of whole p_d blocks)
    err_mem = rel_err(tt_rebuild_range(mem, 0, rows), table)
    err_streamed = rel_err(tt_rebuild_range(streamed, 0, rows), table)
    assert err_streamed == pytest.approx(err_mem, rel=0.05, abs=1e-5)
    assert list(tmp_path.iterdir()) == []  # the temporary memmap is gone


def test_streamed_rank_from_tolerance_meets_it():
    rng = np.random.default_rng(9)
    table = dense(random_tt(P3, Q3, (1, 3, 5, 1), rng))
    table += 0.2 * table.std() * rng.standard_normal(table.shape).astype(np.float32)
    got = tt_svd_streamed(lambda s, e: table[s:e], 336, 16, P3, Q3, None, rel_tol=0.15, chunk_rows=50)
    assert rel_err(dense(got), table) <= 0.15 + 1e-6


# ---------------------------------------------------------------------------------------------- fast TT-SVD


def _noisy(p, q, ranks, rows, seed, noise=0.05):
    rng = np.random.default_rng(seed)
    signal = dense(random_tt(p, q, ranks, rng))[:rows]
    return (signal + noise * signal.std() * rng.standard_normal(signal.shape)).astype(np.float32)


@pytest.mark.parametrize("method", [tt_svd_gram, tt_svd_randomized])
def test_fast_tt_svd_of_an_exactly_low_rank_table_is_exact(method):
    table = dense(random_tt(P3, Q3, (1, 3, 5, 1), np.random.default_rng(2)))  # all 336 rows: TT ranks 3, 5
    for tt, rank in zip(method(table, 336, 16, P3, Q3, (5, 6)), (5, 6)):
        assert max(tt.ranks) <= rank and rel_err(tt_rebuild_range(tt, 0, 336), table) < 1e-5


@pytest.mark.parametrize("p, q, rows", [((12, 14, 16), (2, 4, 8), 2600), ((20, 25), (4, 4), 480),
                                        ((4, 5, 5, 5), (2, 2, 2, 2), 500)])
@pytest.mark.parametrize("method, slack", [(tt_svd_gram, 1e-4), (tt_svd_randomized, 0.02)])
def test_fast_tt_svd_error_is_the_exact_tt_svd_error(p, q, rows, method, slack):
    # a rank-4 signal plus 5% noise cut at ranks 2 (below the signal), 4 and 8 (into the noise): the Gram
    # method is TT-SVD in float32 (same error to 1e-4 relative); the randomized one within 2%
    table = _noisy(p, q, (1,) + (4,) * (len(p) - 1) + (1,), rows, seed=5)
    ranks = (2, 4, 8)
    got = method(table, rows, table.shape[1], p, q, ranks, chunk_bytes=4096)  # many column blocks
    for tt, rank in zip(got, ranks):
        exact = tt_svd(table, p, q, max_rank=rank)
        assert tt.ranks == exact.ranks
        err, want = rel_err(tt_rebuild_range(tt, 0, rows), table), rel_err(tt_rebuild_range(exact, 0, rows), table)
        assert want - 1e-6 <= err <= want * (1 + slack)


def test_fast_tt_svd_reads_arrays_page_views_and_callables_alike():
    p, q, rows = (8, 9, 10), (2, 2, 4), 700
    table = _noisy(p, q, (1, 3, 3, 1), rows, seed=6)
    padded = np.zeros((175, 4, 16), np.float32)  # a store's page view: 4 rows a group, the last group part-filled
    padded.reshape(-1, 16)[:rows] = table
    calls = []

    def read_rows(start, stop):
        calls.append(stop - start)
        return table[start:stop]

    results = [tt_svd_gram(src, rows, 16, p, q, (3,), chunk_bytes=1 << 12)[0] for src in (table, padded, read_rows)]
    for tt in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(tt.cores, results[0].cores))
    assert calls and max(calls) <= 90  # bounded reads: 4096 B blocks of i_2 values, 10 rows each, per i_1


def test_rows_scattered_in_any_order_make_the_unfolding_the_svds_gather():
    p, q, rows = (8, 9, 10), (2, 2, 4), 700
    table = _noisy(p, q, (1, 3, 3, 1), rows, seed=9)
    out = np.full(unfolding_shape(p, q), np.nan, np.float32)  # (16, 720): every entry must be written
    zero_padding_rows(rows, p, q, out)
    for a, b in ((300, 700), (0, 1), (1, 300)):  # steps finish in any order
        scatter_rows(table[a:b], a, p, q, out)
    unfolding = Unfolding(out, p, q)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(unfolding.rows_at(np.array([0, 5, 699])), table[[0, 5, 699]])
    for method in (tt_svd_gram, tt_svd_randomized):
        a, b = method(unfolding, rows, 16, p, q, (3,))[0], method(table, rows, 16, p, q, (3,))[0]
        assert all(np.array_equal(x, y) for x, y in zip(a.cores, b.cores))


def test_fast_tt_svd_picks_the_cheaper_first_step_and_ranks_nest():
    table = _noisy(P3, Q3, (1, 3, 5, 1), 336, seed=7)
    # p_1 q_1 = 6 * 2 = 12 <= 4 (8 + 10): the Gram matrix is cheaper
    tts, method = tt_svd_fast(table, 336, 16, P3, Q3, (4, 8))
    assert method == GRAM_METHOD
    assert np.allclose(tts[0].cores[0], tts[1].cores[0][..., :4])  # one eigendecomposition: the first cores nest
    wide = _noisy((40, 3, 3), (16, 1, 1), (1, 2, 2, 1), 360, seed=8)  # p_1 q_1 = 640 > 4 (2 + 10)
    tts, method = tt_svd_fast(wide, 360, 16, (40, 3, 3), (16, 1, 1), (2,))
    assert method == RANDOMIZED_METHOD and tts[0].ranks == (1, 2, 2, 1)


# ---------------------------------------------------------------------------------------------- HDF5


def test_save_load_round_trip(tmp_path):
    tt = random_tt(P3, Q3, (1, 3, 5, 1), np.random.default_rng(10))
    path = tmp_path / "tt.h5"
    with h5py.File(path, "w") as h5:
        save_tt(h5.create_group("t0/r5"), tt)
    with h5py.File(path, "r") as h5:
        assert list(h5["t0/r5"].attrs["tt_ranks"]) == [1, 3, 5, 1]
        back = load_tt(h5["t0/r5"])
        back2 = load_tt(h5, "t0/r5")
    for got in (back, back2):
        assert (got.p_shapes, got.q_shapes, got.ranks) == (tt.p_shapes, tt.q_shapes, tt.ranks)
        for a, b in zip(got.cores, tt.cores):
            np.testing.assert_array_equal(a, b)


def test_load_rejects_missing_and_corrupt_groups(tmp_path):
    tt = random_tt(P3, Q3, (1, 3, 5, 1), np.random.default_rng(11))
    path = tmp_path / "tt.h5"
    with h5py.File(path, "w") as h5:
        save_tt(h5.create_group("good"), tt)
        g = h5.create_group("no_core")
        save_tt(g, tt)
        del g["core_2"]
        g = h5.create_group("bad_shape")
        save_tt(g, tt)
        g.attrs["tt_ranks"] = np.array([1, 4, 5, 1])
        h5.create_group("empty")
    with h5py.File(path, "r") as h5:
        with pytest.raises(InputError, match="'missing'") as e:
            load_tt(h5, "missing")
        assert str(path) in str(e.value)
        for name, text in (("no_core", "core_2"), ("bad_shape", "core 0"), ("empty", "tt_p_shapes")):
            with pytest.raises(InputError, match=text) as e:
                load_tt(h5[name])
            assert str(path) in str(e.value) and f"/{name}" in str(e.value)

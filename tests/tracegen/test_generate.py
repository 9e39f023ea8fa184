"""Trace generation: determinism, exact Zipf ranks, the hash permutation, pooling, reuse."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tests import naive
from tracegen.errors import InputError
from tracegen.generate import (
    GeneratorParams,
    HashPermutation,
    TraceGenerator,
    ZipfSampler,
    bag_sizes,
    generate_batch,
    generate_trace,
    hash_permute,
    permutation_keys,
    permutation_shape,
    zipf_cells,
    zipf_ranks,
)
from tracegen.presets import get_preset
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import TraceReader


def _pmf(rows: int, alpha: float) -> np.ndarray:
    w = np.arange(1, rows + 1, dtype=np.float64) ** -alpha
    return w / w.sum()


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes(tmp_path, tiny_spec):
    params = GeneratorParams(seed=11, num_batches=3, reuse=0.3)
    id_a = generate_trace(tiny_spec, params, tmp_path / "a.h5")
    id_b = generate_trace(tiny_spec, params, tmp_path / "b.h5")
    assert id_a == id_b
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


@pytest.mark.parametrize("reuse", [dict(reuse=0.3), dict(reuse=0.3, reuse_window=500)], ids=["prev", "lag"])
def test_any_number_of_workers_writes_the_same_bytes(tmp_path, tiny_spec, reuse):
    # batch 512: ~9K lookups a batch in 16Ki-entry index chunks, so chunks span batches; 5 batches, 3+ chunks
    params = GeneratorParams(seed=3, num_batches=5, batch_size=512, **reuse)
    paths = [tmp_path / f"w{w}.h5" for w in (1, 2, 3)]
    ids = {generate_trace(tiny_spec, params, p, workers=w) for p, w in zip(paths, (1, 2, 3))}
    assert len(ids) == 1
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    gen = TraceGenerator(tiny_spec, params)
    with TraceReader(paths[1]) as r:
        assert r._f["indices"].chunks[0] < r.num_lookups  # more than one chunk
        prev = None
        for i in range(5):
            prev = gen.batch(i, prev)
            b = r.batch(i)
            assert np.array_equal(b.indices, prev[0]) and np.array_equal(b.offsets, prev[1])


@pytest.mark.parametrize("after", [1, 3, 40, 130], ids=["bags", "bags-later", "tables", "later-batch"])
@pytest.mark.parametrize("workers", [1, 2])
def test_should_stop_leaves_nothing_behind(tmp_path, tiny_spec, after, workers):
    # tiny: 4 tables of batch 32 -> 129 offsets in 5 parts, then 4 tables, per batch (9 questions a batch)
    asked = []

    def stop():
        asked.append(1)
        return len(asked) >= after

    params = GeneratorParams(seed=2, num_batches=100 if after > 9 else 1)
    with pytest.raises(KeyboardInterrupt):
        generate_trace(tiny_spec, params, tmp_path / "t.h5", should_stop=stop, workers=workers)
    assert len(asked) == after and list(tmp_path.iterdir()) == []


def test_generation_stats_name_the_stages(tmp_path, tiny_spec):
    stats = {}
    generate_trace(tiny_spec, GeneratorParams(seed=1, num_batches=2), tmp_path / "t.h5", stats=stats)
    assert {"bags_s", "tables_s", "copy_s", "checksum_s", "write_s", "hash_s", "write_stall_s", "hash_stall_s",
            "wait_tables_s", "close_s"} == set(stats)
    assert all(v >= 0 for v in stats.values()) and stats["tables_s"] > 0 and stats["hash_s"] > 0


def test_different_seed_differs(tmp_path, tiny_spec):
    id_a = generate_trace(tiny_spec, GeneratorParams(seed=1, num_batches=2), tmp_path / "a.h5")
    id_b = generate_trace(tiny_spec, GeneratorParams(seed=2, num_batches=2), tmp_path / "b.h5")
    assert id_a != id_b
    with TraceReader(tmp_path / "a.h5") as ra, TraceReader(tmp_path / "b.h5") as rb:
        assert not np.array_equal(ra.batch(0).indices[:50], rb.batch(0).indices[:50])


def test_batches_can_be_generated_alone(tmp_path, tiny_spec):
    # without reuse, batch i depends only on (seed, table, i); with reuse, generate_batch replays the chain
    for reuse in (0.0, 0.5):
        params = GeneratorParams(seed=5, num_batches=4, reuse=reuse)
        path = tmp_path / f"r{reuse}.h5"
        generate_trace(tiny_spec, params, path)
        with TraceReader(path) as r:
            for i in (0, 3):
                idx, off = generate_batch(tiny_spec, params, i)
                b = r.batch(i)
                assert np.array_equal(idx, b.indices) and np.array_equal(off, b.offsets)


def test_trace_records_effective_spec_and_params(tmp_path, tiny_spec):
    params = GeneratorParams(seed=4, num_batches=2, batch_size=8, zipf_alpha=0.7, alpha_overrides=(("t2", 1.3),))
    generate_trace(tiny_spec, params, tmp_path / "t.h5")
    with TraceReader(tmp_path / "t.h5") as r:
        assert r.batch_size == 8 and r.seed == 4
        assert [t.zipf_alpha for t in r.spec.tables] == [0.7, 0.7, 1.3, 0.7]
        assert r.params["generator"] == "screc.zipf" and r.params["num_batches"] == 2
        assert r.params["alpha_overrides"] == [["t2", 1.3]]


def test_progress_is_called_per_batch(tmp_path, tiny_spec):
    seen = []
    generate_trace(tiny_spec, GeneratorParams(num_batches=3), tmp_path / "t.h5", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("kwargs", [dict(seed=-1), dict(num_batches=0), dict(reuse=1.5), dict(reuse=-0.1),
                                    dict(batch_size=0), dict(zipf_alpha=-1.0), dict(zipf_alpha=math.nan),
                                    dict(alpha_overrides=(("t0", math.inf),))])
def test_bad_params_raise_input_error(kwargs):
    with pytest.raises(InputError):
        GeneratorParams(**kwargs)


def test_alpha_override_of_unknown_table(tiny_spec):
    with pytest.raises(InputError, match="unknown table 'zz'"):
        GeneratorParams(alpha_overrides=(("zz", 1.0),)).effective_spec(tiny_spec)


# --- offsets and pooling -----------------------------------------------------------------------


def test_batch_layout_and_pooling_per_table(tiny_spec):
    # tiny: t0 fixed 4, t1 uniform [1, 8], t2 poisson(3) in [0, 12], t3 lognormal(6, 0.8) in [1, 40]; B = 32
    idx, off = generate_batch(tiny_spec, GeneratorParams(seed=9), 0)
    B, T = 32, 4
    assert off.shape == (T * B + 1,) and off[0] == 0 and off[-1] == idx.size
    bags = np.diff(off).reshape(T, B)
    assert np.all(bags[0] == 4)
    assert bags[1].min() >= 1 and bags[1].max() <= 8
    assert bags[2].min() >= 0 and bags[2].max() <= 12
    assert bags[3].min() >= 1 and bags[3].max() <= 40
    for t, table in enumerate(tiny_spec.tables):
        rows = idx[off[t * B] : off[(t + 1) * B]]
        assert rows.min() >= 0 and rows.max() < table.rows


@pytest.mark.parametrize("pooling, mean, tol", [
    (PoolingSpec.fixed(3), 3.0, 0.0),
    (PoolingSpec(kind="uniform", mean=4.5, min=1, max=8), 4.5, 0.02),  # (1 + 8) / 2
    (PoolingSpec(kind="poisson", mean=3.0, min=0, max=12), 3.0, 0.02),  # P(X > 12) ~ 1e-5: clipping negligible
    (PoolingSpec(kind="lognormal", mean=6.0, min=0, max=100000, sigma=0.8), 6.0, 0.06),  # rounding shifts < 0.01
])
def test_pooling_distributions(pooling, mean, tol):
    n = bag_sizes(pooling, 200_000, np.random.default_rng(0))
    assert n.dtype == np.int64 and n.min() >= pooling.min and n.max() <= pooling.max
    assert abs(n.mean() - mean) <= tol


def test_lognormal_is_clipped():
    n = bag_sizes(PoolingSpec(kind="lognormal", mean=6.0, min=2, max=9, sigma=1.5), 10_000, np.random.default_rng(1))
    assert n.min() == 2 and n.max() == 9


# --- reuse ------------------------------------------------------------------------------------


def test_full_reuse_draws_only_from_the_previous_batch(tiny_spec):
    gen = TraceGenerator(tiny_spec, GeneratorParams(seed=2, num_batches=3, reuse=1.0))
    prev = gen.batch(0)
    cur = gen.batch(1, prev)
    B = tiny_spec.batch_size
    for t in range(tiny_spec.num_tables):
        before = set(prev[0][prev[1][t * B] : prev[1][(t + 1) * B]].tolist())
        now = cur[0][cur[1][t * B] : cur[1][(t + 1) * B]]
        assert now.size > 0 and set(now.tolist()) <= before


def test_partial_reuse_raises_overlap():
    spec = ModelSpec("one", (TableSpec("big", rows=1_000_000, dim=4, pooling=PoolingSpec.fixed(10), zipf_alpha=0.5),),
                     batch_size=1000)

    def overlap(reuse: float) -> float:
        gen = TraceGenerator(spec, GeneratorParams(seed=3, num_batches=2, reuse=reuse))
        a = gen.batch(0)
        b = gen.batch(1, a)
        return float(np.isin(b[0], a[0]).mean())

    # alpha 0.5 over 1M rows: fresh lookups rarely hit the previous 10,000; reuse 0.5 copies about half
    assert overlap(0.0) < 0.1
    assert 0.45 < overlap(0.5) < 0.65


# --- Zipf ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, alpha", [(1000, 1.05), (10_000_000, 1.05), (200_000, 0.8)])
def test_zipf_top_ranks_match_the_power_law(rows, alpha):
    n = 1_000_000
    ranks = ZipfSampler(rows, alpha).sample(np.random.default_rng(7), n)
    assert ranks.min() >= 0 and ranks.max() < rows
    pmf = _pmf(rows, alpha)[:20]
    freq = np.bincount(ranks[ranks < 20], minlength=20) / n
    sigma = np.sqrt(pmf * (1 - pmf) / n)
    assert np.all(np.abs(freq - pmf) < 5 * sigma)
    # the ratio between rank 1 and rank 10 is 10**alpha (11.2 for alpha 1.05)
    assert abs(freq[0] / freq[9] - 10**alpha) < 0.1 * 10**alpha


def test_zipf_whole_distribution_chi_square():
    rows, alpha, n = 5000, 1.2, 2_000_000
    ranks = ZipfSampler(rows, alpha).sample(np.random.default_rng(3), n)
    expected = _pmf(rows, alpha) * n
    observed = np.bincount(ranks, minlength=rows)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # chi-square with 4999 degrees of freedom: mean 4999, sd 100; 5 sd margin
    assert chi2 < rows + 500


@pytest.mark.parametrize("alpha", [0.0, 0.9])
def test_zipf_with_fused_permutation_gives_the_rows_of_the_unfused_ranks(alpha):
    from tracegen.permutation import PERMUTE_BLOCK

    sampler, perm = ZipfSampler(500_000, alpha), HashPermutation(500_000, permutation_keys(8, 1))
    for n in (0, 3, PERMUTE_BLOCK, 2 * PERMUTE_BLOCK + 5):
        ranks, rows = np.empty(n, np.int64), np.empty(n, np.int64)
        sampler.fill(np.random.default_rng(n), ranks)
        sampler.fill(np.random.default_rng(n), rows, perm)
        assert np.array_equal(rows, hash_permute(ranks, 500_000, perm.keys)), n


def test_zipf_kernel_matches_naive_reference():
    for rows, alpha, seed in [(3000, 1.05, 1), (50_000_000, 0.9, 2), (777, 2.5, 3), (1, 1.0, 4)]:
        s = ZipfSampler(rows, alpha)
        out = np.empty(3000, dtype=np.int64)
        used = zipf_ranks(seed, s, out)
        ref, ref_used = naive.zipf_ranks_naive(seed, s.cells, alpha, out.size)
        assert np.array_equal(out, ref) and used == ref_used


def test_zipf_cells_cover_every_rank_once():
    # 2**10 - 1 = 1023 one-rank cells, then 512 cells per octave, the last octave cut at rows
    c = zipf_cells(40_000_000, 1.05)
    lo, n = c["lo"], c["n"]
    assert lo[0] == 0 and np.all(lo[1:] == lo[:-1] + n[:-1]) and lo[-1] + n[-1] == 40_000_000
    assert np.all(n[:1023] == 1) and n[1023] == 2
    assert c["cdf"][-1] == 1.0 and np.all(np.diff(c["cdf"]) > 0)
    # worst cell: (512 / 513) ** 1.05 = 0.99795 -> almost every candidate is accepted without pow()
    assert np.all(c["squeeze"] > 0.9979) and np.all(c["squeeze"] <= 1.0)
    assert lo.size < 10_000


def test_uniform_when_alpha_is_zero():
    ranks = ZipfSampler(10, 0.0).sample(np.random.default_rng(0), 100_000)
    assert np.all(np.abs(np.bincount(ranks, minlength=10) / 100_000 - 0.1) < 0.01)


def test_zipf_ranks_checks_its_inputs():
    s = ZipfSampler(100, 1.0)
    with pytest.raises(ValueError):
        zipf_ranks(1, s, np.empty(10, dtype=np.int32))
    with pytest.raises(ValueError):
        zipf_ranks(1, ZipfSampler(100, 0.0), np.empty(10, dtype=np.int64))
    with pytest.raises(ValueError):
        zipf_ranks(-1, s, np.empty(10, dtype=np.int64))


# --- the permutation -------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 17, 1000, 65537, 99991])
def test_permutation_is_a_bijection(rows):
    keys = permutation_keys(0, 1)
    p = hash_permute(np.arange(rows, dtype=np.int64), rows, keys)
    assert np.array_equal(np.sort(p), np.arange(rows))


def test_permutation_matches_naive_reference():
    rng = np.random.default_rng(0)
    for rows in (7, 1000, 40_000_000, 2**40 + 3):
        keys = permutation_keys(3, rows % 5)
        x = rng.integers(0, rows, size=500, dtype=np.int64)
        assert np.array_equal(hash_permute(x, rows, keys), naive.hash_permute_naive(x, rows, keys))


def test_permutation_shape():
    # a = ceil(sqrt(rows)), b = ceil(rows / a): 40M -> 6325 x 6325 (6324.6 rounded up); 10 -> 4 x 3
    assert permutation_shape(40_000_000) == (6325, 6325)
    assert permutation_shape(10) == (4, 3)
    assert permutation_shape(1) == (1, 1)


def test_head_of_the_permutation_equals_the_computed_one():
    keys = permutation_keys(9, 0)
    perm = HashPermutation(1_000_000, keys, head_rows=1000)
    x = np.array([0, 5, 999, 1000, 123_456, 999_999], dtype=np.int64)
    out = np.empty_like(x)
    perm.apply(x, out)
    assert np.array_equal(out, hash_permute(x, 1_000_000, keys))


def test_hot_rows_are_not_the_low_ids():
    spec = ModelSpec("one", (TableSpec("t", rows=1_000_000, dim=4, pooling=PoolingSpec.fixed(1), zipf_alpha=1.1),),
                     batch_size=20_000)
    idx, _ = generate_batch(spec, GeneratorParams(seed=1), 0)
    rows, counts = np.unique(idx, return_counts=True)
    hottest = rows[np.argsort(counts)[::-1][:20]]
    # the 20 hottest rows are scattered: without the permutation they would be rows 0..19
    assert hottest.max() > 100_000 and np.median(hottest) > 50_000
    # and the popularity is stable: batch 1 has the same hottest row
    idx1, _ = generate_batch(spec, GeneratorParams(seed=1, num_batches=2), 1)
    assert np.bincount(idx1, minlength=1_000_000).argmax() == hottest[0]
    plain, _ = generate_batch(spec, GeneratorParams(seed=1, permute=False), 0)
    assert np.bincount(plain).argmax() == 0


def test_a_preset_batch_is_valid():
    spec = get_preset("criteo-kaggle", scale=0.001, batch_size=64)
    idx, off = generate_batch(spec, GeneratorParams(seed=0), 0)
    assert off[-1] == 26 * 64  # one-hot: one lookup per bag
    rows = np.array([t.rows for t in spec.tables])
    assert np.all(idx < np.repeat(rows, 64))


def test_params_round_trip_to_dict():
    p = GeneratorParams(seed=3, num_batches=2, alpha_overrides=(("a", 1.0),))
    d = p.to_dict()
    d.pop("generator"), d.pop("generator_version")
    d["alpha_overrides"] = tuple(tuple(x) for x in d["alpha_overrides"])
    assert GeneratorParams(**d) == p
    assert dataclasses.replace(p, seed=4) != p


# --- table-by-table writing, pooling scale, parameters from JSON ------------------------------------


def test_streamed_batches_equal_appended_ones(tmp_path, tiny_spec):
    from tracegen.trace_io import TraceWriter

    params = GeneratorParams(seed=6, num_batches=3, reuse=0.3)
    streamed = generate_trace(tiny_spec, params, tmp_path / "s.h5")
    gen = TraceGenerator(tiny_spec, params)
    with TraceWriter(tmp_path / "a.h5", gen.spec, seed=6, params=params.to_dict()) as w:
        prev = None
        for i in range(3):
            prev = gen.batch(i, prev)
            w.append(*prev)
    assert w.trace_id == streamed  # HDF5's chunk layout may differ; the content and its hash do not
    with TraceReader(tmp_path / "a.h5") as a, TraceReader(tmp_path / "s.h5") as s:
        assert np.array_equal(a._f["indices"][:], s._f["indices"][:])
        assert np.array_equal(a._f["offsets"][:], s._f["offsets"][:]) and np.array_equal(a.batch_ptr, s.batch_ptr)


def test_table_by_table_writer_checks_its_calls(tmp_path, tiny_spec):
    from tracegen.trace_io import TraceWriter

    idx, off = generate_batch(tiny_spec, GeneratorParams(seed=1), 0)
    B = tiny_spec.batch_size
    with pytest.raises(ValueError, match="expected table 0"):
        with TraceWriter(tmp_path / "x.h5", tiny_spec) as w:
            w.begin_batch(off)
            w.append_table(1, idx[off[B] : off[2 * B]])
    with pytest.raises(ValueError, match="indices, but its offsets say"):
        with TraceWriter(tmp_path / "x.h5", tiny_spec) as w:
            w.begin_batch(off)
            w.append_table(0, idx[:3])
    with pytest.raises(InputError, match="out of range for table 0"):
        with TraceWriter(tmp_path / "x.h5", tiny_spec) as w:
            w.begin_batch(off)
            w.append_table(0, np.full(int(off[B]), 10**6))
    with pytest.raises(ValueError, match="after 1 of 4 tables"):
        with TraceWriter(tmp_path / "x.h5", tiny_spec) as w:
            w.begin_batch(off)
            w.append_table(0, idx[: off[B]])
            w.end_batch()
    with pytest.raises(ValueError, match="inside begin_batch"):
        with TraceWriter(tmp_path / "x.h5", tiny_spec) as w:
            w.begin_batch(off)
    assert not (tmp_path / "x.h5").exists()


def test_pooling_scale():
    from tracegen.generate import scale_pooling

    p = PoolingSpec(kind="lognormal", mean=6.0, min=1, max=40, sigma=0.8)
    # mean 6 * 0.5 = 3, min floor(0.5) = 0, max ceil(20) = 20
    assert scale_pooling(p, 0.5) == PoolingSpec(kind="lognormal", mean=3.0, min=0, max=20, sigma=0.8)
    assert scale_pooling(PoolingSpec.fixed(3), 1.5) == PoolingSpec.fixed(4)  # round(4.5) = 4 (to even)
    assert scale_pooling(PoolingSpec(kind="uniform", mean=4.5, min=1, max=8), 2.0).mean == 9.0  # [2, 16]
    spec = get_preset("tiny")
    eff = GeneratorParams(pooling_scale=2.0).effective_spec(spec)
    assert eff.tables[0].pooling == PoolingSpec.fixed(8)
    with pytest.raises(InputError, match="pooling scale"):
        GeneratorParams(pooling_scale=0)


def test_params_from_dict():
    p = GeneratorParams(seed=3, reuse=0.1, alpha_overrides=(("t0", 0.5),), pooling_scale=1.5, batch_size=8)
    assert GeneratorParams.from_dict(p.to_dict()) == p
    with pytest.raises(InputError, match="unknown generator parameter"):
        GeneratorParams.from_dict({"speed": 1})
    with pytest.raises(InputError, match="reuse"):
        GeneratorParams.from_dict({"reuse": 2})
    with pytest.raises(InputError, match="not 'screc.zipf'"):
        GeneratorParams.from_dict({"generator": "other"})

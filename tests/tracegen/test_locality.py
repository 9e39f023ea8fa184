"""Locality histograms, the locality_stats.txt parser and formatter, and whole-trace statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests import naive
from tracegen.errors import InputError
from tracegen.generate import GeneratorParams, generate_trace
from tracegen.locality import (
    BIN_EDGES,
    BIN_LABELS,
    LocalityAccumulator,
    batch_locality,
    count_bins,
    fit_alpha,
    format_locality_stats,
    parse_locality_stats,
    table_counts,
    trace_stats,
)
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import Batch, TraceReader

META_2021 = Path(__file__).resolve().parents[1] / "data" / "dlrm_datasets_2021_locality_stats.txt"
needs_meta = pytest.mark.skipif(not META_2021.is_file(), reason=f"{META_2021} (Meta's published stats) not present")


def _hand_batch() -> Batch:
    # T = 2 tables, B = 2 bags each.
    # table 0: bag 0 = [5, 5, 1], bag 1 = [5, 2]       -> row 5 x3, row 1 x1, row 2 x1
    # table 1: bag 0 = [5],       bag 1 = [5, 5, 5, 5, 7] -> row 5 x5, row 7 x1
    indices = np.array([5, 5, 1, 5, 2, 5, 5, 5, 5, 5, 7], dtype=np.int64)
    offsets = np.array([0, 3, 5, 6, 11], dtype=np.int64)
    return Batch(0, indices, offsets, num_tables=2, batch_size=2)


def test_bins():
    assert BIN_EDGES[:5] == (0, 1, 2, 4, 8) and BIN_EDGES[-1] == 32768 and len(BIN_LABELS) == 17
    assert BIN_LABELS[0] == "(0, 1]" and BIN_LABELS[15] == "(16384, 32768]" and BIN_LABELS[16] == "(32768+"
    # 1 -> (0,1]; 2 -> (1,2]; 3, 4 -> (2,4]; 5 -> (4,8]; 32768 -> (16384,32768]; 32769 -> (32768+
    assert count_bins(np.array([1, 2, 3, 4, 5, 32768, 32769, 10**9])).tolist() == [0, 1, 2, 2, 3, 15, 16, 16]


def test_hand_computed_batch():
    b = batch_locality(_hand_batch(), np.array([10, 10]))
    # 11 lookups; 5 unique (table, row) pairs: (0,5) (0,1) (0,2) (1,5) (1,7) -- row 5 counts once per table
    assert b.indices == 11 and b.unique == 5
    # col sizes 3, 1, 1, 5, 1: three in (0,1], one (3) in (2,4], one (5) in (4,8]
    assert b.col_size_hist.tolist()[:4] == [3, 0, 1, 1] and b.col_size_hist.sum() == 5
    # lookups per bin: 1+1+1 = 3 in (0,1], 3 in (2,4], 5 in (4,8]
    assert b.index_hist.tolist()[:4] == [3, 0, 3, 5] and b.index_hist.sum() == 11
    acc = LocalityAccumulator(2)
    acc.add(b)
    s = acc.result()
    assert s.avg_indices == 11 and s.avg_unique == 5 and s.avg_col_size == pytest.approx(2.2)  # 11 / 5
    assert s.col_size_share[:4] == pytest.approx((0.6, 0.0, 0.2, 0.2))  # 3/5, 0, 1/5, 1/5
    assert s.index_share[:4] == pytest.approx((3 / 11, 0.0, 3 / 11, 5 / 11))
    assert s.col_size_cumulative[:5] == pytest.approx((0.0, 0.6, 0.6, 0.8, 1.0))
    assert len(s.col_size_cumulative) == 18 and s.index_cumulative[-1] == pytest.approx(1.0)


def test_averaging_over_batches_weighs_batches_equally():
    acc = LocalityAccumulator(2)
    acc.add(batch_locality(_hand_batch(), np.array([10, 10])))
    # second batch: table 0 = [1, 1], table 1 = [] -> 2 lookups, 1 unique pair of col size 2
    acc.add(batch_locality(Batch(1, np.array([1, 1]), np.array([0, 1, 2, 2, 2]), 2, 2), np.array([10, 10])))
    s = acc.result()
    assert s.num_batches == 2
    assert s.avg_indices == 6.5 and s.avg_unique == 3.0  # (11 + 2) / 2, (5 + 1) / 2
    # (0,1]: (0.6 + 0) / 2 = 0.3; (1,2]: (0 + 1) / 2 = 0.5; (2,4]: (0.2 + 0) / 2 = 0.1
    assert s.col_size_share[:3] == pytest.approx((0.3, 0.5, 0.1))


def test_counting_matches_naive_on_generated_batches(tiny_trace):
    with TraceReader(tiny_trace) as r:
        for batch in r.batches():
            b = batch_locality(batch, r.rows)
            bounds = batch.table_bounds()
            ref = naive.locality_hist_naive([batch.indices[bounds[t] : bounds[t + 1]] for t in range(r.num_tables)])
            assert (b.indices, b.unique, b.col_size_hist.tolist(), b.index_hist.tolist()) == ref


def test_dense_and_sparse_counting_agree():
    idx = np.random.default_rng(0).integers(0, 50_000_000, size=1000)
    sparse = np.sort(table_counts(idx, 50_000_000))  # np.unique path (rows >> lookups)
    dense = np.sort(np.bincount(idx)[np.bincount(idx) > 0])
    assert np.array_equal(sparse, dense)


def test_fit_alpha_on_an_exact_power_law():
    counts = 1e6 * np.arange(1, 200, dtype=np.float64) ** -1.2
    alpha, used = fit_alpha(counts)
    # 1e6 * k**-1.2 >= 10 for k <= 10**(5/1.2) = 14677, so all 199 ranks are used
    assert alpha == pytest.approx(1.2, abs=1e-9) and used == 199
    assert math.isnan(fit_alpha(np.array([50.0, 20.0, 1.0]))[0])  # only 2 ranks with count >= 10


# --- Meta's published file --------------------------------------------------------------------------


@needs_meta
def test_parser_reads_the_2021_file():
    blocks = parse_locality_stats(META_2021)
    assert len(blocks) == 17
    assert list(blocks)[0] == "fbgemm_t856_bs65536.pt" and list(blocks)[-1] == "fbgemm_t856_bs65536_15.pt"
    s = blocks["fbgemm_t856_bs65536.pt"]
    assert (s.num_batches, s.batch_size) == (1, 65536)
    assert (s.avg_indices, s.avg_unique, s.avg_col_size) == (887017990, 128435723, 6.9)
    assert s.col_size_share[:3] == (0.473, 0.152, 0.139) and s.col_size_share[-1] == 0.0
    assert s.index_share[0] == 0.069 and s.index_share[-1] == 0.019
    assert s.col_size_cumulative[:3] == (0.0, 0.473, 0.625) and s.index_cumulative[-1] == 1.0
    last = blocks["fbgemm_t856_bs65536_15.pt"]
    assert (last.avg_indices, last.avg_unique, last.avg_col_size) == (468071733, 61653996, 7.6)
    assert last.index_share[-1] == 0.020


@needs_meta
def test_formatter_reproduces_the_2021_file():
    blocks = parse_locality_stats(META_2021)
    text = "\n\n".join(format_locality_stats(name, s) for name, s in blocks.items())
    assert text == META_2021.read_text().strip()


def test_formatter_parser_round_trip(tmp_path, tiny_trace):
    with TraceReader(tiny_trace) as r:
        stats = trace_stats(r).locality
    p = tmp_path / "ours.txt"
    p.write_text(format_locality_stats("ours", stats) + "\n")
    back = parse_locality_stats(p)["ours"]
    assert back.num_batches == stats.num_batches and back.avg_indices == round(stats.avg_indices)
    assert back.col_size_share == pytest.approx(stats.col_size_share, abs=5e-4)


@pytest.mark.parametrize("text, problem", [
    ("", "no locality statistics"),
    ("name\nAvg # of indices: many\n", "line 2"),
    ("name\nHistogram of col sizes:\n(0, 1]: 0.5\n", "cut short"),
    ("Avg # of indices: 5\n", "before any block name"),
    ("name\nAvg # of indices: 5\nnext\n", "lacks"),
])
def test_parser_rejects_bad_files(tmp_path, text, problem):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InputError, match=problem):
        parse_locality_stats(p)


def test_parser_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        parse_locality_stats(tmp_path / "nope.txt")


# --- trace statistics -------------------------------------------------------------------------------


def test_trace_stats_on_tiny(tiny_trace):
    with TraceReader(tiny_trace) as r:
        s = trace_stats(r)
        assert s.num_batches == s.total_batches == r.num_batches and s.lookups == r.num_lookups
        assert s.trace_id == r.trace_id and s.num_tables == 4 and s.batch_size == 32
        assert sum(t.lookups for t in s.tables) == s.lookups
        assert s.tables[0].mean_pooling == 4.0  # t0 has fixed pooling 4
        assert s.lookups_per_batch == pytest.approx(r.num_lookups / r.num_batches)
        assert s.locality.avg_unique == pytest.approx(s.unique_rows_per_batch)
        one = trace_stats(r, max_batches=1)
        assert one.num_batches == 1 and one.lookups == r.batch(0).num_lookups
    d = s.to_dict()
    json.dumps(d)  # plain JSON: NaN alpha becomes null
    assert len(d["locality"]["bins"]) == 17 and len(d["tables"]) == 4


def test_alpha_estimate_near_the_generating_skew(tmp_path):
    spec = ModelSpec("one", (TableSpec("t", rows=200_000, dim=4, pooling=PoolingSpec.fixed(20), zipf_alpha=1.05),),
                     batch_size=4096)
    generate_trace(spec, GeneratorParams(seed=1, num_batches=2), tmp_path / "t.h5")
    with TraceReader(tmp_path / "t.h5") as r:
        t = trace_stats(r).tables[0]
    assert t.alpha_fit_ranks >= 100 and abs(t.alpha_estimate - 1.05) < 0.1


def test_large_batches_are_read_table_by_table(tiny_trace):
    with TraceReader(tiny_trace) as r:
        whole = trace_stats(r)
        streamed = trace_stats(r, stream_lookups=0)  # every batch "large"
    assert streamed.to_dict() == whole.to_dict()

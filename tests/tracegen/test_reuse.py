"""Temporal reuse at a power-law lag (tracegen.reuse) and table selections (tracegen.selection)."""

from __future__ import annotations

import numpy as np
import pytest

from tracegen.errors import InputError
from tracegen.generate import GeneratorParams, TraceGenerator, generate_batch, generate_trace
from tracegen.mrc import miss_ratios, stack_distances
from tracegen.reuse import ReuseHistory
from tracegen.selection import select, select_tables
from tracegen.trace_io import TraceReader


def test_full_reuse_only_repeats_the_history():
    # the first lookup has no history and is kept; with p = 1 every later one copies an earlier value
    x = np.arange(100, 200, dtype=np.int64)
    ReuseHistory(1000).apply(x, seed=2, p=1.0, beta=0.5)
    assert x[0] == 100 and set(x.tolist()) == {100}


def test_lags_follow_the_power_law():
    # a full history 0..999 (the latest is 999): one reused lookup reads value 1000 - lag. beta = 1 gives
    # log-uniform lags, P(lag <= 10) = log(11) / log(1001) = 0.347 over 1..1000
    lags = []
    for k in range(3000):
        h = ReuseHistory(1000)
        h.ring[:] = np.arange(1000)
        h.pos, h.filled = 0, 1000
        one = np.array([-1], dtype=np.int64)
        h.apply(one, seed=k, p=1.0, beta=1.0)
        lags.append(1000 - int(one[0]))
    lags = np.array(lags)
    assert lags.min() >= 1 and lags.max() <= 1000
    assert np.mean(lags <= 10) == pytest.approx(np.log(11) / np.log(1001), abs=0.04)


def test_lag_reuse_is_deterministic_and_lowers_small_cache_misses(tmp_path, tiny_spec):
    params = GeneratorParams(seed=5, num_batches=4, reuse=0.5, reuse_window=300, reuse_lag_exponent=1.2)
    generate_trace(tiny_spec, params, tmp_path / "r.h5")
    with TraceReader(tmp_path / "r.h5") as r:
        for i in (0, 3):  # batch i alone replays the histories of batches 0..i-1
            idx, off = generate_batch(tiny_spec, params, i)
            assert np.array_equal(idx, r.batch(i).indices) and np.array_equal(off, r.batch(i).offsets)
        with_reuse = np.concatenate([r.batch(i).table(1)[0] for i in range(4)])
    plain = TraceGenerator(tiny_spec, GeneratorParams(seed=5, num_batches=4))
    without = np.concatenate([_table(plain.batch(i), 1, tiny_spec.batch_size) for i in range(4)])
    small = np.array([4, 16])
    assert np.all(miss_ratios(stack_distances(with_reuse), small) < miss_ratios(stack_distances(without), small))


def _table(batch, t, B):
    idx, off = batch
    return idx[off[t * B]: off[(t + 1) * B]]


def test_selections(tiny_spec):
    assert select_tables(tiny_spec, "0::2").tolist() == [0, 2]
    assert select_tables(tiny_spec, "1:").tolist() == [1, 2, 3]
    assert select_tables(tiny_spec, "-1:").tolist() == [3]
    assert select_tables(tiny_spec, "t3, t1").tolist() == [1, 3]
    for bad, needle in (("::0", "step"), ("5:", "selects no table"), ("t1,nope", "'nope'")):
        with pytest.raises(InputError, match=needle):
            select_tables(tiny_spec, bad)
    spec, params = select(tiny_spec, GeneratorParams(alpha_overrides=(("t0", 0.5), ("t2", 0.7))), "2:")
    assert [t.name for t in spec.tables] == ["t2", "t3"] and params.source_tables == (2, 3)
    assert params.alpha_overrides == (("t2", 0.7),)
    # a selection of a selection keeps the indices of the whole model
    spec2, params2 = select(spec, params, "1:2")
    assert params2.source_tables == (3,) and spec2.tables[0].name == "t3"

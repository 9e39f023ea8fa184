"""Expected locality histograms (tracegen.locality_model) against hand-derived values and generated batches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracegen.generate import GeneratorParams, bag_sizes, generate_batch
from tracegen.locality import batch_locality
from tracegen.locality_model import (
    TableLayout,
    effective_pooling_mean,
    expected_locality,
    poisson_bins,
    rank_cells,
    spec_locality,
    table_counts_by_bin,
)
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import Batch


def test_poisson_grid_by_hand():
    g = poisson_bins()
    # lam = 1 (grid point 2**0): P(X=1) = e^-1 = 0.3679, P(X=2) = e^-1/2 = 0.1839,
    # P(3 <= X <= 4) = e^-1 (1/6 + 1/24) = 0.0766; E[X; X=1] = 1 * e^-1, E[X; X=2] = 2 * e^-1 / 2
    i = int(np.flatnonzero(g.log2_lam == 0.0)[0])
    e = math.exp(-1)
    assert g.unique[i, :3] == pytest.approx([e, e / 2, e * (1 / 6 + 1 / 24)], rel=1e-9)
    assert g.lookups[i, :2] == pytest.approx([e, e], rel=1e-9)
    # every grid point: touched rows = 1 - e^-lam, lookups = lam (to the Wilson-Hilferty error above 512)
    lam = 2.0 ** g.log2_lam
    assert g.unique.sum(axis=1) == pytest.approx(-np.expm1(-lam), rel=1e-6, abs=1e-12)
    assert g.lookups.sum(axis=1) == pytest.approx(lam, rel=1e-3)


@pytest.mark.parametrize("rows", [1, 7, 256, 257, 1000, 123_457])
def test_rank_cells_cover_every_rank_once(rows):
    lo, hi = rank_cells(rows)
    assert lo[0] == 1 and hi[-1] == rows and np.all(lo[1:] == hi[:-1] + 1) and np.all(hi >= lo)


def test_uniform_table_matches_the_formula():
    # alpha = 0: every row has lam = n / R, so touched rows = R (1 - e^-lam): R = 1000, n = 2000 -> 864.66
    layout = TableLayout.build([1000])
    e = expected_locality(layout, np.array([0.0]), np.array([2000.0]))
    assert e.unique == pytest.approx(1000 * (1 - math.exp(-2)), rel=1e-6)
    assert e.lookups == 2000.0


def test_expected_matches_a_generated_batch():
    tables = tuple(TableSpec(f"t{i}", rows=r, dim=4, pooling=PoolingSpec(kind="lognormal", mean=m, min=0,
                                                                        max=int(10 * m) + 1, sigma=0.8), zipf_alpha=a)
                   for i, (r, m, a) in enumerate([(100, 5, 0.5), (20_000, 20, 1.0), (3_000_000, 15, 0.8),
                                                  (400_000, 8, 1.6), (1_000_000, 3, 0.0)]))
    spec = ModelSpec("x", tables, batch_size=16384)
    e = spec_locality(spec)
    idx, off = generate_batch(spec, GeneratorParams(seed=5), 0)
    bl = batch_locality(Batch(0, idx, off, spec.num_tables, spec.batch_size), np.array([t.rows for t in tables]))
    assert bl.unique == pytest.approx(e.unique, rel=0.01) and bl.indices == pytest.approx(e.lookups, rel=0.01)
    assert np.abs(bl.col_size_hist / bl.unique - e.unique_share).sum() < 0.01
    assert np.abs(bl.index_hist / bl.indices - e.lookup_share).sum() < 0.05  # a few hot rows near bin edges


def test_per_table_counts_add_up():
    layout = TableLayout.build([50, 10_000])
    u, l = table_counts_by_bin(layout, np.array([1.0, 0.7]), np.array([1e4, 3e3]))
    assert u.shape == l.shape == (2, 17)
    assert l.sum(axis=1) == pytest.approx([1e4, 3e3], rel=1e-3)
    assert u[0].sum() <= 50 + 1e-9


@pytest.mark.parametrize("pooling", [
    PoolingSpec(kind="lognormal", mean=3.0, min=1, max=10, sigma=1.0),
    PoolingSpec(kind="poisson", mean=2.0, min=1, max=4),
    PoolingSpec(kind="uniform", mean=4.5, min=1, max=8),
    PoolingSpec.fixed(3),
])
def test_effective_pooling_mean_is_what_the_generator_draws(pooling):
    draws = bag_sizes(pooling, 400_000, np.random.default_rng(1))
    assert effective_pooling_mean(pooling) == pytest.approx(draws.mean(), rel=0.01)

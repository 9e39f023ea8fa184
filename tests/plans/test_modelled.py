"""plans.modelled: Zipf expectations against brute force, and the modelled label."""

from __future__ import annotations

import numpy as np
import pytest

from plans.modelled import modelled_stats, zipf_expected_unique, zipf_mass, zipf_rows_for_mass


def test_zipf_numerics_against_brute_force():
    rows, alpha, L = 3000, 0.9, 2000.0
    p = np.arange(1, rows + 1, dtype=np.float64) ** -alpha
    p /= p.sum()
    assert zipf_mass(rows, alpha, 100) == pytest.approx(p[:100].sum())
    k = zipf_rows_for_mass(rows, alpha, 0.8)
    assert p[:k].sum() >= 0.8 > p[:k - 1].sum()
    for group, start in ((1, 0), (1, 250), (16, 0), (16, 250)):
        pages = [p[max(j * group, start):(j + 1) * group].sum() for j in range(start // group, -(-rows // group))]
        want = sum(1 - (1 - q) ** L for q in pages)  # E[distinct groups] for L i.i.d. draws
        assert zipf_expected_unique(rows, alpha, L, start, group) == pytest.approx(want, rel=1e-3)
    # beyond 65,536 rows the sum is the midpoint integral: H(10^6, 1) = ln(10^6) + 0.5772 + ... = 14.39
    assert zipf_mass(10**6, 1.0, 10**6) == 1.0


def test_modelled_stats_are_labelled(tiny_spec):
    s = modelled_stats(tiny_spec)
    assert s.source == "modelled"
    for ts in s.tables:
        assert ts.estimator.startswith("modelled")
        assert np.all(np.diff(ts.mass) >= 0) and ts.mass[-1] == pytest.approx(1.0)
        assert np.all(np.diff(ts.cold_unique_pages_per_batch) <= 1e-9)
    assert all(v.modelled for ts in s.tables for v in ts.tt)

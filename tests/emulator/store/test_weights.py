"""emulator.store.weights: the tt-hash generator against a plain NumPy reference of its definition (signal from
the TT cores, noise from the hash), independence from how a table is split, the noise's moments, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.store.weights import (
    _HALF_SUM,
    _HASH_UNIT,
    SIGNAL_STD,
    HashSyntheticRows,
    SyntheticWeightsConfig,
    synthetic_rows,
)
from emulator.tt.cores import tt_rebuild_rows_reference
from tracegen.errors import InputError
from tracegen.spec import TableSpec

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


def _noise_reference(key: int, row: int, dim: int) -> np.ndarray:
    """The module doc's noise, in Python integers: SplitMix64 of the row, then lowbias32 per column, bytes summed."""
    z = (key + (row + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    seed = ((z ^ (z >> 31)) >> 32) & M32
    out = []
    for c in range(dim):
        h = (seed + c * 0x9E3779B9) & M32
        h = ((h ^ (h >> 16)) * 0x7FEB352D) & M32
        h = ((h ^ (h >> 15)) * 0x846CA68B) & M32
        h ^= h >> 16
        out.append(sum((h >> s) & 0xFF for s in (0, 8, 16, 24)) - int(_HALF_SUM))
    return np.array(out, dtype=np.float32)


def test_rows_match_the_reference_definition():
    t = TableSpec("t", 1000, 16)
    src = HashSyntheticRows(t, 2, SyntheticWeightsConfig(seed=7, noise_ratio=0.2))
    rows = np.array([0, 1, 17, 999])
    signal = tt_rebuild_rows_reference(src.signal, rows)  # float64 products, float32 result
    noise = np.stack([_noise_reference(int(src._key), int(r), 16) for r in rows]) * src._noise_scale
    got = src.read(0, 1000)[rows]
    np.testing.assert_allclose(got, signal + noise, rtol=0, atol=1e-6)  # float32 summation order differs
    assert float(src._noise_scale) == pytest.approx(0.2 * SIGNAL_STD * float(_HASH_UNIT))


def test_any_split_gives_the_same_bits():
    src = synthetic_rows(TableSpec("t", 5000, 24), 0, SyntheticWeightsConfig(seed=1))
    whole = src.read(0, 5000)
    parts = np.concatenate([src.read(a, b) for a, b in ((0, 1), (1, 333), (333, 4096), (4096, 5000))])
    assert whole.tobytes() == parts.tobytes()


def test_noise_has_mean_0_variance_1_and_is_bounded():
    src = HashSyntheticRows(TableSpec("t", 20_000, 64), 0, SyntheticWeightsConfig(seed=3))
    signal = HashSyntheticRows(TableSpec("t", 20_000, 64), 0, SyntheticWeightsConfig(seed=3, noise_ratio=0))
    z = (src.read(0, 20_000).astype(np.float64) - signal.read(0, 20_000)) / float(src.noise_std)
    # 1.28M draws: the mean within 5 standard errors, the variance within 1%; Irwin-Hall(4) is bounded by
    # 510 / 147.8 = 3.45 and has kurtosis 3 - 1.2 / 4 = 2.7
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and z.var() == pytest.approx(1.0, rel=0.01)
    assert np.abs(z).max() <= 3.46 and (z**4).mean() == pytest.approx(2.7, rel=0.02)
    # neighbours (columns, rows) uncorrelated
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 0.01


def test_seed_and_table_change_the_rows_and_a_bad_generator_is_refused():
    t = TableSpec("t", 300, 16)
    a = synthetic_rows(t, 0, SyntheticWeightsConfig(seed=1)).read(0, 300)
    assert not np.array_equal(a, synthetic_rows(t, 0, SyntheticWeightsConfig(seed=2)).read(0, 300))
    assert not np.array_equal(a, synthetic_rows(t, 1, SyntheticWeightsConfig(seed=1)).read(0, 300))
    with pytest.raises(InputError, match="generator"):
        SyntheticWeightsConfig(generator="nope")

"""The dense model: shapes, the dot interaction against the naive reference, seeding, weight files."""

import re

import numpy as np
import pytest

from emulator.dense import DenseConfig, DenseModel, dense_features, interact_features, weight_shapes
from tracegen.errors import InputError

from tests.naive import interact_features_naive

SMALL = DenseConfig(num_dense_features=5, bottom_mlp=(12, 8), top_mlp=(10, 1), seed=7)


def _pooled(rng, batch, dims):
    return [rng.standard_normal((batch, d), dtype=np.float32) * np.float32(0.2) for d in dims]


def test_weight_shapes_of_a_small_model():
    shapes = weight_shapes(SMALL, [8, 8, 4])
    # bottom 5 -> 12 -> 8; table 2 (dim 4) projected to 8; n = 4 vectors -> 4*3/2 = 6 dots; top (8 + 6) -> 10 -> 1
    assert shapes == {
        "bottom.0.weight": (12, 5), "bottom.0.bias": (12,), "bottom.1.weight": (8, 12), "bottom.1.bias": (8,),
        "proj.2.weight": (8, 4),
        "top.0.weight": (10, 14), "top.0.bias": (10,), "top.1.weight": (1, 10), "top.1.bias": (1,),
    }


def test_default_bottom_ends_in_the_largest_table_dim():
    assert DenseConfig().bottom_layers([16, 8, 16]) == (512, 256, 16)
    with pytest.raises(ValueError):
        DenseConfig(top_mlp=(512, 2))


def test_forward_shapes_dtype_and_range(rng):
    dims = [8, 8, 4]
    m = DenseModel(SMALL, dims)
    x = dense_features(0, 0, 6, 5)
    p = m.forward(x, _pooled(rng, 6, dims))
    assert p.shape == (6,) and p.dtype == np.float32
    assert np.all((p > 0) & (p < 1))
    with pytest.raises(ValueError):
        m.forward(x, _pooled(rng, 6, [8, 8]))  # one table short


def test_interaction_equals_naive_reference(rng):
    h = rng.standard_normal((5, 6), dtype=np.float32)
    embs = _pooled(rng, 5, [6, 6, 6])
    got = interact_features(h, embs)
    assert got.shape == (5, 6 + 4 * 3 // 2)  # d + n(n-1)/2, n = 4
    np.testing.assert_allclose(got, interact_features_naive(h, embs), rtol=1e-5, atol=1e-6)


def test_interaction_order_by_hand():
    # x0 = (1, 0), x1 = (0, 2), x2 = (3, 1): dots in DLRM order (1,0)=0, (2,0)=3, (2,1)=2
    h = np.array([[1, 0]], np.float32)
    got = interact_features(h, [np.array([[0, 2]], np.float32), np.array([[3, 1]], np.float32)])
    assert got.tolist() == [[1, 0, 0, 3, 2]]


def test_forward_equals_a_naive_forward(rng):
    dims = [8, 4]
    m = DenseModel(SMALL, dims)
    x = dense_features(1, 3, 4, 5)
    pooled = _pooled(rng, 4, dims)
    w = {k: v.astype(np.float64) for k, v in m.weights.items()}
    h = x.astype(np.float64)
    for k in range(2):
        h = np.maximum(h @ w[f"bottom.{k}.weight"].T + w[f"bottom.{k}.bias"], 0)
    embs = [pooled[0].astype(np.float64), pooled[1].astype(np.float64) @ w["proj.1.weight"].T]
    z = interact_features_naive(h, embs)
    z = np.maximum(z @ w["top.0.weight"].T + w["top.0.bias"], 0) @ w["top.1.weight"].T + w["top.1.bias"]
    want = 1 / (1 + np.exp(-z[:, 0]))
    np.testing.assert_allclose(m.forward(x, pooled), want, rtol=1e-4, atol=1e-6)


def test_seeded_weights_are_deterministic_per_seed():
    a, b = DenseModel(SMALL, [8, 4]), DenseModel(SMALL, [8, 4])
    c = DenseModel(DenseConfig(5, (12, 8), (10, 1), seed=8), [8, 4])
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert not np.array_equal(a.weights["bottom.0.weight"], c.weights["bottom.0.weight"])
    assert all(v.dtype == np.float32 for v in a.weights.values())


def test_dense_features_deterministic_non_negative():
    x = dense_features(5, 2, 100, 13)
    assert x.shape == (100, 13) and x.dtype == np.float32
    assert np.array_equal(x, dense_features(5, 2, 100, 13))
    assert not np.array_equal(x, dense_features(5, 3, 100, 13))
    assert x.min() >= 0 and (x == 0).mean() > 0.1  # 20 % missing (plus counts that floor to 0)
    # log1p of whole counts: expm1 gives integers back
    np.testing.assert_allclose(np.expm1(x.astype(np.float64)), np.round(np.expm1(x.astype(np.float64))), atol=1e-2)


def test_weights_round_trip_through_npz(tmp_path, rng):
    dims = [8, 4]
    m = DenseModel(SMALL, dims)
    m.save(tmp_path / "w.npz")
    back = DenseModel.load(tmp_path / "w.npz", SMALL, dims)
    assert back.source == str(tmp_path / "w.npz")
    x = dense_features(0, 0, 3, 5)
    pooled = _pooled(rng, 3, dims)
    assert np.array_equal(m.forward(x, pooled), back.forward(x, pooled))


def test_bad_npz_raises_input_error_naming_the_file(tmp_path):
    dims = [8, 4]
    good = DenseModel(SMALL, dims).weights
    bad_shape = dict(good, **{"top.0.weight": np.zeros((10, 13), np.float32)})
    missing = {k: v for k, v in good.items() if k != "proj.1.weight"}
    extra = dict(good, extra=np.zeros(1))
    for name, w in (("shape", bad_shape), ("missing", missing), ("extra", extra)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **w)
        with pytest.raises(InputError, match=re.escape(str(path))):
            DenseModel.load(path, SMALL, dims)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="junk.npz"):
        DenseModel.load(junk, SMALL, dims)
    with pytest.raises(InputError, match="not found"):
        DenseModel.load(tmp_path / "none.npz", SMALL, dims)


def test_reusing_the_bottom_output_changes_nothing(rng):
    dims = [8, 4]
    m = DenseModel(SMALL, dims)
    x = dense_features(2, 0, 7, 5)
    pooled = _pooled(rng, 7, dims)
    assert np.array_equal(m.forward(x, pooled), m.forward(x, pooled, bottom_out=m.bottom(x)))

"""The optional dense part of the model: DLRM's bottom MLP, dot interaction and top MLP.

SCRec serves the embedding lookups; the MLPs (its "MLP cores") turn the pooled
embeddings and the dense features of each sample into a click probability.
This module is that part, on the host, in float32, with every matrix product a
NumPy ``matmul`` (SGEMM in the BLAS NumPy is linked to):

1. bottom MLP: ``num_dense_features -> bottom_mlp[0] -> ... -> bottom_mlp[-1] = d``,
   ReLU after every layer (DLRM's default, ``sigmoid_bot = -1``);
2. projection: a table whose ``dim`` is not ``d`` has its pooled embedding
   mapped to ``d`` by a fixed linear map ``P_t`` of shape ``(d, dim_t)``, entries
   ``N(0, 1/d)`` (so ``E|P_t e|^2 = |e|^2``), seeded like the other weights and
   stored with them (``proj.<t>.weight``). DLRM itself requires equal dims; this
   is the smallest change that lets a store with mixed dims run. Tables whose
   dim is ``d`` are used as they are;
3. dot interaction (DLRM's ``interact_features`` with ``arch_interaction_op =
   "dot"``, no self-interaction): stack the bottom output and the ``T``
   embeddings into ``(B, n, d)``, ``n = T + 1``, take all pairwise dot products
   ``Z = X X^T`` and keep the strict lower triangle in DLRM's order
   (``(1,0), (2,0), (2,1), (3,0), ...``; ``Z`` is symmetric, so this is the
   upper triangle without the diagonal), then concatenate ``[bottom output, Z_flat]``:
   ``d + n (n - 1) / 2`` features;
4. top MLP: ReLU after every layer but the last, whose single output goes
   through a sigmoid.

Weights are either seeded or loaded from an ``.npz``. Seeded weights are
Xavier-like in the form suited to ReLU layers (He et al. 2015): weights
``N(0, sqrt(2 / fan_in))``, biases 0. DLRM's own ``create_mlp`` draws
``N(0, sqrt(2 / (fan_in + fan_out)))`` and biases ``N(0, sqrt(1 / fan_out))``;
untrained, that collapses the logits (standard deviation 0.024 over the tiny
preset's trace, every probability near 0.65), so labels drawn from it would
hardly depend on the inputs. The He form keeps a logit standard deviation of
about 0.9 on that trace, of which about 0.5 comes from the embeddings (the
logits minus those with every embedding zeroed), which is what an accuracy
report needs from its ground-truth model. With many small tables the spread
is smaller (``screc demo``'s 26-table store: logit std 0.24, 0.16 from the
embeddings; the 325 embedding-embedding dots of synthetic rows are tiny), so
labels drawn from it give an AUC near 0.56: an untrained model is a fixed
random function, not a CTR model; load trained weights for real figures.
Weights are named ``bottom.<k>.weight`` (``(out, in)``,
torch's ``nn.Linear`` layout), ``bottom.<k>.bias``, ``top.<k>.weight``,
``top.<k>.bias`` and ``proj.<t>.weight``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tracegen.errors import InputError

DEFAULT_BOTTOM_HIDDEN = (512, 256)
_DENSE_FEATURE_STREAM = 0xDE45  # seed-sequence tags, so dense features and weights never share a stream
_WEIGHT_STREAM = 0x3E16


@dataclass(frozen=True)
class DenseConfig:
    """Shape and seed of the dense model.

    ``bottom_mlp`` lists the widths of the bottom MLP's layers; its last entry
    is the interaction dim ``d``. ``None`` means ``(512, 256, d)`` with ``d`` the
    largest embedding dim of the tables (see :meth:`bottom_layers`).
    ``top_mlp`` must end in 1 (the logit).
    """

    num_dense_features: int = 13
    bottom_mlp: tuple[int, ...] | None = None
    top_mlp: tuple[int, ...] = (512, 256, 1)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_dense_features < 1:
            raise ValueError(f"num_dense_features must be >= 1, got {self.num_dense_features}")
        if self.bottom_mlp is not None and (not self.bottom_mlp or min(self.bottom_mlp) < 1):
            raise ValueError(f"bottom_mlp must be a non-empty tuple of widths >= 1, got {self.bottom_mlp}")
        if not self.top_mlp or min(self.top_mlp) < 1 or self.top_mlp[-1] != 1:
            raise ValueError(f"top_mlp must be widths >= 1 ending in 1, got {self.top_mlp}")

    def bottom_layers(self, table_dims: Sequence[int]) -> tuple[int, ...]:
        if self.bottom_mlp is not None:
            return tuple(int(w) for w in self.bottom_mlp)
        return DEFAULT_BOTTOM_HIDDEN + (int(max(table_dims)),)


def weight_shapes(config: DenseConfig, table_dims: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight of the model for tables of ``table_dims``."""
    if not table_dims or min(table_dims) < 1:
        raise ValueError(f"table_dims must be a non-empty list of dims >= 1, got {list(table_dims)}")
    bottom = config.bottom_layers(table_dims)
    d = bottom[-1]
    n = len(table_dims) + 1
    shapes: dict[str, tuple[int, ...]] = {}
    fan_in = config.num_dense_features
    for k, w in enumerate(bottom):
        shapes[f"bottom.{k}.weight"] = (w, fan_in)
        shapes[f"bottom.{k}.bias"] = (w,)
        fan_in = w
    for t, dim in enumerate(table_dims):
        if dim != d:
            shapes[f"proj.{t}.weight"] = (d, int(dim))
    fan_in = d + n * (n - 1) // 2
    for k, w in enumerate(config.top_mlp):
        shapes[f"top.{k}.weight"] = (w, fan_in)
        shapes[f"top.{k}.bias"] = (w,)
        fan_in = w
    return shapes


def seeded_weights(config: DenseConfig, table_dims: Sequence[int]) -> dict[str, np.ndarray]:
    """float32 weights ``N(0, sqrt(2 / fan_in))``, biases 0, projections ``N(0, 1/d)``
    (see the module docstring); each array has its own stream ``(seed, tag, position)``."""
    out = {}
    for pos, (name, shape) in enumerate(weight_shapes(config, table_dims).items()):
        if name.endswith(".bias"):
            out[name] = np.zeros(shape, np.float32)
            continue
        rng = np.random.default_rng([config.seed, _WEIGHT_STREAM, pos])
        std = np.sqrt(1.0 / shape[0]) if name.startswith("proj.") else np.sqrt(2.0 / shape[1])
        out[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
    return out


def interact_features(bottom_out: np.ndarray, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """DLRM's dot interaction: ``[bottom_out, Z_flat]``, ``(B, d + n (n - 1) / 2)``, ``n = 1 + len(embeddings)``.

    Every input is ``(B, d)`` float32; pairs ``(i, j)`` with ``j < i`` in row-major order.
    """
    x = np.stack([bottom_out, *embeddings], axis=1)  # (B, n, d)
    z = np.matmul(x, x.transpose(0, 2, 1))  # (B, n, n), batched SGEMM
    li, lj = np.tril_indices(x.shape[1], -1)
    return np.concatenate([bottom_out, z[:, li, lj]], axis=1)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0.0), out=x)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Overflow-free logistic in float32."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


class DenseModel:
    """The MLPs and interaction of a DLRM over ``T`` tables of dims ``table_dims``."""

    def __init__(self, config: DenseConfig, table_dims: Sequence[int],
                 weights: Mapping[str, np.ndarray] | None = None, *, source: str | os.PathLike | None = None):
        self.config = config
        self.table_dims = tuple(int(d) for d in table_dims)
        self.shapes = weight_shapes(config, self.table_dims)
        self.bottom_layers = config.bottom_layers(self.table_dims)
        self.dim = self.bottom_layers[-1]
        seeded = weights is None
        if seeded:
            weights = seeded_weights(config, self.table_dims)
        self.weights = _checked_weights(weights, self.shapes, source)
        self.source = os.fspath(source) if source is not None else ("seeded" if seeded else "given")
        w = self.weights
        self._bottom = [(w[f"bottom.{k}.weight"], w[f"bottom.{k}.bias"]) for k in range(len(self.bottom_layers))]
        self._top = [(w[f"top.{k}.weight"], w[f"top.{k}.bias"]) for k in range(len(config.top_mlp))]
        self._proj = [w.get(f"proj.{t}.weight") for t in range(len(self.table_dims))]

    @classmethod
    def load(cls, path: str | os.PathLike, config: DenseConfig, table_dims: Sequence[int]) -> "DenseModel":
        """Weights from an ``.npz`` (names and shapes as :func:`weight_shapes`); mismatches raise InputError."""
        p = Path(path)
        if not p.is_file():
            raise InputError("dense weights file not found", p)
        try:
            with np.load(p, allow_pickle=False) as z:
                weights = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"not a readable .npz of dense weights ({e.__class__.__name__})", p) from None
        return cls(config, table_dims, weights, source=p)

    def save(self, path: str | os.PathLike) -> None:
        from tracegen.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **self.weights)

    # --- inference ---------------------------------------------------------------------------
    def bottom(self, dense_x: np.ndarray) -> np.ndarray:
        """The bottom MLP's output ``(B, d)`` for dense features ``(B, F)``."""
        h = np.asarray(dense_x, dtype=np.float32)
        for w, b in self._bottom:
            h = _relu(np.matmul(h, w.T) + b)
        return h

    def logits(self, dense_x: np.ndarray, pooled: Sequence[np.ndarray], *,
               bottom_out: np.ndarray | None = None) -> np.ndarray:
        """``(B,)`` float32 logits; see the module docstring for the layers. ``bottom_out``: the
        bottom MLP's output for ``dense_x`` when already computed (:meth:`bottom`), to reuse it."""
        dense_x = self._check_inputs(dense_x, pooled)
        h = self.bottom(dense_x) if bottom_out is None else bottom_out
        if h.shape != (dense_x.shape[0], self.dim):
            raise ValueError(f"bottom_out must be {(dense_x.shape[0], self.dim)}, got {h.shape}")
        embs = [e if p is None else np.matmul(e, p.T) for e, p in zip(pooled, self._proj)]
        x = interact_features(h, embs)
        for k, (w, b) in enumerate(self._top):
            x = np.matmul(x, w.T) + b
            if k < len(self._top) - 1:
                x = _relu(x)
        return x[:, 0].astype(np.float32, copy=False)

    def forward(self, dense_x: np.ndarray, pooled: Sequence[np.ndarray], *,
                bottom_out: np.ndarray | None = None) -> np.ndarray:
        """Click probabilities ``(B,)`` float32 from dense features ``(B, F)`` and pooled embeddings
        ``[(B, dim_t)]`` (float32, one per table)."""
        return _sigmoid(self.logits(dense_x, pooled, bottom_out=bottom_out))

    def _check_inputs(self, dense_x: np.ndarray, pooled: Sequence[np.ndarray]) -> np.ndarray:
        dense_x = np.asarray(dense_x)
        if dense_x.ndim != 2 or dense_x.shape[1] != self.config.num_dense_features:
            raise ValueError(f"dense_x must be (B, {self.config.num_dense_features}), got {dense_x.shape}")
        if len(pooled) != len(self.table_dims):
            raise ValueError(f"expected {len(self.table_dims)} pooled embeddings, got {len(pooled)}")
        for t, (e, d) in enumerate(zip(pooled, self.table_dims)):
            if e.shape != (dense_x.shape[0], d) or e.dtype != np.float32:
                raise ValueError(f"pooled embedding {t} must be float32 {(dense_x.shape[0], d)}, "
                                 f"got {e.dtype} {e.shape}")
        return dense_x.astype(np.float32, copy=False)


def _checked_weights(weights: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
                     source: str | os.PathLike | None) -> dict[str, np.ndarray]:
    """float32 C-contiguous copies of ``weights``; a missing, extra, misshapen or non-finite array
    raises InputError naming ``source``."""
    missing = [k for k in shapes if k not in weights]
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        what = (f"missing {', '.join(missing[:4])}" if missing else "") + \
               ("; " if missing and extra else "") + (f"unexpected {', '.join(extra[:4])}" if extra else "")
        raise InputError(f"dense weights do not match the model ({what})", source)
    out = {}
    for name, shape in shapes.items():
        a = np.asarray(weights[name])
        if a.shape != shape:
            raise InputError(f"dense weight {name} has shape {a.shape}, the model needs {shape}", source)
        if a.dtype.kind not in "fiu":
            raise InputError(f"dense weight {name} has dtype {a.dtype}, not a number", source)
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"dense weight {name} has non-finite values", source)
        out[name] = a
    return out


def dense_features(seed: int, batch_index: int, batch_size: int, num_features: int = 13) -> np.ndarray:
    """Synthetic dense inputs of one batch, ``(B, F)`` float32, the same for the same arguments.

    Like Criteo's 13 integer features after DLRM's ``log(1 + x)``: per sample and
    feature a count ``floor(LogNormal(mu_f, 1.5))``, missing (0) with probability
    0.2, then ``log1p``; the location ``mu_f`` of feature ``f`` is in ``[0, 3)``,
    fixed by ``seed`` (shared by every batch). Values are >= 0.
    """
    if batch_size < 0 or num_features < 1:
        raise ValueError(f"need batch_size >= 0 and num_features >= 1, got {batch_size}, {num_features}")
    mu = np.random.default_rng([seed, _DENSE_FEATURE_STREAM]).uniform(0.0, 3.0, num_features)
    rng = np.random.default_rng([seed, _DENSE_FEATURE_STREAM, batch_index])
    counts = np.floor(rng.lognormal(mu, 1.5, size=(batch_size, num_features)))
    counts[rng.random((batch_size, num_features)) < 0.2] = 0.0
    return np.log1p(counts).astype(np.float32)

"""Built-in model presets, and loading a model from a preset name or a spec file.

Presets:

``tiny``
    Four small tables (500 to 3,000 rows, dims 8 and 16, one fp16), one of each
    pooling kind (fixed, uniform, poisson, lognormal), batch 32. Fast enough for
    every test.
``criteo-kaggle``
    The DLRM Criteo Kaggle (Display Advertising Challenge) model: 26 one-hot
    categorical features, dim 16, fp32, batch 2048. Cardinalities are the ones
    the facebookresearch/dlrm Kaggle preprocessing reports
    (``--arch-embedding-size=1460-583-10131227-...-105-142572``); checked
    against several public copies of that list, e.g. real-zhangzhe/wukong
    ``exp/train_wukong_on_criteo_kaggle_dataset.py`` ("from dataset.npz").
``mlperf-dlrmv2``
    The MLPerf DLRMv2 (DCNv2, Criteo 1TB multi-hot) model: 26 tables, dim 128,
    fp32, batch 2048, row counts capped at 40M as in the reference, and the
    synthetic multi-hot sizes as fixed pooling factors. Both lists checked
    against mlcommons/training ``recommendation_v2/torchrec_dlrm/README.MD``
    (``--num_embeddings_per_feature 40000000,39060,...`` and
    ``--multi_hot_sizes 3,2,1,...``), which the MLPerf inference reference and
    the torchrec dlrm_v2 example repeat.

``meta-2021``, ``meta-2022``
    Sized like Meta's dlrm_datasets embedding-lookup traces
    (facebookresearch/dlrm_datasets, ``embedding_bag/2021`` and ``2022``):
    856 tables at batch 65,536 with 15.81 lookups per table per sample
    (887,017,990 lookups in the full 2021 file, ``locality_stats.txt``, copied
    in ../shared/data), and 788 tables at batch 131,072 with about 13.6 (the
    2022 figures as published with that repository; its statistics file is not
    copied here). The files give lookups, not table sizes, so rows are chosen:
    lognormal over the tables (at stratified quantiles in a seeded order, so
    the total is exact, not a draw), median ``META_ROWS_MEDIAN`` = 50,000 rows
    and log-spread ``META_ROWS_SIGMA`` = 3.0, clipped to [100, 2**31 - 1]:
    2.83G rows (the largest table 849M rows) and, with dims 64/128/128/256
    fp32, 1.87 TB for meta-2021 (1.87 TB for meta-2022). Two constraints set
    the two numbers: the model must reach terabytes (the regime SCRec is
    about), and the published locality must be reachable: with Zipf tables,
    lookups per row (``B * pooling / rows``) decide how many rows are touched
    once and how many lookups fall on rows touched thousands of times, and a
    median of 2M rows (spread 1.5) left the best fit of the 2021 histograms at
    L1 0.35 on the lookup shares, whereas 50,000 (spread 3.0) fits every block
    of the 2021 file within 0.07 (the per-table Zipf fit that preceded ``screc trace fit``; the terabytes
    then come from a long tail of large, rarely read tables, as in production
    models). Mean bag sizes are lognormal over the tables (spread 1.0), bags
    lognormal within a table (sigma 0.8, clipped to [0, 10 x mean]). Each
    table's skew comes from its density ``log10(lookups per batch / rows)``
    through ``META_ALPHA_BY_DENSITY``, the smoothed per-table skews of the fit
    to the full 2021 file (expected L1 0.035 / 0.085 against it as is; the
    per-table fit, ``--params``, reaches 0.024 / 0.040). Full size is for
    statistics and planning (``screc trace stats --model``, ``screc plan
    solve --modelled``); ``--scale 0.001 --batch-size 4096`` gives a model of
    about 1.9 GB and batches of 55M lookups (a smaller batch moves the heads of
    skewed tables down by about ``log2`` of the reduction, so fit at the batch size you generate). The
    locality model of :mod:`tracegen.fit` (``--params``) replaces the preset's skews; it was tried with rows
    floored at 4x each table's lookups per batch (3.65 TB) and fitted worse (L1 0.09 against 0.01 in sample),
    so the rows stay as they are.

Skew: every preset table gets ``zipf_alpha = DEFAULT_ZIPF_ALPHA`` (1.05) unless
stated otherwise. Published one-hot Criteo features and Meta's production
traces have rank-frequency slopes close to 1 for the large tables; 1.05 is the
usual "strongly skewed but not degenerate" choice (a finite table with
alpha > 1 keeps a bounded hot set as it grows). ``tiny`` varies alpha per table
(0.6 to 1.2) so that tests see more than one skew; the meta presets take it from
the 2021 Zipf fit (above).

``--scale`` multiplies row counts (``ModelSpec.scaled``; at least one row each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Callable

import numpy as np

from tracegen.errors import InputError
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec, load_spec_file

DEFAULT_ZIPF_ALPHA = 1.05

CRITEO_KAGGLE_ROWS = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)

MLPERF_DLRMV2_ROWS = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)

MLPERF_DLRMV2_MULTI_HOT = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)


@dataclass(frozen=True)
class Preset:
    """A named model: a builder of its spec and a line saying where it comes from."""

    name: str
    description: str
    build: Callable[[], ModelSpec]


def _tiny() -> ModelSpec:
    tables = (
        TableSpec("t0", rows=500, dim=16, dtype="fp32", pooling=PoolingSpec.fixed(4), zipf_alpha=1.05),
        TableSpec("t1", rows=2000, dim=8, dtype="fp32",
                  pooling=PoolingSpec(kind="uniform", mean=4.5, min=1, max=8), zipf_alpha=0.9),
        TableSpec("t2", rows=3000, dim=16, dtype="fp16",
                  pooling=PoolingSpec(kind="poisson", mean=3.0, min=0, max=12), zipf_alpha=1.2),
        TableSpec("t3", rows=800, dim=8, dtype="fp32",
                  pooling=PoolingSpec(kind="lognormal", mean=6.0, min=1, max=40, sigma=0.8), zipf_alpha=0.6),
    )
    return ModelSpec(name="tiny", tables=tables, batch_size=32)


def _criteo_kaggle() -> ModelSpec:
    tables = tuple(
        TableSpec(f"c{i}", rows=rows, dim=16, dtype="fp32", pooling=PoolingSpec.fixed(1),
                  zipf_alpha=DEFAULT_ZIPF_ALPHA)
        for i, rows in enumerate(CRITEO_KAGGLE_ROWS)
    )
    return ModelSpec(name="criteo-kaggle", tables=tables, batch_size=2048)


def _mlperf_dlrmv2() -> ModelSpec:
    tables = tuple(
        TableSpec(f"c{i}", rows=rows, dim=128, dtype="fp32", pooling=PoolingSpec.fixed(hot),
                  zipf_alpha=DEFAULT_ZIPF_ALPHA)
        for i, (rows, hot) in enumerate(zip(MLPERF_DLRMV2_ROWS, MLPERF_DLRMV2_MULTI_HOT))
    )
    return ModelSpec(name="mlperf-dlrmv2", tables=tables, batch_size=2048)


# --- Meta's dlrm_datasets-sized models -------------------------------------------------------------

META2021_TABLES = 856
META2021_BATCH_SIZE = 65_536
META2021_LOOKUPS_PER_BATCH = 887_017_990  # fbgemm_t856_bs65536.pt, "Avg # of indices"
META2021_MEAN_POOLING = META2021_LOOKUPS_PER_BATCH / (META2021_BATCH_SIZE * META2021_TABLES)  # 15.81
META2022_TABLES = 788
META2022_BATCH_SIZE = 131_072
META2022_MEAN_POOLING = 13.6
META_ROWS_MEDIAN = 50_000
META_ROWS_SIGMA = 3.0
META_ROWS_MIN, META_ROWS_MAX = 100, 2**31 - 1
META_DIMS = (64, 128, 128, 256)
META_POOLING_SIGMA_TABLES = 1.0  # spread of the mean bag size across tables (lognormal)
META_POOLING_SIGMA_BAGS = 0.8  # spread of bag sizes within a table (lognormal)
META_POOLING_MAX_FACTOR = 10  # bags clipped at 10x the table's mean
# (density log10(lookups per batch / rows), alpha): the lookup-weighted mean skew per half decade of density of
# the former per-table Zipf fit to --block fbgemm_t856_bs65536.pt (runs/fits2021), smoothed into a curve
META_ALPHA_BY_DENSITY = (
    (-3.25, 1.4), (-2.75, 1.07), (-2.25, 0.91), (-1.75, 0.94), (-1.25, 0.88), (-0.75, 0.82), (-0.25, 0.72),
    (0.25, 0.38), (0.75, 0.18), (1.25, 0.03), (1.75, 0.46), (2.25, 0.58), (2.75, 0.6), (3.25, 0.56), (3.75, 0.28),
    (4.25, 0.46), (4.75, 0.96),
)


def _stratified_normal(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` standard-normal scores at the quantiles ``(i + 0.5) / n``, in a seeded random order."""
    nd = NormalDist()
    z = np.array([nd.inv_cdf((i + 0.5) / n) for i in range(n)])
    return z[rng.permutation(n)]


def meta_alpha(density_log10: np.ndarray) -> np.ndarray:
    """The skew of a table of the meta presets from its density ``log10(lookups per batch / rows)``."""
    d, a = zip(*META_ALPHA_BY_DENSITY)
    return np.interp(density_log10, d, a)


def meta_tables(n_tables: int, mean_pooling: float, batch_size: int, seed: int) -> tuple[TableSpec, ...]:
    """Tables of a meta preset: stratified lognormal rows and mean bag sizes, dims drawn from ``META_DIMS``, skew
    from :func:`meta_alpha`; the same ``seed``, the same tables."""
    rng = np.random.default_rng(seed)
    z_rows = _stratified_normal(n_tables, rng)
    z_pool = _stratified_normal(n_tables, rng)
    rows = np.clip(np.round(META_ROWS_MEDIAN * np.exp(META_ROWS_SIGMA * z_rows)), META_ROWS_MIN, META_ROWS_MAX)
    dims = np.array(META_DIMS)[rng.integers(0, len(META_DIMS), size=n_tables)]
    w = np.exp(META_POOLING_SIGMA_TABLES * z_pool)
    pool = mean_pooling * w / w.mean()
    alpha = np.round(meta_alpha(np.log10(batch_size * pool / rows)), 3)
    return tuple(
        TableSpec(f"t{i}", rows=int(rows[i]), dim=int(dims[i]), dtype="fp32",
                  pooling=PoolingSpec(kind="lognormal", mean=float(pool[i]), min=0,
                                      max=int(math.ceil(META_POOLING_MAX_FACTOR * pool[i])),
                                      sigma=META_POOLING_SIGMA_BAGS),
                  zipf_alpha=float(alpha[i]))
        for i in range(n_tables))


def _meta2021() -> ModelSpec:
    return ModelSpec("meta-2021", meta_tables(META2021_TABLES, META2021_MEAN_POOLING, META2021_BATCH_SIZE, 2021),
                     batch_size=META2021_BATCH_SIZE)


def _meta2022() -> ModelSpec:
    return ModelSpec("meta-2022", meta_tables(META2022_TABLES, META2022_MEAN_POOLING, META2022_BATCH_SIZE, 2022),
                     batch_size=META2022_BATCH_SIZE)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", "4 small tables, every pooling kind, batch 32 (tests and demos)", _tiny),
        Preset("criteo-kaggle", "DLRM Criteo Kaggle: 26 one-hot tables, dim 16, batch 2048", _criteo_kaggle),
        Preset("mlperf-dlrmv2", "MLPerf DLRMv2 Criteo 1TB multi-hot: 26 tables, dim 128, batch 2048",
               _mlperf_dlrmv2),
        Preset("meta-2021", "Meta dlrm_datasets 2021 sized: 856 tables, batch 65,536, 15.8 lookups/table/sample, TBs",
               _meta2021),
        Preset("meta-2022", "Meta dlrm_datasets 2022 sized: 788 tables, batch 131,072, 13.6 lookups/table/sample, TBs",
               _meta2022),
    )
}


def _check_scale(scale: float) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise InputError(f"scale {scale!r} is not a number") from None
    if not (math.isfinite(s) and s > 0):
        raise InputError(f"scale must be a finite number > 0, got {scale!r}")
    return s


def _apply(spec: ModelSpec, scale: float, batch_size: int | None) -> ModelSpec:
    spec = spec.scaled(_check_scale(scale))
    if batch_size is not None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        spec = spec.with_batch_size(int(batch_size))
    return spec


def get_preset(name: str, scale: float = 1.0, batch_size: int | None = None) -> ModelSpec:
    """The spec of preset ``name``, rows scaled by ``scale``, batch size optionally overridden.

    An unknown name raises :class:`InputError` listing the valid names.
    """
    preset = PRESETS.get(name)
    if preset is None:
        raise InputError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return _apply(preset.build(), scale, batch_size)


def load_model(name_or_path: str, scale: float = 1.0, batch_size: int | None = None) -> ModelSpec:
    """A preset name, or a ``.json`` / ``.toml`` spec file, scaled and with an optional batch size.

    A name that is neither a preset nor a spec file raises :class:`InputError`.
    """
    text = str(name_or_path)
    if text in PRESETS:
        return get_preset(text, scale, batch_size)
    p = Path(text)
    if p.suffix.lower() in (".json", ".toml") or p.exists():
        return _apply(load_spec_file(p), scale, batch_size)
    raise InputError(f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor a .json/.toml spec file")

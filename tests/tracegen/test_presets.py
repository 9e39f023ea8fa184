"""Model presets and loading a model from a name or a spec file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tracegen.errors import InputError
from tracegen.presets import (
    CRITEO_KAGGLE_ROWS,
    DEFAULT_ZIPF_ALPHA,
    MLPERF_DLRMV2_MULTI_HOT,
    MLPERF_DLRMV2_ROWS,
    PRESETS,
    get_preset,
    load_model,
)


def test_registry_names():
    assert list(PRESETS) == ["tiny", "criteo-kaggle", "mlperf-dlrmv2", "meta-2021", "meta-2022"]


def test_tiny():
    s = get_preset("tiny")
    assert s.batch_size == 32 and s.num_tables == 4
    assert {t.pooling.kind for t in s.tables} == {"fixed", "uniform", "poisson", "lognormal"}
    assert [t.dtype for t in s.tables].count("fp16") == 1
    assert {t.dim for t in s.tables} == {8, 16}
    assert all(300 <= t.rows <= 5000 for t in s.tables)
    # 500*16*4 + 2000*8*4 + 3000*16*2 + 800*8*4 = 32000 + 64000 + 96000 + 25600
    assert s.total_bytes == 217_600


def test_criteo_kaggle():
    s = get_preset("criteo-kaggle")
    assert s.num_tables == 26 and s.batch_size == 2048
    assert tuple(t.rows for t in s.tables) == CRITEO_KAGGLE_ROWS
    # the total DLRM's Kaggle loader reports (num_embed = 33,762,577)
    assert sum(t.rows for t in s.tables) == 33_762_577
    assert all(t.dim == 16 and t.dtype == "fp32" and t.pooling.kind == "fixed" and t.pooling.mean == 1
               for t in s.tables)
    assert all(t.zipf_alpha == DEFAULT_ZIPF_ALPHA == 1.05 for t in s.tables)


def test_mlperf_dlrmv2():
    s = get_preset("mlperf-dlrmv2")
    assert s.num_tables == 26 and s.batch_size == 2048
    assert tuple(t.rows for t in s.tables) == MLPERF_DLRMV2_ROWS
    # five tables capped at 40M (c0, c9, c19, c20, c21) + 4,184,588 rows in the other 21
    assert [i for i, t in enumerate(s.tables) if t.rows == 40_000_000] == [0, 9, 19, 20, 21]
    assert sum(t.rows for t in s.tables) == 204_184_588
    assert tuple(int(t.pooling.mean) for t in s.tables) == MLPERF_DLRMV2_MULTI_HOT
    assert sum(MLPERF_DLRMV2_MULTI_HOT) == 214  # lookups per sample; table c20 alone makes 100
    assert all(t.dim == 128 and t.dtype == "fp32" for t in s.tables)
    # 204,184,588 rows * 512 bytes = 104,542,509,056 bytes (97.4 GiB)
    assert s.total_bytes == 204_184_588 * 512


def test_scale_and_batch_size():
    s = get_preset("criteo-kaggle", scale=0.01, batch_size=64)
    assert s.batch_size == 64
    assert s.tables[0].rows == 15  # round(1460 * 0.01) = round(14.6)
    assert s.tables[2].rows == 101_312  # round(10,131,227 * 0.01) = round(101312.27)
    assert s.tables[8].rows == 1  # round(0.03) = 0, kept at 1 row
    assert get_preset("tiny", scale=2.0).tables[0].rows == 1000


def test_unknown_preset_lists_the_names():
    with pytest.raises(InputError) as e:
        get_preset("criteo")
    assert "tiny, criteo-kaggle, mlperf-dlrmv2, meta-2021, meta-2022" in str(e.value)


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf, "x"])
def test_bad_scale(scale):
    with pytest.raises(InputError, match="scale"):
        get_preset("tiny", scale=scale)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size(batch_size):
    with pytest.raises(InputError, match="batch size"):
        get_preset("tiny", batch_size=batch_size)


def test_load_model_from_json_and_toml(tmp_path):
    spec = {"name": "mine", "batch_size": 16,
            "tables": [{"rows": 100, "dim": 8}, {"name": "b", "rows": 10, "dim": 4, "dtype": "fp16",
                                                 "pooling": {"kind": "uniform", "min": 1, "max": 3}}]}
    p = tmp_path / "m.json"
    p.write_text(json.dumps(spec))
    s = load_model(str(p), scale=0.5, batch_size=8)
    assert s.batch_size == 8 and [t.rows for t in s.tables] == [50, 5]
    t = tmp_path / "m.toml"
    t.write_text('name = "mine"\nbatch_size = 4\n[[tables]]\nrows = 7\ndim = 2\n')
    s = load_model(str(t))
    assert s.batch_size == 4 and s.tables[0].rows == 7 and s.tables[0].name == "t0"


def test_load_model_by_name():
    assert load_model("tiny") == get_preset("tiny")


def test_load_model_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="spec file not found"):
        load_model(str(tmp_path / "missing.json"))
    with pytest.raises(InputError, match="neither a preset"):
        load_model("no-such-model")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad model spec"):
        load_model(str(bad))


@pytest.mark.parametrize("name, tables, batch, pooling", [
    ("meta-2021", 856, 65_536, 887_017_990 / (856 * 65_536)),  # 15.81 lookups per table per sample
    ("meta-2022", 788, 131_072, 13.6),
])
def test_meta_presets(name, tables, batch, pooling):
    from tracegen.locality_model import effective_pooling_mean

    s = get_preset(name)
    assert s.num_tables == tables and s.batch_size == batch
    assert np.mean([t.pooling.mean for t in s.tables]) == pytest.approx(pooling, rel=1e-9)
    # what the generator draws (bags rounded and clipped) is within 0.3% of it
    assert np.mean([effective_pooling_mean(t.pooling) for t in s.tables]) == pytest.approx(pooling, rel=3e-3)
    assert 1e12 < s.total_bytes < 1e13  # terabytes
    assert all(100 <= t.rows < 2**31 for t in s.tables) and all(0 <= t.zipf_alpha <= 2 for t in s.tables)
    assert get_preset(name) == s  # deterministic
    small = get_preset(name, scale=0.001, batch_size=4096)
    assert small.total_bytes < 3e9 and small.batch_size == 4096


def test_meta_2021_expected_locality_is_near_the_published_one():
    from tracegen.locality_model import spec_locality

    # fbgemm_t856_bs65536.pt: shares of unique rows and of lookups per reuse bin, unique/lookups = 0.1448
    unique = (0.473, 0.152, 0.139, 0.112, 0.072, 0.032, 0.011, 0.005, 0.002, 0.001) + (0.0,) * 7
    lookups = (0.069, 0.044, 0.068, 0.101, 0.121, 0.104, 0.073, 0.058, 0.052, 0.050, 0.049, 0.048, 0.048, 0.043,
               0.031, 0.023, 0.019)
    e = spec_locality(get_preset("meta-2021"))
    assert np.abs(e.unique_share - unique).sum() < 0.1 and np.abs(e.lookup_share - lookups).sum() < 0.1
    assert e.unique_per_lookup == pytest.approx(0.1448, rel=0.1)

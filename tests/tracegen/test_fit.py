"""Calibration to locality_stats.txt blocks: targets, the fit on Meta's 2021 file, parameters, transfer rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracegen.calibrate import (
    CalibrationConfig,
    CalibrationTarget,
    calibrate,
    check_subset,
    load_params_file,
    load_targets,
)
from tracegen.errors import InputError
from tracegen.generate import GeneratorParams, generate_trace
from tracegen.locality import format_locality_stats, parse_locality_stats, trace_stats
from tracegen.locality_model import TableLayout, expected_locality
from tracegen.presets import get_preset
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec
from tracegen.trace_io import TraceReader

META_2021 = Path(__file__).resolve().parents[1] / "data" / "dlrm_datasets_2021_locality_stats.txt"
needs_meta = pytest.mark.skipif(not META_2021.is_file(), reason=f"{META_2021} (Meta's published stats) not present")
GOAL_L1 = 0.10


@needs_meta
def test_targets_from_the_2021_file():
    ts = load_targets(META_2021)
    assert len(ts) == 17 and all(t.num_tables == 856 and t.batch_size == 65536 for t in ts)
    full = ts[0]
    # 887,017,990 lookups / (856 tables * 65,536 samples) = 15.81; 128,435,723 / 887,017,990 = 0.1448
    assert full.lookups_per_table_per_sample == pytest.approx(15.812, abs=1e-3)
    assert full.unique_per_lookup == pytest.approx(0.14480, abs=1e-5)
    with pytest.raises(InputError, match="no block 'nope'; blocks: fbgemm_t856_bs65536.pt"):
        load_targets(META_2021, ["nope"])


def test_table_count_must_be_known(tmp_path):
    stats = parse_locality_stats(_write_block(tmp_path))["mine"]
    with pytest.raises(InputError, match="table count"):
        CalibrationTarget.from_stats("mine", stats)
    assert CalibrationTarget.from_stats("mine", stats, num_tables=6).num_tables == 6


@needs_meta
def test_fit_on_the_2021_file_meets_the_goal():
    """The published 856-table batch, fitted with meta-2021 at the published batch size: the generated check batch
    (64 tables, about 44M lookups) is within L1 0.10 of both histograms, and so is the expected whole batch."""
    target = load_targets(META_2021, ["fbgemm_t856_bs65536.pt"])[0]
    res = calibrate(get_preset("meta-2021"), target, CalibrationConfig(alpha_step=0.1, check_tables=64))
    m = res.check_measured
    assert m.unique_l1 <= GOAL_L1 and m.lookup_l1 <= GOAL_L1 and m.ratio_error < 0.02
    assert res.full.unique_l1 <= GOAL_L1 and res.full.lookup_l1 <= GOAL_L1 and res.full.ratio_error < 0.01
    # the generated batch is what the model expected (the model is what the whole-batch figure rests on)
    assert abs(m.unique_l1 - res.check_model.unique_l1) < 0.02 and abs(m.lookup_l1 - res.check_model.lookup_l1) < 0.03
    assert res.params.batch_size == 65536 and len(res.params.alpha_overrides) == 856
    assert res.params.pooling_scale == pytest.approx(1.0, abs=0.01)  # meta-2021 already has 15.8 per sample


def test_fit_recovers_a_generated_trace(tmp_path):
    """Statistics of a trace of known skews, written in the locality_stats.txt layout, are fitted back."""
    spec = _small_spec()
    truth = GeneratorParams(seed=3, num_batches=3, alpha_overrides=(("a", 1.1), ("b", 0.3), ("c", 0.9), ("d", 0.0)))
    generate_trace(spec, truth, tmp_path / "t.h5")
    with TraceReader(tmp_path / "t.h5") as r:
        loc = trace_stats(r).locality
    (tmp_path / "s.txt").write_text(format_locality_stats("small_t4_", loc) + "\n")
    target = load_targets(tmp_path / "s.txt")[0]
    res = calibrate(dataclass_alpha(spec, 0.5), target, CalibrationConfig(alpha_step=0.05, check_tables=0, seed=9))
    assert res.full.unique_l1 < 0.03 and res.full.lookup_l1 < 0.05 and res.full.ratio_error < 0.01
    assert res.check_measured.unique_l1 < 0.05 and res.check_measured.lookup_l1 < 0.08


def test_params_round_trip_through_the_calibration_document(tmp_path):
    spec = _small_spec()
    target = CalibrationTarget("x", 4096, 4, 4096 * 4 * 6.0, 0.2, (0.5, 0.2, 0.15, 0.1, 0.05) + (0.0,) * 12,
                               (0.2, 0.15, 0.2, 0.2, 0.25) + (0.0,) * 12)
    res = calibrate(spec, target, CalibrationConfig(alpha_step=0.1, check_tables=0), measure=False)
    doc = json.loads(json.dumps(res.to_dict()))
    params = load_params_file(doc)
    assert params == res.params
    eff = params.effective_spec(spec)
    # pooling scale: the spec's means are 4, 6, 8 and 2 (mean 5), the target asks for 6 per table per sample
    assert params.pooling_scale == pytest.approx(6.0 / 5.0, rel=0.02)
    assert [t.zipf_alpha for t in eff.tables] == [a for _, a in params.alpha_overrides]
    with pytest.raises(InputError, match="unknown generator parameter"):
        load_params_file({"seed": 1, "bogus": 2})


def test_check_subset_spreads_over_the_density_order():
    density = np.arange(100, dtype=float)[::-1]
    lookups = np.ones(100)
    sub = check_subset(density, lookups, 10)
    assert sub.size == 10 and np.all(np.diff(sub) > 0)
    # 10 strata of 10 tables each, one table per stratum: table indices 0..9 in each stratum
    assert np.all(np.diff(np.sort(density[sub])) >= 5)
    assert check_subset(density, lookups, 0).size == 100 and check_subset(density, lookups, 200).size == 100


def test_transfer_rule_lookups_per_row_matched():
    """Batch size and rows scaled together by 1/16: a table with alpha < 1 keeps its histograms (self-similar),
    a table with alpha > 1 loses its hot rows' counts (its head is a fixed set of rows, whose counts scale with B)."""
    def shares(rows, n, alpha):
        return expected_locality(TableLayout.build([rows]), np.array([alpha]), np.array([n]))

    full, small = shares(4_000_000, 4e6, 0.6), shares(250_000, 2.5e5, 0.6)
    assert np.abs(full.lookup_share - small.lookup_share).sum() < 0.05
    assert np.abs(full.unique_share - small.unique_share).sum() < 0.02
    full, small = shares(4_000_000, 4e6, 1.3), shares(250_000, 2.5e5, 1.3)
    top_full, top_small = full.lookup_share[12:].sum(), small.lookup_share[12:].sum()  # counts above 2048
    assert top_full > top_small + 0.1  # 0.81 vs 0.63 of the lookups on rows counted more than 2048 times


def _small_spec() -> ModelSpec:
    pools = [PoolingSpec.fixed(4), PoolingSpec.fixed(6), PoolingSpec.fixed(8), PoolingSpec.fixed(2)]
    rows = [2000, 50_000, 300, 100_000]
    return ModelSpec("small", tuple(TableSpec(n, rows=r, dim=4, pooling=p) for n, r, p in zip("abcd", rows, pools)),
                     batch_size=4096)


def dataclass_alpha(spec: ModelSpec, alpha: float) -> ModelSpec:
    return GeneratorParams(zipf_alpha=alpha).effective_spec(spec)


def _write_block(tmp_path) -> Path:
    from tracegen.locality import LocalityStats

    s = LocalityStats.from_shares(1, 64, 1000.0, 400.0, (0.6, 0.4) + (0.0,) * 15, (0.3, 0.7) + (0.0,) * 15)
    p = tmp_path / "one.txt"
    p.write_text(format_locality_stats("mine", s) + "\n")
    return p

"""plans.scale: the modelled meta-2021 workload and a small scaling run."""

from __future__ import annotations

import numpy as np
import pytest

from plans.scale import histogram_distance, main, meta2021_spec, meta2021_stats, reuse_histograms, scaling_run
from tracegen.presets import META2021_MEAN_POOLING, META2021_TABLES, load_model


def test_meta2021_shape():
    spec = meta2021_spec()
    assert spec.num_tables == META2021_TABLES == 856 and spec.batch_size == 65536
    # 887,017,990 lookups per batch of 65,536 over 856 tables = 15.81 per table per sample
    assert np.mean([t.pooling.mean_lookups for t in spec.tables]) == pytest.approx(15.81, abs=0.05)
    assert META2021_MEAN_POOLING == pytest.approx(15.812, abs=1e-3)
    assert spec.total_bytes > 1e12  # terabytes
    assert spec == load_model("meta-2021")  # the planner's workload is the trace generator's preset
    assert meta2021_spec(8).tables == spec.tables[:8]


def test_reuse_histograms_are_distributions():
    spec = meta2021_spec(8)
    u, lk, ratio = reuse_histograms(spec, buckets=32)
    assert u.sum() == pytest.approx(1.0) and lk.sum() == pytest.approx(1.0) and ratio >= 1.0
    assert histogram_distance(spec) >= 0


def test_small_scaling_run_reports_gap():
    stats = meta2021_stats(26)
    assert stats.source == "modelled"
    (p,) = scaling_run([26], stats=stats, time_limit_s=20)
    assert p.tables == 26 and p.status in ("optimal", "feasible") and p.gap is not None and p.gap >= 0
    assert p.predicted_batch_s > 0


def test_main_prints_a_row(capsys):
    assert main(["--counts", "5", "--time-limit", "10"]) == 0
    out = capsys.readouterr().out
    assert "modelled" in out and out.strip().splitlines()[-1].split()[0] == "5"

"""emulator.accuracy with row formats: format_plan, and each format's pooled differences against a bound
derived from the stored rows' own errors (tiny tables: every row is in the manifest's error sample)."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.accuracy import accuracy_report, format_plan
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


@pytest.fixture(scope="module")
def quant_store(tmp_path_factory, tiny_spec):
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig

    path = tmp_path_factory.mktemp("qacc") / "tiny"
    build_store(tiny_spec, path, StoreBuildConfig(weights_seed=1, tt_ranks=(), row_formats=("fp16", "int8", "int4")))
    return path


def test_format_plan_serves_every_table_from_the_format(quant_store):
    store = Store.open(quant_store)
    plan = format_plan(store, "int8", dram_limit_bytes=1 << 30)
    assert plan.planner == "all-dram int8"
    assert all(p.row_format == "int8" and p.hot_rows == t.rows for p, t in zip(plan.tables, store.tables))
    # int8 rows of the tiny tables: 500 x 24 + 2000 x 16 + 3000 x 24 + 800 x 16 = 128,800 bytes: 100 KiB is short
    assert format_plan(store, "int8", dram_limit_bytes=100 << 10).planner == "all-ssd int8"


def test_format_plan_needs_the_format(tiny_store):
    with pytest.raises(InputError, match="no table of the store has int4 rows"):
        format_plan(Store.open(tiny_store), "int4")


@pytest.mark.parametrize("fmt", ["fp16", "int8", "int4"])
def test_pooled_differences_stay_within_the_rows_errors(quant_store, tiny_trace, fmt):
    store = Store.open(quant_store)
    with TraceReader(tiny_trace) as reader:
        rep = accuracy_report(store, reader, format_plan(store, fmt), engine="pread", batches=2)
        pooling = max(int(np.diff(b.table(t)[1]).max()) for b in list(reader.batches())[:2]
                      for t in range(reader.num_tables))
    for t, row in zip(store.tables, rep["tables"]):
        fe = t.row_format(fmt)
        assert row["row_format"] == fmt and row["format_rel_fro_error"] == fe.rel_fro_error
        # |sum_k (q_k - raw_k)| <= bag size x the largest element error of any row (all rows sampled here),
        # plus float32 rounding of the two sums
        assert fe.error_sample_rows == t.rows
        assert row["max_abs_diff"] <= pooling * fe.max_abs_error * (1 + 1e-3) + 1e-5, t.name
    if fmt != "fp16" or store.tables[2].dtype != "fp16":
        assert rep["overall"]["max_abs_diff"] > 0
    assert rep["dense"] is None and rep["tt_lookups"] == 0

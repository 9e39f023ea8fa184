"""Replaying tables placed with a row format (fp16, int8, int4): the DRAM tier holds the format's rows, raw
reads fetch the format's pages, every bag equals tests/naive.py's dequantize-and-pool of the stored rows."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.io import uring_available
from emulator.plan import DevicePlan, Plan, TablePlacement
from emulator.replay.engine import Replayer, ReplayConfig
from emulator.store.quant import FormatLayout
from emulator.store.store import Store
from tests import naive
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

ENGINES = ["pread", pytest.param("uring", marks=pytest.mark.skipif(not uring_available()[0],
                                                                    reason="io_uring is not available here"))]


@pytest.fixture(scope="module")
def quant_store(tmp_path_factory, tiny_spec):
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig

    path = tmp_path_factory.mktemp("qreplay") / "tiny"
    build_store(tiny_spec, path, StoreBuildConfig(weights_seed=1, tt_ranks=(), row_formats=("fp16", "int8", "int4")))
    return path


def _plan(store, formats, hot):
    t = store.tables
    return Plan(store_id=store.store_id, devices=(DevicePlan("dev0"), DevicePlan("dev1")), planner="formats-test",
                tables=tuple(TablePlacement(x.name, h, "ssd_raw", device=i % 2, row_format=f)
                             for i, (x, f, h) in enumerate(zip(t, formats, hot))))


def _stored_rows(store, i, fmt):
    """A format's rows straight from its file (plain reads, not the replay's path)."""
    lay = FormatLayout(store.tables[i].rows, store.tables[i].dim, fmt)
    view = lay.rows_view(np.fromfile(store.format_path(i, fmt), np.uint8))
    r = np.arange(lay.rows)
    return np.ascontiguousarray(view[r // lay.rows_per_page, r % lay.rows_per_page])


@pytest.mark.parametrize("engine", ENGINES)
def test_mixed_formats_and_tiers_equal_the_reference(quant_store, tiny_trace, engine):
    store = Store.open(quant_store)
    t = store.tables  # tiny: t0 500 x 16 fp32, t1 2000 x 8 fp32, t2 3000 x 16 fp16, t3 800 x 8 fp32
    formats = ["int8", "int4", "fp16", "int8"]
    plan = _plan(store, formats, [250, 0, 1000, t[3].rows])
    outs = []
    with Replayer(store, plan, ReplayConfig(engine=engine, verify=True, max_read_bytes=8192)) as rep, \
            TraceReader(tiny_trace) as r:
        totals = rep.run(r, on_batch=lambda o: outs.append([x.copy() for x in o.pooled]))
        # DRAM held, in the formats' bytes: t0 250 x (16 + 8), t2 1000 x 2 x 16, t3 800 x (8 + 8)
        assert rep.dram_bytes == 250 * 24 + 1000 * 32 + 800 * 16
    assert totals["verify"]["exact_bags"] == 4 * 4 * 32  # 4 batches x 4 tables x 32 bags (tiny), all exact
    stored = [_stored_rows(store, i, f) for i, f in enumerate(formats)]
    with TraceReader(tiny_trace) as r:
        for b, pooled in zip(r.batches(), outs):
            for i, fmt in enumerate(formats):
                ids, off = b.table(i)
                # the devices' partials (cold rows) added to the host's (hot rows): the engine's grouping
                rows = naive.pool_quantized_ref(stored[i], fmt, t[i].dim, ids, np.arange(ids.size + 1))
                hot = ids < plan.tables[i].hot_rows
                assert np.array_equal(pooled[i], naive.pool_split_ref(rows, off, hot))


def test_quantized_pages_are_the_pages_read(quant_store, tiny_trace):
    """All cold, every table in one format: the bytes read are, per batch and table, the distinct pages of the
    looked-up rows under that format's rows per page, 4 KiB each (coalescing only merges neighbours)."""
    store = Store.open(quant_store)
    read = {}
    for fmt in ("fp32", "int8", "int4"):
        plan = _plan(store, [fmt] * 4, [0] * 4)
        with Replayer(store, plan, ReplayConfig(engine="pread")) as rep, TraceReader(tiny_trace) as r:
            read[fmt] = rep.run(r)["bytes_read"]
        want = 0
        with TraceReader(tiny_trace) as r:
            for b in r.batches():
                for i, tab in enumerate(store.tables):
                    lay = store.layouts[i] if fmt == "fp32" else FormatLayout(tab.rows, tab.dim, fmt)
                    want += np.unique(b.table(i)[0] // lay.rows_per_page).size * 4096
        assert read[fmt] == want, fmt
    assert read["int4"] < read["int8"] < read["fp32"]


def test_a_format_the_store_lacks_is_refused(tiny_store):
    store = Store.open(tiny_store)  # built without row formats
    plan = _plan(store, ["int8", "fp32", "fp32", "fp32"], [0] * 4)
    with pytest.raises(InputError, match="table t0 has no int8 rows .*--row-formats int8"):
        Replayer(store, plan, ReplayConfig(engine="pread"))

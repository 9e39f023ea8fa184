"""plans.remap: a permutation, hottest first; the same embeddings through a remapped store; drift."""

from __future__ import annotations

import numpy as np
import pytest

from plans.remap import Remap, TableRemap, hot_set_drift, remap_store
from plans.stats import TableCounts, trace_stats
from tests.plans_fixtures import small_spec, write_zipf_trace
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


def test_dense_remap_ranks_by_count_with_stable_ties():
    counts = np.array([3, 0, 7, 3, 0, 9])
    r = Remap.from_counts([TableCounts(6, int(counts.sum()), exact=counts)], ["t"])
    # hottest first: row 5 (9), row 2 (7), rows 0 and 3 (3, in id order), then unseen rows 1 and 4
    np.testing.assert_array_equal(r.old_ids("t", np.arange(6)), [5, 2, 0, 3, 1, 4])
    np.testing.assert_array_equal(r.new_ids("t", [5, 2, 0, 3, 1, 4]), np.arange(6))
    assert r.is_permutation()


def test_prefix_remap_is_a_permutation_and_inverts():
    t = TableRemap("t", 10, prefix=np.array([7, 2, 9]))
    new = t.new_ids(np.arange(10))
    # prefix rows 7, 2, 9 take 0, 1, 2; the others keep their order: 0,1,3,4,5,6,8 -> 3..9
    np.testing.assert_array_equal(new, [3, 4, 1, 5, 6, 7, 8, 0, 9, 2])
    np.testing.assert_array_equal(t.old_ids(new), np.arange(10))
    assert sorted(new.tolist()) == list(range(10))


def test_prefix_with_duplicates_is_refused():
    with pytest.raises(ValueError):
        TableRemap("t", 10, prefix=np.array([1, 1]))


def test_save_load_round_trip(tmp_path):
    counts = np.array([1, 5, 2])
    r = Remap([TableRemap("a", 3, perm=np.array([2, 0, 1], np.int32)), TableRemap("b", 50, prefix=np.array([40, 3]))],
              {"trace_id": "x"})
    r.save(tmp_path / "r.h5")
    back = Remap.load(tmp_path / "r.h5")
    assert back.meta == {"trace_id": "x"}
    for name, n in (("a", 3), ("b", 50)):
        np.testing.assert_array_equal(back.new_ids(name, np.arange(n)), r.new_ids(name, np.arange(n)))
    with pytest.raises(InputError):
        Remap.load(tmp_path / "missing.h5")


def test_drift_by_hand():
    profile = np.array([10, 8, 6, 0, 0, 1])
    later = np.array([0, 9, 7, 12, 1, 1])
    d = hot_set_drift(profile, later, 2)
    # profile top-2 = {0, 1}; later top-2 = {3, 1}: one of two is new; {0,1} serves 9/30; oracle {3,1} 21/30
    assert d.new_share == 0.5
    assert d.hit_ratio == pytest.approx(9 / 30) and d.oracle_hit_ratio == pytest.approx(21 / 30)
    assert d.hit_ratio_loss == pytest.approx(12 / 30)



def test_plan_drift_weights_tables_by_later_lookups():
    from plans.remap import plan_drift

    a_prof, a_later = np.array([10, 8, 6, 0, 0, 1]), np.array([0, 9, 7, 12, 1, 1])  # the case above: 9/30, 21/30
    b_prof, b_later = np.array([5, 1, 0, 0]), np.array([6, 2, 1, 1])  # top-1 {0} both times: 6/10, oracle 6/10
    prof = [TableCounts(6, 25, exact=a_prof), TableCounts(4, 6, exact=b_prof), TableCounts(4, 6, exact=b_prof)]
    later = [TableCounts(6, 30, exact=a_later), TableCounts(4, 10, exact=b_later), TableCounts(4, 10, exact=b_later)]
    d = plan_drift(prof, later, [2, 1, 4])  # the third table is wholly hot: left out
    assert d["tables"] == 2
    assert d["hit_ratio"] == pytest.approx((9 + 6) / 40)  # lookup-weighted: (9/30 x 30 + 6/10 x 10) / 40
    assert d["oracle_hit_ratio"] == pytest.approx((21 + 6) / 40)
    assert d["new_row_share"] == pytest.approx(1 / 3)  # 1 new of the 2 + 1 top rows


@pytest.fixture(scope="module")
def store_and_trace(tmp_path_factory):
    from emulator.store.store import StoreBuildConfig
    from emulator.store.build import build_store

    d = tmp_path_factory.mktemp("plans_remap")
    spec = small_spec()
    write_zipf_trace(d / "t.h5", spec, n_batches=3, seed=2)
    store = build_store(spec, d / "store", StoreBuildConfig(tt_ranks=()))
    return store, d / "t.h5", d


def test_remapped_store_serves_the_same_embeddings(store_and_trace):
    from emulator.store.store import Store

    store, trace, d = store_and_trace
    with TraceReader(trace) as r:
        stats, remap, counts = trace_stats(r, (0, 3))
        batch = r.batch(1)
    out = remap_store(store, remap, d / "remapped")
    assert out.store_id != store.store_id and out.manifest.remap.source_store_id == store.store_id
    again = Store.open(d / "remapped")
    for t in range(len(store.tables)):
        old = batch.table(t)[0]
        np.testing.assert_array_equal(again.read_rows(t, remap.new_ids(t, old)), store.read_rows(t, old))
    # the hottest row of table a is new row 0
    hottest = int(np.argmax(counts[0].exact))
    np.testing.assert_array_equal(again.read_rows(0, np.array([0])), store.read_rows(0, np.array([hottest])))


def test_remap_store_refuses_wrong_shapes(store_and_trace, tmp_path):
    store, _, _ = store_and_trace
    bad = Remap([TableRemap(t.name, t.rows + 1, prefix=np.zeros(0, np.int64)) for t in store.tables])
    with pytest.raises(InputError):
        remap_store(store, bad, tmp_path / "x")

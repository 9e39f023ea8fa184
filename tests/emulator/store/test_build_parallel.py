"""emulator.store.build on several threads: byte for byte the store of a serial build (raw files, TT cores,
manifest but for the build time), tables split over several write steps; the previous generator and TT method
(tt-gauss, svd) still give the rows and cores of the code they come from; the manifest names both."""

from __future__ import annotations

import json

import numpy as np
import pytest

import emulator.store.build_parallel as build
from emulator.store.build import build_store, verify_store
from emulator.store.store import StoreBuildConfig
from emulator.store.weights import SyntheticRows, SyntheticWeightsConfig
from emulator.tt.decomposition import factorize_dim, factorize_rows, tt_svd
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec

# 40,000 x 64 fp32 = 9.8 MiB (three 4 MiB write steps below), a padded layout (24 fp32: 42 rows a page), an fp16
# table, a wide row (1100 fp32: two pages a row), a table below tt_min_rows
SPEC = ModelSpec("par", (TableSpec("big", 40_000, 64), TableSpec("gappy", 3000, 24),
                         TableSpec("half", 2000, 16, "fp16"), TableSpec("wide", 300, 1100), TableSpec("tiny", 100, 8)),
                 batch_size=4)


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _manifest_without_time(path):
    doc = json.loads((path / "manifest.json").read_text())
    doc["build"].pop("seconds")
    doc.pop("store_id")
    return doc


@pytest.fixture
def small_steps(monkeypatch):
    monkeypatch.setattr(build, "WRITE_BYTES", 4 << 20)  # one checksum chunk a step: "big" takes three


def test_parallel_build_is_byte_identical_to_a_serial_one(tmp_path, small_steps):
    config = StoreBuildConfig(weights_seed=3, tt_ranks=(4, 8), row_formats=("int8",))
    assert len(build._steps(build.RowLayout(40_000, 64, "fp32"))) == 3
    serial = build_store(SPEC, tmp_path / "serial", config, workers=1)
    par = build_store(SPEC, tmp_path / "par", config, workers=3)
    assert _files(tmp_path / "serial").keys() == _files(tmp_path / "par").keys()
    for name, data in _files(tmp_path / "serial").items():
        if name != "manifest.json":
            assert data == _files(tmp_path / "par")[name], name
    assert _manifest_without_time(tmp_path / "serial") == _manifest_without_time(tmp_path / "par")
    assert verify_store(tmp_path / "par").ok
    assert [len(t.tt) for t in par.tables] == [2, 2, 2, 2, 0] == [len(t.tt) for t in serial.tables]
    m = par.manifest
    assert (m.weights.generator, m.build.tt_method) == ("tt-hash", "fast")


def test_rows_written_in_steps_are_the_generated_rows(tmp_path, small_steps):
    store = build_store(SPEC, tmp_path / "s", StoreBuildConfig(weights_seed=2, tt_ranks=()), workers=2)
    from emulator.store.weights import synthetic_rows

    for i, t in enumerate(SPEC.tables):
        want = synthetic_rows(t, i, SyntheticWeightsConfig(seed=2)).read(0, t.rows).astype(store.layouts[i].np_dtype)
        assert np.array_equal(store.read_range(i, 0, t.rows), want), t.name


def test_previous_generator_and_method_give_the_previous_rows_and_cores(tmp_path):
    spec = ModelSpec("old", (TableSpec("a", 3000, 16), TableSpec("b", 700, 8)), batch_size=4)
    store = build_store(spec, tmp_path / "s", StoreBuildConfig(weights_seed=4, tt_ranks=(2, 4)), workers=2,
                        weights_generator="tt-gauss", tt_method="svd")
    assert (store.manifest.weights.generator, store.manifest.build.tt_method) == ("tt-gauss", "svd")
    for i, t in enumerate(spec.tables):
        rows = SyntheticRows(t, i, SyntheticWeightsConfig(seed=4)).read(0, t.rows)  # the tt-gauss code, unchanged
        assert np.array_equal(store.read_range(i, 0, t.rows), rows)
        for v in store.tables[i].tt:  # the in-memory float64 TT-SVD of those rows, as before
            want = tt_svd(rows, factorize_rows(t.rows, 3), factorize_dim(t.dim, 3), max_rank=v.rank)
            got = store.load_tt(i, v.rank)
            assert all(np.array_equal(a, b) for a, b in zip(got.cores, want.cores))


def test_bad_options_are_refused_before_anything_is_written(tmp_path):
    for kwargs, msg in (({"workers": 0}, "workers"), ({"tt_method": "qr"}, "TT method"),
                        ({"weights_generator": "dice"}, "generator")):
        with pytest.raises(InputError, match=msg):
            build_store(SPEC, tmp_path / "s", StoreBuildConfig(), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_step_stops_the_build_and_leaves_nothing(tmp_path, small_steps):
    bad = np.ones((40_000, 64), np.float32)
    bad[35_000, 3] = np.inf  # in the last of the three steps
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"not finite \(row 35000\)"):
        build_store(SPEC, tmp_path / "s", StoreBuildConfig(imports={"big": str(tmp_path / "bad.npy")}), workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


def test_ctrl_c_stops_the_build_and_leaves_nothing(tmp_path, small_steps):
    import signal

    calls = []

    def progress(desc, done, total):  # Ctrl-C as soon as the first step is written
        calls.append(desc)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        build_store(SPEC, tmp_path / "s", StoreBuildConfig(tt_ranks=(4,)), progress=progress, workers=2)
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGINT) is before
    assert len(calls) < 8  # stopped early: the "big" table's 3 steps and 5 tables' TT were not all reported


def test_a_tolerance_is_met_by_the_svd_method_and_the_manifest_says_so(tmp_path):
    spec = ModelSpec("tol", (TableSpec("a", 3000, 16),), batch_size=4)
    store = build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), tt_rel_tol=0.1), workers=2)
    assert store.manifest.build.tt_method == "svd"
    assert [v.rel_fro_error <= 0.1 for v in store.tables[0].tt] == [True]  # signal + 5% noise: one variant


@pytest.mark.parametrize("budget", ["TT_KEEP_BYTES", "TT_MEMORY_BYTES"])
def test_tables_over_the_memory_budget_are_decomposed_from_the_file(tmp_path, small_steps, monkeypatch, budget):
    config = StoreBuildConfig(weights_seed=3, tt_ranks=(4, 8))
    kept = build_store(SPEC, tmp_path / "kept", config, workers=2)
    monkeypatch.setattr(build, budget, 0)  # every table streamed from its file (blocks of columns)
    build_store(SPEC, tmp_path / "serial", config, workers=1)
    par = build_store(SPEC, tmp_path / "par", config, workers=3)
    assert (tmp_path / "serial" / "tt.h5").read_bytes() == (tmp_path / "par" / "tt.h5").read_bytes()
    for a, b in zip(kept.tables, par.tables):  # the same TT-SVD, summed in another order: errors agree closely
        assert [v.tt_ranks for v in a.tt] == [v.tt_ranks for v in b.tt]
        for va, vb in zip(a.tt, b.tt):
            assert vb.rel_fro_error == pytest.approx(va.rel_fro_error, rel=1e-3)


def test_buffered_writes_where_o_direct_is_missing_give_the_same_store(tmp_path, small_steps, monkeypatch):
    config = StoreBuildConfig(weights_seed=5, tt_ranks=(4,))
    build_store(SPEC, tmp_path / "direct", config, workers=2)
    monkeypatch.delattr(build.os, "O_DIRECT")  # as on a platform without it (a filesystem refusing it: EINVAL)
    build_store(SPEC, tmp_path / "buffered", config, workers=2)
    direct, buffered = _files(tmp_path / "direct"), _files(tmp_path / "buffered")
    assert {k: v for k, v in direct.items() if k != "manifest.json"} == \
        {k: v for k, v in buffered.items() if k != "manifest.json"}
    assert verify_store(tmp_path / "buffered").ok

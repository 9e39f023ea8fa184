"""IO faults under replay: transient faults are retried to the exact reference result, persistent EIO fails
the batch naming table and rows, O_DIRECT refusal needs an explicit opt-in, concurrent replays are safe.

Faults come from :mod:`emulator.io.faults`; each test checks, through the fault log, that the faults it is
about were really injected. Totals of every kind injected across this module are printed at the end
(``pytest -s``) for the closing note.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emulator.io import PreadEngine, aligned_empty, liburing_available, make_engine, uring_available
from emulator.io import base as io_base
from emulator.io.faults import FaultLog, FaultPlan, FaultyEngine, faulty_engines
from emulator.plan import Plan, TablePlacement, uniform_plan
from emulator.kernels.reference import pool_reference
from emulator.replay.engine import BatchFailure, Replayer, ReplayConfig
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

from tests.conftest import one_line_error, run_cli


def one_error_line(err: str) -> bool:
    """One ``screc: error:`` line and no traceback (``--no-live`` status lines may precede it on stderr)."""
    lines = [l for l in err.splitlines() if l.strip()]
    return "Traceback" not in err and sum(l.startswith("screc") for l in lines) == 1 and lines[-1].startswith(
        "screc: error: ")

URING_OK, URING_WHY = uring_available()
LIBURING_OK, LIBURING_WHY = liburing_available()
INNER = ["pread", pytest.param("liburing", marks=pytest.mark.skipif(not LIBURING_OK, reason=LIBURING_WHY or "x"))]
TOTALS: Counter = Counter()  # faults injected by this module, by kind


@pytest.fixture(scope="module", autouse=True)
def _report_totals():
    yield
    print(f"\nfaults injected by test_faults.py: {dict(TOTALS)}")


def _tally(log: FaultLog) -> dict[str, int]:
    c = log.counts()
    TOTALS.update(c)
    return c


def _rows(store):
    return {t.name: t.rows for t in store.tables}


def _half_hot_plan(store):
    """Half of each table in DRAM, the rest raw on SSD: both tiers pooled into one bag."""
    return Plan(store_id=store.store_id, planner="half-hot", tables=tuple(
        TablePlacement(t.name, t.rows // 2, "ssd_raw") for t in store.tables))


def _replay(store, plan, trace, **cfg):
    outs = []
    with Replayer(store, plan, ReplayConfig(**cfg)) as rep, TraceReader(trace) as r:
        totals = rep.run(r, on_batch=lambda o: outs.append((o.index, [x.copy() for x in o.pooled])))
    return outs, totals


def _assert_reference(store, trace, outs, plan=None):
    """Every pooled bag equals the NumPy reference over store.read_rows, bit for bit (for a plan whose devices
    pool their rows: the devices' partial added to the host's partial of the hot rows, the engine's grouping)."""
    from emulator.replay.offload import host_pooled
    from tests import naive

    split = plan is not None and not host_pooled(plan.planner)
    with TraceReader(trace) as r:
        for index, pooled in outs:
            b = r.batch(index)
            for t in range(r.num_tables):
                ids, off = b.table(t)
                rows = store.read_rows(t, ids)
                want = naive.pool_split_ref(rows, off, ids < plan.tables[t].hot_rows) if split else \
                    pool_reference(rows, off)
                assert np.array_equal(pooled[t], want), (index, t)


# --- the engine layer -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("faults") / "d.bin"
    data = np.random.default_rng(0).integers(0, 256, 64 * 4096, dtype=np.uint8)
    p.write_bytes(data.tobytes())
    return p, data


@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_retries_transient_faults_to_exact_bytes(data_file, inner, seed):
    path, data = data_file
    rng = np.random.default_rng(seed)
    n = 150
    offs = rng.integers(0, 60, n) * 4096
    nb = rng.integers(1, 5, n) * 4096
    doff = np.concatenate([[0], np.cumsum(nb)[:-1]])
    plan = FaultPlan(seed=seed, short_read_p=0.3, eintr_p=0.15, eagain_p=0.15)
    with FaultyEngine(make_engine(inner, queue_depth=4), plan) as eng:
        fid = eng.open(path)
        dest = aligned_empty(int(nb.sum()))
        res = eng.read_many(np.full(n, fid), offs, nb, dest, doff)
    c = _tally(eng.log)
    for o, k, d in zip(offs, nb, doff):
        assert np.array_equal(dest[d : d + k], data[o : o + k])
    assert (res.nread == nb).all()
    # 150 reads at 30% short / 15% EINTR / 15% EAGAIN per attempt: each kind happens dozens of times
    assert c["short"] > 10 and c["eintr"] > 5 and c["eagain"] > 5
    assert res.retries == c["short"] + c["eintr"] + c["eagain"]  # every fault cost the engine one retry


def test_faulted_bytes_are_scribbled_so_a_skipped_retry_would_show(data_file, monkeypatch):
    """Without its retry loop the engine would fail: the injection is not a no-op."""
    from emulator.io import pread

    path, _ = data_file
    monkeypatch.setattr(pread, "MAX_RETRIES", 0)  # EINTR/EAGAIN now fail at once
    with FaultyEngine(PreadEngine(), FaultPlan(seed=0, eintr_p=0.9 - 1e-9)) as eng:
        fid = eng.open(path)
        with pytest.raises(OSError, match="Interrupted"):
            eng.read_many([fid], [0], [4096], aligned_empty(4096), [0])
    _tally(eng.log)


def test_uring_refuses_transient_faults_but_takes_eio():
    if not URING_OK:
        pytest.skip(URING_WHY)
    with pytest.raises(ValueError, match="out of reach"):
        FaultyEngine(make_engine("uring", queue_depth=4), FaultPlan(short_read_p=0.1))


def test_fault_plan_validates():
    with pytest.raises(ValueError):
        FaultPlan(eintr_p=1.0)
    with pytest.raises(ValueError):
        FaultPlan(short_read_p=0.5, eagain_p=0.5)
    with pytest.raises(ValueError):
        FaultPlan(slow_s=-1)


# --- replays under transient faults ---------------------------------------------------------------

@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("pipeline", [True, False])
def test_replay_under_transient_faults_equals_reference(tiny_store, tiny_trace, inner, pipeline):
    store = Store.open(tiny_store)
    sleeps = []
    plan = FaultPlan(seed=7, short_read_p=0.25, eintr_p=0.1, eagain_p=0.1, slow_p=0.1, slow_s=0.002)
    with faulty_engines(plan, inner=inner, sleep=sleeps.append) as log:
        for p in (uniform_plan(store.store_id, _rows(store), "all-ssd"), _half_hot_plan(store)):
            outs, totals = _replay(store, p, tiny_trace, engine="faulty", pipeline=pipeline, queue_depth=4,
                                   max_read_bytes=8192)
            assert len(outs) == totals["batches"] == 4
            _assert_reference(store, tiny_trace, outs, p)
    c = _tally(log)
    assert c["short"] > 0 and c["eintr"] > 0 and c["eagain"] > 0 and c["slow"] > 0 and c["eio"] == 0
    assert len(sleeps) == c["slow"] and set(sleeps) == {0.002}


@pytest.mark.parametrize("inner", INNER)
def test_slow_completions_with_pipelining_never_mix_batches(tiny_store, tiny_trace, inner):
    """Real delays (2 ms on 30% of reads) while the next batch's reads overlap pooling (double buffers)."""
    store = Store.open(tiny_store)
    with faulty_engines(FaultPlan(seed=11, slow_p=0.3, slow_s=0.002, short_read_p=0.1), inner=inner) as log:
        outs, _ = _replay(store, uniform_plan(store.store_id, _rows(store), "all-ssd"), tiny_trace, engine="faulty",
                          pipeline=True, queue_depth=2, max_read_bytes=4096)
    _assert_reference(store, tiny_trace, outs)
    assert _tally(log)["slow"] > 5


def test_replay_with_verify_under_faults(tiny_store, tiny_trace):
    """--verify itself (the replay's own reference check) passes under faults, through the mixed tiers."""
    store = Store.open(tiny_store)
    t = store.tables
    plan = Plan(store_id=store.store_id, planner="mixed", tables=(
        TablePlacement(t[0].name, 100, "ssd_raw"), TablePlacement(t[1].name, 0, "ssd_tt", t[1].tt[0].rank),
        TablePlacement(t[2].name, 0, "ssd_raw"), TablePlacement(t[3].name, 400, "ssd_raw")))
    with faulty_engines(FaultPlan(seed=3, short_read_p=0.3, eintr_p=0.2), inner="pread") as log:
        _, totals = _replay(store, plan, tiny_trace, engine="faulty", verify=True, queue_depth=2, max_read_bytes=4096)
    assert totals["verified_batches"] == 4 and totals["verify"]["ok"]
    c = _tally(log)
    assert c["short"] > 0 and c["eintr"] > 0


# --- persistent EIO -------------------------------------------------------------------------------

def _fresh_row(store, trace, batch: int) -> tuple[int, int]:
    """(table, row) looked up by ``batch`` whose page no earlier batch reads (so earlier batches succeed)."""
    with TraceReader(trace) as r:
        for t in (1, 2, 3, 0):
            lay = store.layouts[t]
            earlier = {int(p) for b in range(batch) for p in lay.row_pages(r.batch(b).table(t)[0])}
            for row in r.batch(batch).table(t)[0]:
                if int(lay.row_pages([row])[0]) not in earlier:
                    return t, int(row)
    raise AssertionError("no fresh row")


# Replayer._batch_failure must match the failed read by file and byte offset: by offset only, with several tables
# on one device, it named the wrong table (t0 for an EIO in t1).
@pytest.mark.parametrize("inner", INNER + [pytest.param("uring", marks=pytest.mark.skipif(not URING_OK,
                                                                                           reason=URING_WHY or "x"))])
@pytest.mark.parametrize("batch", [0, 1])
def test_persistent_eio_fails_the_batch_naming_table_and_rows(tiny_store, tiny_trace, inner, batch):
    store = Store.open(tiny_store)
    table, row = _fresh_row(store, tiny_trace, batch)
    lay = store.layouts[table]
    bad = int(lay.row_offsets([row])[0])
    transient = {"short_read_p": 0.2, "eintr_p": 0.1} if inner != "uring" else {}
    plan = FaultPlan(seed=batch, eio=((f"{store.tables[table].name}.bin", bad),), **transient)
    outs = []
    with faulty_engines(plan, inner=inner) as log:
        with Replayer(store, uniform_plan(store.store_id, _rows(store), "all-ssd"),
                      ReplayConfig(engine="faulty", queue_depth=4, max_read_bytes=4096)) as rep, \
                TraceReader(tiny_trace) as r:
            with pytest.raises(BatchFailure) as ei:
                rep.run(r, on_batch=lambda o: outs.append((o.index, [x.copy() for x in o.pooled])))
    c = _tally(log)
    assert c["eio"] >= 1
    msg = str(ei.value)
    assert f"batch {batch} failed" in msg and f"table {store.tables[table].name}" in msg and "\n" not in msg
    lo, hi = (int(x) for x in msg.split("rows ")[1].split(":")[0].split(".."))
    assert lo <= row <= hi and hi - lo + 1 <= lay.rows_per_page  # one page of rows (4096-byte reads)
    assert "Input/output error" in msg
    assert [i for i, _ in outs] == list(range(batch))  # nothing returned for the failed batch or after it
    _assert_reference(store, tiny_trace, outs)


def test_batch_failure_is_exit_2_one_line(tiny_store, tiny_trace, capsys, monkeypatch, tmp_path):
    """Through the command line: one line, exit 2, no result written."""
    import bench.replay_run as cmd

    store = Store.open(tiny_store)
    bad = ((f"{store.tables[0].name}.bin", 0),)
    real = cmd.ReplayConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cmd, "ReplayConfig", lambda **kw: real(**{**kw, "engine": "faulty"}))
    with faulty_engines(FaultPlan(eio=bad, eintr_p=0.1), inner="pread") as log:
        code, _, err = run_cli(["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--no-live",
                                "--engine", "pread", "--json", "r.json"], capsys)
    _tally(log)
    assert code == 2 and one_error_line(err) and "table t0" in err and "rows 0.." in err, err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "runs").exists()


# --- O_DIRECT refused -----------------------------------------------------------------------------

def test_o_direct_refused_needs_explicit_buffered_opt_in(tiny_store, tiny_trace, capsys, monkeypatch, tmp_path):
    real_open = io_base._os_open
    refused = []

    def no_direct(path, flags, *a):  # a filesystem without O_DIRECT (tmpfs before Linux 6.6)
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(io_base, "_os_open", no_direct)
    monkeypatch.chdir(tmp_path)
    store = Store.open(tiny_store)
    plan = uniform_plan(store.store_id, _rows(store), "all-ssd")
    with pytest.raises(InputError, match="--buffered-io") as ei:
        Replayer(store, plan, ReplayConfig(engine="pread"))
    assert str(store.table_path(0)) in str(ei.value)
    code, _, err = run_cli(["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--no-live",
                            "--engine", "pread"], capsys)
    assert code == 2 and one_line_error(err) and "O_DIRECT" in err and "--buffered-io" in err
    outs, _ = _replay(store, plan, tiny_trace, engine="pread", allow_buffered=True)
    _assert_reference(store, tiny_trace, outs)
    code, _, err = run_cli(["replay", "--store", str(tiny_store), "--trace", str(tiny_trace), "--no-live",
                            "--engine", "pread", "--buffered-io", "--verify"], capsys)
    assert code == 0, err
    assert len(refused) >= 2 * len(store.tables)


# --- several replays of one store at once ---------------------------------------------------------

def test_concurrent_replays_of_one_store(tiny_store, tiny_trace, tmp_path):
    """Two processes replay the same store at once with --verify; both are right and the store is untouched."""
    store = Store.open(tiny_store)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(tiny_store).rglob("*") if p.is_file()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = []
    for k, policy in enumerate(("all-ssd", "all-tt")):
        d = tmp_path / f"r{k}"
        d.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "replay", "--store", str(tiny_store), "--trace", str(tiny_trace),
             "--policy", policy, "--verify", "--no-live", "--engine", "uring" if URING_OK else "pread",
             "--json", "r.json"], cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for k, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        payload = json.loads((tmp_path / f"r{k}" / "r.json").read_text())
        assert payload["verify"]["ok"] and payload["batches"] == 4
        assert payload["failed_batches"] == 0
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(tiny_store).rglob("*") if p.is_file()}
    assert after == before
    from emulator.store.build import verify_store

    assert verify_store(store.path).ok

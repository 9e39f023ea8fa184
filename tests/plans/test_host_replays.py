"""plans.host_replays: the calibration replays hold a bounded number of replayers open at once (a replayer holds
its plan's DRAM tables, TT cores and read buffers), and what each job counts is what a replayer of its own counts."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from emulator.replay import engine
from emulator.store.store import Store
from plans.host_replays import (FEATURES, MAX_BATCH_LOOKUPS, batch_features, calibration_batch_sizes, calibration_jobs,
                                calibration_plans, run_interleaved)
from tracegen.trace_io import TraceReader


class _Counting:
    """Patches ``Replayer`` with a subclass that counts the instances open (constructed and not yet closed)."""

    def __init__(self, monkeypatch):
        self.open = self.most = self.opened = 0
        counter = self

        class CountingReplayer(engine.Replayer):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                counter.opened += 1
                counter.open += 1
                counter.most = max(counter.most, counter.open)
                self._counted = True

            def close(self):
                if getattr(self, "_counted", False):
                    self._counted = False
                    counter.open -= 1
                super().close()

        monkeypatch.setattr(engine, "Replayer", CountingReplayer)


def _jobs(store, tmp_path, stack, seed=0):
    return calibration_jobs(store, tmp_path, stack, batches=2, sizes=(32, 8), queue_depth=8, mini=False,
                            rng=np.random.default_rng(seed))


@pytest.mark.parametrize("max_open", [1, 2])
def test_at_most_max_open_replayers_at_once(tiny_store, tmp_path, monkeypatch, max_open):
    store = Store.open(tiny_store)
    count = _Counting(monkeypatch)
    with contextlib.ExitStack() as stack:
        jobs = _jobs(store, tmp_path, stack)
        assert count.opened == 0  # setting the jobs up opens nothing
        run_interleaved(jobs, rounds=2, seed=1, max_open=max_open)
    n_plans = len(calibration_plans(store))
    assert count.most == max_open and count.open == 0 and count.opened == n_plans  # each plan opened once
    labels = [f"{label} B={b}" for label, _ in calibration_plans(store) for b in (32, 8)]
    assert [j.label for j in jobs] == labels  # one job per (plan, batch size), in plan order, as before
    assert all(len(j.runs) == 2 and j.batches == 2 for j in jobs)
    with pytest.raises(RuntimeError, match="not open"):
        jobs[0].run()
    with pytest.raises(ValueError):
        run_interleaved(jobs, rounds=1, seed=1, max_open=0)


def test_each_job_counts_what_its_own_replayer_counts(tiny_store, tmp_path):
    """The features, reads and pages of each job (counted while its plan's replayer was the only one open)
    equal a naive count on a replayer opened for that job alone."""
    store = Store.open(tiny_store)
    with contextlib.ExitStack() as stack:
        jobs = _jobs(store, tmp_path, stack)
        run_interleaved(jobs, rounds=1, seed=1)
        for job in jobs:
            t = job.target
            with engine.Replayer(store, t.plan, t.config) as rep, TraceReader(job.reader.path) as r:
                got = [batch_features(rep.prepare(b), len(rep.engines), t.flops) for b in r.batches()]
            assert job.features == {k: float(np.mean([g[0][k] for g in got])) for k in FEATURES}, job.label
            assert job.reads == tuple(np.mean([g[1] for g in got], axis=0).tolist())
            assert job.pages == tuple(np.mean([g[2] for g in got], axis=0).tolist())
            s = job.sample()
            assert s.name == job.label and s.features == job.features and s.batch_s > 0


def test_calibration_batches_are_capped_by_lookups(tiny_spec):
    from tracegen.presets import get_preset

    assert calibration_batch_sizes(tiny_spec) == [32, 8]  # small batches keep the spec's size and a quarter
    meta = get_preset("meta-2021")  # 65,536 samples of ~13,535 lookups: 887M lookups a batch
    per_sample = sum(t.pooling.mean_lookups for t in meta.tables)
    b, quarter = calibration_batch_sizes(meta)
    assert b * per_sample <= MAX_BATCH_LOOKUPS < (b + 1) * per_sample and quarter == b // 4
    assert calibration_batch_sizes(meta, max_lookups=1) == [1, 1]

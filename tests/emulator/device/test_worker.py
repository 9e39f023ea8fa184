"""Device workers' host-side helpers against plain NumPy, and a worker serving a request on real threads."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.device.worker import (DeviceRequest, DeviceWorker, PoolTask, RebuildTask, merge_partials,
                                    split_by_lookups, subset_csr)
from emulator.io import aligned_empty, make_engine
from emulator.kernels.reference import pool_reference
from emulator.tiers import KIND_PAGE, KIND_STAGED
from emulator.tt.decomposition import tt_rebuild_rows_reference


def _csr(lengths):
    off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_split_by_lookups_covers_every_bag_once(parts):
    off = _csr([3, 0, 5, 1, 1, 0, 9, 2])
    ranges = split_by_lookups(off, parts)
    bags = [b for a, z in ranges for b in range(a, z)]
    assert bags == list(range(8))  # in order, each bag once, no empty range
    assert len(ranges) <= parts and all(z > a for a, z in ranges)


def test_split_by_lookups_balances_lookups():
    off = _csr([10] * 8)
    assert split_by_lookups(off, 2) == [(0, 4), (4, 8)]
    assert split_by_lookups(_csr([]), 4) == []


def test_subset_csr_equals_a_loop():
    rng = np.random.default_rng(0)
    off = _csr(rng.integers(0, 6, 40))
    keep = rng.random(int(off[-1])) < 0.4
    new, idx = subset_csr(off, keep)
    for b in range(40):
        want = [k for k in range(off[b], off[b + 1]) if keep[k]]
        assert idx[new[b]:new[b + 1]].tolist() == want
    bags = np.array([3, 7, 8, 30])
    new, idx = subset_csr(off, keep, bags=bags)
    for i, b in enumerate(bags):
        assert idx[new[i]:new[i + 1]].tolist() == [k for k in range(off[b], off[b + 1]) if keep[k]]


def test_merge_partials_adds_per_bag():
    out = np.ones((5, 3), np.float32)
    merge_partials(out, np.array([1, 4]), np.full((2, 3), 2, np.float32))
    assert out[:, 0].tolist() == [1, 3, 1, 1, 3]


def test_worker_serves_raw_and_tt_rows_like_numpy(tmp_path):
    """A device with 2 memory and 2 compute cores: raw rows from pages it reads (pread engine), TT rows it
    rebuilds; its partials equal NumPy's sums of the same rows in the same order, and every task is timed."""
    from emulator.tt.decomposition import tt_svd

    rng = np.random.default_rng(1)
    dim, rows_per_page = 16, 64
    raw = rng.standard_normal((256, dim)).astype(np.float32)
    path = tmp_path / "t.bin"
    raw.tofile(path)
    table = rng.standard_normal((96, dim)).astype(np.float32)
    tt = tt_svd(table, (4, 4, 6), (2, 2, 4), max_rank=4)
    eng = make_engine("pread", queue_depth=4)
    fid = eng.open(str(path))
    worker = DeviceWorker(0, eng, lambda t: tt, mem_cores=2, compute_cores=2)
    try:
        pages = aligned_empty(4 * 4096)
        handle = worker.start_io([fid] * 4, np.arange(4) * 4096, [4096] * 4, pages, np.arange(4) * 4096)
        ids = rng.integers(0, 256, 50)
        tt_ids = np.unique(rng.integers(0, 96, 20))
        look = rng.choice(tt_ids, 30)
        req = DeviceRequest(7, 0, rebuilds=(RebuildTask("r0", 0, ((5, tt_ids[:6], 0),)),
                                            RebuildTask("r1", 0, ((5, tt_ids[6:], 6),))),
                            pools=(PoolTask("m0", "mem", 1, dim, "fp32", np.array([0, 2, 5]), _csr([20, 10, 20]),
                                            np.full(50, KIND_PAGE, np.uint8), ids * dim * 4, ("io",)),
                                   PoolTask("c0", "compute", 0, dim, "fp32", np.array([1, 2]), _csr([12, 18]),
                                            np.full(30, KIND_STAGED, np.uint8), np.searchsorted(tt_ids, look),
                                            ("r0", "r1"))),
                            staged_rows={0: tt_ids.size}, staged_dims={0: dim})
        resp = worker.submit(req, handle, pages).result()
    finally:
        worker.close()
        eng.close()
    assert resp.batch_id == 7 and [r.task_id for r in resp.tasks][:3] == ["control", "r0", "r1"]
    assert np.array_equal(resp.partials[0], pool_reference(raw[ids], _csr([20, 10, 20])))
    want_tt = pool_reference(tt_rebuild_rows_reference(tt, look), _csr([12, 18]))
    np.testing.assert_allclose(resp.partials[1], want_tt, rtol=1e-4, atol=1e-5)
    assert resp.io.nbytes.tolist() == [4096] * 4 and resp.io.submit_ns.size == 4
    assert all(r.cpu_s >= 0 for r in resp.tasks) and resp.link_bytes == (3 + 2) * dim * 4


"""DeviceSet: one engine per device directory, a batch split across devices and reassembled."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.io import DeviceSet, NullEngine, PreadEngine, UringEngine, aligned_empty, uring_available
from tests.naive import read_many_naive
from tracegen.errors import InputError

P = 4096
URING_OK, URING_WHY = uring_available()


def _devices(tmp_path):
    paths = []
    for d, seed in (("dev0", 0), ("dev1", 1)):
        (tmp_path / d).mkdir()
        for k in range(2):
            p = tmp_path / d / f"t{k}.bin"
            p.write_bytes(np.random.default_rng(10 * seed + k).integers(0, 256, 16 * P, dtype=np.uint8).tobytes())
            paths.append(str(p))
    return [tmp_path / "dev0", tmp_path / "dev1"], paths


ENGINES = [pytest.param(lambda: PreadEngine(queue_depth=4), id="pread"),
           pytest.param(lambda: UringEngine(queue_depth=16), id="uring",
                        marks=pytest.mark.skipif(not URING_OK, reason=f"io_uring unavailable: {URING_WHY}"))]


@pytest.mark.parametrize("make_engine", ENGINES)
def test_batch_across_devices_matches_files(tmp_path, make_engine):
    roots, paths = _devices(tmp_path)
    rng = np.random.default_rng(5)
    n = 200
    fids = rng.integers(0, 4, n)
    offs = rng.integers(0, 15, n) * P
    nbytes = rng.integers(1, 2, n) * P
    doffs = np.arange(n) * P
    with DeviceSet(roots, make_engine) as ds:
        ids = [ds.open(p) for p in paths]
        assert [ds.device_of(p) for p in paths] == [0, 0, 1, 1]
        dest = aligned_empty(n * P)
        res = ds.read_many(np.array(ids)[fids], offs, nbytes, dest, doffs, latency=True)
        h = ds.start(np.array(ids)[fids[:10]], offs[:10], nbytes[:10], aligned_empty(10 * P), doffs[:10])
        assert ds.wait(h).requests == 10
        counters = ds.counters()
    want, nread = read_many_naive(paths, fids, offs, nbytes, n * P, doffs)
    np.testing.assert_array_equal(dest, want)
    np.testing.assert_array_equal(res.nread, nread)
    assert res.latency_ns.shape == (n,)
    assert len(counters) == 2 and sum(c.requests for c in counters) == n + 10
    assert all(c.requests > 0 for c in counters)  # both devices did work


def test_file_outside_devices_and_bad_dirs(tmp_path):
    roots, _ = _devices(tmp_path)
    other = tmp_path / "elsewhere.bin"
    other.write_bytes(b"\0" * P)
    with DeviceSet(roots, lambda: NullEngine()) as ds, pytest.raises(InputError, match="none of the devices"):
        ds.open(other)
    with pytest.raises(InputError, match="does not exist"):
        DeviceSet([tmp_path / "missing"], lambda: NullEngine())
    with pytest.raises(InputError, match="twice"):
        DeviceSet([roots[0], roots[0]], lambda: NullEngine())


def test_nested_device_dirs_pick_deepest(tmp_path):
    (tmp_path / "outer" / "inner").mkdir(parents=True)
    f = tmp_path / "outer" / "inner" / "x.bin"
    f.write_bytes(b"\0" * P)
    with DeviceSet([tmp_path / "outer", tmp_path / "outer" / "inner"], lambda: NullEngine()) as ds:
        assert ds.device_of(f) == 1

"""Direct chunk writes: the same bytes in the file as HDF5's own fletcher32 filter, the fused narrowing copy and
range check against NumPy, and the ordered writer thread (order, errors, release, abort)."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from tracegen.chunk_writer import ChunkAppender, OrderedWriter, narrow_copy

CHUNK = 1000


def _datasets(path, dtype):
    f = h5py.File(path, "w", libver=("v110", "v110"))
    return f, f.create_dataset("x", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(CHUNK,), fletcher32=True)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("sizes", [[0], [1000], [2500], [999, 1, 1700, 0, 4321]], ids=["empty", "one", "partial", "runs"])
def test_appended_chunks_are_the_bytes_hdf5_stores(tmp_path, dtype, sizes):
    rng = np.random.default_rng(sum(sizes))
    parts = [rng.integers(-(2**31), 2**31 - 1, size=n, dtype=np.int64) for n in sizes]
    data = np.concatenate(parts).astype(dtype)
    f, ds = _datasets(tmp_path / "ref.h5", dtype)  # HDF5's own write path, filter and all
    with f:
        ds.resize((data.size,))
        if data.size:
            ds[:] = data
    f, ds = _datasets(tmp_path / "new.h5", dtype)
    with f:
        w = OrderedWriter()
        app = ChunkAppender(ds, w)
        for part in parts:
            w.submit(ds.resize, (app.size + part.size,))
            if dtype == np.int64:
                assert app.append_checked(part) == ((int(part.min()), int(part.max())) if part.size else (0, -1))
            else:
                app.append(part.astype(dtype))
        app.close()
        w.close()
        assert app.size == data.size
    assert (tmp_path / "ref.h5").read_bytes() == (tmp_path / "new.h5").read_bytes()
    with h5py.File(tmp_path / "new.h5") as g:
        assert np.array_equal(g["x"][:], data)


def test_narrow_copy_matches_numpy():
    src = np.array([5, -3, 2**40 + 7, 0], np.int64)
    dst = np.zeros(4, np.int32)
    assert narrow_copy(src, dst) == (-3, 2**40 + 7)
    assert np.array_equal(dst, src.astype(np.int32))  # wraps like NumPy's cast: the caller checks the range
    assert narrow_copy(src[:0], dst[:0]) == (0, -1)
    with pytest.raises(ValueError):
        narrow_copy(src, dst[:3])
    with pytest.raises(TypeError):
        narrow_copy(src.astype(np.float64), dst)


def test_ordered_writer_runs_calls_in_order_and_raises_their_error():
    w = OrderedWriter()
    seen, released = [], []
    for k in range(50):
        w.submit(seen.append, k, release=lambda k=k: released.append(k))
    assert w.call(len, seen) == 50 and seen == list(range(50))

    def boom():
        raise OSError("disk on fire")

    w.submit(boom)
    w.submit(seen.append, 99, release=lambda: released.append(99))  # skipped after the error, still released
    with pytest.raises(OSError, match="disk on fire"):
        w.close()
    assert 99 not in seen and released[-1] == 99


def test_ordered_writer_abort_drops_what_is_queued():
    w = OrderedWriter()
    gate, seen = threading.Event(), []
    w.submit(gate.wait)
    for k in range(5):
        w.submit(seen.append, k)
    threading.Timer(0.05, gate.set).start()
    w.abort()
    assert seen == []


def test_writeback_thread_kicks_after_every_so_many_bytes(tmp_path):
    import os
    import time

    from tracegen.chunk_writer import WritebackThread

    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x" * 4096)
        k = WritebackThread(fd, every_bytes=100)
        k.written(60)
        k.written(30)  # 90 < 100: no kick yet
        time.sleep(0.05)
        assert k.kicks == 0
        k.written(20)  # 110: one kick
        for _ in range(200):  # wait for the thread (up to 2 s), not a timing assertion
            if k.kicks:
                break
            time.sleep(0.01)
        assert k.kicks == 1
        k.close()
        assert not k._thread.is_alive()
    finally:
        os.close(fd)

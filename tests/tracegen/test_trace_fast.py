"""tracegen.trace_fast: raw reads of HDF5 datasets against h5py's own slicing (the naive reference), HDF5's chunk
index against a per-chunk walk of it, corruption and truncation as errors, the array pool's reuse rule."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from tracegen import trace_fast
from tracegen.trace_fast import (ArrayPool, RawFile, RawReadError, check_chunk_tables, chunk_table, file_handle,
                                 open_checked, open_raw)

N = 1050  # 10 full chunks of 100 and a partial one
CHUNK = 100


@pytest.fixture
def h5(tmp_path):
    """A file with one dataset of every layout the reader meets: plain ones (raw reads) and others (None)."""
    path = tmp_path / "d.h5"
    values = np.random.default_rng(5).integers(-2**40, 2**40, N, dtype=np.int64)
    with h5py.File(path, "w", libver=("v110", "v110")) as f:
        f.create_dataset("chk", data=values, chunks=(CHUNK,), fletcher32=True)
        f.create_dataset("plain", data=values, chunks=(CHUNK,))
        f.create_dataset("contig", data=values)
        f.create_dataset("gz", data=values, chunks=(CHUNK,), compression="gzip")
        f.create_dataset("i32", data=values.astype(np.int32), chunks=(CHUNK,))
        f.create_dataset("be", data=values.astype(">i8"), chunks=(CHUNK,))
        f.create_dataset("two_d", data=values[:1000].reshape(10, 100))
    return path, values


def _ranges(rng, n=60):
    fixed = [(0, 0), (0, 1), (0, CHUNK), (CHUNK, 2 * CHUNK), (50, 150), (99, 101), (0, N), (N - 1, N), (N, N),
             (1000, N), (250, 950)]
    rand = [tuple(sorted(rng.integers(0, N + 1, 2))) for _ in range(n)]
    return fixed + rand


@pytest.mark.parametrize("name", ["chk", "plain", "contig"])
@pytest.mark.parametrize("window_bytes", [trace_fast._WINDOW_BYTES, 1])  # 1: the smallest window, 4 chunks
def test_raw_reads_equal_h5py(h5, name, window_bytes, monkeypatch):
    monkeypatch.setattr(trace_fast, "_WINDOW_BYTES", window_bytes)
    path, values = h5
    with h5py.File(path, "r") as f:
        raw = RawFile(file_handle(f))
        try:
            ds = open_raw(raw, f[name], np.int64)
            assert ds is not None and ds.size == N
            assert ds.fletcher == (name == "chk") and ds.chunk == (0 if name == "contig" else CHUNK)
            for lo, hi in _ranges(np.random.default_rng(1)):
                want = f[name][lo:hi]  # h5py's slicing: the reference
                np.testing.assert_array_equal(ds.read(lo, hi), want)
                np.testing.assert_array_equal(ds.view(lo, hi), want)
                out = np.full(hi - lo, -7, np.int64)
                assert ds.read(lo, hi, out) is out
                np.testing.assert_array_equal(out, values[lo:hi])
            with pytest.raises(IndexError):
                ds.read(10, N + 1)
            with pytest.raises(ValueError):
                ds.read(0, 10, np.empty(9, np.int64))
        finally:
            raw.close()


@pytest.mark.parametrize("name,dtype", [("gz", np.int64), ("i32", np.int64), ("be", np.int64), ("two_d", np.int64),
                                        ("chk", np.int32)])
def test_datasets_that_are_not_plain_are_left_to_h5py(h5, name, dtype):
    path, _ = h5
    with h5py.File(path, "r") as f:
        raw = RawFile(file_handle(f))
        try:
            assert open_raw(raw, f[name], dtype) is None
        finally:
            raw.close()


def _chunk_walk(ds: h5py.Dataset):
    """The naive reference of chunk_table: ask HDF5 for each chunk in turn, place it by its element offset."""
    n = -(-ds.shape[0] // ds.chunks[0])
    starts, sizes = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        k = info.chunk_offset[0] // ds.chunks[0]
        starts[k], sizes[k] = info.byte_offset, info.size
    return ds.chunks[0], starts, sizes


def test_chunk_table_matches_a_walk_of_the_index(h5):
    path, _ = h5
    with h5py.File(path, "r") as f:
        for name in ("chk", "plain", "gz"):
            c, starts, sizes = chunk_table(f[name])
            wc, wstarts, wsizes = _chunk_walk(f[name])
            assert c == wc == CHUNK and starts.size == 11  # 1050 elements in chunks of 100
            np.testing.assert_array_equal(starts, wstarts)
            np.testing.assert_array_equal(sizes, wsizes)
        # every chunk is stored whole: 100 x 8 bytes, plus the 4-byte checksum with fletcher32
        assert set(chunk_table(f["chk"])[2]) == {804} and set(chunk_table(f["plain"])[2]) == {800}
        assert chunk_table(f["contig"]) is None and chunk_table(f["two_d"]) is None
        check_chunk_tables({n: chunk_table(f[n]) for n in ("chk", "plain", "gz", "contig")})  # disjoint: fine


def test_overlapping_chunk_tables_are_an_error():
    a = (10, np.array([0, 100], np.int64), np.array([84, 84], np.int64))
    b = (10, np.array([300, 150], np.int64), np.array([84, 84], np.int64))  # b's chunk 1 starts inside a's chunk 1
    check_chunk_tables({"a": a, "c": None})
    with pytest.raises(RawReadError, match="b: chunk index is corrupt: chunk 1 at byte 150 overlaps a chunk 1"):
        check_chunk_tables({"a": a, "b": b})


def test_a_flipped_byte_is_an_error_naming_the_chunk(h5):
    path, _ = h5
    with h5py.File(path, "r") as f:
        starts = chunk_table(f["chk"])[1]
    with open(path, "r+b") as fh:  # flip one byte in the middle of chunk 3's data
        fh.seek(int(starts[3]) + 400)
        b = fh.read(1)
        fh.seek(int(starts[3]) + 400)
        fh.write(bytes([b[0] ^ 0x10]))
    with h5py.File(path, "r") as f:
        raw = RawFile(file_handle(f))
        try:
            ds = open_raw(raw, f["chk"], np.int64)
            np.testing.assert_array_equal(ds.read(0, 300), f["plain"][0:300])  # chunks 0-2 are intact
            for lo, hi in ((300, 400), (350, 360), (250, 450)):  # whole, window, spanning
                with pytest.raises(RawReadError, match="chunk 3 at byte .*Fletcher32"):
                    ds.read(lo, hi)
            with pytest.raises(RawReadError, match="chunk 3"):
                ds.view(310, 320)
            with pytest.raises(OSError):  # h5py's own path refuses it too
                f["chk"][300:400]
        finally:
            raw.close()


def test_a_truncated_file_is_an_error(h5):
    path, values = h5
    with h5py.File(path, "r") as f:
        raw = RawFile(file_handle(f))
        try:
            ds = open_raw(raw, f["chk"], np.int64)
            os.truncate(path, ds.starts[-1] + 10)  # the last chunk is cut
            np.testing.assert_array_equal(ds.read(0, 100), values[0:100])
            with pytest.raises(RawReadError, match="truncated"):
                ds.read(1000, N)
        finally:
            raw.close()


def test_open_checked_reads_raw_where_asked(h5):
    path, values = h5
    with h5py.File(path, "r") as f:
        raw, readers, sliced = open_checked(f, {"chk": np.int64, "plain": None, "contig": np.int64})
        try:
            assert raw is not None and readers["plain"] is None
            np.testing.assert_array_equal(readers["chk"].read(5, 905), values[5:905])
            np.testing.assert_array_equal(readers["contig"].read(0, N), values)
            assert isinstance(sliced["chk"], trace_fast.CheckedDataset)
            assert not isinstance(sliced["contig"], trace_fast.CheckedDataset)  # contiguous: no chunk index
            np.testing.assert_array_equal(sliced["plain"][120:480], values[120:480])  # through h5py, checked
        finally:
            raw.close()
        raw, readers, _ = open_checked(f, {"plain": None})
        assert raw is None and readers == {"plain": None}  # nothing raw: no descriptor kept


def test_array_pool_reuses_only_dropped_arrays():
    pool = ArrayPool(slots=4)
    a = pool.take(1000)
    addr = a.ctypes.data
    assert a.shape == (1000,) and a.dtype == np.int64
    b = pool.take(1000)  # a is still held: a new array
    assert b.ctypes.data != addr
    del a
    c = pool.take(800)  # a dropped: reused (a view of its first 800 elements)
    assert c.ctypes.data == addr and c.shape == (800,)
    d = pool.take(5000, slack=True)
    assert d.shape == (5000,) and d.base is not None and d.base.size == 5000 + 5000 // 8

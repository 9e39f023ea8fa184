import os
import shutil

import h5py
import numpy as np
import pytest

from tests import naive
from tracegen import trace_fast
from tracegen.errors import InputError
from tracegen.trace_io import Batch, TraceReader, TraceWriter, check_batch, check_csr, check_rows

from tests.conftest import small_spec


def _write(path, batches, spec=None):
    spec = spec or small_spec(batch_size=2)
    with TraceWriter(path, spec, seed=7, params={"k": 1}) as w:
        for idx, off in batches:
            w.append(np.array(idx), np.array(off))
    return w.trace_id


# two tables, batch 2: offsets have T*B+1 = 5 entries
# table-major CSR: bags (a,0), (a,1), (b,0), (b,1)
B0 = ([1, 2, 3, 4, 0, 4], [0, 1, 3, 4, 6])  # (a,0)=[1] (a,1)=[2,3] (b,0)=[4] (b,1)=[0,4]
B1 = ([9, 0, 1], [0, 0, 1, 2, 3])  # (a,0)=[] (a,1)=[9] (b,0)=[0] (b,1)=[1]


def test_round_trip(tmp_path):
    p = tmp_path / "t.h5"
    tid = _write(p, [B0, B1])
    with TraceReader(p) as r:
        assert r.num_batches == 2 and r.num_lookups == 9 and r.trace_id == tid and r.seed == 7
        b = r.batch(0)
        idx, off = b.table(1)
        assert idx.tolist() == [4, 0, 4] and off.tolist() == [0, 1, 3]
        b1 = r.batch(1)
        assert b1.table(0)[0].tolist() == [9] and b1.table(0)[1].tolist() == [0, 0, 1]


def test_trace_id_depends_on_content(tmp_path):
    assert _write(tmp_path / "a.h5", [B0]) == _write(tmp_path / "b.h5", [B0])
    assert _write(tmp_path / "c.h5", [B0]) != _write(tmp_path / "d.h5", [B1])


def test_writer_rejects_out_of_range_and_leaves_nothing(tmp_path):
    p = tmp_path / "t.h5"
    with pytest.raises(InputError, match="out of range"):
        _write(p, [([1, 2, 3, 4, 0, 5], [0, 1, 3, 4, 6])])  # table b has 5 rows: 5 is out of range
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_non_monotonic(tmp_path):
    with pytest.raises(InputError, match="monotonic"):
        _write(tmp_path / "t.h5", [([1, 2, 3, 4, 0, 4], [0, 3, 1, 4, 6])])


def test_reader_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        TraceReader(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="HDF5"):
        TraceReader(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(InputError, match="not a screc trace"):
        TraceReader(other)


def test_reader_catches_corrupted_indices(tmp_path):
    p = tmp_path / "t.h5"
    _write(p, [B0])
    with h5py.File(p, "r+") as f:
        f["indices"][2] = 10_000  # table a has 10 rows
    with pytest.raises(InputError, match="out of range") as e, TraceReader(p) as r:
        r.batch(0)
    assert str(p) in str(e.value)
    with h5py.File(p, "r+") as f:
        f["indices"][2] = 3
        f["offsets"][2] = 0  # offsets 0,1,0,... -> negative bag length
    with pytest.raises(InputError, match="monotonic"), TraceReader(p) as r:
        r.batch(0)


# --- the raw read path (tracegen/trace_fast.py) and the one-pass batch check ----------------------


@pytest.fixture(scope="module")
def gen_trace(tmp_path_factory):
    """24 batches of the tiny preset: ~560 lookups a batch in 4096-entry index chunks, so batches straddle
    chunk boundaries."""
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import get_preset

    path = tmp_path_factory.mktemp("fast") / "g.h5"
    generate_trace(get_preset("tiny"), GeneratorParams(seed=5, num_batches=24), path)
    return path


def _copy_trace(src, dst, chunks=(None, None), idx_dtype=None, **filters):
    """``src`` rewritten by hand: ``indices`` / ``offsets`` with the given chunk lengths (``None``: h5py's
    choice, or contiguous without filters), dtype and h5py filters; the same attributes."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for name, ch in zip(("indices", "offsets"), chunks):
            data = f[name][:]
            if name == "indices" and idx_dtype is not None:
                data = data.astype(idx_dtype)
            g.create_dataset(name, data=data, chunks=(ch,) if ch else None, **filters)
        g.create_dataset("batch_ptr", data=f["batch_ptr"][:])
        for k, v in f.attrs.items():
            g.attrs[k] = v
    return dst


def _h5py_batches(path):
    """The reference: every batch sliced with plain h5py, as int64."""
    with h5py.File(path, "r") as f:
        bp, tb1 = f["batch_ptr"][:], int(f.attrs["num_tables"]) * int(f.attrs["batch_size"]) + 1
        return [(f["indices"][bp[i] : bp[i + 1]].astype(np.int64),
                 f["offsets"][i * tb1 : (i + 1) * tb1].astype(np.int64)) for i in range(int(f.attrs["num_batches"]))]


LAYOUTS = {  # name: _copy_trace arguments (None: the file as TraceWriter wrote it)
    "as-written": None,
    "small-chunks": dict(chunks=(300, 50), fletcher32=True),  # a batch spans 2-3 index chunks: the window
    "tiny-chunks": dict(chunks=(64, 7), fletcher32=True),  # wider than the 4-chunk window: staged reads
    "int64-indices": dict(chunks=(300, 50), idx_dtype=np.int64, fletcher32=True),
    "unchecked-chunks": dict(chunks=(300, 50)),
    "contiguous": dict(),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fast_path_reads_the_same_batches_as_h5py(gen_trace, tmp_path, monkeypatch, layout):
    monkeypatch.setattr(trace_fast, "_WINDOW_BYTES", 1)  # the smallest window (4 chunks): it moves a lot
    path = gen_trace if LAYOUTS[layout] is None else _copy_trace(gen_trace, tmp_path / "c.h5", **LAYOUTS[layout])
    ref = _h5py_batches(path)
    order = list(range(len(ref))) + list(range(len(ref)))[::-1] + list(np.random.default_rng(1).permutation(len(ref)))
    with TraceReader(path) as r:
        assert r._raw_idx is not None and r._raw_off is not None, "the raw path was not taken"
        kept = list(r.batches())  # batches the caller keeps must never be reused for later ones
        for i in order:
            b = r.batch(int(i))
            for got, want in ((b.indices, ref[i][0]), (b.offsets, ref[i][1])):
                assert got.dtype == np.int64 and np.array_equal(got, want), (layout, i)
        for i, b in enumerate(kept):
            assert np.array_equal(b.indices, ref[i][0]) and np.array_equal(b.offsets, ref[i][1]), (layout, i)


@pytest.mark.parametrize("how", [dict(compression="gzip", fletcher32=True), dict(compression="gzip", shuffle=True),
                                 dict(idx_dtype=">i4", fletcher32=True)])
def test_fast_path_falls_back_to_h5py(gen_trace, tmp_path, how):
    path = _copy_trace(gen_trace, tmp_path / "c.h5", chunks=(300, 50), **how)
    ref = _h5py_batches(path)
    with TraceReader(path) as r:
        assert r._raw_idx is None
        if "compression" in how:
            assert r._raw_off is None
        for i, b in enumerate(r.batches()):
            assert np.array_equal(b.indices, ref[i][0]) and np.array_equal(b.offsets, ref[i][1])
            assert b.indices.dtype == np.int64 and b.offsets.dtype == np.int64


def test_fletcher32_equals_hdf5s(gen_trace):
    rng = np.random.default_rng(2)
    cases = [b"", b"\x01", b"\xff" * 2, b"\xff" * 7, bytes(1000), b"\xff" * 4000,
             rng.integers(0, 256, 300_001, dtype=np.uint8).tobytes()]  # > one 2^16-pair block, odd length
    cases += [rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes() for _ in range(40)]
    cases += [(rng.random(int(rng.integers(1, 3000))) < 0.02).astype(np.uint8).tobytes() for _ in range(20)]
    for data in cases:
        assert trace_fast.fletcher32(np.frombuffer(data, np.uint8)) == naive.fletcher32_naive(data), len(data)
    assert trace_fast.fletcher32(np.frombuffer(b"\x00" + cases[-1], np.uint8)[1:]) == naive.fletcher32_naive(cases[-1])
    with h5py.File(gen_trace, "r") as f:  # what HDF5's filter stored after each chunk
        for name in ("indices", "offsets"):
            ds = f[name]
            for k in range(min(3, ds.id.get_num_chunks())):
                mask, raw = ds.id.read_direct_chunk(ds.id.get_chunk_info(k).chunk_offset)
                assert trace_fast.fletcher32(np.frombuffer(raw[:-4], np.uint8)) == int.from_bytes(raw[-4:], "little")


def _legacy_problem(offsets, indices, rows, batch_size, index):
    try:
        check_csr(offsets, indices.size, f"batch {index}", None)
        check_rows(Batch(index, indices, offsets, rows.size, batch_size), rows, None)
    except InputError as e:
        return str(e)
    return None


def _bad_batches(ref, rows, batch_size, rng):
    """Batches of the trace, fine and broken in every way the checks know, several at once too."""
    T = rows.size

    def edited(a, at, value):
        a = a.copy()
        a[at] = value
        return a

    for i, (idx, off) in enumerate(ref):
        yield i, idx, off
        yield i, idx, edited(off, 0, 1)  # not starting at 0
        j = int(rng.integers(1, off.size - 1))
        yield i, idx, edited(off, j, off[j - 1] - 1)  # a negative bag length
        yield i, idx[:-1], off  # last offset != number of indices
        yield i, np.concatenate([idx, [0, 0, 0]]), edited(off, -1, off[-1] + 3)  # fine: a longer last bag
        for _ in range(3):  # out-of-range indices in some tables (the first such table is reported)
            x = idx.copy()
            for t in rng.choice(T, size=int(rng.integers(1, T + 1)), replace=False):
                lo, hi = int(off[t * batch_size]), int(off[(t + 1) * batch_size])
                if hi > lo:
                    x[int(rng.integers(lo, hi))] = rng.choice([-1, -(2**31), rows[t], rows[t] + 7, 2**31 - 1])
                    if rng.random() < 0.3:
                        x[int(rng.integers(lo, hi))] = -5  # both too low and too high: the minimum is reported
            yield i, x, off
        t = int(rng.integers(T))  # table t emptied: fine, a table without lookups
        lo, hi = int(off[t * batch_size]), int(off[(t + 1) * batch_size])
        o = off.copy()
        o[t * batch_size + 1 : (t + 1) * batch_size + 1] = lo
        o[(t + 1) * batch_size + 1 :] -= hi - lo
        yield i, np.concatenate([idx[:lo], idx[hi:]]), o


def test_check_batch_reports_what_check_csr_and_check_rows_do(gen_trace):
    with TraceReader(gen_trace) as r:
        rows, B = r.rows, r.batch_size
    rng = np.random.default_rng(3)
    seen = set()
    for i, idx, off in _bad_batches(_h5py_batches(gen_trace)[:6], rows, B, rng):
        idx, off = np.ascontiguousarray(idx, np.int64), np.ascontiguousarray(off, np.int64)
        want = naive.check_batch_naive(off, idx, rows, B, i)
        assert _legacy_problem(off, idx, rows, B, i) == want
        seen.update(k for k in ("start at 0", "monotonic", "last offset", "out of range") if k in (want or ""))
        seen.add(want is None)
        for src in (idx, idx.astype(np.int32)):
            out = np.full(src.size, -99, np.int64)
            try:
                got = check_batch(off, src, rows, B, i, None, out=out)
                problem = None
            except InputError as e:
                problem = str(e)
            assert problem == want, (i, src.dtype, problem, want)
            if problem is None:
                assert got is out and np.array_equal(out, idx)
        if want is None:
            assert check_batch(off, idx, rows, B, i, None) is idx  # int64 without out: no copy
    assert seen == {"start at 0", "monotonic", "last offset", "out of range", True, False}, seen
    with pytest.raises(InputError, match=r"^t\.h5: batch 9: offsets do not start at 0$"):
        check_batch(np.ones(rows.size * B + 1, np.int64), np.zeros(0, np.int64), rows, B, 9, "t.h5")


def test_truncated_trace_is_an_input_error(gen_trace, tmp_path):
    p = tmp_path / "t.h5"
    shutil.copy(gen_trace, p)
    with TraceReader(p) as r:  # cut under an open reader: the raw reads come up short
        assert r._raw_idx is not None
        os.truncate(p, p.stat().st_size // 2)
        with pytest.raises(InputError, match="truncated") as e:
            for _ in r.batches():
                pass
        assert str(p) in str(e.value) and "unreadable" in str(e.value)
    with pytest.raises(InputError) as e:  # cut before opening: refused at open or on reading
        with TraceReader(p) as r:
            for _ in r.batches():
                pass
    assert str(p) in str(e.value)


@pytest.mark.parametrize("name", ["indices", "offsets"])
def test_flipped_byte_in_a_chunk_is_an_input_error(gen_trace, tmp_path, name):
    p = tmp_path / "t.h5"
    shutil.copy(gen_trace, p)
    with h5py.File(p, "r") as f:
        info = f[name].id.get_chunk_info(1)
        first, clen = info.chunk_offset[0], f[name].chunks[0]
    with open(p, "r+b") as fh:
        fh.seek(info.byte_offset + 37)
        b = fh.read(1)
        fh.seek(info.byte_offset + 37)
        fh.write(bytes([b[0] ^ 0x10]))
    with TraceReader(p) as r:
        assert r._raw_idx is not None and r._raw_off is not None
        hit = 0
        for i in range(r.num_batches):
            if name == "offsets":
                touches = i == first // r._tb1
            else:
                touches = r.batch_ptr[i] < first + clen and r.batch_ptr[i + 1] > first
            if touches:
                hit += 1
                with pytest.raises(InputError, match="Fletcher32") as e:
                    r.batch(i)
                assert str(p) in str(e.value)
            else:
                r.batch(i)
        assert hit


def test_array_pool_reuses_only_arrays_nobody_holds():
    pool = trace_fast.ArrayPool(slots=4)
    a = pool.take(100)
    b = pool.take(100)
    assert a is not b and a.dtype == np.int64 and a.shape == (100,)
    view = b[10:20]
    del b
    c = pool.take(100)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, a)  # b lives on through its view
    a_addr = a.ctypes.data
    del a
    d = pool.take(90)  # a is free again: reused (as a view of 90 of its 100)
    assert d.ctypes.data == a_addr and d.shape == (90,)
    assert pool.take(1000, slack=True).shape == (1000,)


# --- checksummed metadata (HDF5's 1.10 format), traces of the earliest format, flipped metadata bytes -------


GEN_TRACE_ID = "a9fb13dbe6b8fd62b41fa7b35dbf1c28"  # tiny, seed 5, 24 batches: as computed before the 1.10 format
SMALL_TRACE_ID = "b001916628fb7689fead099a90d1f3a6"  # _write([B0, B1]), likewise


def _earliest_format(fn):
    """``fn()`` with TraceWriter writing as it did before: HDF5's earliest format (no metadata checksums,
    v1 B-tree chunk indexes) and variable-length string attributes (in the global heap)."""
    from tracegen import trace_write

    with pytest.MonkeyPatch.context() as m:
        m.setattr(trace_write, "WRITE_LIBVER", ("earliest", "latest"))
        m.setattr(trace_write, "fixed_text", str)
        return fn()


def _tiny(path, batches, earliest=False):
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.presets import get_preset

    gen = lambda: generate_trace(get_preset("tiny"), GeneratorParams(seed=5, num_batches=batches), path)  # noqa: E731
    _earliest_format(gen) if earliest else gen()
    return path


@pytest.fixture(scope="module")
def old_trace(tmp_path_factory):
    """gen_trace's trace written in the earliest format."""
    return _tiny(tmp_path_factory.mktemp("old") / "g.h5", 24, earliest=True)


def _superblock_version(path):
    head = path.read_bytes()[:9]
    assert head[:8] == b"\x89HDF\r\n\x1a\n"
    return head[8]


def _read_all(path, raw=True):
    """Every batch (indices, offsets) through the raw path (asserted taken) or through h5py alone."""
    with pytest.MonkeyPatch.context() as m:
        if not raw:
            m.setattr(trace_fast, "file_handle", lambda f: None)
        with TraceReader(path) as r:
            assert (r._raw_idx is not None and r._raw_off is not None) == raw
            return [(b.indices.copy(), b.offsets.copy()) for b in r.batches()]


def test_writer_checksums_metadata_and_keeps_trace_id(gen_trace, old_trace, tmp_path):
    assert _superblock_version(gen_trace) >= 2 and _superblock_version(old_trace) == 0
    data = gen_trace.read_bytes()
    assert b"TREE" not in data and b"GCOL" not in data  # no v1 B-tree, no global heap: all checksummed
    assert b"TREE" in old_trace.read_bytes() and b"GCOL" in old_trace.read_bytes()
    with TraceReader(gen_trace) as r, TraceReader(old_trace) as o:
        assert r.trace_id == o.trace_id == GEN_TRACE_ID
        assert (r.spec, r.params, r.seed, r.num_lookups) == (o.spec, o.params, o.seed, o.num_lookups)
    assert _write(tmp_path / "s.h5", [B0, B1]) == SMALL_TRACE_ID
    assert _earliest_format(lambda: _write(tmp_path / "o.h5", [B0, B1])) == SMALL_TRACE_ID


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "h5py"])
def test_earliest_format_reads_the_same_batches(gen_trace, old_trace, raw):
    ref = _h5py_batches(gen_trace)
    for path in (old_trace, gen_trace):
        got = _read_all(path, raw)
        assert len(got) == len(ref)
        for (a, b), (c, d) in zip(got, ref):
            assert np.array_equal(a, c) and np.array_equal(b, d)


def _chunk_ranges(path):
    """Byte ranges ``(start, end, dataset, chunk)`` of every data chunk of a trace."""
    with h5py.File(path, "r") as f:
        out = []
        for name in ("indices", "offsets", "batch_ptr"):
            for k in range(f[name].id.get_num_chunks()):
                info = f[name].id.get_chunk_info(k)
                out.append((info.byte_offset, info.byte_offset + info.size, name, k))
    return out


def _index_entry_bytes(path, before, after):
    """File positions of the entries of the ``indices`` and ``offsets`` chunks in their chunk indexes: the
    bytes from ``before`` bytes ahead of where a chunk's address is stored to ``after`` bytes past it."""
    data, ranges = path.read_bytes(), _chunk_ranges(path)
    positions = set()
    for start, _, name, k in ranges:
        if name == "batch_ptr":  # its 12-byte chunks sit at addresses like 2048, a number found elsewhere too
            continue
        key, hits, at = start.to_bytes(8, "little"), [], data.find(start.to_bytes(8, "little"))
        while at >= 0:
            if not any(a <= at < e for a, e, _, _ in ranges):  # not a value inside some chunk's data
                hits.append(at)
            at = data.find(key, at + 1)
        assert len(hits) == 1, (name, k, hits)
        positions.update(range(max(0, hits[0] - before), hits[0] + 8 + after))
    return sorted(positions)


def _flip_outcomes(path, positions, tmp_path, rng):
    """Flip each position's byte (one at a time, a random nonzero xor) and read every batch through both
    paths: counts of "error" (InputError) and "same" (every batch identical); anything else fails."""
    data, ref = path.read_bytes(), _h5py_batches(path)
    p = tmp_path / "f.h5"
    counts = {"error": 0, "same": 0}
    for pos in positions:
        b = bytearray(data)
        b[pos] ^= int(rng.integers(1, 256))
        p.write_bytes(bytes(b))
        for raw in (True, False):
            with pytest.MonkeyPatch.context() as m:
                if not raw:
                    m.setattr(trace_fast, "file_handle", lambda f: None)
                try:
                    with TraceReader(p) as r:
                        got = [(x.indices.copy(), x.offsets.copy()) for x in r.batches()]
                except InputError as e:
                    assert str(p) in str(e) and "\n" not in str(e)
                    counts["error"] += 1
                    continue
            assert len(got) == len(ref), (pos, raw)
            for i, ((a, o), (c, d)) in enumerate(zip(got, ref)):
                assert np.array_equal(a, c) and np.array_equal(o, d), f"byte {pos} flipped: batch {i} changed ({raw=})"
            counts["same"] += 1
    return counts


def test_flipped_metadata_bytes_are_errors_never_other_data(tmp_path):
    """One flipped byte anywhere in a trace (a seeded sample of the whole file and of its metadata, and every
    byte of every chunk index entry, where a flip used to swap chunks silently): an InputError naming the file,
    or batches identical to the original -- never different data. 3 batches: 25 KB, 5.6 KB of it metadata."""
    flip_trace, rng = _tiny(tmp_path / "t.h5", 3), np.random.default_rng(11)
    size = flip_trace.stat().st_size
    in_data = np.zeros(size, bool)
    for a, e, _, _ in _chunk_ranges(flip_trace):
        in_data[a:e] = True
    entries = _index_entry_bytes(flip_trace, 0, 16)  # address, chunk size, filter mask
    anywhere = rng.choice(size, 150, replace=False)
    meta = rng.choice(np.flatnonzero(~in_data), 150, replace=False)
    counts = _flip_outcomes(flip_trace, [*entries, *anywhere, *meta], tmp_path, rng)
    assert counts["error"] > counts["same"] > 0, counts
    counts = _flip_outcomes(flip_trace, entries, tmp_path, rng)
    assert counts["same"] == 0, counts  # every index entry byte is checksummed


def test_flipped_chunk_index_bytes_of_an_earliest_format_trace_are_errors(old_trace, tmp_path):
    """The earliest format's v1 B-trees carry no checksum: a flipped byte in an entry (key: chunk size, filter
    mask, element offset, element-size offset; then the chunk's address) must still be an error or harmless,
    never another chunk's data or zeros -- in the fuzz's trace (tiny, 24 batches), flipping byte 8221 (the
    element offset of chunk 0 of ``indices``) changed every batch without an error."""
    old3 = _tiny(tmp_path / "old3.h5", 3, earliest=True)
    counts = _flip_outcomes(old3, _index_entry_bytes(old3, 24, 0), tmp_path, np.random.default_rng(12))
    assert counts["error"] > counts["same"] > 0, counts
    data = bytearray(old_trace.read_bytes())
    first = _chunk_ranges(old_trace)[0]
    assert first[2:] == ("indices", 0)
    at = data.find(first[0].to_bytes(8, "little"))  # chunk 0's address; its element offset is 16 bytes before
    assert data[at - 16 : at - 8] == bytes(8)
    last = sum(r[2] == "indices" for r in _chunk_ranges(old_trace)) - 1  # 3: its entry is 32 bytes a chunk on
    assert data[at + 32 * last - 16 : at + 32 * last - 8] == (4096 * last).to_bytes(8, "little")
    p = tmp_path / "o.h5"
    for edit, problem in (
        (lambda d: d.__setitem__(at - 11, d[at - 11] ^ 0xFF), "a chunk listed at element"),  # the fuzz's flip
        (lambda d: d.__setitem__(slice(at - 16, at - 8), (4096).to_bytes(8, "little")), "chunk 1 listed twice"),
        (lambda d: d.__setitem__(slice(at, at + 8), data[at + 32 : at + 40]), "overlaps"),  # chunk 1's address
        # the last chunk's element-size offset: HDF5's search misses that chunk, h5py would read zeros
        (lambda d: d.__setitem__(at + 32 * last - 5, 1), None),
    ):
        d = bytearray(data)
        edit(d)
        p.write_bytes(bytes(d))
        for raw in (True, False):
            if problem is None and raw:  # not a field the raw path reads: the same batches
                assert all(np.array_equal(a[0], b[0]) for a, b in zip(_read_all(p, raw), _h5py_batches(old_trace)))
                continue
            want = problem or f"chunk {last} is not found"
            with pytest.raises(InputError, match=f"indices: chunk index is corrupt: .*{want}"):
                _read_all(p, raw)


def test_flipped_inner_b_tree_keys_of_an_earliest_format_trace_are_errors(tmp_path):
    """Keys of inner B-tree nodes guide HDF5's search for a chunk (h5py's path), not a pass over the leaves (the
    raw path): flipped, an error or the same batches still. 70 batches: ``offsets`` and ``batch_ptr`` have more
    chunks (70, 71) than one v1 B-tree leaf holds (64)."""
    import re

    old = _tiny(tmp_path / "old70.h5", 70, earliest=True)
    data = old.read_bytes()
    positions = []
    for m in re.finditer(b"TREE", data):
        node = m.start()
        if data[node + 4] == 1 and data[node + 5] >= 1:  # a chunk B-tree node above the leaves
            for key in range(int.from_bytes(data[node + 6 : node + 8], "little") + 1):
                positions += range(node + 24 + 32 * key + 8, node + 24 + 32 * key + 24)  # its element offsets
    assert len(positions) >= 2 * 3 * 16, len(positions)
    counts = _flip_outcomes(old, positions, tmp_path, np.random.default_rng(13))
    assert counts["error"] > 0, counts


def test_offsets_in_parts_write_the_same_file(tmp_path):
    ref = _write(tmp_path / "ref.h5", [B0, B1])
    assert ref == SMALL_TRACE_ID
    with TraceWriter(tmp_path / "p.h5", small_spec(batch_size=2), seed=7, params={"k": 1}) as w:
        for idx, off in (B0, B1):
            off = np.array(off)
            w.begin_batch_parts([off[:1], off[1:1], off[1:4], off[4:]])  # any split, empty parts too
            w.append_table(0, np.array(idx[: off[2]]))
            w.append_table(1, np.array(idx[off[2] :]))
            w.end_batch()
    assert w.trace_id == ref
    assert (tmp_path / "p.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()


@pytest.mark.parametrize("parts, problem", [
    ([[1, 1, 3], [4, 6]], "do not start at 0"),
    ([[0, 1, 3], [2, 6]], "not monotonic"),  # decreasing across parts
    ([[0, 3, 1, 4, 6]], "not monotonic"),
    ([[0, 1, 3], [4]], "length"),
    ([[0, 1, 3], [4, 6, 7]], "length"),
])
def test_offsets_in_parts_are_checked(tmp_path, parts, problem):
    with pytest.raises((InputError, ValueError), match=problem):
        with TraceWriter(tmp_path / "bad.h5", small_spec(batch_size=2)) as w:
            w.begin_batch_parts([np.array(p) for p in parts])
    assert not (tmp_path / "bad.h5").exists() and list(tmp_path.iterdir()) == []

import h5py
import numpy as np
import pytest

from tracegen.errors import InputError
from tracegen.trace_io import TraceReader, TraceWriter

from conftest import small_spec


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

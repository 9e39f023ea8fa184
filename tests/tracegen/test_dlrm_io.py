"""dlrm_datasets .pt import and export: the exact layout, round trips, and bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from tests.conftest import one_line_error, run_cli
from tracegen.dlrm_io import export_dlrm, import_dlrm, load_dlrm
from tracegen.errors import InputError
from tracegen.generate import GeneratorParams, generate_trace
from tracegen.trace_io import TraceReader

torch = pytest.importorskip("torch", reason="the dlrm_datasets importer needs the torch extra")


def _hand_file(path, gz: bool = False):
    # T = 2 tables, B = 3 samples, table-major:
    #   table 0: bags [4, 1], [], [4]        table 1: bags [0], [2, 2, 7], [1]
    indices = torch.tensor([4, 1, 4, 0, 2, 2, 7, 1], dtype=torch.int64)
    lengths = torch.tensor([[2, 0, 1], [1, 3, 1]], dtype=torch.int64)
    offsets = torch.tensor([0, 2, 2, 3, 4, 7, 8], dtype=torch.int64)
    if gz:
        with gzip.open(path, "wb") as f:
            torch.save((indices, offsets, lengths), f)
    else:
        torch.save((indices, offsets, lengths), path)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_import_a_file_in_exactly_that_layout(tmp_path, gz):
    src = _hand_file(tmp_path / ("h.pt.gz" if gz else "h.pt"), gz)
    trace_id, spec = import_dlrm(src, tmp_path / "h.h5", dim=8)
    assert spec.num_tables == 2 and spec.batch_size == 3
    assert [t.rows for t in spec.tables] == [5, 8]  # max index + 1: 4 + 1 and 7 + 1
    assert [t.pooling.mean for t in spec.tables] == [1.0, 5 / 3]  # 3 lookups / 3 bags, 5 / 3
    with TraceReader(tmp_path / "h.h5") as r:
        b = r.batch(0)
        assert r.trace_id == trace_id and r.num_batches == 1
        assert b.indices.tolist() == [4, 1, 4, 0, 2, 2, 7, 1] and b.offsets.tolist() == [0, 2, 2, 3, 4, 7, 8]
    assert not list(tmp_path.glob(".screc-import-*"))  # the decompressed copy is gone


def test_import_cuts_batches(tmp_path):
    src = tmp_path / "h.pt"
    T, B = 3, 8
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 4, size=(T, B))
    offsets = np.concatenate([[0], np.cumsum(lengths.reshape(-1))])
    indices = rng.integers(0, 50, size=int(offsets[-1]))
    torch.save((torch.from_numpy(indices), torch.from_numpy(offsets), torch.from_numpy(lengths)), src)
    import_dlrm(src, tmp_path / "c.h5", batch_size=2)
    with TraceReader(tmp_path / "c.h5") as r:
        assert r.num_batches == 4 and r.batch_size == 2
        for j, b in enumerate(r.batches()):
            for t in range(T):  # batch j holds samples 2j, 2j+1 of every table
                idx, off = b.table(t)
                lo, hi = offsets[t * B + 2 * j], offsets[t * B + 2 * j + 2]
                assert idx.tolist() == indices[lo:hi].tolist()
                assert np.diff(off).tolist() == lengths[t, 2 * j : 2 * j + 2].tolist()
    with pytest.raises(InputError, match="does not divide"):
        import_dlrm(src, tmp_path / "d.h5", batch_size=3)


@pytest.mark.parametrize("suffix", [".pt", ".pt.gz"])
def test_export_then_import_gives_identical_lookups(tmp_path, tiny_spec, suffix):
    generate_trace(tiny_spec, GeneratorParams(seed=4, num_batches=3), tmp_path / "t.h5")
    info = export_dlrm(tmp_path / "t.h5", tmp_path / ("t" + suffix))
    assert info["tables"] == 4 and info["samples"] == 96 and info["batches"] == 3
    indices, offsets, lengths = load_dlrm(tmp_path / ("t" + suffix))[0].__dict__.values()
    assert lengths.shape == (4, 96) and offsets.size == 4 * 96 + 1
    back_id, _ = import_dlrm(tmp_path / ("t" + suffix), tmp_path / "b.h5", spec=tiny_spec, batch_size=32)
    plain_id, _ = import_dlrm(tmp_path / ("t" + suffix), tmp_path / "p.h5", batch_size=32)
    with TraceReader(tmp_path / "t.h5") as a, TraceReader(tmp_path / "b.h5") as b, TraceReader(tmp_path / "p.h5") as c:
        assert a.trace_id == back_id  # same spec, same batches: the same content hash
        for x, y, z in zip(a.batches(), b.batches(), c.batches()):
            assert np.array_equal(x.indices, y.indices) and np.array_equal(x.offsets, y.offsets)
            assert np.array_equal(x.indices, z.indices) and np.array_equal(x.offsets, z.offsets)
    export_dlrm(tmp_path / "t.h5", tmp_path / "one.pt", start=1, stop=2)
    import_dlrm(tmp_path / "one.pt", tmp_path / "one.h5", spec=tiny_spec)
    with TraceReader(tmp_path / "t.h5") as a, TraceReader(tmp_path / "one.h5") as b:
        assert np.array_equal(a.batch(1).indices, b.batch(0).indices)


def _save(path, obj):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("make, problem", [
    (lambda p: _save(p, [torch.zeros(3, dtype=torch.int64)]), "tuple"),
    (lambda p: _save(p, (torch.zeros(2, dtype=torch.int64), torch.tensor([0, 1, 2]), torch.ones((1, 3),
                                                                                              dtype=torch.int64))),
     "expected T\\*B\\+1"),
    (lambda p: _save(p, (torch.zeros(2, dtype=torch.int64), torch.tensor([0, 1, 2]),
                         torch.tensor([[2, 0]]))), "lengths do not match"),
    (lambda p: _save(p, (torch.zeros(2, dtype=torch.int64), torch.tensor([0, 3, 2]),
                         torch.tensor([[3, -1]]))), "not monotonic"),
    (lambda p: _save(p, (torch.zeros(2), torch.tensor([0, 1, 2]), torch.tensor([[1, 1]]))), "integer tensor"),
    (lambda p: _save(p, (torch.tensor([-1, 0]), torch.tensor([0, 1, 2]), torch.tensor([[1, 1]]))), "negative"),
    (lambda p: p.write_bytes(b"not a torch file at all") and p, "not a readable torch file"),
])
def test_bad_files(tmp_path, make, problem):
    p = make(tmp_path / "bad.pt")
    with pytest.raises(InputError, match=problem):
        import_dlrm(p, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_truncated_files_exit_2_with_one_line(tmp_path, capsys):
    good = _hand_file(tmp_path / "h.pt")
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    _hand_file(tmp_path / "h.pt.gz", gz=True)
    gz = (tmp_path / "h.pt.gz").read_bytes()
    cut_gz = tmp_path / "cut.pt.gz"
    cut_gz.write_bytes(gz[: len(gz) - 20])
    junk_gz = tmp_path / "junk.pt.gz"
    import gzip

    junk_gz.write_bytes(gzip.compress(b"PK\x03\x04 not really a zip archive" * 50))
    for bad in (cut, cut_gz, junk_gz, tmp_path / "missing.pt"):
        code, _, err = run_cli(["trace", "import-dlrm", str(bad), "-o", str(tmp_path / "o.h5")], capsys)
        assert code == 2 and one_line_error(err) and str(bad) in err
        # a clean reason: whole words, no torch message cut in the middle
        assert len(err) < 300 and (err.rstrip().endswith(")") or err.rstrip().endswith("found"))
    assert not (tmp_path / "o.h5").exists() and not list(tmp_path.glob(".screc-import-*"))


def test_cli_round_trip(tmp_path, capsys, tiny_trace, tiny_spec):
    code, out, err = run_cli(["trace", "export-dlrm", str(tiny_trace), "--batches", "2", "-o",
                              str(tmp_path / "e.pt.gz")], capsys)
    assert code == 0, err
    assert "64 samples (2 batches" in out and "e.pt.gz.screc.json" in out
    code, out, err = run_cli(["trace", "import-dlrm", str(tmp_path / "e.pt.gz"), "--batch-size", "32", "-o",
                              str(tmp_path / "i.h5")], capsys)
    assert code == 0, err
    assert "2 batches of 32" in out
    # without --batch-size the export's sidecar keeps the batch structure (not "1 batch of 64"), and its spec
    code, out, err = run_cli(["trace", "import-dlrm", str(tmp_path / "e.pt.gz"), "-o", str(tmp_path / "j.h5")], capsys)
    assert code == 0, err
    assert "2 batches of 32" in out
    with TraceReader(tmp_path / "j.h5") as j, TraceReader(tiny_trace) as t:
        assert j.spec == t.spec and j.num_batches == 2
        assert all(np.array_equal(j.batch(i).indices, t.batch(i).indices) for i in range(2))
    code, _, err = run_cli(["trace", "export-dlrm", str(tiny_trace), "--start", "9", "-o", str(tmp_path / "n.pt")],
                           capsys)
    assert code == 2 and one_line_error(err)


def test_without_torch_one_line(tmp_path, monkeypatch):
    import sys

    src = _hand_file(tmp_path / "h.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now fails
    with pytest.raises(InputError, match="install the torch extra"):
        import_dlrm(src, tmp_path / "x.h5")

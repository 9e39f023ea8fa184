import json
import os
import zlib

import h5py
import numpy as np
import pytest

from emulator.store.store import Store, StoreBuildConfig
from emulator.store.build import build_store, verify_store
from emulator.tt.decomposition import tt_rebuild_rows_reference
from emulator.store.weights import GENERATORS, SyntheticWeightsConfig, synthetic_rows
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec

from tests.conftest import one_line_error, run_cli


def test_build_and_open(tiny_store, tiny_spec):
    s = Store.open(tiny_store)
    assert [t.name for t in s.tables] == [t.name for t in tiny_spec.tables]
    for i, t in enumerate(tiny_spec.tables):
        lay = s.layouts[i]
        assert (tiny_store / s.tables[i].raw.file).stat().st_size == lay.file_bytes
        assert s.tables[i].rows_per_page == lay.rows_per_page


def test_rows_are_the_synthetic_weights(tiny_store, tiny_spec):
    s = Store.open(tiny_store)
    for i, t in enumerate(tiny_spec.tables):
        src = synthetic_rows(t, i, SyntheticWeightsConfig(seed=1))  # the default generator
        want = src.read(0, t.rows).astype(s.layouts[i].np_dtype)
        assert np.array_equal(s.read_range(i, 0, t.rows), want)
        # generated a chunk at a time: any split gives the same rows
        assert np.array_equal(np.concatenate([src.read(0, 7), src.read(7, t.rows)]), src.read(0, t.rows))


@pytest.mark.parametrize("generator", GENERATORS)
def test_weights_deterministic_and_noisy(generator):
    t = TableSpec("x", 5000, 16)
    a = synthetic_rows(t, 0, SyntheticWeightsConfig(seed=5, noise_ratio=0.1, generator=generator)).read(100, 300)
    b = synthetic_rows(t, 0, SyntheticWeightsConfig(seed=5, noise_ratio=0.1, generator=generator)).read(100, 300)
    c = synthetic_rows(t, 0, SyntheticWeightsConfig(seed=6, noise_ratio=0.1, generator=generator)).read(100, 300)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.05 < float(a.std()) < 0.2  # signal std 0.1, noise 0.01


def test_tt_variants_measure_real_error(tiny_store):
    s = Store.open(tiny_store)
    for i, t in enumerate(s.tables):
        for v in t.tt:
            tt = s.load_tt(i, v.rank)
            assert tuple(tt.ranks) == v.tt_ranks and v.compression_ratio > 1
            rows = np.arange(min(200, t.rows))
            err = np.abs(tt_rebuild_rows_reference(tt, rows) - s.read_rows(i, rows).astype(np.float32)).max()
            assert err < 5 * v.max_abs_error
        errs = {v.rank: v.rel_fro_error for v in t.tt}
        # signal rank 8 + noise 0.05: rank 8 leaves about the noise (> 0, real); rank 4 misses signal too
        assert 0.01 < errs[8] < 0.2
        assert errs[4] > errs[8]


def test_no_noise_tt_is_near_exact(tmp_path):
    spec = ModelSpec("clean", (TableSpec("x", 4096, 16),), batch_size=4)
    s = build_store(spec, tmp_path / "s", StoreBuildConfig(noise_ratio=0.0, signal_rank=4, tt_ranks=(4,)))
    v = s.tables[0].tt[0]
    # a rank-4 signal is recovered by a rank-4 TT-SVD to float32 precision
    assert v.rel_fro_error < 1e-4


def test_verify_catches_flipped_byte(tmp_path, tiny_spec):
    s = build_store(tiny_spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(4,)))
    assert verify_store(s.path).ok
    for rel in (s.tables[1].raw.file, "tt.h5"):
        f = s.path / rel
        data = bytearray(f.read_bytes())
        pos = len(data) // 2
        data[pos] ^= 0x40
        f.write_bytes(bytes(data))
        rep = verify_store(s.path)
        assert not rep.ok and rel in rep.problems[0] and "checksum mismatch" in rep.problems[0]
        data[pos] ^= 0x40
        f.write_bytes(bytes(data))
    assert verify_store(s.path).ok


def test_verify_cli_exit_2(tmp_path, tiny_spec, capsys):
    s = build_store(tiny_spec, tmp_path / "s", StoreBuildConfig(tt_ranks=()))
    f = s.path / s.tables[0].raw.file
    data = bytearray(f.read_bytes())
    data[5] ^= 1
    f.write_bytes(bytes(data))
    code, out, err = run_cli(["store", "verify", str(s.path)], capsys)
    assert code == 2 and one_line_error(err) and "t0" in err and "bytes 0-" in err


def test_manifest_tampering_and_truncation(tmp_path, tiny_spec):
    s = build_store(tiny_spec, tmp_path / "s", StoreBuildConfig(tt_ranks=()))
    m = json.loads((s.path / "manifest.json").read_text())
    m["tables"][0]["rows"] += 1
    (s.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="modified"):
        Store.open(s.path)
    s = build_store(tiny_spec, tmp_path / "s2", StoreBuildConfig(tt_ranks=()))
    f = s.path / s.tables[0].raw.file
    os.truncate(f, 4096)
    with pytest.raises(InputError, match="bytes"):
        Store.open(s.path)
    (s.path / "manifest.json").write_text("{")
    with pytest.raises(InputError, match="JSON"):
        Store.open(s.path)


def test_failed_build_leaves_nothing_and_keeps_previous(tmp_path, tiny_spec):
    out = tmp_path / "s"
    first = build_store(tiny_spec, out, StoreBuildConfig(tt_ranks=()))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 3), np.float32))  # wrong shape for table t0
    with pytest.raises(InputError, match="do not match"):
        build_store(tiny_spec, out, StoreBuildConfig(tt_ranks=(), imports={"t0": str(bad)}))
    assert Store.open(out).store_id == first.store_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "s"]


def test_import_npy_and_h5(tmp_path):
    spec = ModelSpec("imp", (TableSpec("a", 300, 8), TableSpec("b", 50, 4, "fp16")), batch_size=4)
    wa = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    wb = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", wa)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["emb_b"] = wb
    s = build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), imports={
        "a": str(tmp_path / "a.npy"), "b": f"{tmp_path / 'w.h5'}:emb_b"}))
    assert np.array_equal(s.read_range(0, 0, 300), wa)
    assert np.array_equal(s.read_range(1, 0, 50), wb.astype(np.float16))


def test_store_cli_bad_inputs(tmp_path, capsys):
    code, _, err = run_cli(["store", "info", str(tmp_path / "nope")], capsys)
    assert code == 2 and one_line_error(err) and "not found" in err
    code, _, err = run_cli(["store", "build", "--model", "no-such-preset", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and one_line_error(err)
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--import", "zz=a.npy", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and one_line_error(err) and "zz" in err
    assert not (tmp_path / "x").exists()


def test_store_cli_build_info(tmp_path, capsys):
    code, out, _ = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "4", "-o", str(tmp_path / "s"), "--json"], capsys)
    assert code == 0 and json.loads(out)["tables"] == 4
    code, out, _ = run_cli(["store", "info", str(tmp_path / "s"), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and all(t["tt"][0]["rank"] <= 4 for t in info["tables"])


def test_chunk_mismatches_names_each_bad_chunk_by_byte_range(tmp_path):
    from emulator.store.manifest import CHUNK_BYTES, FileEntry
    from emulator.store.store import chunk_mismatches

    data = bytearray(b"x" * (CHUNK_BYTES + 10))  # two chunks: 4 MiB and 10 bytes
    f = tmp_path / "f.bin"
    f.write_bytes(bytes(data))
    entry = FileEntry("f.bin", len(data), (zlib.crc32(data[:CHUNK_BYTES]), zlib.crc32(data[CHUNK_BYTES:])))
    seen = []
    assert chunk_mismatches(f, entry, [0, 1], seen.append) == [] and seen == [CHUNK_BYTES, 10]
    data[CHUNK_BYTES + 3] ^= 1  # a flipped bit in the second chunk only
    f.write_bytes(bytes(data))
    assert chunk_mismatches(f, entry, [0, 1]) == [(1, CHUNK_BYTES, CHUNK_BYTES + 10)]
    assert chunk_mismatches(f, entry, [0]) == []  # only the listed chunks are read

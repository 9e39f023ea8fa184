"""emulator.store.build: a built store against naive references. Raw files laid out byte by byte as the format
says (rows packed into 4 KiB pages, zero padding, wide rows over whole pages), checksums of every 1 MiB chunk,
TT variants of an exactly low-rank table with hand-derived sizes and ratios, refusals that leave nothing behind
(and an existing store untouched), and verify_store naming the byte range of a flipped byte."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from emulator.store.build import build_store, verify_store
from emulator.store.store import CHUNK_BYTES, Store, StoreBuildConfig
from emulator.tt.decomposition import factorize_dim, factorize_rows, random_tt, tt_rebuild_rows_reference
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec

PAGE = 4096
# (name, rows, dim, dtype): 64-byte rows (64 a page, no gap), 96-byte rows (42 a page, 64 bytes of padding),
# 20-byte fp16 rows (204 a page), 4400-byte rows (two pages each)
TABLES = (("dense", 300, 16, "fp32"), ("gappy", 100, 24, "fp32"), ("half", 700, 10, "fp16"), ("wide", 3, 1100, "fp32"))


def _weights(rows: int, dim: int, dtype: str) -> np.ndarray:
    """Recognisable values, exact in fp16: row r, column c -> (r * 7 + c) mod 2000 - 1000."""
    v = (np.arange(rows)[:, None] * 7 + np.arange(dim)[None, :]) % 2000 - 1000
    return v.astype(np.float16 if dtype == "fp16" else np.float32)


def _raw_file_naive(w: np.ndarray) -> bytes:
    """The raw file of rows ``w`` as the format describes it, built one row at a time."""
    row_bytes = w.shape[1] * w.itemsize
    if row_bytes <= PAGE:
        per_page = PAGE // row_bytes
        out = bytearray(-(-w.shape[0] // per_page) * PAGE)
        for r in range(w.shape[0]):
            at = (r // per_page) * PAGE + (r % per_page) * row_bytes
            out[at:at + row_bytes] = w[r].tobytes()
    else:
        span = -(-row_bytes // PAGE) * PAGE
        out = bytearray(w.shape[0] * span)
        for r in range(w.shape[0]):
            out[r * span:r * span + row_bytes] = w[r].tobytes()
    return bytes(out)


@pytest.fixture
def imported(tmp_path):
    spec = ModelSpec("layouts", tuple(TableSpec(n, r, d, dt) for n, r, d, dt in TABLES), batch_size=4)
    imports = {}
    for n, r, d, dt in TABLES:
        np.save(tmp_path / f"{n}.npy", _weights(r, d, dt).astype(np.float32))
        imports[n] = str(tmp_path / f"{n}.npy")
    return spec, imports


def test_raw_files_are_laid_out_as_the_format_says(tmp_path, imported):
    spec, imports = imported
    store = build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), imports=imports))
    for i, (n, r, d, dt) in enumerate(TABLES):
        data = (tmp_path / "s" / "raw" / f"{n}.bin").read_bytes()
        assert data == _raw_file_naive(_weights(r, d, dt)), n
        entry = store.tables[i]
        assert entry.raw.bytes == len(data) and entry.tt == ()
        # one CRC32 per 1 MiB chunk
        assert list(entry.raw.crc32) == [zlib.crc32(data[k:k + CHUNK_BYTES]) for k in range(0, len(data), CHUNK_BYTES)]
        np.testing.assert_array_equal(store.read_rows(i, np.arange(r)), _weights(r, d, dt))
    # hand: 300 rows of 64 B in 5 pages; 100 of 96 B at 42 a page in 3; 700 of 20 B at 204 a page in 4; 3 of 2 pages
    assert [store.tables[i].raw.bytes // PAGE for i in range(4)] == [5, 3, 4, 6]
    assert verify_store(tmp_path / "s").ok


def test_tt_variants_of_an_exactly_low_rank_table(tmp_path):
    p, q = factorize_rows(512, 3), factorize_dim(8, 3)
    assert (p, q) == ((8, 8, 8), (2, 2, 2))
    w = tt_rebuild_rows_reference(random_tt(p, q, (1, 2, 2, 1), np.random.default_rng(0)), np.arange(512))
    np.save(tmp_path / "w.npy", w)
    spec = ModelSpec("lr", (TableSpec("lr", 512, 8), TableSpec("small", 100, 8)), batch_size=4)
    store = build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(2, 4), imports={"lr": str(tmp_path / "w.npy")}))
    lr, small = store.tables
    # cores 8x(1x2x2) + 8x(2x2x2) + 8x(2x2x1) = 128 floats at rank 2, 8x(1x2x4) + 8x(4x2x4) + 8x(4x2x1) = 384 at
    # rank 4; the raw table is 512 x 32 B = 16 KiB: ratios 32 and 16384 / 1536
    assert [(v.rank, v.tt_ranks, v.bytes) for v in lr.tt] == [(2, (1, 2, 2, 1), 512), (4, (1, 4, 4, 1), 1536)]
    assert [v.compression_ratio for v in lr.tt] == pytest.approx([32.0, 16384 / 1536])
    for v in lr.tt:  # rank 2 data: both ranks rebuild it to float32 rounding, every row, not only the sample
        tt = store.load_tt(0, v.rank)
        full = np.abs(tt_rebuild_rows_reference(tt, np.arange(512)) - w).max()
        # (the build measures with the compiled float32 rebuild, this test with the float64 reference: the two
        # maxima agree to float32 rounding of values near 1)
        assert v.rel_fro_error < 1e-5 and full < 1e-5 and v.max_abs_error <= full + 1e-6
        assert v.error_sample_rows == 512  # a table this small is sampled whole
    assert small.tt == ()  # below tt_min_rows (256): not compressed


def test_refusals_leave_nothing_behind(tmp_path, imported):
    spec, imports = imported
    before = sorted(p.name for p in tmp_path.iterdir())
    bad = np.full((300, 16), 1.0, np.float32)
    bad[123, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"not finite \(row 123\)"):
        build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), imports={**imports,
                                                                                  "dense": str(tmp_path / "bad.npy")}))
    with pytest.raises(InputError, match="not in the spec"):
        build_store(spec, tmp_path / "s", StoreBuildConfig(imports={"nope": str(tmp_path / "bad.npy")}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not a store"):
        build_store(spec, tmp_path / "other", StoreBuildConfig(tt_ranks=(), imports=imports))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["bad.npy", "other"])
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["keep.txt"]


def test_a_failed_rebuild_keeps_the_old_store(tmp_path, imported):
    spec, imports = imported
    old = build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), imports=imports)).store_id
    np.save(tmp_path / "bad.npy", np.full((300, 16), np.inf, np.float32))
    with pytest.raises(InputError):
        build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), imports={**imports,
                                                                                  "dense": str(tmp_path / "bad.npy")}))
    assert Store.open(tmp_path / "s").store_id == old and verify_store(tmp_path / "s").ok
    new = build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), weights_seed=5)).store_id  # synthetic
    assert new != old and verify_store(tmp_path / "s").ok


def test_verify_names_the_chunk_of_a_flipped_byte(tmp_path, imported):
    spec, imports = imported
    build_store(spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), imports=imports))
    path = tmp_path / "s" / "raw" / "half.bin"
    data = bytearray(path.read_bytes())
    data[5000] ^= 1
    path.write_bytes(bytes(data))
    report = verify_store(tmp_path / "s")
    # one 1 MiB chunk per file here: the flipped byte at 5000 lies in bytes 0-16384 of the 4-page file
    assert not report.ok and report.problems == ["table half: raw/half.bin checksum mismatch in bytes 0-16384"]
    # every file read whole, the damaged one too: 18 raw pages and tt.h5
    assert report.files == 5 and report.bytes == 18 * PAGE + (tmp_path / "s" / "tt.h5").stat().st_size

"""emulator.store.quant: FBGEMM's fused row-wise formats against hand-derived bytes and tests/naive.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emulator.store.quant import (FormatLayout, RowFormat, codes, compression_ratio, dequantize_rows, pages_for,
                                  quantize_rows, reconstruction_error, scale_bias)
from tests import naive


@pytest.mark.parametrize("fmt, dim, row_bytes", [
    ("fp32", 64, 256), ("fp16", 64, 128),
    ("int8", 64, 72),  # 64 codes + float32 scale + float32 bias
    ("int4", 64, 36),  # 32 bytes of nibbles + float16 scale + float16 bias
    ("int4", 7, 8),  # ceil(7 / 2) = 4 bytes + 4
    ("int8", 1, 9)])
def test_row_bytes(fmt, dim, row_bytes):
    assert RowFormat(fmt, dim).row_bytes == row_bytes


def test_pages_and_ratios():
    # int8 dim 64: 72-byte rows, 4096 // 72 = 56 rows a page; 1000 rows -> ceil(1000 / 56) = 18 pages
    assert FormatLayout(1000, 64, "int8").rows_per_page == 56 and pages_for(1000, "int8", 64) == 18
    # int4 dim 64: 36-byte rows, 113 a page -> 9 pages; fp32: 16 a page -> 63 pages
    assert pages_for(1000, "int4", 64) == 9 and pages_for(1000, "fp32", 64) == 63
    assert compression_ratio("int8", 64) == 256 / 72 and compression_ratio("int4", 64) == 256 / 36


def test_bad_formats_are_refused():
    with pytest.raises(ValueError, match="int3"):
        RowFormat("int3", 8)
    with pytest.raises(ValueError, match="dim"):
        RowFormat("int8", 0)
    with pytest.raises(ValueError, match="finite"):
        quantize_rows(np.array([[1.0, np.nan]], np.float32), "int8")
    with pytest.raises(ValueError, match=r"\(n, 72\) uint8"):
        dequantize_rows(np.zeros((2, 71), np.uint8), "int8", 64)


def test_int8_hand_derived_row():
    # min -1, max 1: scale = 2 / 255, bias = -1; inverse scale 255 / (2 + 1e-8) = 127.5 in float32
    # (1e-8 is below half an ulp of 2); codes: (x + 1) * 127.5 = 0 -> 0, 127.5 -> 128 (half to even),
    # 255 -> 255, 191.25 -> 191
    row = quantize_rows(np.array([[-1.0, 0.0, 1.0, 0.5]], np.float32), "int8")[0]
    assert row[:4].tolist() == [0, 128, 255, 191]
    assert row[4:8].view(np.float32)[0] == np.float32(2.0) / np.float32(255.0)
    assert row[8:12].view(np.float32)[0] == -1.0
    # 128 * (2 / 255) - 1 = 0.0039215...
    assert dequantize_rows(row[None], "int8", 4)[0, 1] == pytest.approx(128 * 2 / 255 - 1, abs=1e-7)


def test_int4_hand_derived_row():
    # min 0 (fp16 exact), max 3: scale = fp16(3 / 15) = 0.199951171875 (0x3266), inverse 5.0012...
    # codes: 0 -> 0, 1.5 * 5.0012 = 7.50 -> 8, 3 -> 15.004 -> 15, 0.75 -> 3.75 -> 4
    # packed low nibble first: byte 0 = 0 | 8 << 4 = 128, byte 1 = 15 | 4 << 4 = 79
    row = quantize_rows(np.array([[0.0, 1.5, 3.0, 0.75]], np.float32), "int4")[0]
    assert row[:2].tolist() == [128, 79]
    assert row[2:4].view(np.uint16)[0] == 0x3266 and row[4:6].view(np.uint16)[0] == 0
    assert codes(row[None], "int4", 4).tolist() == [[0, 8, 15, 4]]
    s = 0.199951171875
    assert dequantize_rows(row[None], "int4", 4).tolist() == [[0.0, 8 * s, 15 * s, 4 * s]]


def test_reconstruction_error_hand_derived():
    # the int4 row above: differences 0, 8s - 1.5 = 0.099609375, 15s - 3 = -0.000732421875, 4s - 0.75 = 0.0498046875
    raw = np.array([[0.0, 1.5, 3.0, 0.75]], np.float32)
    err = reconstruction_error(raw, quantize_rows(raw, "int4"), "int4")
    diffs = [0.0, 0.099609375, -0.000732421875, 0.0498046875]
    assert err["max_abs_error"] == 0.099609375 and err["sample_rows"] == 1
    assert err["rel_fro_error"] == pytest.approx(math.sqrt(sum(d * d for d in diffs)) / math.sqrt(11.8125))


def test_constant_rows_come_back_exactly():
    raw = np.full((3, 5), 3.0, np.float32)  # range 0: int8 scale 0, int4 scale 1; codes 0; bias 3
    for fmt in ("fp16", "int8", "int4"):
        assert np.array_equal(dequantize_rows(quantize_rows(raw, fmt), fmt, 5), raw)


@pytest.mark.parametrize("fmt", ["fp16", "int8", "int4"])
@pytest.mark.parametrize("dim", [1, 7, 16, 64, 130])
def test_quantize_and_dequantize_match_the_naive_loops(fmt, dim, rng):
    raw = (rng.standard_normal((40, dim)) * rng.uniform(0.01, 10, (40, 1))).astype(np.float32)
    stored = quantize_rows(raw, fmt)
    for i in range(raw.shape[0]):
        assert np.array_equal(stored[i], naive.quantize_row_naive(raw[i], fmt)), i
    want = np.stack([naive.dequantize_row_naive(r, fmt, dim) for r in stored])
    assert np.array_equal(dequantize_rows(stored, fmt, dim), want)


@pytest.mark.parametrize("fmt, levels", [("int8", 255), ("int4", 15)])
def test_error_stays_within_half_a_step(fmt, levels, rng):
    raw = (rng.standard_normal((200, 64)) * 2).astype(np.float32)
    stored = quantize_rows(raw, fmt)
    scale, bias = scale_bias(stored, fmt, 64)
    err = np.abs(dequantize_rows(stored, fmt, 64) - raw).max(axis=1)
    lo, hi = raw.min(axis=1), raw.max(axis=1)
    # rounding to the nearest code: half a step; int4 also pays for its fp16 bias and scale
    # (bias off min by |bias - min|, the top code off max by |15 * scale - (max - bias)|)
    slack = np.abs(bias - lo) + np.abs(levels * scale - (hi - bias)) if fmt == "int4" else 0
    assert np.all(err <= scale / 2 + slack + 1e-5 * np.abs(raw).max(axis=1))


def test_layout_packs_whole_rows_per_page(rng):
    lay = FormatLayout(130, 64, "int8")  # 56 rows a page: pages hold rows 0-55, 56-111, 112-129
    raw = rng.standard_normal((130, 64)).astype(np.float32)
    stored = quantize_rows(raw, "int8")
    packed = lay.pack(stored)
    assert packed.size == lay.file_bytes == 3 * 4096
    view = lay.rows_view(packed)
    assert view.shape == (3, 56, 72)
    assert np.array_equal(view[1, 0], stored[56]) and np.array_equal(view[2, 17], stored[129])
    assert np.array_equal(packed[56 * 72:4096], np.zeros(4096 - 56 * 72, np.uint8))  # the page's unused tail


# ---------------------------------------------------------------- stores with row formats


@pytest.fixture(scope="module")
def quant_store(tmp_path_factory, tiny_spec):
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig

    path = tmp_path_factory.mktemp("qstore") / "tiny"
    build_store(tiny_spec, path, StoreBuildConfig(weights_seed=1, tt_ranks=(), row_formats=("fp16", "int8", "int4")))
    return path


def test_build_writes_each_format_with_its_layout(quant_store):
    from emulator.store.store import Store

    store = Store.open(quant_store)
    t0 = store.table("t0")  # tiny preset: 500 rows of dim 16 fp32
    assert [f.format for f in t0.formats] == ["fp16", "int8", "int4"]
    int8 = t0.row_format("int8")
    # int8 dim 16: 16 + 8 = 24-byte rows, 4096 // 24 = 170 a page, ceil(500 / 170) = 3 pages = 12 KiB
    assert (int8.row_bytes, int8.rows_per_page, int8.pages, int8.file.bytes) == (24, 170, 3, 3 * 4096)
    assert int8.file.file == "rows/t0.int8.bin" and (quant_store / "rows/t0.int8.bin").stat().st_size == 12288
    # every row in the file is the quantized raw row, at its page position
    raw = store.read_range(0, 0, 500).astype(np.float32)
    lay = FormatLayout(500, 16, "int8")
    stored = lay.rows_view(np.fromfile(quant_store / "rows/t0.int8.bin", np.uint8))
    r = np.arange(500)
    assert np.array_equal(stored[r // 170, r % 170], quantize_rows(raw, "int8"))
    assert store.manifest.build.row_formats == ("fp16", "int8", "int4")


def test_measured_errors_are_within_the_formats_steps(quant_store):
    from emulator.store.store import Store

    store = Store.open(quant_store)
    for i, t in enumerate(store.tables):
        raw = store.read_range(i, 0, t.rows).astype(np.float32)
        for fmt in ("int8", "int4"):
            e = t.row_format(fmt)
            scale, _ = scale_bias(quantize_rows(raw, fmt), fmt, t.dim)
            # at most half a step, plus (int4) the fp16 bias and the top code off by up to one more step
            assert 0 < e.max_abs_error <= scale.max() * (0.5 if fmt == "int8" else 1.5), (t.name, fmt)
            assert e.error_sample_rows == t.rows  # tiny tables: every row sampled (ERROR_SAMPLE_ROWS = 4096)
            assert e.rel_fro_error < (0.01 if fmt == "int8" else 0.2)
        assert t.row_format("fp16").rel_fro_error < 1e-3
    assert store.table("t2").row_format("fp16").max_abs_error == 0.0  # t2 is an fp16 table: fp16 is exact


def test_manifest_with_formats_round_trips(quant_store, tmp_path):
    import json

    from emulator.store.manifest import parse_manifest, write_manifest

    doc = json.loads((quant_store / "manifest.json").read_text())
    assert "formats" in doc["tables"][0] and doc["build"]["row_formats"] == ["fp16", "int8", "int4"]
    write_manifest(tmp_path, parse_manifest(doc, quant_store / "manifest.json"))
    assert (tmp_path / "manifest.json").read_text() == (quant_store / "manifest.json").read_text()
    doc["tables"][0]["formats"][1]["row_bytes"] = 25
    with pytest.raises(Exception, match=r"tables\[0\].formats\[1\].row_bytes is 25, the int8 layout says 24"):
        parse_manifest(doc, quant_store / "manifest.json")


def test_verify_and_open_catch_damaged_format_files(quant_store, tmp_path):
    import shutil

    from emulator.store.build import verify_store
    from emulator.store.store import Store
    from tracegen.errors import InputError

    copy = tmp_path / "copy"
    shutil.copytree(quant_store, copy)
    f = copy / "rows/t1.int4.bin"
    data = bytearray(f.read_bytes())
    data[100] ^= 1
    f.write_bytes(bytes(data))
    report = verify_store(copy)
    assert not report.ok and "table t1 int4: rows/t1.int4.bin checksum mismatch" in report.problems[0]
    f.write_bytes(bytes(data[:-1]))
    with pytest.raises(InputError, match="int4 file of table t1 is missing or not"):
        Store.open(copy)


def test_unknown_format_is_refused_before_building(tmp_path, tiny_spec):
    from emulator.store.build import build_store
    from emulator.store.store import StoreBuildConfig
    from tracegen.errors import InputError

    with pytest.raises(InputError, match="row formats must be distinct names among fp16, int8, int4"):
        build_store(tiny_spec, tmp_path / "s", StoreBuildConfig(tt_ranks=(), row_formats=("int8", "int3")))
    assert not (tmp_path / "s").exists()

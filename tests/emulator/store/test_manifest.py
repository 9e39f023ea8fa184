"""The typed manifest: JSON round trip (identical bytes, same store_id), the records' fields, its checks."""

import json
import math

import pytest

from emulator.store.manifest import (CHUNK_BYTES, BuildInfo, FileEntry, Manifest, RemapInfo, StoreWeights, TableEntry,
                                     TTEntry, WeightsSource, manifest_id, parse_manifest, read_manifest,
                                     write_manifest)
from emulator.store.layout import RowLayout
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec


def _doc(store_dir):
    return json.loads((store_dir / "manifest.json").read_text())


def test_round_trip_of_a_built_store_is_identical(tiny_store, tmp_path):
    doc = _doc(tiny_store)
    m = parse_manifest(doc, tiny_store / "manifest.json")
    assert json.loads(json.dumps(m.to_dict())) == doc  # every field, nothing added or lost
    assert m.with_id().store_id == doc["store_id"] == manifest_id(doc)
    write_manifest(tmp_path, m)
    assert (tmp_path / "manifest.json").read_text() == (tiny_store / "manifest.json").read_text()  # same bytes


def test_records_hold_the_layout_and_variants(tiny_store, tiny_spec):
    m = read_manifest(tiny_store)
    assert m.spec == tiny_spec
    assert m.weights == StoreWeights(seed=1, signal_rank=8, noise_ratio=0.05, generator="tt-hash")
    t0 = m.tables[0]
    assert isinstance(t0, TableEntry) and t0.name == "t0" and t0.rows == 500 and t0.dim == 16
    # 16 fp32 = 64 B rows, 4096 // 64 = 64 rows per page, ceil(500 / 64) = 8 pages of 4 KiB
    assert (t0.row_bytes, t0.rows_per_page, t0.pages) == (64, 64, 8)
    assert t0.raw == FileEntry("raw/t0.bin", 8 * 4096, t0.raw.crc32) and len(t0.raw.crc32) == 1
    assert t0.tt_ranks == [4, 8] and t0.tt_variant(8).group == "t0/r8" and t0.tt_variant(5) is None
    assert all(isinstance(v, TTEntry) for v in t0.tt) and t0.weights == WeightsSource("synthetic")
    assert m.file_entry("tt.h5") is m.files[0] and m.file_entry("nope") is None


def _manifest() -> Manifest:
    spec = ModelSpec("m", (TableSpec("a", 100, 8),), batch_size=4)
    lay = RowLayout(100, 8, "fp32")  # 32 B rows, 128 per page: one page
    tt = TTEntry(2, "tt.h5", "a/r2", (4, 5, 5), (2, 2, 2), (1, 2, 2, 1), 400, 8.0, 0.25, 0.5, 100)
    table = TableEntry.of("a", lay, FileEntry("raw/a.bin", 4096, (7,)), (tt,), WeightsSource("import", "a.npy"))
    return Manifest(spec, (table,), (FileEntry("tt.h5", 10, (3,)),), StoreWeights(1, 8, 0.05),
                    BuildInfo((2,), None, 0.5), RemapInfo("remap.h5", "abc"))


def test_hand_made_manifest_round_trips_with_optional_parts(tmp_path):
    m = _manifest().with_id()
    doc = json.loads(json.dumps(m.to_dict()))
    assert doc["remap"] == {"file": "remap.h5", "source_store_id": "abc", "raw_row_order": "remapped",
                            "tt_row_order": "original"}
    assert doc["tables"][0]["weights"] == {"source": "import", "file": "a.npy"}
    assert parse_manifest(doc, tmp_path / "manifest.json") == m
    del doc["remap"]
    assert parse_manifest(doc, tmp_path / "manifest.json").remap is None


@pytest.mark.parametrize("path, value, field", [
    (("tables", 0, "tt", 0, "rel_fro_error"), math.inf, "rel_fro_error"),
    (("tables", 0, "tt", 0, "bytes"), -1, "bytes"),
    (("tables", 0, "raw", "crc32"), [1, 2], "crc32"),
    (("tables", 0, "weights"), {"source": 3}, "weights"),
    (("weights", "seed"), "x", "weights"),
    (("build", "tt_ranks"), [0], "build"),
    (("remap", "file"), "../x", "remap"),
    (("store_id",), 5, "store_id"),
])
def test_bad_fields_are_refused_by_name(tmp_path, path, value, field):
    doc = json.loads(json.dumps(_manifest().with_id().to_dict()))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(InputError, match=field) as e:
        parse_manifest(doc, tmp_path / "manifest.json")
    assert "manifest.json" in str(e.value) and "\n" not in str(e.value)


def test_store_opens_typed_and_refuses_an_edit(tiny_store, tmp_path):
    s = Store.open(tiny_store)
    assert s.store_id == _doc(tiny_store)["store_id"] and s.table("t1") is s.tables[1]
    assert s.table_rows == {t.name: t.rows for t in s.spec.tables}
    doc = _doc(tiny_store)
    doc["build"]["seconds"] = 1e9  # provenance is part of the hash too
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="modified"):
        read_manifest(tmp_path)
    assert CHUNK_BYTES == 4 << 20

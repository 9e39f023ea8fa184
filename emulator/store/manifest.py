"""The store manifest: typed records, their JSON form, parse-and-validate, and write.

``manifest.json`` (sorted keys, indent 1, written last by a build)::

    format, format_version   "screc-store", 1
    store_id                 content hash of every other field (see manifest_id)
    spec                     the ModelSpec the store was built for
    page_bytes, chunk_bytes  4096, 4 MiB (CRC32 granularity)
    weights                  StoreWeights: how the rows were made (seed, signal rank, noise ratio, generator)
    build                    BuildInfo: requested TT ranks / tolerance, build seconds, TT-SVD method
    tables                   one TableEntry per spec table: geometry, raw FileEntry, TT variants,
                             row formats (FormatEntry: fp16/int8/int4 file, layout, errors; key only when any)
    files                    FileEntry per shared file (tt.h5)
    remap                    RemapInfo, only in a remapped copy (plans.remap.remap_store)

The records are frozen; ``to_dict`` gives back exactly the JSON a build writes,
so a parsed manifest hashes to the same ``store_id``. ``parse_manifest`` checks
every field a reader relies on and raises an :class:`InputError` naming the
field; it never raises anything else, whatever the JSON holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from emulator.store.layout import PAGE_BYTES, RowLayout
from emulator.store.quant import STORED_FORMATS, FormatLayout
from tracegen.errors import InputError
from tracegen.spec import ModelSpec

STORE_FORMAT = "screc-store"
STORE_FORMAT_VERSION = 1
CHUNK_BYTES = 4 << 20  # checksum granularity
MANIFEST_FILE = "manifest.json"


def _json_value(v: Any) -> Any:
    if isinstance(v, _Record):
        return v.to_dict()
    return [_json_value(x) for x in v] if isinstance(v, tuple) else v


class _Record:
    """A manifest record's JSON form: its fields by name, tuples as lists, nested records as objects; the fields
    named in ``_OMIT_EMPTY`` are left out when empty or None (keys that older manifests do not have)."""

    _OMIT_EMPTY: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if f.name in self._OMIT_EMPTY and (v is None or v == ()):
                continue
            out[f.name] = _json_value(v)
        return out


@dataclass(frozen=True)
class FileEntry(_Record):
    """A file of the store (path relative to the store) and one CRC32 per CHUNK_BYTES chunk."""

    file: str
    bytes: int
    crc32: tuple[int, ...]


@dataclass(frozen=True)
class TTEntry(_Record):
    """One TT-compressed variant of a table: where its cores are, their shapes, measured errors."""

    rank: int  # the largest TT rank (the effective one: a tolerance may choose it)
    file: str
    group: str  # HDF5 group of the cores, "<table>/r<rank>"
    tt_p_shapes: tuple[int, ...]
    tt_q_shapes: tuple[int, ...]
    tt_ranks: tuple[int, ...]
    bytes: int  # of the cores
    compression_ratio: float  # raw bytes / core bytes
    rel_fro_error: float  # over error_sample_rows sampled rows
    max_abs_error: float
    error_sample_rows: int


@dataclass(frozen=True)
class FormatEntry(_Record):
    """A table stored in a row format (emulator.store.quant): its file, page layout and measured errors."""

    format: str  # "fp16" | "int8" | "int4"
    file: FileEntry
    row_bytes: int
    rows_per_page: int
    pages: int
    rel_fro_error: float  # of the dequantized rows against the raw ones, over error_sample_rows sampled rows
    max_abs_error: float
    error_sample_rows: int


@dataclass(frozen=True)
class WeightsSource(_Record):
    """Where a table's rows came from: ``"synthetic"`` or ``"import"`` (with the imported file)."""

    _OMIT_EMPTY = ("file",)
    source: str
    file: str | None = None


@dataclass(frozen=True)
class TableEntry(_Record):
    """One table of the store: its geometry (as RowLayout computes it), raw file and TT variants."""

    _OMIT_EMPTY = ("formats",)
    name: str
    rows: int
    dim: int
    dtype: str
    row_bytes: int
    rows_per_page: int
    pages_per_row: int
    pages: int
    raw: FileEntry
    tt: tuple[TTEntry, ...]
    weights: WeightsSource
    formats: tuple[FormatEntry, ...] = ()  # row formats stored beside the raw rows (JSON key only when any)

    @classmethod
    def of(cls, name: str, lay: RowLayout, raw: FileEntry, tt: tuple[TTEntry, ...],
           weights: WeightsSource, formats: tuple[FormatEntry, ...] = ()) -> "TableEntry":
        return cls(name, lay.rows, lay.dim, lay.dtype, lay.row_bytes, lay.rows_per_page, lay.pages_per_row,
                   lay.pages, raw, tuple(tt), weights, tuple(formats))

    def row_format(self, name: str) -> FormatEntry | None:
        return next((f for f in self.formats if f.format == name), None)

    @property
    def tt_ranks(self) -> list[int]:
        """Ranks of the TT variants, ascending."""
        return sorted(v.rank for v in self.tt)

    def tt_variant(self, rank: int) -> TTEntry | None:
        return next((v for v in self.tt if v.rank == rank), None)


@dataclass(frozen=True)
class StoreWeights(_Record):
    """How synthetic rows were generated (see emulator.store.weights)."""

    _OMIT_EMPTY = ("generator",)
    seed: int
    signal_rank: int
    noise_ratio: float
    source: str = "synthetic"
    generator: str | None = None  # weights.GENERATORS; None: a store built before it was recorded ("tt-gauss")


@dataclass(frozen=True)
class BuildInfo(_Record):
    _OMIT_EMPTY = ("row_formats", "tt_method")

    tt_ranks: tuple[int, ...]
    tt_rel_tol: float | None
    seconds: float
    row_formats: tuple[str, ...] = ()  # requested row formats (JSON key only when any)
    tt_method: str | None = None  # emulator.store.build.TT_METHODS; None: built before it was recorded ("svd")


@dataclass(frozen=True)
class RemapInfo(_Record):
    """A remapped copy: raw rows in the remapped order, TT rows in the original order (see plans.remap)."""

    file: str
    source_store_id: str
    raw_row_order: str = "remapped"
    tt_row_order: str = "original"


@dataclass(frozen=True)
class Manifest:
    spec: ModelSpec
    tables: tuple[TableEntry, ...]
    files: tuple[FileEntry, ...]
    weights: StoreWeights
    build: BuildInfo
    remap: RemapInfo | None = None
    page_bytes: int = PAGE_BYTES
    chunk_bytes: int = CHUNK_BYTES
    store_id: str = ""  # empty until with_id()

    def to_dict(self) -> dict[str, Any]:
        d = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "spec": self.spec.to_dict(),
             "page_bytes": self.page_bytes, "chunk_bytes": self.chunk_bytes, "weights": self.weights.to_dict(),
             "build": self.build.to_dict(), "tables": [t.to_dict() for t in self.tables],
             "files": [f.to_dict() for f in self.files]}
        if self.remap is not None:
            d["remap"] = self.remap.to_dict()
        if self.store_id:
            d["store_id"] = self.store_id
        return d

    def with_id(self) -> "Manifest":
        """This manifest with ``store_id`` set to the hash of its content."""
        return replace(self, store_id=manifest_id(self.to_dict()))

    def file_entry(self, file: str) -> FileEntry | None:
        return next((e for e in self.files if e.file == file), None)


def manifest_id(doc: Mapping[str, Any]) -> str:
    """Content hash of a manifest's JSON form (every field but ``store_id``)."""
    body = {k: v for k, v in doc.items() if k != "store_id"}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


# --- parse and validate ---------------------------------------------------------------------------


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(v: Any) -> bool:
    """A finite number >= 0."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < math.inf


def _safe_rel(v: Any) -> bool:
    """A relative path that stays inside the store directory."""
    return isinstance(v, str) and bool(v) and not os.path.isabs(v) and ".." not in Path(v).parts


class _Parser:
    """Builds the typed records from a manifest's JSON, raising InputError("manifest field ...") on any flaw."""

    def __init__(self, mpath: Path):
        self.mpath = mpath

    def bad(self, what: str) -> InputError:
        return InputError(f"manifest field {what}", self.mpath)

    def file(self, entry: Any, what: str) -> FileEntry:
        if not isinstance(entry, dict) or not _safe_rel(entry.get("file")) or not _is_int(entry.get("bytes")):
            raise self.bad(f"{what}: needs a relative 'file' inside the store and a whole 'bytes' >= 0")
        crcs = entry.get("crc32")
        n_chunks = -(-entry["bytes"] // CHUNK_BYTES)
        if not isinstance(crcs, list) or len(crcs) != n_chunks or not all(_is_int(c) for c in crcs):
            raise self.bad(f"{what}: 'crc32' must list one checksum per {CHUNK_BYTES}-byte chunk ({n_chunks})")
        return FileEntry(entry["file"], entry["bytes"], tuple(crcs))

    def tt(self, v: Any, w: str) -> TTEntry:
        if not isinstance(v, dict) or not _is_int(v.get("rank"), 1) or not _safe_rel(v.get("file")) \
                or not isinstance(v.get("group"), str):
            raise self.bad(f"{w}: needs a whole 'rank' >= 1, a relative 'file' and a 'group'")
        for k in ("max_abs_error", "rel_fro_error", "compression_ratio"):
            if not _is_number(v.get(k)):
                raise self.bad(f"{w}.{k} must be a finite number >= 0")
        for k in ("tt_p_shapes", "tt_q_shapes", "tt_ranks"):
            if not isinstance(v.get(k), list) or not all(_is_int(x, 1) for x in v[k]):
                raise self.bad(f"{w}.{k} must be a list of whole numbers >= 1")
        for k in ("bytes", "error_sample_rows"):
            if not _is_int(v.get(k)):
                raise self.bad(f"{w}.{k} must be a whole number >= 0")
        return TTEntry(v["rank"], v["file"], v["group"], tuple(v["tt_p_shapes"]), tuple(v["tt_q_shapes"]),
                       tuple(v["tt_ranks"]), v["bytes"], v["compression_ratio"], v["rel_fro_error"],
                       v["max_abs_error"], v["error_sample_rows"])

    def row_format(self, v: Any, w: str, ts) -> FormatEntry:
        if not isinstance(v, dict) or v.get("format") not in STORED_FORMATS:
            raise self.bad(f"{w}.format must be one of {', '.join(STORED_FORMATS)}")
        lay = FormatLayout(ts.rows, ts.dim, v["format"])
        file = self.file(v.get("file"), f"{w}.file")
        for k in ("row_bytes", "rows_per_page", "pages"):
            if v.get(k) != getattr(lay, k):
                raise self.bad(f"{w}.{k} is {v.get(k)!r}, the {v['format']} layout says {getattr(lay, k)}")
        if file.bytes != lay.file_bytes:
            raise self.bad(f"{w}.file.bytes is {file.bytes}, the {v['format']} layout says {lay.file_bytes}")
        for k in ("rel_fro_error", "max_abs_error"):
            if not _is_number(v.get(k)):
                raise self.bad(f"{w}.{k} must be a finite number >= 0")
        if not _is_int(v.get("error_sample_rows")):
            raise self.bad(f"{w}.error_sample_rows must be a whole number >= 0")
        return FormatEntry(v["format"], file, v["row_bytes"], v["rows_per_page"], v["pages"], v["rel_fro_error"],
                           v["max_abs_error"], v["error_sample_rows"])

    def weights_source(self, w: Any, what: str) -> WeightsSource:
        if not isinstance(w, dict) or not isinstance(w.get("source"), str) \
                or not isinstance(w.get("file", ""), str) or set(w) - {"source", "file"}:
            raise self.bad(f"{what} must be {{'source': str[, 'file': str]}}")
        return WeightsSource(w["source"], w.get("file"))

    def table(self, t: Any, ts, i: int) -> TableEntry:
        if not isinstance(t, dict):
            raise self.bad(f"tables[{i}] is not an object")
        name = t.get("name")
        if name != ts.name or t.get("rows") != ts.rows or t.get("dim") != ts.dim or t.get("dtype") != ts.dtype:
            raise self.bad(f"tables[{i}] ({name!r}) does not match the spec's table {ts.name!r} "
                           "(name, rows, dim, dtype)")
        lay = RowLayout(ts.rows, ts.dim, ts.dtype)
        for k in ("row_bytes", "rows_per_page", "pages_per_row", "pages"):
            if t.get(k) != getattr(lay, k):
                raise self.bad(f"tables[{i}].{k} is {t.get(k)!r}, the layout says {getattr(lay, k)}")
        raw = self.file(t.get("raw"), f"tables[{i}].raw")
        if raw.bytes != lay.file_bytes:
            raise self.bad(f"tables[{i}].raw.bytes is {raw.bytes}, the layout says {lay.file_bytes}")
        tts = t.get("tt", [])
        if not isinstance(tts, list):
            raise self.bad(f"tables[{i}].tt is not a list")
        tt = tuple(self.tt(v, f"tables[{i}].tt[{j}]") for j, v in enumerate(tts))
        weights = self.weights_source(t.get("weights"), f"tables[{i}].weights")
        fmts = t.get("formats", [])
        if not isinstance(fmts, list) or ("formats" in t and not fmts):
            raise self.bad(f"tables[{i}].formats must be a non-empty list when present")
        formats = tuple(self.row_format(v, f"tables[{i}].formats[{j}]", ts) for j, v in enumerate(fmts))
        if len({f.format for f in formats}) != len(formats):
            raise self.bad(f"tables[{i}].formats lists a format twice")
        return TableEntry.of(ts.name, lay, raw, tt, weights, formats)

    def provenance(self, m: Mapping[str, Any]) -> tuple[StoreWeights, BuildInfo, RemapInfo | None]:
        w, b, r = m.get("weights"), m.get("build"), m.get("remap")
        if not isinstance(w, dict) or w.get("source") != "synthetic" or not _is_int(w.get("seed")) \
                or not _is_int(w.get("signal_rank"), 1) or not _is_number(w.get("noise_ratio")):
            raise self.bad("'weights' must hold source 'synthetic', a seed, a signal_rank and a noise_ratio")
        if not isinstance(w.get("generator", ""), str):
            raise self.bad("'weights'.generator must be a name when present")
        weights = StoreWeights(w["seed"], w["signal_rank"], w["noise_ratio"], generator=w.get("generator"))
        tol = b.get("tt_rel_tol") if isinstance(b, dict) else None
        if not isinstance(b, dict) or not isinstance(b.get("tt_ranks"), list) \
                or not all(_is_int(x, 1) for x in b["tt_ranks"]) or not (tol is None or _is_number(tol)) \
                or not _is_number(b.get("seconds")):
            raise self.bad("'build' must hold tt_ranks (whole numbers), tt_rel_tol (a number or null) and seconds")
        fmts = b.get("row_formats", [])
        if not isinstance(fmts, list) or not all(isinstance(f, str) for f in fmts) or ("row_formats" in b and not fmts):
            raise self.bad("'build'.row_formats must be a non-empty list of format names when present")
        if not isinstance(b.get("tt_method", ""), str):
            raise self.bad("'build'.tt_method must be a name when present")
        build = BuildInfo(tuple(b["tt_ranks"]), tol, b["seconds"], tuple(fmts), b.get("tt_method"))
        if r is None and "remap" not in m:
            return weights, build, None
        keys = ("file", "source_store_id", "raw_row_order", "tt_row_order")
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in keys) or not _safe_rel(r["file"]):
            raise self.bad("'remap' must hold a relative 'file', 'source_store_id' and the row orders")
        return weights, build, RemapInfo(*(r[k] for k in keys))

    def manifest(self, m: Mapping[str, Any]) -> Manifest:
        if m.get("page_bytes") != PAGE_BYTES:
            raise self.bad(f"page_bytes is {m.get('page_bytes')!r}; this version reads {PAGE_BYTES}-byte pages only")
        if m.get("chunk_bytes") != CHUNK_BYTES:
            raise self.bad(f"chunk_bytes is {m.get('chunk_bytes')!r}; checksums are per {CHUNK_BYTES} bytes")
        tables, files = m.get("tables"), m.get("files", [])
        if not isinstance(tables, list) or not tables or not isinstance(files, list):
            raise self.bad("'tables' must be a non-empty list and 'files' a list")
        try:
            spec = ModelSpec.from_dict(m["spec"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise self.bad(f"'spec' is not a model spec ({e})") from None
        if len(spec.tables) != len(tables):
            raise self.bad(f"'tables' has {len(tables)} entries, the spec {len(spec.tables)}")
        entries = tuple(self.table(t, ts, i) for i, (t, ts) in enumerate(zip(tables, spec.tables)))
        shared = tuple(self.file(f, f"files[{j}]") for j, f in enumerate(files))
        names = [t.name for t in entries]
        if len(set(names)) != len(names):
            raise self.bad("'tables' has duplicate names")
        weights, build, remap = self.provenance(m)
        store_id = m.get("store_id", "")
        if not isinstance(store_id, str):
            raise self.bad("store_id is not a string")
        return Manifest(spec, entries, shared, weights, build, remap, m["page_bytes"], m["chunk_bytes"], store_id)


def parse_manifest(doc: Any, mpath: Path) -> Manifest:
    """The typed manifest of a JSON document; InputError naming ``mpath`` and the field if anything is off."""
    if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
        raise InputError("not a screc store manifest (format field missing or wrong)", mpath)
    if doc.get("format_version") != STORE_FORMAT_VERSION:
        raise InputError(f"store format version {doc.get('format_version')} is not supported "
                         f"(expected {STORE_FORMAT_VERSION})", mpath)
    try:
        return _Parser(mpath).manifest(doc)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"manifest is incomplete ({e.__class__.__name__}: {e})", mpath) from None


def read_manifest(store_dir: Path) -> Manifest:
    """Read, check (format, version, content hash, every field) and parse ``store_dir/manifest.json``."""
    mpath = store_dir / MANIFEST_FILE
    try:
        doc = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError):
        raise InputError("manifest is not valid JSON", mpath) from None
    if isinstance(doc, dict) and doc.get("format") == STORE_FORMAT \
            and doc.get("format_version") == STORE_FORMAT_VERSION and doc.get("store_id") != manifest_id(doc):
        raise InputError("manifest was modified (store_id does not match its content)", mpath)
    return parse_manifest(doc, mpath)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``manifest`` (with its store_id computed) as ``directory/manifest.json``; the caller fsyncs it
    (a build writes it last, inside the temporary directory it renames into place)."""
    mpath = directory / MANIFEST_FILE
    mpath.write_text(json.dumps(manifest.with_id().to_dict(), indent=1, sort_keys=True) + "\n")
    return mpath

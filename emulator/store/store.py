"""The model store: raw row files, TT cores in HDF5 and a checksummed manifest.

A store is a directory::

    manifest.json     format, spec, layout, files, per-chunk CRC32s, TT shapes/ranks/errors
    raw/<table>.bin   raw rows, pages of 4 KiB (see emulator.store.layout), read with O_DIRECT
    tt.h5             TT cores, group <table>/r<rank>, FBTT attribute names

It is built in a temporary sibling directory and renamed into place only when
complete (manifest last), so a directory that has a manifest is whole. Tables
are written a chunk at a time: a table larger than RAM is never held in memory.
``store_id`` is a content hash of the manifest (which holds every checksum), so
a plan can name the exact store it was made for.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from emulator.store.layout import PAGE_BYTES, RowLayout
from tracegen.atomic import is_temporary_sibling
from tracegen.errors import InputError
from tracegen.spec import ModelSpec

STORE_FORMAT = "screc-store"
STORE_FORMAT_VERSION = 1
CHUNK_BYTES = 4 << 20  # checksum granularity
WRITE_BYTES = 64 << 20  # rows generated and written per step
IN_MEMORY_TT_BYTES = 64 << 20  # larger tables use the streamed (Gram-based) TT-SVD: much faster than a full SVD
ERROR_SAMPLE_ROWS = 4096

Progress = Callable[[str, int, int], None]  # (description, done, total)


@dataclass(frozen=True)
class StoreBuildConfig:
    """How to build a store; ``tt_ranks`` empty means no TT variants."""

    weights_seed: int = 0
    signal_rank: int = 8
    noise_ratio: float = 0.05
    tt_ranks: tuple[int, ...] = (8, 16)
    tt_rel_tol: float | None = None  # choose the rank from an error tolerance instead
    tt_min_rows: int = 256  # smaller tables are not worth compressing
    imports: Mapping[str, str] = field(default_factory=dict)  # table name -> .npy / .h5[:dataset]


class _ChecksummedWriter:
    """Writes a file sequentially, computing one CRC32 per CHUNK_BYTES."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "wb", buffering=0)
        self.crcs: list[int] = []
        self._crc = 0
        self._in_chunk = 0
        self.bytes = 0

    def write(self, data: np.ndarray | bytes) -> None:
        mv = memoryview(data).cast("B")
        n = 0
        while n < len(mv):  # a full disk raises OSError(ENOSPC): atomic_dir names the store and cleans up
            n += self._f.write(mv[n:])
        pos = 0
        while pos < len(mv):
            take = min(CHUNK_BYTES - self._in_chunk, len(mv) - pos)
            self._crc = zlib.crc32(mv[pos : pos + take], self._crc)
            self._in_chunk += take
            pos += take
            if self._in_chunk == CHUNK_BYTES:
                self.crcs.append(self._crc)
                self._crc, self._in_chunk = 0, 0
        self.bytes += len(mv)

    def close(self) -> None:
        if self._in_chunk:
            self.crcs.append(self._crc)
        os.fsync(self._f.fileno())
        self._f.close()


def file_crcs(path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[int]:
    crcs = []
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            crcs.append(zlib.crc32(block))
    return crcs


def manifest_id(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "store_id"}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _safe_rel(v: Any) -> bool:
    """A relative path that stays inside the store directory."""
    return isinstance(v, str) and bool(v) and not os.path.isabs(v) and ".." not in Path(v).parts


def check_manifest(m: Mapping[str, Any], mpath: Path) -> None:
    """Every field a reader relies on has the right type, range and consistency; else InputError naming it."""
    def bad(what: str) -> InputError:
        return InputError(f"manifest field {what}", mpath)

    if m.get("page_bytes") != PAGE_BYTES:
        raise bad(f"page_bytes is {m.get('page_bytes')!r}; this version reads {PAGE_BYTES}-byte pages only")
    if m.get("chunk_bytes") != CHUNK_BYTES:
        raise bad(f"chunk_bytes is {m.get('chunk_bytes')!r}; checksums are per {CHUNK_BYTES} bytes")
    tables, files = m.get("tables"), m.get("files", [])
    if not isinstance(tables, list) or not tables or not isinstance(files, list):
        raise bad("'tables' must be a non-empty list and 'files' a list")
    try:
        spec = ModelSpec.from_dict(m["spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad(f"'spec' is not a model spec ({e})") from None
    if len(spec.tables) != len(tables):
        raise bad(f"'tables' has {len(tables)} entries, the spec {len(spec.tables)}")

    def check_file(entry: Any, what: str) -> None:
        if not isinstance(entry, dict) or not _safe_rel(entry.get("file")) or not _is_int(entry.get("bytes")):
            raise bad(f"{what}: needs a relative 'file' inside the store and a whole 'bytes' >= 0")
        crcs = entry.get("crc32")
        n_chunks = -(-entry["bytes"] // CHUNK_BYTES)
        if not isinstance(crcs, list) or len(crcs) != n_chunks or not all(_is_int(c) for c in crcs):
            raise bad(f"{what}: 'crc32' must list one checksum per {CHUNK_BYTES}-byte chunk ({n_chunks})")

    for i, (t, ts) in enumerate(zip(tables, spec.tables)):
        if not isinstance(t, dict):
            raise bad(f"tables[{i}] is not an object")
        name = t.get("name")
        if name != ts.name or t.get("rows") != ts.rows or t.get("dim") != ts.dim or t.get("dtype") != ts.dtype:
            raise bad(f"tables[{i}] ({name!r}) does not match the spec's table {ts.name!r} (name, rows, dim, dtype)")
        lay = RowLayout(ts.rows, ts.dim, ts.dtype)
        for k in ("row_bytes", "rows_per_page", "pages_per_row", "pages"):
            if t.get(k) != getattr(lay, k):
                raise bad(f"tables[{i}].{k} is {t.get(k)!r}, the layout says {getattr(lay, k)}")
        check_file(t.get("raw"), f"tables[{i}].raw")
        if t["raw"]["bytes"] != lay.file_bytes:
            raise bad(f"tables[{i}].raw.bytes is {t['raw']['bytes']}, the layout says {lay.file_bytes}")
        tts = t.get("tt", [])
        if not isinstance(tts, list):
            raise bad(f"tables[{i}].tt is not a list")
        for j, v in enumerate(tts):
            w = f"tables[{i}].tt[{j}]"
            if not isinstance(v, dict) or not _is_int(v.get("rank"), 1) or not _safe_rel(v.get("file")) \
                    or not isinstance(v.get("group"), str):
                raise bad(f"{w}: needs a whole 'rank' >= 1, a relative 'file' and a 'group'")
            for k in ("max_abs_error", "rel_fro_error", "compression_ratio"):
                x = v.get(k)
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not (0 <= x < float("inf")):
                    raise bad(f"{w}.{k} must be a finite number >= 0")
            for k in ("tt_p_shapes", "tt_q_shapes", "tt_ranks"):
                if not isinstance(v.get(k), list) or not all(_is_int(x, 1) for x in v[k]):
                    raise bad(f"{w}.{k} must be a list of whole numbers >= 1")
    for j, f in enumerate(files):
        check_file(f, f"files[{j}]")
    names = [t["name"] for t in tables]
    if len(set(names)) != len(names):
        raise bad("'tables' has duplicate names")


class Store:
    """A read-only view of a built store."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self.store_id: str = manifest["store_id"]
        self.spec = ModelSpec.from_dict(manifest["spec"])
        self.tables: list[dict[str, Any]] = manifest["tables"]
        self.layouts = [RowLayout(t["rows"], t["dim"], t["dtype"], manifest["page_bytes"]) for t in self.tables]
        self._maps: dict[int, np.ndarray] = {}
        self._good_chunks: set[tuple[str, int]] = set()  # (file, chunk) whose CRC32 was checked

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        p = Path(path)
        mpath = p / "manifest.json"
        if not p.is_dir():
            raise InputError("store directory not found", p)
        if is_temporary_sibling(p):
            raise InputError("is the temporary directory of an unfinished or interrupted build, not a store", p)
        if not mpath.is_file():
            raise InputError("not a store (no manifest.json; an interrupted build leaves none)", p)
        try:
            m = json.loads(mpath.read_text())
        except (ValueError, UnicodeDecodeError):
            raise InputError("manifest is not valid JSON", mpath) from None
        if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
            raise InputError("not a screc store manifest (format field missing or wrong)", mpath)
        if m.get("format_version") != STORE_FORMAT_VERSION:
            raise InputError(f"store format version {m.get('format_version')} is not supported "
                             f"(expected {STORE_FORMAT_VERSION})", mpath)
        try:
            if m.get("store_id") != manifest_id(m):
                raise InputError("manifest was modified (store_id does not match its content)", mpath)
            check_manifest(m, mpath)
            store = cls(p, m)
            for entry in m["files"]:
                f = p / entry["file"]
                if not f.is_file() or f.stat().st_size != entry["bytes"]:
                    raise InputError(f"store file {entry['file']} is missing or not {entry['bytes']} bytes", f)
            for t, lay in zip(store.tables, store.layouts):
                f = p / t["raw"]["file"]
                if not f.is_file():
                    raise InputError(f"raw file of table {t['name']} is missing", f)
                if f.stat().st_size != t["raw"]["bytes"] or t["raw"]["bytes"] != lay.file_bytes:
                    raise InputError(f"raw file of table {t['name']} has {f.stat().st_size} bytes, "
                                     f"expected {lay.file_bytes}", f)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"manifest is incomplete ({e.__class__.__name__}: {e})", mpath) from None
        return store

    # --- lookups by the serving path and by references ------------------------------
    def table_index(self, name: str) -> int:
        for i, t in enumerate(self.tables):
            if t["name"] == name:
                return i
        raise InputError(f"no table {name!r} in store", self.path)

    def table_path(self, i: int | str) -> Path:
        i = self.table_index(i) if isinstance(i, str) else i
        return self.path / self.tables[i]["raw"]["file"]

    def _map(self, i: int) -> np.ndarray:
        if i not in self._maps:
            self._maps[i] = np.memmap(self.table_path(i), dtype=np.uint8, mode="r")
        return self._maps[i]

    def rows_view(self, i: int) -> np.ndarray:
        """(groups, rows_per_page, dim) memory-mapped view of table ``i`` (buffered IO)."""
        return self.layouts[i].rows_view(self._map(i))

    def read_rows(self, i: int, rows: np.ndarray) -> np.ndarray:
        """Rows of table ``i`` through the page cache (for references and tooling, not serving)."""
        rows = np.asarray(rows, dtype=np.int64)
        lay = self.layouts[i]
        if rows.size and (rows.min() < 0 or rows.max() >= lay.rows):
            raise InputError(f"row out of range for table {self.tables[i]['name']} ({lay.rows} rows)", self.path)
        return self.rows_view(i)[rows // lay.rows_per_page, rows % lay.rows_per_page]

    def read_range(self, i: int, start: int, stop: int) -> np.ndarray:
        return self.read_rows(i, np.arange(start, stop, dtype=np.int64))

    def tt_variants(self, i: int) -> list[dict[str, Any]]:
        return list(self.tables[i].get("tt", []))

    def tt_variant(self, i: int, rank: int) -> dict[str, Any]:
        for v in self.tables[i].get("tt", []):
            if v["rank"] == rank:
                return v
        have = sorted(v["rank"] for v in self.tables[i].get("tt", []))
        raise InputError(f"table {self.tables[i]['name']} has no TT variant of rank {rank} (has {have})", self.path)

    def load_tt(self, i: int, rank: int):
        import h5py

        from emulator.tt.decomposition import load_tt

        v = self.tt_variant(i, rank)
        f = self.path / v["file"]
        entry = next((e for e in self.manifest["files"] if e["file"] == v["file"]), None)
        if entry is None:
            raise InputError(f"TT file {v['file']} of table {self.tables[i]['name']} is not listed in the manifest", f)
        self._check_chunks(entry, range(len(entry["crc32"])), f"TT cores of table {self.tables[i]['name']}")
        try:
            with h5py.File(f, "r") as h:
                if v["group"] not in h:
                    raise InputError(f"TT group {v['group']} is missing", f)
                tt = load_tt(h[v["group"]])
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"cannot read TT cores ({e})", f) from None
        if list(tt.ranks) != v["tt_ranks"] or list(tt.p_shapes) != v["tt_p_shapes"] \
                or list(tt.q_shapes) != v["tt_q_shapes"]:
            raise InputError(f"TT cores of group {v['group']} do not have the manifest's shapes and ranks", f)
        return tt

    def _check_chunks(self, entry: Mapping[str, Any], chunks, what: str) -> None:
        """Compare the CRC32 of each listed chunk of a manifest file entry (once per chunk per Store)."""
        f = self.path / entry["file"]
        todo = [k for k in chunks if (entry["file"], k) not in self._good_chunks]
        if not todo:
            return
        with open(f, "rb") as fh:
            for k in todo:
                fh.seek(k * CHUNK_BYTES)
                block = fh.read(CHUNK_BYTES)
                if zlib.crc32(block) != entry["crc32"][k]:
                    raise InputError(f"{what}: {entry['file']} checksum mismatch in bytes {k * CHUNK_BYTES}-"
                                     f"{k * CHUNK_BYTES + len(block)}; the store is corrupt (see screc store verify)",
                                     self.path)
                self._good_chunks.add((entry["file"], k))

    def check_rows(self, i: int, rows: np.ndarray) -> None:
        """Check the checksums of the raw-file chunks holding ``rows`` of table ``i`` (InputError if corrupt).

        For ``--verify``: the reference rows come from the same files as the served ones, so a corrupt byte
        would go unnoticed unless the chunks are checked against the manifest.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        chunks = np.unique(self.layouts[i].row_offsets(rows) // CHUNK_BYTES)
        self._check_chunks(self.tables[i]["raw"], chunks.tolist(), f"table {self.tables[i]['name']}")

    @property
    def raw_bytes(self) -> int:
        return sum(t["raw"]["bytes"] for t in self.tables)

    def close(self) -> None:
        self._maps.clear()

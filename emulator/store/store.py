"""The model store: raw row files, TT cores in HDF5 and a checksummed manifest.

A store is a directory::

    manifest.json     format, spec, layout, files, per-chunk CRC32s, TT shapes/ranks/errors
    raw/<table>.bin   raw rows, pages of 4 KiB (see emulator.store.layout), read with O_DIRECT
    rows/<table>.<format>.bin   optional: the rows in a row format (fp16, int8, int4; emulator.store.quant)
    tt.h5             TT cores, group <table>/r<rank>, FBTT attribute names

It is built in a temporary sibling directory and renamed into place only when
complete (manifest last), so a directory that has a manifest is whole. Tables
are written a chunk at a time: a table larger than RAM is never held in memory.
``store_id`` is a content hash of the manifest (which holds every checksum), so
a plan can name the exact store it was made for.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from emulator.store.layout import RowLayout
from emulator.store.manifest import (CHUNK_BYTES, MANIFEST_FILE, STORE_FORMAT, STORE_FORMAT_VERSION, FileEntry,
                                     Manifest, TableEntry, TTEntry, manifest_id, read_manifest)
from tracegen.atomic import is_temporary_sibling
from tracegen.errors import InputError

__all__ = ["CHUNK_BYTES", "STORE_FORMAT", "STORE_FORMAT_VERSION", "Store", "StoreBuildConfig", "file_crcs",
           "manifest_id"]
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
    row_formats: tuple[str, ...] = ()  # row formats written beside the raw rows (emulator.store.quant)


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


def chunk_mismatches(path: Path, entry: FileEntry, chunks: Iterable[int],
                     on_read: Callable[[int], None] | None = None) -> list[tuple[int, int, int]]:
    """(chunk, first byte, end byte) of each of ``chunks`` of ``path`` whose CRC32 is not the manifest's
    (``entry``); ``on_read(bytes)`` after each chunk read."""
    bad = []
    with open(path, "rb") as fh:
        for k in chunks:
            fh.seek(k * CHUNK_BYTES)
            block = fh.read(CHUNK_BYTES)
            if on_read:
                on_read(len(block))
            if zlib.crc32(block) != entry.crc32[k]:
                bad.append((k, k * CHUNK_BYTES, k * CHUNK_BYTES + len(block)))
    return bad


def file_crcs(path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[int]:
    crcs = []
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            crcs.append(zlib.crc32(block))
    return crcs


class Store:
    """A read-only view of a built store."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self.store_id: str = manifest.store_id
        self.spec = manifest.spec
        self.tables: tuple[TableEntry, ...] = manifest.tables
        self.layouts = [RowLayout(t.rows, t.dim, t.dtype, manifest.page_bytes) for t in self.tables]
        self._maps: dict[int, np.ndarray] = {}
        self._good_chunks: set[tuple[str, int]] = set()  # (file, chunk) whose CRC32 was checked

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise InputError("is a file, not a store directory", p)
        if not p.is_dir():
            raise InputError("store directory not found", p)
        if is_temporary_sibling(p):
            raise InputError("is the temporary directory of an unfinished or interrupted build, not a store", p)
        if not (p / MANIFEST_FILE).is_file():
            raise InputError("not a store (no manifest.json; an interrupted build leaves none)", p)
        store = cls(p, read_manifest(p))
        for entry in store.manifest.files:
            f = p / entry.file
            if not f.is_file() or f.stat().st_size != entry.bytes:
                raise InputError(f"store file {entry.file} is missing or not {entry.bytes} bytes", f)
        for t, lay in zip(store.tables, store.layouts):
            f = p / t.raw.file
            if not f.is_file():
                raise InputError(f"raw file of table {t.name} is missing", f)
            if f.stat().st_size != t.raw.bytes or t.raw.bytes != lay.file_bytes:
                raise InputError(f"raw file of table {t.name} has {f.stat().st_size} bytes, "
                                 f"expected {lay.file_bytes}", f)
            for fe in t.formats:
                f = p / fe.file.file
                if not f.is_file() or f.stat().st_size != fe.file.bytes:
                    raise InputError(f"{fe.format} file of table {t.name} is missing or not {fe.file.bytes} bytes", f)
        return store

    # --- lookups by the serving path and by references ------------------------------
    def table_index(self, name: str) -> int:
        for i, t in enumerate(self.tables):
            if t.name == name:
                return i
        raise InputError(f"no table {name!r} in store", self.path)

    def table(self, i: int | str) -> TableEntry:
        """The manifest entry of table ``i`` (an index or a name)."""
        return self.tables[self.table_index(i) if isinstance(i, str) else i]

    @property
    def table_rows(self) -> dict[str, int]:
        """Rows per table name, in store order."""
        return {t.name: t.rows for t in self.tables}

    def table_path(self, i: int | str) -> Path:
        return self.path / self.table(i).raw.file

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
            raise InputError(f"row out of range for table {self.tables[i].name} ({lay.rows} rows)", self.path)
        return self.rows_view(i)[rows // lay.rows_per_page, rows % lay.rows_per_page]

    def read_range(self, i: int, start: int, stop: int) -> np.ndarray:
        return self.read_rows(i, np.arange(start, stop, dtype=np.int64))

    def tt_variants(self, i: int) -> list[TTEntry]:
        return list(self.tables[i].tt)

    def tt_variant(self, i: int, rank: int) -> TTEntry:
        v = self.tables[i].tt_variant(rank)
        if v is None:
            raise InputError(f"table {self.tables[i].name} has no TT variant of rank {rank} "
                             f"(has {self.tables[i].tt_ranks})", self.path)
        return v

    def load_tt(self, i: int, rank: int):
        import h5py

        from emulator.tt.decomposition import load_tt

        v = self.tt_variant(i, rank)
        name = self.tables[i].name
        f = self.path / v.file
        entry = self.manifest.file_entry(v.file)
        if entry is None:
            raise InputError(f"TT file {v.file} of table {name} is not listed in the manifest", f)
        self._check_chunks(entry, range(len(entry.crc32)), f"TT cores of table {name}")
        try:
            with h5py.File(f, "r") as h:
                if v.group not in h:
                    raise InputError(f"TT group {v.group} is missing", f)
                tt = load_tt(h[v.group])
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"cannot read TT cores ({e})", f) from None
        if tuple(tt.ranks) != v.tt_ranks or tuple(tt.p_shapes) != v.tt_p_shapes \
                or tuple(tt.q_shapes) != v.tt_q_shapes:
            raise InputError(f"TT cores of group {v.group} do not have the manifest's shapes and ranks", f)
        return tt

    def _check_chunks(self, entry: FileEntry, chunks: Iterable[int], what: str) -> None:
        """Compare the CRC32 of each listed chunk of a manifest file entry (once per chunk per Store)."""
        todo = [k for k in chunks if (entry.file, k) not in self._good_chunks]
        bad = chunk_mismatches(self.path / entry.file, entry, todo) if todo else []
        if bad:
            raise InputError(f"{what}: {entry.file} checksum mismatch in bytes {bad[0][1]}-{bad[0][2]}; the store is "
                             "corrupt (see screc store verify)", self.path)
        self._good_chunks.update((entry.file, k) for k in todo)

    def check_rows(self, i: int, rows: np.ndarray) -> None:
        """Check the checksums of the raw-file chunks holding ``rows`` of table ``i`` (InputError if corrupt).

        For ``--verify``: the reference rows come from the same files as the served ones, so a corrupt byte
        would go unnoticed unless the chunks are checked against the manifest.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        chunks = np.unique(self.layouts[i].row_offsets(rows) // CHUNK_BYTES)
        self._check_chunks(self.tables[i].raw, chunks.tolist(), f"table {self.tables[i].name}")

    # --- row formats (emulator.store.quant) -------------------------------------------
    def format_entry(self, i: int, fmt: str):
        """Table ``i``'s FormatEntry for ``fmt`` (InputError if the store was built without it)."""
        fe = self.tables[i].row_format(fmt)
        if fe is None:
            have = ", ".join(f.format for f in self.tables[i].formats) or "none"
            raise InputError(f"table {self.tables[i].name} has no {fmt} rows (has {have}; "
                             f"build the store with --row-formats {fmt})", self.path)
        return fe

    def format_layout(self, i: int, fmt: str):
        from emulator.store.quant import FormatLayout

        t = self.tables[i]
        return FormatLayout(t.rows, t.dim, fmt, self.manifest.page_bytes)

    def format_path(self, i: int, fmt: str) -> Path:
        return self.path / self.format_entry(i, fmt).file.file

    def read_format_rows(self, i: int, fmt: str, rows: np.ndarray, check: bool = False) -> np.ndarray:
        """Rows of table ``i`` in ``fmt`` as (n, row_bytes) uint8, through the page cache (for references);
        ``check``: compare the CRC32 of the chunks they sit in first."""
        rows = np.asarray(rows, dtype=np.int64)
        lay, fe = self.format_layout(i, fmt), self.format_entry(i, fmt)
        if rows.size and (rows.min() < 0 or rows.max() >= lay.rows):
            raise InputError(f"row out of range for table {self.tables[i].name} ({lay.rows} rows)", self.path)
        if check and rows.size:
            chunks = np.unique(lay.row_offsets(rows) // CHUNK_BYTES)
            self._check_chunks(fe.file, chunks.tolist(), f"{fmt} rows of table {self.tables[i].name}")
        view = lay.rows_view(np.memmap(self.path / fe.file.file, dtype=np.uint8, mode="r"))
        return np.asarray(view[rows // lay.rows_per_page, rows % lay.rows_per_page])

    @property
    def raw_bytes(self) -> int:
        return sum(t.raw.bytes for t in self.tables)

    def close(self) -> None:
        self._maps.clear()

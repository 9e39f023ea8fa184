"""Building and verifying stores (see :mod:`emulator.store.store` for the format)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emulator.store.layout import RowLayout
from emulator.store.manifest import (BuildInfo, FileEntry, FormatEntry, Manifest, StoreWeights, TableEntry, TTEntry,
                                     WeightsSource, write_manifest)
from emulator.store.quant import STORED_FORMATS, FormatLayout, quantize_rows, reconstruction_error
from emulator.store.store import (ERROR_SAMPLE_ROWS, IN_MEMORY_TT_BYTES, WRITE_BYTES, Progress, Store,
                                  StoreBuildConfig, _ChecksummedWriter, chunk_mismatches, file_crcs)
from emulator.store.weights import ArrayRows, SyntheticRows, SyntheticWeightsConfig
from tracegen.atomic import atomic_dir, fsync_file, release_reserve, reserve_space
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec


def _read_checked(src, start: int, stop: int, source: str | None, table: str) -> np.ndarray:
    """Rows ``[start, stop)`` of ``src``; imported weights must be readable and finite (else InputError)."""
    if source is None:
        return src.read(start, stop)
    try:
        block = src.read(start, stop)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the weights of table {table} ({e.__class__.__name__}: {e})", source) from None
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = start + int(np.flatnonzero(~finite)[0])
        raise InputError(f"weights of table {table} are not finite (row {row})", source)
    return block


def _write_raw(src, lay: RowLayout, path: Path, progress: Progress | None, desc: str,
               source: str | None = None) -> FileEntry:
    rows_per_step = max(lay.rows_per_page, (WRITE_BYTES // lay.span_bytes) * lay.rows_per_page)
    w = _ChecksummedWriter(path)
    try:
        for start in range(0, lay.rows, rows_per_step):
            stop = min(lay.rows, start + rows_per_step)
            w.write(lay.pack(_read_checked(src, start, stop, source, path.stem)))
            if progress:
                progress(desc, stop, lay.rows)
    finally:
        w.close()
    return FileEntry(str(path.relative_to(path.parent.parent)), w.bytes, tuple(w.crcs))


def _build_tt(store_dir: Path, table: TableSpec, lay: RowLayout, raw_file: Path, config: StoreBuildConfig,
              h5, index: int) -> list[TTEntry]:
    from emulator.tt.decomposition import (factorize_dim, factorize_rows, reconstruction_error, save_tt, tt_svd,
                             tt_svd_streamed)

    if table.rows < config.tt_min_rows or not (config.tt_ranks or config.tt_rel_tol):
        return []
    mm = np.memmap(raw_file, dtype=np.uint8, mode="r")
    view = lay.rows_view(mm)
    rpp = lay.rows_per_page

    def read_rows(start: int, stop: int) -> np.ndarray:
        r = np.arange(start, stop, dtype=np.int64)
        return np.asarray(view[r // rpp, r % rpp], dtype=np.float32)

    def read_at(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(view[rows // rpp, rows % rpp], dtype=np.float32)

    p = factorize_rows(table.rows, 3)
    q = factorize_dim(table.dim, 3)
    small = table.rows * table.dim * 4 <= IN_MEMORY_TT_BYTES
    dense = read_rows(0, table.rows) if small else None
    rng = np.random.default_rng([config.weights_seed, index, 0xE77])
    sample = np.sort(rng.choice(table.rows, size=min(ERROR_SAMPLE_ROWS, table.rows), replace=False))
    variants = []
    targets = [(r, None) for r in config.tt_ranks] if config.tt_ranks else [(None, config.tt_rel_tol)]
    for rank, tol in targets:
        if small:
            tt = tt_svd(dense, p, q, max_rank=rank, rel_tol=tol)
        else:
            tt = tt_svd_streamed(read_rows, table.rows, table.dim, p, q, max_rank=rank, rel_tol=tol)
        core_bytes = tt.nbytes
        ratio = lay.rows * lay.row_bytes / core_bytes
        if ratio <= 1.0:
            continue
        err = reconstruction_error(tt, read_at, sample)
        r_eff = int(max(tt.ranks))
        group = f"{table.name}/r{r_eff}"
        if group in h5:
            continue  # two requested ranks collapsed to the same effective rank
        # HDF5 cannot fail a write cleanly: make a full disk fail here instead (see tracegen.atomic.reserve_space)
        reserve_space(h5.filename, max(os.path.getsize(h5.filename), h5.id.get_filesize()) + core_bytes
                      + core_bytes // 4 + (256 << 10))
        save_tt(h5.create_group(group), tt)
        variants.append(TTEntry(
            rank=r_eff, file="tt.h5", group=group, tt_p_shapes=tuple(int(x) for x in tt.p_shapes),
            tt_q_shapes=tuple(int(x) for x in tt.q_shapes), tt_ranks=tuple(int(x) for x in tt.ranks),
            bytes=int(core_bytes), compression_ratio=float(ratio), rel_fro_error=float(err["rel_fro_error"]),
            max_abs_error=float(err["max_abs_error"]), error_sample_rows=int(err["sample_rows"])))
    del mm
    return variants


def _build_formats(table: TableSpec, lay: RowLayout, raw_file: Path, config: StoreBuildConfig, index: int,
                   progress: Progress | None) -> list[FormatEntry]:
    """Write ``rows/<table>.<format>.bin`` for each requested row format, quantized from the raw file a
    step at a time, and measure each file's reconstruction error on sampled rows read back from it."""
    if not config.row_formats:
        return []
    raw = lay.rows_view(np.memmap(raw_file, dtype=np.uint8, mode="r"))
    rpp = lay.rows_per_page

    def raw_rows(r: np.ndarray) -> np.ndarray:
        return np.asarray(raw[r // rpp, r % rpp], dtype=np.float32)

    rng = np.random.default_rng([config.weights_seed, index, 0xF0F])
    sample = np.sort(rng.choice(table.rows, size=min(ERROR_SAMPLE_ROWS, table.rows), replace=False))
    entries = []
    for fmt in config.row_formats:
        flay = FormatLayout(table.rows, table.dim, fmt)
        path = raw_file.parent.parent / "rows" / f"{table.name}.{fmt}.bin"
        step = max(flay.rows_per_page, (WRITE_BYTES // max(lay.row_bytes, 1)) // flay.rows_per_page
                   * flay.rows_per_page)
        w = _ChecksummedWriter(path)
        try:
            for start in range(0, table.rows, step):
                stop = min(table.rows, start + step)
                w.write(flay.pack(quantize_rows(raw_rows(np.arange(start, stop, dtype=np.int64)), fmt)))
                if progress:
                    progress(f"{fmt} {table.name}", stop, table.rows)
        finally:
            w.close()
        stored = flay.rows_view(np.memmap(path, dtype=np.uint8, mode="r"))
        back = np.asarray(stored[sample // flay.rows_per_page, sample % flay.rows_per_page])
        err = reconstruction_error(raw_rows(sample), back, fmt)
        entries.append(FormatEntry(fmt, FileEntry(str(path.relative_to(path.parent.parent)), w.bytes, tuple(w.crcs)),
                                   flay.row_bytes, flay.rows_per_page, flay.pages, err["rel_fro_error"],
                                   err["max_abs_error"], err["sample_rows"]))
        del stored
    return entries


def build_store(spec: ModelSpec, out: str | os.PathLike, config: StoreBuildConfig = StoreBuildConfig(),
                progress: Progress | None = None) -> Store:
    """Build a store for ``spec`` at ``out`` (replacing an existing one only when complete)."""
    import h5py

    out = Path(out)
    if isinstance(config.weights_seed, bool) or not isinstance(config.weights_seed, int) or config.weights_seed < 0:
        raise InputError(f"weights seed must be a whole number >= 0, got {config.weights_seed!r}")
    if out.exists() and not (out / "manifest.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not a store; refusing to replace it (remove it or choose another path)", out)
    unknown = set(config.imports) - {t.name for t in spec.tables}
    if unknown:
        raise InputError(f"--import names tables not in the spec: {', '.join(sorted(unknown))}")
    bad = [f for f in config.row_formats if f not in STORED_FORMATS]
    if bad or len(set(config.row_formats)) != len(config.row_formats):
        raise InputError(f"row formats must be distinct names among {', '.join(STORED_FORMATS)}, "
                         f"got {', '.join(config.row_formats)}")
    wcfg = SyntheticWeightsConfig(config.weights_seed, config.signal_rank, config.noise_ratio)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        (tmp / "raw").mkdir()
        if config.row_formats:
            (tmp / "rows").mkdir()
        tables = []
        h5path = tmp / "tt.h5"
        with h5py.File(h5path, "w") as h5:
            for i, table in enumerate(spec.tables):
                lay = RowLayout(table.rows, table.dim, table.dtype)
                if table.name in config.imports:
                    src = ArrayRows(table, config.imports[table.name])
                    weights = WeightsSource("import", str(config.imports[table.name]))
                else:
                    src = SyntheticRows(table, i, wcfg)
                    weights = WeightsSource("synthetic")
                raw_file = tmp / "raw" / f"{table.name}.bin"
                raw = _write_raw(src, lay, raw_file, progress, f"raw {table.name}", config.imports.get(table.name))
                if hasattr(src, "close"):
                    src.close()
                if progress:
                    progress(f"tt {table.name}", 0, 1)
                tt = _build_tt(tmp, table, lay, raw_file, config, h5, i)
                if progress:
                    progress(f"tt {table.name}", 1, 1)
                formats = _build_formats(table, lay, raw_file, config, i, progress)
                tables.append(TableEntry.of(table.name, lay, raw, tuple(tt), weights, tuple(formats)))
        release_reserve(h5path)
        fsync_file(h5path)
        manifest = Manifest(
            spec=spec, tables=tuple(tables),
            files=(FileEntry("tt.h5", h5path.stat().st_size, tuple(file_crcs(h5path))),),
            weights=StoreWeights(config.weights_seed, config.signal_rank, config.noise_ratio),
            build=BuildInfo(tuple(config.tt_ranks), config.tt_rel_tol, round(time.perf_counter() - t0, 3),
                            tuple(config.row_formats)))
        fsync_file(write_manifest(tmp, manifest))  # written last
    return Store.open(out)


@dataclass
class VerifyReport:
    store: str
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify_store(path: str | os.PathLike, progress: Progress | None = None) -> VerifyReport:
    """Re-read every file and compare each chunk's CRC32 with the manifest."""
    store = Store.open(path)  # checks manifest integrity and file sizes
    report = VerifyReport(store=str(store.path))
    entries = [(f"table {t.name}", t.raw) for t in store.tables]
    entries += [(f"table {t.name} {f.format}", f.file) for t in store.tables for f in t.formats]
    entries += [(f"file {f.file}", f) for f in store.manifest.files]
    total = sum(e.bytes for _, e in entries)
    done = 0

    def read(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("verify", done, total)

    for what, entry in entries:
        f = store.path / entry.file
        if not f.is_file():
            report.problems.append(f"{what}: {entry.file} is missing")
            continue
        if f.stat().st_size != entry.bytes:
            report.problems.append(f"{what}: {entry.file} has {f.stat().st_size} bytes, expected {entry.bytes}")
            continue
        for _, start, end in chunk_mismatches(f, entry, range(len(entry.crc32)), read):
            report.problems.append(f"{what}: {entry.file} checksum mismatch in bytes {start}-{end}")
        report.files += 1
        report.bytes += entry.bytes
    return report

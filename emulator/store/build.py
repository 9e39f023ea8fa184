"""Building and verifying stores (see :mod:`emulator.store.store` for the format).

``build_store`` checks its inputs and runs the build on every core in a temporary directory renamed
into place when complete (:mod:`emulator.store.build_parallel`: threads, O_DIRECT writes, the TT
tasks); ``verify_store`` re-reads every file against the manifest's checksums.

TT methods (``tt_method``): ``"fast"`` (the default) decomposes every table
with :func:`emulator.tt.decomposition.tt_svd_fast` (two or three streamed
passes of float32 GEMMs, one decomposition for all requested ranks) and
measures the errors on ``ERROR_SAMPLE_ROWS`` rows in random aligned blocks of
``ERROR_BLOCK_ROWS`` (rebuilt by GEMMs over their shared row prefixes; a
table of at most ``ERROR_SAMPLE_ROWS`` rows whole); ``"svd"`` is the method
of stores built before the method was recorded (:func:`tt_svd` in float64 up
to ``IN_MEMORY_TT_BYTES``, :func:`tt_svd_streamed` above, once per rank; errors
by the NumPy reference rebuild). A tolerance (``tt_rel_tol``) always takes the
``"svd"`` path. The manifest records the method and the weights generator.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator.store.build_parallel import _blas_threads, _Runner
from emulator.store.manifest import (
    BuildInfo,
    FileEntry,
    Manifest,
    StoreWeights,
    write_manifest,
)
from emulator.store.quant import STORED_FORMATS
from emulator.store.store import (
    Progress,
    Store,
    StoreBuildConfig,
    chunk_mismatches,
    file_crcs,
)
from emulator.store.weights import DEFAULT_GENERATOR, SyntheticWeightsConfig
from tracegen.atomic import atomic_dir, fsync_file, release_reserve
from tracegen.errors import InputError
from tracegen.spec import ModelSpec

TT_METHODS = ("fast", "svd")

# ---------------------------------------------------------------------------------------------- build


def default_workers() -> int:
    """Build threads: twice the cores (an O_DIRECT write blocks its thread while the disk works)."""
    return 2 * (os.cpu_count() or 1)


def _check(spec: ModelSpec, out: Path, config: StoreBuildConfig, workers: int | None, weights_generator: str,
           tt_method: str) -> int:
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
    if tt_method not in TT_METHODS:
        raise InputError(f"TT method must be one of {', '.join(TT_METHODS)}, got {tt_method!r}")
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a whole number >= 1, got {workers!r}")
    SyntheticWeightsConfig(generator=weights_generator)  # names a generator (else InputError)
    return workers


def build_store(spec: ModelSpec, out: str | os.PathLike, config: StoreBuildConfig = StoreBuildConfig(),
                progress: Progress | None = None, *, workers: int | None = None,
                weights_generator: str = DEFAULT_GENERATOR, tt_method: str = "fast") -> Store:
    """Build a store for ``spec`` at ``out`` (replacing an existing one only when complete) with ``workers``
    threads (default: :func:`default_workers`; the store's bytes do not depend on it). ``weights_generator``
    and ``tt_method`` (see the module doc) are recorded in the manifest."""
    import h5py

    out = Path(out)
    workers = _check(spec, out, config, workers, weights_generator, tt_method)
    wcfg = SyntheticWeightsConfig(config.weights_seed, config.signal_rank, config.noise_ratio, weights_generator)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        (tmp / "raw").mkdir()
        if config.row_formats:
            (tmp / "rows").mkdir()
        h5path = tmp / "tt.h5"
        with h5py.File(h5path, "w") as h5, _blas_threads(1), _Runner(workers, config, wcfg, tt_method) as runner:
            tables = runner.run(spec, tmp, h5, progress)
        release_reserve(h5path)
        fsync_file(h5path)
        manifest = Manifest(
            spec=spec, tables=tuple(tables),
            files=(FileEntry("tt.h5", h5path.stat().st_size, tuple(file_crcs(h5path))),),
            weights=StoreWeights(config.weights_seed, config.signal_rank, config.noise_ratio,
                                 generator=weights_generator),
            build=BuildInfo(tuple(config.tt_ranks), config.tt_rel_tol, round(time.perf_counter() - t0, 3),
                            tuple(config.row_formats),
                            "svd" if config.tt_rel_tol and not config.tt_ranks else tt_method))
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

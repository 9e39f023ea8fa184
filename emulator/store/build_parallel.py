"""The parallel store build behind :func:`emulator.store.build.build_store`.

A build runs on every core: a pool of ``workers`` threads takes tasks of two
kinds, largest table first, at most ``2 x workers`` at a time (memory stays
bounded whatever the model's size):

* write: generate (or read) one step of a table's rows (``WRITE_BYTES``, a
  multiple of the 4 MiB checksum chunk), lay them out in pages, CRC32 each
  chunk and ``pwrite`` them at their offset; for a table that gets TT variants
  (fast method, up to ``TT_KEEP_BYTES``, all such tables in flight within
  ``TT_MEMORY_BYTES``) also lay the rows out as the TT-SVD's first unfolding in
  a pooled buffer (:func:`emulator.tt.decomposition.scatter_rows`);
* finish, once every step of a table is written: its TT-SVDs (from that
  unfolding, else streamed from the file), their errors on sampled rows, its
  row formats.

The weights generator (a Numba kernel), zlib's CRC32, NumPy's GEMMs (BLAS held
to one thread per caller for the build) and file writes all release the GIL,
so the threads run in parallel; TT cores go into ``tt.h5`` from the main
thread in table order, so a parallel build writes the same bytes as a serial
one (``workers=1``).

Writes use O_DIRECT (falling back to buffered writes on a filesystem without
it), from a page-aligned buffer per thread that the weights kernel generates
into, and one ``syncfs`` at the end makes the files and their metadata
durable: the data goes from the buffer to the disk with no copy into the page
cache (that copy cost as much CPU as generating the rows) and no dirty-page
throttling; ``default_workers`` runs twice as many threads as cores, so that
while one thread waits for its write another computes. A TT-SVD that streams
the file reads it through a memory map after ``POSIX_FADV_WILLNEED``. Large buffers
are mapped whole when made (``MAP_POPULATE``) and reused: a pool across
tables, one write buffer per thread (on this project's VMs, pages faulted in
one at a time on first touch cost about as much CPU as the rest of a TT
build). ``fio --rw=write --bs=1M --direct=1 --end_fsync=1`` is the
matching reference (``screc bench build``). Ctrl-C stops the workers at their
next task and raises KeyboardInterrupt in the caller (the temporary directory
is removed).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import errno
import functools
import math
import mmap
import os
import signal
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from emulator.store.layout import RowLayout
from emulator.store.manifest import (
    CHUNK_BYTES,
    FileEntry,
    FormatEntry,
    TableEntry,
    TTEntry,
    WeightsSource,
)
from emulator.store.quant import FormatLayout, quantize_rows, reconstruction_error
from emulator.store.store import (
    ERROR_SAMPLE_ROWS,
    IN_MEMORY_TT_BYTES,
    WRITE_BYTES,
    Progress,
    StoreBuildConfig,
    _ChecksummedWriter,
)
from emulator.store.weights import (
    ArrayRows,
    HashSyntheticRows,
    SyntheticWeightsConfig,
    synthetic_rows,
)
from tracegen.atomic import reserve_space
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, TableSpec

_SYNC_FILE_RANGE_WRITE = 2
TT_KEEP_BYTES = 1 << 30  # tables up to this size are laid out in memory for the TT-SVD by their write steps,
TT_MEMORY_BYTES = 3 << 30  # as long as those in flight take at most this much


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


# ---------------------------------------------------------------------------------------------- threads


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` back now, without waiting for it."""
    fn = getattr(_LIBC, "sync_file_range", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def _openblas():
    """(get, set) of the thread count of the OpenBLAS NumPy is linked with, or None."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "openblas" in line and ".so" in line}
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            get, put = (getattr(lib, f"{prefix}_{verb}_num_threads{suffix}", None) for verb in ("get", "set"))
            if get is not None and put is not None:
                return get, put
    return None


@contextlib.contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    """BLAS limited to ``n`` threads per call inside the block (the build's own threads share the cores)."""
    blas = _openblas()
    if blas is None:
        yield
        return
    get, put = blas
    before = get()
    put(n)
    try:
        yield
    finally:
        put(before)


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class _Table:
    """One table's build state, shared by its tasks; its file and row source are opened by the first task
    that needs them (so that the per-table set-up runs on the workers, not in the scheduling thread)."""

    index: int
    spec: TableSpec
    lay: RowLayout
    path: Path
    steps: list[tuple[int, int, int]]  # (first row, end row, byte offset)
    source: str | None  # the imported file, if any
    crcs: dict[int, list[int]] = field(default_factory=dict)  # byte offset -> CRC32 per chunk
    src: Any = None
    fd: int | None = None
    direct: bool = False  # the file is open with O_DIRECT
    unfolding: np.ndarray | None = None  # the rows as the TT-SVD's first unfolding, filled by the steps (open)
    pooled: np.ndarray | None = None  # the pool's buffer behind it
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def written(self) -> bool:
        return len(self.crcs) == len(self.steps)

    def mapped(self) -> np.ndarray:
        """The written file's bytes, read-only, through a memory map (the page cache; no second open)."""
        if not self.lay.file_bytes:
            return np.zeros(0, dtype=np.uint8)
        return np.frombuffer(mmap.mmap(self.fd, self.lay.file_bytes, prot=mmap.PROT_READ), dtype=np.uint8)

    @functools.cached_property
    def tt_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        from emulator.tt.decomposition import factorize_dim, factorize_rows

        return factorize_rows(self.spec.rows, 3), factorize_dim(self.spec.dim, 3)

    @property
    def weights(self) -> WeightsSource:
        return WeightsSource("synthetic") if self.source is None else WeightsSource("import", self.source)

    def open(self, wcfg: SyntheticWeightsConfig, fds: list[int], run: "_Runner | None" = None) -> None:
        """Open the file and the row source; when ``run`` grants the memory (:meth:`_Runner.claim`): the write
        steps also lay the rows out as the TT-SVD's first unfolding in memory (no read-back from the disk, no
        separate gather pass)."""
        with self.lock:
            if self.fd is not None:
                return
            if run is not None and run.claim(self):
                pool = run.buffers
                from emulator.tt.decomposition import unfolding_shape, zero_padding_rows

                p, q = self.tt_shapes
                m, n = unfolding_shape(p, q)
                self.pooled = pool.take(m * n * 4)
                self.unfolding = self.pooled[:m * n * 4].view(np.float32).reshape(m, n)
                zero_padding_rows(self.spec.rows, p, q, self.unfolding)
            if self.source is None:
                self.src = synthetic_rows(self.spec, self.index, wcfg)
            else:
                self.src = ArrayRows(self.spec, self.source)
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            try:
                fd = os.open(self.path, flags | getattr(os, "O_DIRECT", 0), 0o644)
                self.direct = hasattr(os, "O_DIRECT")
            except OSError as e:  # a filesystem without O_DIRECT (tmpfs): buffered writes
                if e.errno != errno.EINVAL:
                    raise
                fd = os.open(self.path, flags, 0o644)
            fds.append(fd)
            if self.lay.file_bytes:  # a full disk fails here; and ext4 writes allocated blocks far faster
                os.posix_fallocate(fd, 0, self.lay.file_bytes)
            self.fd = fd


def _steps(lay: RowLayout) -> list[tuple[int, int, int]]:
    """Write steps of about WRITE_BYTES, each a whole number of page groups and of checksum chunks."""
    unit = math.lcm(lay.span_bytes, CHUNK_BYTES)  # bytes of a step boundary that is both
    groups = unit // lay.span_bytes * max(1, WRITE_BYTES // unit)
    rows = groups * lay.rows_per_page
    return [(start, min(lay.rows, start + rows), (start // lay.rows_per_page) * lay.span_bytes)
            for start in range(0, lay.rows, rows)]


_BUFFERS = threading.local()


class _Pool:
    """Page-aligned byte buffers reused across tables: fresh pages cost page faults (slow on VMs), reused
    ones do not. ``take`` gives the smallest free buffer that is large enough (or a new one), ``give`` returns
    it; the pool holds at most what was in use at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.free: list[np.ndarray] = []

    def take(self, nbytes: int) -> np.ndarray:
        with self.lock:
            fits = [b for b in self.free if b.size >= nbytes]
            if fits:
                buf = min(fits, key=lambda b: b.size)
                self.free = [b for b in self.free if b is not buf]
                return buf
        return _populated(nbytes)

    def give(self, buf: np.ndarray | None) -> None:
        if buf is not None:
            with self.lock:
                self.free.append(buf)


def _aligned(nbytes: int) -> np.ndarray:
    """This thread's reusable page-aligned byte buffer, ``nbytes`` long (O_DIRECT needs aligned memory; reuse
    spares the page faults of a fresh 64 MiB array at every step)."""
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _BUFFERS.buf = _populated(nbytes)
    return buf[:nbytes]


def _populated(nbytes: int) -> np.ndarray:
    """A new page-aligned byte buffer whose pages are all mapped at once (``MAP_POPULATE``): on this
    project's VMs, faulting pages in one at a time on first touch costs about 7x more CPU."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return np.frombuffer(mmap.mmap(-1, max(1, int(nbytes)), flags=flags), dtype=np.uint8)[:int(nbytes)]


def _write_step(t: _Table, start: int, stop: int, offset: int, run: "_Runner") -> list[int]:
    if run.stop.is_set():
        raise KeyboardInterrupt
    t.open(run.wcfg, run.fds, run)
    lay, n = t.lay, stop - start
    nbytes = -(-n // lay.rows_per_page) * lay.span_bytes
    target = _aligned(nbytes)
    if isinstance(t.src, HashSyntheticRows) and lay.dense and lay.np_dtype == np.float32:
        data = target  # generated in place: rows back to back, then the last group's zero padding
        values = t.src.read(start, stop, out=data[:n * lay.row_bytes].view(np.float32).reshape(n, lay.dim))
        data[n * lay.row_bytes:] = 0
    else:
        values = _read_checked(t.src, start, stop, t.source, t.spec.name).astype(lay.np_dtype, copy=False)
        data = lay.pack(values)
        if t.direct:
            target[:] = data
            data = target
    if t.unfolding is not None:
        from emulator.tt.decomposition import scatter_rows

        scatter_rows(values, start, *t.tt_shapes, t.unfolding)
    view = memoryview(data).cast("B")
    crcs = [zlib.crc32(view[k:k + CHUNK_BYTES]) for k in range(0, nbytes, CHUNK_BYTES)]
    done = 0
    while done < nbytes:  # a full disk raises OSError(ENOSPC): atomic_dir names the store and cleans up
        done += os.pwrite(t.fd, view[done:], offset + done)
    if not t.direct:
        _start_writeback(t.fd, offset, nbytes)
    return crcs


ERROR_BLOCK_ROWS = 256  # tt_method "fast": errors measured on ERROR_SAMPLE_ROWS rows in random blocks of these


def _error_blocks(rows: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The row ranges whose errors a fast-method build measures: the whole table up to ERROR_SAMPLE_ROWS rows,
    else ERROR_SAMPLE_ROWS // ERROR_BLOCK_ROWS aligned blocks of ERROR_BLOCK_ROWS rows drawn without
    replacement (contiguous rows rebuild by a few GEMMs; single rows by one small product each)."""
    if rows <= ERROR_SAMPLE_ROWS:
        return [(0, rows)]
    n = rows // ERROR_BLOCK_ROWS
    starts = np.sort(rng.choice(n, size=min(n, ERROR_SAMPLE_ROWS // ERROR_BLOCK_ROWS), replace=False))
    return [(int(s) * ERROR_BLOCK_ROWS, (int(s) + 1) * ERROR_BLOCK_ROWS) for s in starts]


def _tt_error(tt, read_at, blocks: list[tuple[int, int]]) -> dict:
    """:func:`emulator.tt.cores.reconstruction_error` over the rows of ``blocks``, each block rebuilt by
    :func:`emulator.tt.cores.tt_rebuild_range` (GEMMs over shared row prefixes); differences in float32
    (rounded once each), their squares summed in float64."""
    from emulator.tt.cores import tt_rebuild_range

    sample = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in blocks])
    if sample.size == 0:
        return {"rel_fro_error": 0.0, "max_abs_error": 0.0, "sample_rows": 0}
    true = np.asarray(read_at(sample), dtype=np.float32)
    rebuilt = np.empty_like(true)
    at = 0
    for a, b in blocks:
        rebuilt[at:at + b - a] = tt_rebuild_range(tt, a, b)
        at += b - a
    diff = np.subtract(true, rebuilt, out=rebuilt)  # float32: each difference rounded once (0.5 ulp)
    norm = math.sqrt(float(np.add.reduce(np.square(true).ravel(), dtype=np.float64)))  # sums in float64
    err = math.sqrt(float(np.add.reduce(np.square(diff).ravel(), dtype=np.float64)))
    return {"rel_fro_error": err / norm if norm > 0 else (0.0 if err == 0 else math.inf),
            "max_abs_error": float(np.abs(diff).max()), "sample_rows": int(sample.size)}


def _tt_variants(t: _Table, config: StoreBuildConfig, tt_method: str) -> list:
    """The table's TT variants as (cores, error) pairs."""
    from emulator.tt.decomposition import (
        factorize_dim,
        factorize_rows,
        tt_svd,
        tt_svd_fast,
        tt_svd_streamed,
    )
    from emulator.tt.decomposition import reconstruction_error as tt_error

    table, lay = t.spec, t.lay
    if table.rows < config.tt_min_rows or not (config.tt_ranks or config.tt_rel_tol):
        return []
    if t.unfolding is not None:
        from emulator.tt.decomposition import Unfolding, tt_svd_fast

        p, q = t.tt_shapes
        unfolding = Unfolding(t.unfolding, p, q)
        blocks = _error_blocks(table.rows, np.random.default_rng([config.weights_seed, t.index, 0xE77]))
        tts, _ = tt_svd_fast(unfolding, table.rows, table.dim, p, q, config.tt_ranks, seed=config.weights_seed)
        return [(tt, _tt_error(tt, unfolding.rows_at, blocks)) for tt in tts
                if lay.rows * lay.row_bytes / tt.nbytes > 1.0]
    if t.direct and lay.file_bytes:  # written around the page cache: the kernel reads it all back, ahead
        os.posix_fadvise(t.fd, 0, lay.file_bytes, os.POSIX_FADV_WILLNEED)
    view = lay.rows_view(t.mapped())
    rpp = lay.rows_per_page

    def read_rows(start: int, stop: int) -> np.ndarray:
        if lay.dense or rpp == 1:  # rows in file order: a slice
            return np.asarray(view.reshape(-1, table.dim)[start:stop], dtype=np.float32)
        r = np.arange(start, stop, dtype=np.int64)
        return np.asarray(view[r // rpp, r % rpp], dtype=np.float32)

    def read_at(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(view[rows // rpp, rows % rpp], dtype=np.float32)

    p = factorize_rows(table.rows, 3)
    q = factorize_dim(table.dim, 3)
    rng = np.random.default_rng([config.weights_seed, t.index, 0xE77])
    sample = np.sort(rng.choice(table.rows, size=min(ERROR_SAMPLE_ROWS, table.rows), replace=False))
    if tt_method == "fast" and config.tt_ranks:  # a table over TT_KEEP_BYTES: streamed from the file
        blocks = _error_blocks(table.rows, np.random.default_rng([config.weights_seed, t.index, 0xE77]))
        tts, _ = tt_svd_fast(view, table.rows, table.dim, p, q, config.tt_ranks, seed=config.weights_seed)
        return [(tt, _tt_error(tt, read_at, blocks)) for tt in tts if lay.rows * lay.row_bytes / tt.nbytes > 1.0]
    small = table.rows * table.dim * 4 <= IN_MEMORY_TT_BYTES
    dense = read_rows(0, table.rows) if small else None
    targets = [(r, None) for r in config.tt_ranks] if config.tt_ranks else [(None, config.tt_rel_tol)]
    out = []
    for rank, tol in targets:
        tt = tt_svd(dense, p, q, max_rank=rank, rel_tol=tol) if small else \
            tt_svd_streamed(read_rows, table.rows, table.dim, p, q, max_rank=rank, rel_tol=tol)
        if lay.rows * lay.row_bytes / tt.nbytes > 1.0:
            out.append((tt, tt_error(tt, read_at, sample)))
    return out


def _finish(t: _Table, run: "_Runner") -> tuple:
    if run.stop.is_set():
        raise KeyboardInterrupt
    t.open(run.wcfg, run.fds)  # (an empty table has no write step)
    tts = _tt_variants(t, run.config, run.tt_method)
    if t.pooled is not None:
        run.buffers.give(t.pooled)
        run.release(t)
        t.unfolding = t.pooled = None
    if run.stop.is_set():
        raise KeyboardInterrupt
    formats = _build_formats(t.spec, t.lay, t.path, run.config, t.index, None)  # progress: main thread only
    if hasattr(t.src, "close"):
        t.src.close()
    return tts, formats


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


def _save_tts(h5, t: _Table, tts: list) -> list[TTEntry]:
    """Write a table's TT cores into ``tt.h5`` (main thread, table order) and describe them."""
    from emulator.tt.decomposition import save_tt

    variants = []
    for tt, err in tts:
        r_eff = int(max(tt.ranks))
        group = f"{t.spec.name}/r{r_eff}"
        if group in h5:
            continue  # two requested ranks collapsed to the same effective rank
        # HDF5 cannot fail a write cleanly: make a full disk fail here instead (see tracegen.atomic.reserve_space)
        reserve_space(h5.filename, max(os.path.getsize(h5.filename), h5.id.get_filesize()) + tt.nbytes
                      + tt.nbytes // 4 + (256 << 10))
        save_tt(h5.create_group(group), tt)
        variants.append(TTEntry(
            rank=r_eff, file="tt.h5", group=group, tt_p_shapes=tuple(int(x) for x in tt.p_shapes),
            tt_q_shapes=tuple(int(x) for x in tt.q_shapes), tt_ranks=tuple(int(x) for x in tt.ranks),
            bytes=int(tt.nbytes), compression_ratio=float(t.lay.rows * t.lay.row_bytes / tt.nbytes),
            rel_fro_error=float(err["rel_fro_error"]), max_abs_error=float(err["max_abs_error"]),
            error_sample_rows=int(err["sample_rows"])))
    return variants


class _Runner:
    """The build's thread pool and its bounded, table-ordered schedule (see the module doc)."""

    def __init__(self, workers: int, config: StoreBuildConfig, wcfg: SyntheticWeightsConfig, tt_method: str):
        self.workers, self.config, self.wcfg, self.tt_method = workers, config, wcfg, tt_method
        self.stop = threading.Event()
        self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="store-build")
        self.fds: list[int] = []
        self.buffers = _Pool()
        self.memory_lock = threading.Lock()
        self.kept_bytes = 0  # of the tables laid out in memory for their TT-SVDs

    def __enter__(self) -> "_Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()  # on an error or Ctrl-C: queued tasks return at once, running ones finish their step
        self.pool.shutdown(wait=True, cancel_futures=True)
        for fd in self.fds:
            os.close(fd)

    def claim(self, t: _Table) -> bool:
        """Whether ``t``'s write steps lay its rows out for its TT-SVD in memory: the fast method, a table of
        at most TT_KEEP_BYTES, and room left in TT_MEMORY_BYTES for all such tables in flight (else its TT-SVD
        streams the file)."""
        c = self.config
        need = math.prod(t.tt_shapes[0]) * t.spec.dim * 4
        if not (self.tt_method == "fast" and c.tt_ranks and t.spec.rows >= c.tt_min_rows and 0 < need <= TT_KEEP_BYTES):
            return False
        with self.memory_lock:
            if self.kept_bytes + need > TT_MEMORY_BYTES:
                return False
            self.kept_bytes += need
            return True

    def release(self, t: _Table) -> None:
        with self.memory_lock:
            self.kept_bytes -= math.prod(t.tt_shapes[0]) * t.spec.dim * 4

    def sync(self) -> None:
        """Make every file written durable: one ``syncfs`` of their filesystem (far cheaper than an
        ``fsync`` per file when a model has hundreds of small tables), else ``fsync`` each."""
        fn = getattr(_LIBC, "syncfs", None)
        if fn is not None and self.fds:
            fn.argtypes = [ctypes.c_int]
            if fn(self.fds[0]) == 0:
                return
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        for fd in self.fds:
            os.fsync(fd)

    def run(self, spec: ModelSpec, tmp: Path, h5, progress: Progress | None) -> list[TableEntry]:
        """Build every table (see the module doc). Ctrl-C (SIGINT, in the main thread) stops the workers at
        their next step and raises KeyboardInterrupt here, outside any lock (a KeyboardInterrupt inside
        ``concurrent.futures.wait`` can break its condition variable)."""
        if threading.current_thread() is not threading.main_thread():
            return self._run(spec, tmp, h5, progress)
        interrupted = []

        def on_sigint(_signum, _frame):
            interrupted.append(True)
            self.stop.set()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            return self._run(spec, tmp, h5, progress, interrupted)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _run(self, spec: ModelSpec, tmp: Path, h5, progress: Progress | None,
             interrupted: list | None = None) -> list[TableEntry]:
        config = self.config
        lays = [RowLayout(t.rows, t.dim, t.dtype) for t in spec.tables]
        total = sum(lay.file_bytes for lay in lays)
        # largest tables first (their TT-SVDs are the longest tasks: started early, they overlap the rest);
        # the entries and tt.h5 still follow the spec's order
        todo = iter(sorted(range(len(spec.tables)), key=lambda i: (-lays[i].file_bytes, i)))
        writes: list[tuple[_Table, tuple[int, int, int]]] = []
        inflight: dict[cf.Future, tuple[str, _Table, int]] = {}
        finished: dict[int, tuple] = {}
        tables: dict[int, _Table] = {}
        entries: list[TableEntry] = []
        done_bytes = 0
        limit = 2 * self.workers
        while True:
            while len(inflight) < limit:
                if not writes:
                    i = next(todo, None)
                    if i is None:
                        break
                    table = spec.tables[i]
                    t = tables[i] = _Table(i, table, lays[i], tmp / "raw" / f"{table.name}.bin", _steps(lays[i]),
                                           config.imports.get(table.name))
                    if t.source is not None:  # an imported file (NumPy or HDF5) is opened here, not in a worker
                        t.open(self.wcfg, self.fds, self)
                    writes = [(t, s) for s in t.steps]
                    if not writes:  # an empty table: nothing to write
                        inflight[self.pool.submit(_finish, t, self)] = ("f", t, 0)
                        continue
                t, (start, stop, offset) = writes.pop(0)
                inflight[self.pool.submit(_write_step, t, start, stop, offset, self)] = ("w", t, offset)
            if not inflight:
                break
            ready, _ = cf.wait(inflight, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            if interrupted:
                raise KeyboardInterrupt
            for fut in ready:
                kind, t, offset = inflight.pop(fut)
                result = fut.result()  # a task's error (InputError, OSError) ends the build here
                if kind == "w":
                    t.crcs[offset] = result
                    done_bytes += min(t.lay.file_bytes - offset, len(result) * CHUNK_BYTES)
                    if progress:
                        progress("raw", done_bytes, total)
                    if t.written:
                        inflight[self.pool.submit(_finish, t, self)] = ("f", t, 0)
                else:
                    finished[t.index] = result
            while len(entries) in finished:  # TT cores into tt.h5 in table order (same bytes as a serial build)
                t = tables.pop(len(entries))
                tts, formats = finished.pop(t.index)
                if progress:
                    progress("tt", len(entries) + 1, len(spec.tables))
                raw = FileEntry(str(t.path.relative_to(tmp)), t.lay.file_bytes,
                                tuple(c for off in sorted(t.crcs) for c in t.crcs[off]))
                entries.append(TableEntry.of(t.spec.name, t.lay, raw, tuple(_save_tts(h5, t, tts)), t.weights,
                                             tuple(formats)))
        self.sync()
        return entries

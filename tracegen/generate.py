"""Synthetic lookup traces: per-table popularity over a hidden permutation, per-bag pooling, temporal reuse.

How one batch is made, table by table (table ``t`` of batch ``i`` draws from its
own stream ``SeedSequence(seed, spawn_key=(0, t, i))``, ``t`` its index in the
whole model (:attr:`GeneratorParams.source_tables`), so any batch, and any
selection of tables, can be generated without the rest, unless reuse is on):

1. Bag sizes: ``B`` pooling factors from the table's :class:`PoolingSpec`
   (fixed, uniform, poisson or lognormal, clipped to ``[min, max]``).
2. Ranks: one rank per lookup, exactly, by rejection from a piecewise-constant
   envelope over geometric cells of ranks (O(log rows) memory, about 1.5
   uniforms per lookup): from the table's locality model
   (:mod:`tracegen.popularity`: a Hurwitz-Zipf tail over an active set with a
   uniform floor) when the parameters give one, else Zipf with the table's
   skew (:mod:`tracegen.zipf`; ``alpha == 0`` is uniform).
3. Rows: rank ``k`` (0-based) becomes row ``perm_t(k)``, a seeded bijection on
   ``[0, rows)`` (:mod:`tracegen.permutation`), keyed by ``(seed, t)`` only, so
   a row keeps its popularity across batches.
4. Reuse (``reuse > 0``, see :class:`GeneratorParams`): a lookup repeats an
   earlier one of its table, from the previous batch (``reuse_window = 0``) or
   at a power-law lag in the table's stream (:mod:`tracegen.reuse`). Batch
   ``i`` then depends on the batches before it; :func:`generate_batch`
   regenerates them.

The same ``(spec, params)`` gives byte-identical traces, with any number of
threads: :func:`generate_trace` draws tables on a thread pool (the Numba
kernels and NumPy's generators release the GIL), each from its own stream, and
the writer takes them in table order (:mod:`tracegen.parallel`,
:mod:`tracegen.trace_write`).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from tracegen.parallel import ordered_map, thread_pool
from tracegen.params import GENERATOR_NAME, GENERATOR_VERSION, GeneratorParams
from tracegen.permutation import (
    FEISTEL_ROUNDS,
    PERM_HEAD_ROWS,
    HashPermutation,
    hash_permute,
    permutation_keys,
    permutation_shape,
)
from tracegen.pooling import bag_sizes, scale_pooling
from tracegen.popularity import PopularitySampler, TablePopularity, guide_table
from tracegen.reuse import ReuseHistory
from tracegen.spec import ModelSpec, TableSpec
from tracegen.trace_fast import ArrayPool
from tracegen.trace_io import TraceWriter
from tracegen.zipf import CELL_BITS, ZipfSampler, zipf_cells, zipf_ranks

__all__ = [
    "CELL_BITS", "FEISTEL_ROUNDS", "GENERATOR_NAME", "GENERATOR_VERSION", "PERM_HEAD_ROWS", "GeneratorParams",
    "HashPermutation", "TraceGenerator", "ZipfSampler", "bag_sizes", "generate_batch", "generate_trace",
    "guide_table", "hash_permute", "permutation_keys", "permutation_shape", "scale_pooling", "table_popularity",
    "zipf_cells", "zipf_ranks",
]


GEN_AHEAD_BYTES = 512 << 20  # tables' lookups (int64) generated ahead of the writer (2+ of the largest)
TABLE_POOL_BYTES = 768 << 20  # tables' arrays kept for reuse (fresh ones pay page faults and zeroing)
PARTS_POOL_BYTES = 384 << 20  # the same for the batch's offsets, table by table (B values each)


def _batch_rng(seed: int, table_index: int, batch_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0, int(table_index), int(batch_index))))


def table_popularity(table: TableSpec, entry) -> TablePopularity:
    """The :class:`TablePopularity` of ``table`` from its ``(name, s, q_share, uniform, active_share)`` entry."""
    _, s, q_share, uniform, active_share = entry
    active = int(min(table.rows, max(1, round(table.rows * active_share))))
    return TablePopularity(s=float(s), q=float(q_share) * active, uniform=float(uniform), active=active)


class _TableGenerator:
    def __init__(self, table: TableSpec, table_index: int, params: GeneratorParams, entry=None):
        self.table = table
        self.pop = None
        if entry is not None:
            self.pop = PopularitySampler(table_popularity(table, entry))
            self.sampler = None
            skewed = True
        else:
            self.sampler = ZipfSampler(table.rows, table.zipf_alpha)
            skewed = table.zipf_alpha > 0
        self.perm = None  # uniform rows (alpha == 0) need no permutation
        if params.permute and skewed:
            self.perm = HashPermutation(table.rows, permutation_keys(params.seed, table_index))
        self.history = ReuseHistory(params.reuse_window) if params.reuse > 0 and params.reuse_window > 0 else None

    def fill(self, rng: np.random.Generator, out: np.ndarray, prev: np.ndarray | None, params: GeneratorParams
             ) -> None:
        n = out.size
        if self.pop is not None:  # ranks, then rows through the permutation (fused, block by block)
            self.pop.fill(int(rng.integers(0, 2**64, dtype=np.uint64)), out, self.perm)
        else:
            self.sampler.fill(rng, out, self.perm)
        reuse = float(params.reuse)
        if self.history is not None:
            self.history.apply(out, int(rng.integers(0, 2**64, dtype=np.uint64)), reuse,
                               float(params.reuse_lag_exponent))
        elif reuse > 0 and prev is not None and prev.size and n:
            mask = rng.random(n) < reuse
            k = int(np.count_nonzero(mask))
            out[mask] = prev[rng.integers(0, prev.size, size=k)]


class TraceGenerator:
    """Generates the batches of ``(spec, params)``; holds per-table samplers (CDFs, keys) between batches."""

    def __init__(self, spec: ModelSpec, params: GeneratorParams):
        self.spec = params.effective_spec(spec)
        self.params = params
        self._keys = params.source_tables or tuple(range(self.spec.num_tables))
        self._pop = params.popularity_of()
        # built on first use, by the worker that generates the table (sampler cells, permutation head)
        self._tables: list[_TableGenerator | None] = [None] * self.spec.num_tables
        self._lag = params.reuse > 0 and params.reuse_window > 0
        self._next_batch = 0  # with lag reuse: the batch the histories are ready for
        # arrays reused once the writer has let go of them: tables' lookups, offsets parts
        self._arrays = ArrayPool(slots=64, max_bytes=TABLE_POOL_BYTES)
        self._parts = ArrayPool(slots=512, max_bytes=PARTS_POOL_BYTES)
        self.stage_seconds = {"bags_s": 0.0, "tables_s": 0.0}  # measured, summed over threads
        self._lock = threading.Lock()

    def _timed(self, stage: str, t0: float) -> None:
        with self._lock:
            self.stage_seconds[stage] += time.perf_counter() - t0

    def _table(self, ti: int) -> _TableGenerator:
        tg = self._tables[ti]
        if tg is None:
            t = self.spec.tables[ti]
            tg = _TableGenerator(t, self._keys[ti], self.params, self._pop.get(t.name))
            with self._lock:
                if self._tables[ti] is None:
                    self._tables[ti] = tg
                tg = self._tables[ti]
        return tg

    def _reset_histories(self) -> None:
        for tg in self._tables:
            if tg is not None:
                tg.history = ReuseHistory(self.params.reuse_window)
        self._next_batch = 0

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    def batch(self, i: int, previous: tuple[np.ndarray, np.ndarray] | None = None,
              pool: ThreadPoolExecutor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``i`` as ``(indices, offsets)``; ``previous`` is batch ``i - 1`` (used only when reuse is on)."""
        offsets, tables = self.batch_tables(i, previous, pool)
        indices = np.empty(int(offsets[-1]), dtype=np.int64)
        B = self.batch_size
        for ti, idx in tables:
            indices[int(offsets[ti * B]) : int(offsets[(ti + 1) * B])] = idx
        return indices, offsets

    def batch_tables(self, i: int, previous: tuple[np.ndarray, np.ndarray] | None = None,
                     pool: ThreadPoolExecutor | None = None) -> tuple[np.ndarray, Iterator[tuple[int, np.ndarray]]]:
        """Batch ``i`` table by table: its offsets (``T*B + 1``), and an iterator of ``(table, indices)`` for
        tables ``0 .. T-1`` (see :meth:`batch_stream`; :meth:`batch` concatenates them)."""
        B, T = self.batch_size, self.spec.num_tables
        prev = None if previous is None else (previous[0], previous[1][::B][: T + 1])
        parts, tables = self.batch_stream(i, prev, pool)
        offsets = np.concatenate(list(parts))
        return offsets, tables()

    def batch_stream(self, i: int, previous: tuple[np.ndarray, np.ndarray] | None = None,
                     pool: ThreadPoolExecutor | None = None
                     ) -> tuple[Iterator[np.ndarray], Callable[[], Iterator[tuple[int, np.ndarray]]]]:
        """Batch ``i`` in two streams, never whole in memory: its offsets in consecutive parts (together
        ``T*B + 1`` values: a leading 0, then each table's ``B``), and, once they are all consumed,
        ``tables()``: an iterator of ``(table, indices)`` for tables ``0 .. T-1``. Both are generated ahead on
        ``pool`` when given (the tables within ``GEN_AHEAD_BYTES``); the same with or without a pool.
        ``previous`` is batch ``i - 1`` as ``(indices, where each table starts (T+1))``, used only with
        reuse from the previous batch (regenerated when ``None``)."""
        if i < 0:
            raise IndexError(f"batch index {i} < 0")
        reuse = float(self.params.reuse)
        B, T = self.batch_size, self.spec.num_tables
        if self._lag:
            if i != self._next_batch:  # the histories must have seen batches 0 .. i-1, in order
                self._reset_histories()
                for j in range(i):
                    for _ in self.batch_tables(j, pool=pool)[1]:
                        pass
            self._next_batch = i + 1
        elif reuse > 0 and i > 0 and previous is None:
            prev = self.batch(0, pool=pool)
            for j in range(1, i):
                prev = self.batch(j, prev, pool=pool)
            previous = (prev[0], prev[1][::B][: T + 1])
        rngs: list[np.random.Generator | None] = [None] * T
        ends = np.zeros(T, np.int64)  # each table's lookups

        def bags(ti: int) -> tuple[np.random.Generator, np.ndarray]:  # bag sizes summed within table ti
            t0 = time.perf_counter()
            rng = _batch_rng(self.params.seed, self._keys[ti], i)
            local = np.cumsum(bag_sizes(self.spec.tables[ti].pooling, B, rng), out=self._parts.take(B))
            self._timed("bags_s", t0)
            return rng, local

        def parts() -> Iterator[np.ndarray]:
            yield np.zeros(1, np.int64)
            base = 0
            for ti, (rng, local) in enumerate(ordered_map(pool, bags, range(T), budget=64)):
                rngs[ti], ends[ti] = rng, local[-1]
                if base:
                    local += base  # from within-table to batch offsets
                base += int(ends[ti])
                yield local

        prev_bounds = previous[1] if reuse > 0 and i > 0 and not self._lag else None

        def fill(ti: int) -> tuple[int, np.ndarray]:
            t0 = time.perf_counter()
            out = self._arrays.take(int(ends[ti]), slack=True)
            prev = None
            if prev_bounds is not None:
                prev = previous[0][int(prev_bounds[ti]) : int(prev_bounds[ti + 1])]
            self._table(ti).fill(rngs[ti], out, prev, self.params)
            self._timed("tables_s", t0)
            return ti, out

        def tables() -> Iterator[tuple[int, np.ndarray]]:
            if any(r is None for r in rngs):
                raise ValueError("batch_stream: consume the offsets before the tables")
            return ordered_map(pool, fill, range(T), cost=lambda ti: 8 * int(ends[ti]), budget=GEN_AHEAD_BYTES)

        return parts(), tables


def generate_batch(spec: ModelSpec, params: GeneratorParams, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``i`` of the trace ``(spec, params)``: ``indices`` (int64) and ``offsets`` (int64, ``T*B + 1``).

    With reuse on, batch ``i`` depends on batch ``i - 1`` and this regenerates
    batches ``0..i-1`` first (cost grows with ``i``); use
    :class:`TraceGenerator` to stream.
    """
    return TraceGenerator(spec, params).batch(i)


def _stopping(items: Iterator, should_stop: Callable[[], bool] | None) -> Iterator:
    """``items``, asking ``should_stop()`` before each (:class:`KeyboardInterrupt` when it says so)."""
    for item in items:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        yield item


def generate_trace(spec: ModelSpec, params: GeneratorParams, path: str | os.PathLike,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, workers: int | None = None,
                   stats: dict[str, float] | None = None) -> str:
    """Write the ``params.num_batches`` batches of ``(spec, params)`` to ``path``; return the trace id.

    Tables are generated on ``workers`` threads (default: every core; the file is the same for any number),
    ahead of the writer by at most ``GEN_AHEAD_BYTES``, and written table by table, offsets first
    (:meth:`TraceWriter.begin_batch_parts`), which checksums, writes and hashes them on threads of its own
    (:meth:`TraceGenerator.batch_stream`). Memory holds the tables generated ahead, the offsets and tables
    waiting to be hashed and the writer's chunk buffers, all bounded, not the batch: a full ``meta-2022``
    batch (1.4G lookups, 11 GB as int64, and 0.8 GB of offsets) peaked at 1.54 GiB resident, the whole
    process (``screc bench tracegen``). With reuse from the previous batch,
    that batch is kept whole (it is sampled from); with lag reuse, each table's last ``reuse_window``
    lookups. The file records the effective spec (batch size, skew overrides and pooling scale applied) and
    the parameters. ``progress(done_batches, total)`` is called after each batch. ``should_stop()`` is asked
    after every table (bag sizes, then lookups): when it says so, generation stops with :class:`KeyboardInterrupt` and the file is not
    written (nothing is left behind). ``stats``, when given, receives where the time went (measured
    seconds, summed over threads that overlap): ``bags_s`` and ``tables_s`` (generation), the writer's
    :attr:`TraceWriter.stage_seconds`, ``wait_tables_s`` (the writer waiting for generated tables) and
    ``close_s`` (last chunks, fsync and rename).
    """
    gen = TraceGenerator(spec, params)
    total = params.num_batches
    wait_s = 0.0
    with thread_pool(workers) as pool, \
            TraceWriter(path, gen.spec, seed=params.seed, params=params.to_dict()) as writer:
        prev = None
        for i in range(total):
            parts, tables_of = gen.batch_stream(i, prev, pool)
            try:
                writer.begin_batch_parts(_stopping(parts, should_stop), donate=True)
            finally:
                parts.close()  # cancels the bag sizes not started when stopping early
            tables = tables_of()
            keep = [] if params.reuse > 0 and params.reuse_window == 0 else None
            try:
                t0 = time.perf_counter()
                for t, idx in tables:
                    wait_s += time.perf_counter() - t0
                    if should_stop is not None and should_stop():
                        raise KeyboardInterrupt
                    writer.append_table(t, idx, donate=True)
                    if keep is not None:
                        keep.append(idx)
                    t0 = time.perf_counter()
            finally:
                tables.close()  # cancels the tables not started when stopping early
            writer.end_batch()
            if keep is not None:
                bounds = np.concatenate([[0], np.cumsum([k.size for k in keep])]).astype(np.int64)
                prev = (np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64), bounds)
            if progress is not None:
                progress(i + 1, total)
        t_close = time.perf_counter()
    if stats is not None:
        stats.update(gen.stage_seconds)
        stats.update(writer.stage_seconds)
        stats.update(wait_tables_s=wait_s, close_s=time.perf_counter() - t_close)
    return writer.trace_id

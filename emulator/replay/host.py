"""The host's side of serving a batch: pooling on the host's threads, and the per-table (slow) path.

* :meth:`HostPooling.tasks`: a group's lookups (all, or the DRAM ones: the host partial) pooled over every bag
  by ``threads`` tasks split by lookups (each bag summed by one task: the same bits for any number of threads);
  each task returns its thread-CPU seconds (the device clock's host tasks);
* :meth:`HostPooling.pool_groups`: plain-SSD policies: every lookup of every group, after the reads;
* :meth:`HostPooling.rebuild_tt` / :meth:`HostPooling.pool_slow`: the tables served one by one (LRU caches,
  prefix remaps, rows wider than a page), on the host; with devices that pool, in the devices' grouping (the
  DRAM rows' partial plus the other rows' partial).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from emulator.replay.types import BatchWork, Prepared
from emulator.tiers import KIND_DRAM

__all__ = ["HostPooling"]


class HostPooling:
    """The host's pooling threads and the slow-path tables (see the module docstring)."""

    def __init__(self, tables: list, slow: list, threads: int, host_pooled: bool, clock: Callable[[], float]):
        self.tables, self._slow, self.threads, self.host_pooled, self.clock = tables, slow, threads, host_pooled, clock
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="screc-host")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def tasks(self, w, offsets: np.ndarray, lookups: np.ndarray | None, out: np.ndarray, dest: np.ndarray,
                    staged: np.ndarray | None) -> list:
        """Pool a group's lookups (``lookups`` of ``w``, None: all) over every bag on the host's threads, split
        by lookups (each bag in one task: the same sums for any number of threads). Futures of CPU seconds."""
        from emulator.device.worker import split_by_lookups

        g = w.group

        def task(a: int, b: int) -> float:
            c0 = time.thread_time()
            lo, hi = int(offsets[a]), int(offsets[b])
            sel = slice(lo, hi) if lookups is None else lookups[lo:hi]
            _pool_host(g, offsets[a:b + 1] - lo, w.kind[sel], w.loc[sel], dest, staged, out[a:b])
            return time.thread_time() - c0
        return [self._pool.submit(task, a, b) for a, b in split_by_lookups(offsets, self.threads)]

    def rebuild_tt(self, p: Prepared, work: BatchWork, groups: bool = True) -> tuple[list, list]:
        """TT rows the host rebuilds: per slow table and (``groups``: when the host pools everything) per group,
        rows staged in float32."""
        from emulator.replay.groups import rebuild_group
        from emulator.tt.kernels import tt_rebuild_rows

        staged = []
        for tab, lk in zip(self._slow, p.slow):
            if lk.tt_rows is None:
                staged.append(np.zeros((0, tab.layout.dim), np.float32))
                continue
            t0 = self.clock()
            staged.append(tt_rebuild_rows(tab.tt, lk.tt_rows))
            work.compute_s[tab.device] += self.clock() - t0
        group_staged = []
        for w in (p.works if groups else ()):
            g = w.group
            group_staged.append(rebuild_group(w, lambda m, g=g: self.tables[int(g.tables[m])].tt, self.clock,
                                              work.compute_s) if w.tt_rows else np.zeros((0, g.dim), np.float32))
        return staged, group_staged

    def pool_slow(self, p: Prepared, staged: list, pooled: list, work: BatchWork) -> None:
        """Pool the slow-path tables one by one, on the host (then their LRU caches' release and admission).
        With devices that pool (:mod:`emulator.replay.offload`) the sums keep the devices' grouping: the DRAM
        rows' partial plus the other rows' partial, as every other table's."""
        from emulator.device.worker import subset_csr
        from emulator.kernels.pooling import dtype_code, pool_sources

        B = p.batch.batch_size
        for tab, lk, st in zip(self._slow, p.slow, staged):
            out = np.empty((B, tab.layout.dim), dtype=np.float32)
            t0 = self.clock()
            code = dtype_code(tab.layout.np_dtype)
            hot = lk.kind == KIND_DRAM
            if self.host_pooled or hot.all() or not hot.any():
                pool_sources(lk.offsets, lk.kind, lk.loc, tab.dram, p.dest, st, code, tab.layout.dim, out)
            else:
                part = np.empty_like(out)
                for m, dst in ((hot, out), (~hot, part)):
                    off, idx = subset_csr(lk.offsets, m)
                    pool_sources(off, lk.kind[idx], lk.loc[idx], tab.dram, p.dest, st, code, tab.layout.dim, dst)
                out += part
            cw = p.cache_work.get(tab.index)
            if cw is not None:  # after pooling: release this batch's hits, admit its misses from the pages
                tab.cache.unpin(cw.hit_slots)
                if cw.admit_rows is not None:
                    tab.cache.admit(cw.admit_rows, p.dest, cw.admit_dest)
            dt = self.clock() - t0
            # the pooling time of a table is shared by the tiers its lookups came from
            n = lk.kind.size or 1
            n_hot = int(np.count_nonzero(lk.kind == KIND_DRAM))
            work.dram_s += dt * n_hot / n
            if tab.tt is None:
                work.mem_s[tab.device] += dt * (n - n_hot) / n
            else:
                work.compute_s[tab.device] += dt * (n - n_hot) / n
            pooled[tab.index] = out

    def pool_groups(self, p: Prepared, group_staged: list, group_out: list, work: BatchWork) -> list[float]:
        """The host pools every lookup of each group (plain-SSD policies), on its threads, after the reads;
        a group's time is shared by tiers and devices by lookups. Returns the tasks' CPU seconds."""
        futs = [(w, self.tasks(w, w.offsets, None, out, p.dest, st))
                for w, st, out in zip(p.works, group_staged, group_out)]
        cpu = []
        for w, fs in futs:
            dt = [f.result() for f in fs]
            cpu += dt
            total = sum(dt)
            n = w.kind.size or 1
            work.dram_s += total * (w.kind.size - w.n_cold) / n
            for d in range(len(work.mem_s)):
                work.mem_s[d] += total * int(w.page_per_dev[d]) / n
                work.compute_s[d] += total * int(w.tt_per_dev[d]) / n
        return cpu


def _pool_host(g, offsets: np.ndarray, kind: np.ndarray, loc: np.ndarray, dest: np.ndarray,
               staged: np.ndarray | None, out: np.ndarray) -> None:
    """One host pooling call over some of a group's bags (quantized rows dequantized as they are pooled; fp16
    groups without TT rows too: whole 64-column blocks loaded unmasked, the same sums bit for bit)."""
    from emulator.kernels.pooling import dtype_code, pool_sources

    if g.row_format in ("int8", "int4") or (g.row_format == "fp16" and not g.tt_members):
        from emulator.kernels.quant import pool_sources_quantized

        pool_sources_quantized(offsets, kind, loc, g.dram, dest, g.row_format, g.dim, out)
    else:
        st = staged if staged is not None else np.zeros((0, g.dim), np.float32)
        pool_sources(offsets, kind, loc, g.dram, dest, st, dtype_code(g.np_dtype), g.dim, out)

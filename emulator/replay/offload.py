"""The host's side of the device boundary: a prepared batch split into device requests and host work.

SCRec's devices pool their own rows and send the host one partial sum per (table, bag); the host pools the DRAM
tier and adds the partials. For each group of a prepared batch (:class:`emulator.replay.groups.GroupWork`):

* the host keeps the lookups of ``KIND_DRAM`` (hot rows, LRU hits) and pools them over every bag of the group
  (a *host partial*, in ``host_threads`` tasks split by lookups);
* each device gets, per core kind, the lookups of its tables in its rows: raw rows in its pages
  (``KIND_PAGE``, memory-centric cores) and TT rows it rebuilds (``KIND_STAGED``, compute-centric cores), as
  :class:`~emulator.device.worker.PoolTask` s over the bags that have such lookups, split by lookups over the
  kind's cores; TT rows to rebuild go in :class:`~emulator.device.worker.RebuildTask` s, the group's rows of
  the device's tables staged in their own array (``locs`` rebased to it).

A bag's result is ``host partial + device partial`` (float32): each partial sums its rows in lookup order, so
``--verify`` checks against a reference summed in the same grouping. Policies whose devices do not compute
(``all-dram``, ``all-ssd``, ``lru``, ``static-topk``: baselines with plain SSDs) send whole pages to the host,
which pools every lookup in one pass (:func:`host_pooled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.device.worker import IO_GROUP, DeviceRequest, PoolTask, RebuildTask, split_by_lookups
from emulator.kernels.jit import njit
from emulator.tiers import KIND_DRAM, KIND_PAGE, KIND_STAGED

__all__ = ["HOST_POOLED_POLICIES", "GroupHostWork", "OffloadPlan", "host_pooled", "split_batch"]

#: policies whose devices are plain SSDs: whole rows cross the link and the host pools them
HOST_POOLED_POLICIES = frozenset({"all-dram", "all-ssd", "lru", "static-topk"})


def host_pooled(planner: str, mode: str = "auto") -> bool:
    """Whether the host pools every row of a plan (``mode``: "auto" by policy, "host" or "device")."""
    if mode == "host":
        return True
    if mode == "device":
        return False
    return planner in HOST_POOLED_POLICIES


@dataclass
class GroupHostWork:
    """A group's host partial: its DRAM lookups as a CSR over every bag (``lookups`` None: all of them)."""
    offsets: np.ndarray
    lookups: np.ndarray | None
    device_bags: list = field(default_factory=list)  # (device, pool task index) whose partial is added


@dataclass
class OffloadPlan:
    requests: list[DeviceRequest]  # per device
    host: list[GroupHostWork]  # per group


def _device_tt(w, d: int, n_compute: int, gi: int, batch_id: int):
    """Device ``d``'s TT rows of group work ``w``: its rebuild tasks, staged size and each member's loc shift."""
    g = w.group
    old_start = 0
    new_start = 0
    shift = np.zeros(g.size, np.int64)
    parts = []
    for m, rows in w.tt_rows:
        if int(g.device[m]) == d:
            shift[m] = new_start - old_start
            parts.append((int(g.tables[m]), rows, new_start))
            new_start += rows.size
        old_start += rows.size
    if not parts:
        return (), 0, shift
    # split the rows into about equal pieces, one task per compute core
    per = -(-new_start // max(1, n_compute))
    tasks, cur, filled = [], [], 0
    for table, rows, start in parts:
        a = 0
        while a < rows.size:
            take = min(rows.size - a, per - filled)
            cur.append((table, rows[a:a + take], start + a))
            a += take
            filled += take
            if filled == per:
                tasks.append(cur)
                cur, filled = [], 0
    if cur:
        tasks.append(cur)
    return tuple(RebuildTask(f"g{gi}.tt{k}", gi, tuple(t)) for k, t in enumerate(tasks)), new_start, shift


@njit
def _route(offsets, kind, member_dev, B, n_dev, order, start, bag_counts):  # pragma: no cover
    n_bags = offsets.size - 1
    n_slots = 1 + 2 * n_dev
    counts = np.zeros(n_slots, np.int64)
    for b in range(n_bags):
        d = member_dev[b // B]
        for k in range(offsets[b], offsets[b + 1]):
            s = 0 if kind[k] == KIND_DRAM else 1 + 2 * d + (1 if kind[k] == KIND_STAGED else 0)
            counts[s] += 1
            bag_counts[s, b] += 1
    start[0] = 0
    for s in range(n_slots):
        start[s + 1] = start[s] + counts[s]
    pos = start[:-1].copy()
    for b in range(n_bags):
        d = member_dev[b // B]
        for k in range(offsets[b], offsets[b + 1]):
            s = 0 if kind[k] == KIND_DRAM else 1 + 2 * d + (1 if kind[k] == KIND_STAGED else 0)
            order[pos[s]] = k
            pos[s] += 1


def route_lookups(offsets: np.ndarray, kind: np.ndarray, member_dev: np.ndarray, batch_size: int, n_dev: int):
    """A group's lookups by where they are pooled, in one counting sort: slot 0 the host (``KIND_DRAM``), slot
    ``1 + 2d`` device ``d``'s raw rows, ``2 + 2d`` its TT rows. Returns ``(order, start, bag_counts)``: slot
    ``s``'s lookups are ``order[start[s]:start[s+1]]`` (in lookup order), ``bag_counts[s, b]`` of them in bag
    ``b`` (bag ``b`` belongs to member ``b // batch_size``, on device ``member_dev[member]``)."""
    n_slots = 1 + 2 * n_dev
    order = np.empty(kind.size, np.int64)
    start = np.zeros(n_slots + 1, np.int64)
    bag_counts = np.zeros((n_slots, offsets.size - 1), np.int64)
    _route(offsets, kind, member_dev.astype(np.int64, copy=False), int(batch_size), int(n_dev), order, start,
           bag_counts)
    return order, start, bag_counts


def split_batch(p, batch_id: int, n_dev: int, cores: list[tuple[int, int]]) -> OffloadPlan:
    """Split the groups of prepared batch ``p`` into device requests and host partials (module docstring).
    ``cores[d]`` = (memory-centric, compute-centric) cores of device ``d``."""
    rebuilds: list[list] = [[] for _ in range(n_dev)]
    pools: list[list] = [[] for _ in range(n_dev)]
    staged_rows: list[dict] = [{} for _ in range(n_dev)]
    staged_dims: list[dict] = [{} for _ in range(n_dev)]
    host: list[GroupHostWork] = []
    B = p.batch.batch_size
    for gi, w in enumerate(p.works):
        g = w.group
        if w.n_cold == 0 or not (w.kind != KIND_DRAM).any():
            host.append(GroupHostWork(w.offsets, None))
            continue
        n_bags = w.offsets.size - 1
        order, start, bag_counts = route_lookups(w.offsets, w.kind, g.device, B, n_dev)
        h_off = np.zeros(n_bags + 1, np.int64)
        np.cumsum(bag_counts[0], out=h_off[1:])
        hw = GroupHostWork(h_off, order[start[0]:start[1]])
        host.append(hw)
        fmt = g.row_format if g.row_format in ("int8", "int4", "fp16") else \
            ("fp16" if g.np_dtype == np.float16 else "fp32")
        for d in range(n_dev):
            for kind, core in ((KIND_PAGE, "mem"), (KIND_STAGED, "compute")):
                slot = 1 + 2 * d + (kind == KIND_STAGED)
                if start[slot] == start[slot + 1]:
                    continue
                counts = bag_counts[slot]
                bags = np.flatnonzero(counts)
                off = np.zeros(bags.size + 1, np.int64)
                np.cumsum(counts[bags], out=off[1:])
                idx = order[start[slot]:start[slot + 1]]
                locs = w.loc[idx]
                after: tuple[str, ...] = (IO_GROUP,)
                if kind == KIND_STAGED:
                    tasks, n_rows, shift = _device_tt(w, d, cores[d][1], gi, batch_id)
                    rebuilds[d].extend(tasks)
                    staged_rows[d][gi], staged_dims[d][gi] = n_rows, g.dim
                    locs = locs + np.repeat(shift[bags // B], counts[bags])
                    after = tuple(t.task_id for t in tasks)
                kinds = w.kind[idx]
                n_cores = cores[d][0] if core == "mem" else cores[d][1]
                for k, (a, b) in enumerate(split_by_lookups(off, n_cores)):
                    lo, hi = int(off[a]), int(off[b])
                    hw.device_bags.append((d, len(pools[d])))
                    pools[d].append(PoolTask(f"g{gi}.{core}{k}", core, gi, g.dim, fmt, bags[a:b],
                                             off[a:b + 1] - lo, kinds[lo:hi], locs[lo:hi], after))
    requests = [DeviceRequest(batch_id, d, tuple(rebuilds[d]), tuple(pools[d]), staged_rows[d], staged_dims[d])
                for d in range(n_dev)]
    # a compute pool task waits for every rebuild of its device (the worker runs them so)
    for d, req in enumerate(requests):
        if req.rebuilds:
            every = tuple(t.task_id for t in req.rebuilds)
            fixed = tuple(PoolTask(t.task_id, t.core, t.group, t.dim, t.row_format, t.bags, t.offsets, t.kinds,
                                   t.locs, every if t.core == "compute" else t.after) for t in req.pools)
            requests[d] = DeviceRequest(batch_id, d, req.rebuilds, fixed, req.staged_rows, req.staged_dims)
    return OffloadPlan(requests, host)

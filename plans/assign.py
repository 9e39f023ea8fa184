"""Tables to devices, and each device's core split, once every table's option is fixed.

Used by the pooled MIP (stage 2) and by the greedy planner. Per table the
inputs are its IO seconds and its memory-core and compute-core work (seconds
on one core) on a device; a device's time is ``max(IO, best split)`` where the
best split minimises ``max(mem / m, compute / (C - m))`` over integer m.

Longest-first onto the device whose time grows least, then local search on
the bottleneck device: the best single move, or the best swap with another
device (evaluated vectorised), until neither lowers the batch time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from plans.types import DeviceProfile


def split_times(mem: np.ndarray, comp: np.ndarray, cores: int) -> tuple[np.ndarray, np.ndarray]:
    """Best (time, memory cores) for arrays of memory-core and compute-core work on ``cores`` cores."""
    mem = np.asarray(mem, dtype=np.float64)[..., None]
    comp = np.asarray(comp, dtype=np.float64)[..., None]
    m = np.arange(cores + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tm = np.where(mem > 0, mem / m, 0.0)
        tc = np.where(comp > 0, comp / (cores - m), 0.0)
    t = np.maximum(tm, tc)
    best = np.argmin(t, axis=-1)
    return np.take_along_axis(t, best[..., None], axis=-1)[..., 0], best


@dataclass
class _Assignment:
    """Tables on devices: per device its summed work (io_s, mem_core_s, compute_core_s) and bytes used."""

    work: np.ndarray  # (tables, 3)
    dev_bytes: np.ndarray
    ssd_bytes: np.ndarray
    dev_cap: np.ndarray
    ssd_cap: np.ndarray
    cores: int
    load: np.ndarray = field(init=False)
    used_dev: np.ndarray = field(init=False)
    used_ssd: np.ndarray = field(init=False)
    device_of: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        nd = self.dev_cap.size
        self.load = np.zeros((nd, 3))
        self.used_dev, self.used_ssd = np.zeros(nd), np.zeros(nd)
        self.device_of = np.zeros(self.work.shape[0], dtype=np.int64)

    def times(self, ld: np.ndarray) -> np.ndarray:
        """Device time of loads ``ld[..., 3]``: IO or the cores at their best split, whichever is longer."""
        return np.maximum(ld[..., 0], split_times(ld[..., 1], ld[..., 2], self.cores)[0])

    def place(self, t: int, d: int) -> None:
        self.device_of[t] = d
        self.load[d] += self.work[t]
        self.used_dev[d] += self.dev_bytes[t]
        self.used_ssd[d] += self.ssd_bytes[t]

    def shift(self, t: int, src: int, dst: int) -> None:
        self.load[src] -= self.work[t]
        self.used_dev[src] -= self.dev_bytes[t]
        self.used_ssd[src] -= self.ssd_bytes[t]
        self.place(t, dst)


def _place_heaviest_first(a: _Assignment) -> None:
    """Each table, heaviest first, onto the device where it ends soonest (among those it fits on, if any)."""
    weight = np.maximum(a.work[:, 0], (a.work[:, 1] + a.work[:, 2]) / a.cores)
    for t in np.argsort(-weight, kind="stable"):
        new = a.times(a.load + a.work[t])
        ok = (a.used_dev + a.dev_bytes[t] <= a.dev_cap) & (a.used_ssd + a.ssd_bytes[t] <= a.ssd_cap)
        a.place(t, int(np.argmin(np.where(ok, new, np.inf) if ok.any() else new)))


def _best_move(a: _Assignment, worst: int, d: int, cur: np.ndarray, best: tuple) -> tuple:
    """``best`` or a better (max device time, ("move", t, d)): one table of the worst device moved to d."""
    mine = np.flatnonzero(a.device_of == worst)
    lw, ld = a.load[worst] - a.work[mine], a.load[d] + a.work[mine]
    fit = (a.used_dev[d] + a.dev_bytes[mine] <= a.dev_cap[d]) & (a.used_ssd[d] + a.ssd_bytes[mine] <= a.ssd_cap[d])
    others = np.delete(cur, [worst, d]).max(initial=0.0)
    val = np.maximum(np.maximum(a.times(lw), a.times(ld)), others)
    val[~fit] = np.inf
    if val.size and val.min() < best[0]:
        i = int(np.argmin(val))
        return float(val[i]), ("move", mine[i], d)
    return best


def _best_swap(a: _Assignment, worst: int, d: int, cur: np.ndarray, best: tuple) -> tuple:
    """``best`` or a better (max device time, ("swap", t, u, d)): table t of the worst device swapped with u of d."""
    mine, theirs = np.flatnonzero(a.device_of == worst), np.flatnonzero(a.device_of == d)
    if not (mine.size and theirs.size):
        return best
    delta = a.work[theirs][None, :, :] - a.work[mine][:, None, :]
    dd = a.dev_bytes[theirs][None, :] - a.dev_bytes[mine][:, None]
    ds = a.ssd_bytes[theirs][None, :] - a.ssd_bytes[mine][:, None]
    fit = ((a.used_dev[worst] + dd <= a.dev_cap[worst]) & (a.used_dev[d] - dd <= a.dev_cap[d])
           & (a.used_ssd[worst] + ds <= a.ssd_cap[worst]) & (a.used_ssd[d] - ds <= a.ssd_cap[d]))
    others = np.delete(cur, [worst, d]).max(initial=0.0)
    val = np.maximum(np.maximum(a.times(a.load[worst] + delta), a.times(a.load[d] - delta)), others)
    val[~fit] = np.inf
    if val.min() < best[0]:
        i, j = np.unravel_index(int(np.argmin(val)), val.shape)
        return float(val[i, j]), ("swap", mine[i], theirs[j], d)
    return best


def assign_devices(work: np.ndarray, dev_bytes: np.ndarray, ssd_bytes: np.ndarray, devices: Sequence[DeviceProfile],
                   max_rounds: int = 2000) -> tuple[np.ndarray, np.ndarray, float]:
    """``work[t] = (io_s, mem_core_s, compute_core_s)`` per table (identical devices assumed for the rates).

    Returns (device of each table, memory cores of each device, predicted max device time).
    Capacities (device DRAM, SSD) are respected when possible. Tables go heaviest first to the device where
    they end soonest; then the move or swap with another device that most lowers the slowest device's time
    is made, until none does.
    """
    a = _Assignment(work, dev_bytes, ssd_bytes, np.array([d.device_dram_bytes for d in devices], dtype=np.float64),
                    np.array([d.ssd_capacity_bytes for d in devices], dtype=np.float64), devices[0].cores)
    _place_heaviest_first(a)
    for _ in range(max_rounds):
        cur = a.times(a.load)
        worst = int(np.argmax(cur))
        best: tuple = (cur[worst] * (1 - 1e-9), None)
        for d in range(len(devices)):
            if d != worst:
                best = _best_swap(a, worst, d, cur, _best_move(a, worst, d, cur, best))
        if best[1] is None:
            break
        move = best[1]
        a.shift(move[1], worst, move[-1])
        if move[0] == "swap":
            a.shift(move[2], move[-1], worst)
    final, mem_cores = split_times(a.load[:, 1], a.load[:, 2], a.cores)
    return a.device_of, mem_cores.astype(np.int64), float(np.maximum(a.load[:, 0], final).max())

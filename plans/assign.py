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


def assign_devices(work: np.ndarray, dev_bytes: np.ndarray, ssd_bytes: np.ndarray, devices: Sequence[DeviceProfile],
                   max_rounds: int = 2000) -> tuple[np.ndarray, np.ndarray, float]:
    """``work[t] = (io_s, mem_core_s, compute_core_s)`` per table (identical devices assumed for the rates).

    Returns (device of each table, memory cores of each device, predicted max device time).
    Capacities (device DRAM, SSD) are respected when possible.
    """
    n, nd = work.shape[0], len(devices)
    cores = devices[0].cores
    dev_cap = np.array([d.device_dram_bytes for d in devices], dtype=np.float64)
    ssd_cap = np.array([d.ssd_capacity_bytes for d in devices], dtype=np.float64)
    load = np.zeros((nd, 3))
    used_dev, used_ssd = np.zeros(nd), np.zeros(nd)
    device_of = np.zeros(n, dtype=np.int64)

    def times(ld: np.ndarray) -> np.ndarray:
        return np.maximum(ld[..., 0], split_times(ld[..., 1], ld[..., 2], cores)[0])

    weight = np.maximum(work[:, 0], (work[:, 1] + work[:, 2]) / cores)
    for t in np.argsort(-weight, kind="stable"):
        new = times(load + work[t])
        ok = (used_dev + dev_bytes[t] <= dev_cap) & (used_ssd + ssd_bytes[t] <= ssd_cap)
        cand = np.where(ok, new, np.inf) if ok.any() else new
        d = int(np.argmin(cand))
        device_of[t] = d
        load[d] += work[t]
        used_dev[d] += dev_bytes[t]
        used_ssd[d] += ssd_bytes[t]
    for _ in range(max_rounds):
        cur = times(load)
        worst = int(np.argmax(cur))
        top = cur[worst]
        mine = np.flatnonzero(device_of == worst)
        best = (top * (1 - 1e-9), None)
        for d in range(nd):
            if d == worst:
                continue
            # moves of one table from the worst device to d
            lw = load[worst] - work[mine]
            ld = load[d] + work[mine]
            fit = (used_dev[d] + dev_bytes[mine] <= dev_cap[d]) & (used_ssd[d] + ssd_bytes[mine] <= ssd_cap[d])
            others = np.delete(cur, [worst, d]).max(initial=0.0)
            val = np.maximum(np.maximum(times(lw), times(ld)), others)
            val[~fit] = np.inf
            if val.size and val.min() < best[0]:
                i = int(np.argmin(val))
                best = (float(val[i]), ("move", mine[i], d))
            # swaps of a table on the worst device with one on d
            theirs = np.flatnonzero(device_of == d)
            if mine.size and theirs.size:
                delta = work[theirs][None, :, :] - work[mine][:, None, :]
                lw2 = load[worst] + delta
                ld2 = load[d] - delta
                dd = dev_bytes[theirs][None, :] - dev_bytes[mine][:, None]
                ds = ssd_bytes[theirs][None, :] - ssd_bytes[mine][:, None]
                fit2 = ((used_dev[worst] + dd <= dev_cap[worst]) & (used_dev[d] - dd <= dev_cap[d])
                        & (used_ssd[worst] + ds <= ssd_cap[worst]) & (used_ssd[d] - ds <= ssd_cap[d]))
                val2 = np.maximum(np.maximum(times(lw2), times(ld2)), others)
                val2[~fit2] = np.inf
                if val2.min() < best[0]:
                    i, j = np.unravel_index(int(np.argmin(val2)), val2.shape)
                    best = (float(val2[i, j]), ("swap", mine[i], theirs[j], d))
        if best[1] is None:
            break
        move = best[1]
        if move[0] == "move":
            _, t, d = move
            _shift(t, worst, d, work, dev_bytes, ssd_bytes, load, used_dev, used_ssd, device_of)
        else:
            _, t, u, d = move
            _shift(t, worst, d, work, dev_bytes, ssd_bytes, load, used_dev, used_ssd, device_of)
            _shift(u, d, worst, work, dev_bytes, ssd_bytes, load, used_dev, used_ssd, device_of)
    final, mem_cores = split_times(load[:, 1], load[:, 2], cores)
    return device_of, mem_cores.astype(np.int64), float(np.maximum(load[:, 0], final).max())


def _shift(t, src, dst, work, dev_bytes, ssd_bytes, load, used_dev, used_ssd, device_of) -> None:
    load[src] -= work[t]
    load[dst] += work[t]
    used_dev[src] -= dev_bytes[t]
    used_dev[dst] += dev_bytes[t]
    used_ssd[src] -= ssd_bytes[t]
    used_ssd[dst] += ssd_bytes[t]
    device_of[t] = dst

"""Numba kernels that drive a :class:`~emulator.io._ring.RawRing` through a whole batch of reads.

``drive_reads`` keeps up to ``queue_depth`` reads in flight: it writes SQEs
straight into the mapped SQE array, publishes the new tail, makes one
``io_uring_enter`` per round (submit everything new and, only when no
completion is waiting, block for one), then consumes every ready CQE. Per
read it costs a few dozen machine instructions, so the device, not the
interpreter, sets the pace. Compiled ``nogil``: a background thread can drive
the ring while the caller's kernels pool rows.

Outcome of each read (indexed like the request arrays):

* ``res == remaining``: done.
* ``0 < res < remaining``: short read. If the file ends inside the block just
  read (an O_DIRECT read returning a count that is not a multiple of the
  file's alignment ``aligns[file_id]``), or on a later ``res == 0``, the read stopped at end of file: the
  rest of its destination range is zero-filled and ``nread`` says how many
  bytes were real. Otherwise the remainder is queued again.
* ``-EINTR`` / ``-EAGAIN``: queued again, up to ``MAX_RETRIES`` times.
* other ``-errno``: the first such failure is recorded in ``stats``; nothing
  new is submitted, reads in flight are drained, and the kernel returns. The
  caller raises :class:`~emulator.io.types.IOFailure`.
"""

from __future__ import annotations

import numba
import numpy as np

from emulator.io import _sys
from emulator.io.types import (ST_BYTES, ST_ERRNO, ST_FAILED_INDEX, ST_MAX_IN_FLIGHT, ST_RETRIES, ST_SHORT,
                                ST_SUBMITTED, ST_SYSCALLS, new_stats)
from emulator.kernels.jit import njit

EINTR = 4
EAGAIN = 11
EBUSY = 16
MAX_RETRIES = 1000


_OP_READ = _sys.IORING_OP_READ
_OP_READ_FIXED = _sys.IORING_OP_READ_FIXED
_FIXED_FILE = _sys.IOSQE_FIXED_FILE
_GETEVENTS = _sys.IORING_ENTER_GETEVENTS
_SYS_ENTER = _sys.SYS_IO_URING_ENTER
_M32 = 0xFFFFFFFF


@njit
def _now_ns(ts):
    _sys.nb_clock_gettime(_sys.CLOCK_MONOTONIC, ts.ctypes.data)
    return ts[0] * 1_000_000_000 + ts[1]


@njit
def _errno():
    return numba.carray(_sys.nb_errno_location(), 1)[0]


@njit
def _write_sqe(sqes, slot, opcode, sqe_flags, fd, off, addr, nbytes, user_data, buf_index):
    b = slot * 8
    sqes[b + 0] = np.uint64(opcode | (sqe_flags << 8) | ((fd & _M32) << 32))
    sqes[b + 1] = np.uint64(off)
    sqes[b + 2] = np.uint64(addr)
    sqes[b + 3] = np.uint64(nbytes & _M32)
    sqes[b + 4] = np.uint64(user_data)
    sqes[b + 5] = np.uint64(buf_index & 0xFFFF)
    sqes[b + 6] = np.uint64(0)
    sqes[b + 7] = np.uint64(0)


@njit
def _drive_reads(info, sq, cq, sqes, cqes, fds, aligns, fixed_files, buf_index, file_ids, offsets, nbytes,
                 dest, dest_offsets, queue_depth, nread, stats, lat_ns, t0, ts):
    ring_fd = info[0]
    sq_tail_i, sq_head_i, sq_mask = info[2], info[1], info[3]
    cq_head_i, cq_tail_i, cq_mask = info[4], info[5], info[6]
    n = file_ids.shape[0]
    timing = lat_ns.shape[0] == n
    base = dest.ctypes.data
    opcode = _OP_READ_FIXED if buf_index >= 0 else _OP_READ
    sqe_flags = _FIXED_FILE if fixed_files else 0
    tries = np.zeros(n, dtype=np.int32)
    retry = np.empty(queue_depth + 1, dtype=np.int64)
    n_retry = 0
    next_new = 0
    outstanding = 0  # SQEs written and not yet completed
    failed = False
    tail = np.int64(sq[sq_tail_i])
    chead = np.int64(cq[cq_head_i])
    for i in range(n):
        nread[i] = 0
    while True:
        # 1. fill the ring up to the queue depth
        while outstanding < queue_depth:
            if n_retry > 0 and not failed:
                n_retry -= 1
                i = retry[n_retry]
            elif next_new < n and not failed:
                i = next_new
                next_new += 1
            else:
                break
            done = nread[i]
            _write_sqe(sqes, tail & sq_mask, opcode, sqe_flags, fds[file_ids[i]], offsets[i] + done,
                       base + dest_offsets[i] + done, nbytes[i] - done, i, buf_index)
            tail += 1
            outstanding += 1
            stats[ST_SUBMITTED] += 1
            if timing and done == 0 and tries[i] == 0:
                t0[i] = _now_ns(ts)
        if outstanding == 0:
            break
        if outstanding > stats[ST_MAX_IN_FLIGHT]:
            stats[ST_MAX_IN_FLIGHT] = outstanding
        _sys.nb_fence()
        sq[sq_tail_i] = np.uint32(tail & _M32)
        _sys.nb_fence()
        # 2. one system call: submit what is new; block for a completion only if none is waiting
        to_submit = (tail - np.int64(sq[sq_head_i])) & _M32
        wait = (np.int64(cq[cq_tail_i]) - chead) & _M32 == 0
        if to_submit > 0 or wait:
            ret = _sys.nb_syscall6(_SYS_ENTER, ring_fd, to_submit, 1 if wait else 0, _GETEVENTS if wait else 0, 0, 0)
            stats[ST_SYSCALLS] += 1
            if ret < 0:
                err = _errno()
                if err != EINTR and err != EAGAIN and err != EBUSY:
                    stats[ST_FAILED_INDEX] = -2
                    stats[ST_ERRNO] = err
                    return
        _sys.nb_fence()
        # 3. consume every completion that is ready
        ctail = np.int64(cq[cq_tail_i])
        while chead != ctail:
            c = (chead & cq_mask) * 2
            i = np.int64(cqes[c])
            res = np.int64(np.int32(cqes[c + 1] & _M32))
            chead = (chead + 1) & _M32
            outstanding -= 1
            if res < 0:
                if (res == -EINTR or res == -EAGAIN) and tries[i] < MAX_RETRIES:
                    tries[i] += 1
                    stats[ST_RETRIES] += 1
                    retry[n_retry] = i
                    n_retry += 1
                elif not failed:
                    failed = True
                    stats[ST_FAILED_INDEX] = i
                    stats[ST_ERRNO] = -res
                continue
            nread[i] += res
            stats[ST_BYTES] += res
            remaining = nbytes[i] - nread[i]
            align = aligns[file_ids[i]]
            eof = res == 0 or (align > 1 and res % align != 0)
            if remaining > 0 and not eof:
                stats[ST_RETRIES] += 1
                retry[n_retry] = i
                n_retry += 1
                continue
            if remaining > 0:  # end of file: never leave stale bytes behind
                stats[ST_SHORT] += 1
                start = dest_offsets[i] + nread[i]
                for k in range(start, start + remaining):
                    dest[k] = 0
            if timing:
                lat_ns[i] = _now_ns(ts) - t0[i]
        _sys.nb_fence()
        cq[cq_head_i] = np.uint32(chead)


def drive_reads(ring, fds, aligns, fixed_files, buf_index, file_ids, offsets, nbytes, dest, dest_offsets,
                queue_depth, nread, lat_ns, submit_ns=None):
    """Run one batch through ``ring``; returns the stats array (``types.ST_*``).

    Values (offsets in range, alignment, dest bounds) are checked by
    :meth:`IOEngine.check_requests`; this wrapper only checks the array types
    the kernel is compiled for.
    """
    for name, a, dt in (("file_ids", file_ids, np.int64), ("offsets", offsets, np.int64), ("nbytes", nbytes, np.int64),
                        ("dest_offsets", dest_offsets, np.int64), ("nread", nread, np.int64),
                        ("lat_ns", lat_ns, np.int64), ("fds", fds, np.int32), ("aligns", aligns, np.int64),
                        ("dest", dest, np.uint8)):
        if not isinstance(a, np.ndarray) or a.dtype != dt or a.ndim != 1 or not a.flags.c_contiguous:
            raise TypeError(f"drive_reads: {name} must be a contiguous 1-D {np.dtype(dt).name} array")
    if submit_ns is None:
        submit_ns = np.zeros(lat_ns.shape[0], dtype=np.int64)
    if not (isinstance(submit_ns, np.ndarray) and submit_ns.dtype == np.int64 and submit_ns.shape == lat_ns.shape):
        raise TypeError("drive_reads: submit_ns must be a 1-D int64 array shaped like lat_ns")
    stats = new_stats()
    _drive_reads(ring.info, ring.sq, ring.cq, ring.sqes, ring.cqes, fds, aligns, bool(fixed_files), int(buf_index),
                 file_ids, offsets, nbytes, dest, dest_offsets, int(queue_depth), nread, stats,
                 lat_ns, submit_ns, _sys.timespec_scratch())
    return stats

"""One io_uring instance set up with raw system calls, its memory mapped into NumPy arrays.

:class:`RawRing` owns the ring file descriptor and three memory maps (SQ ring,
CQ ring, SQE array). The ring indices and entries are exposed as NumPy views
(``sq``/``cq`` as uint32 words, ``sqes``/``cqes`` as uint64 words) so that the
Numba kernels in :mod:`emulator.io._uring_kernels` can fill SQEs, move the
tail, call ``io_uring_enter`` and consume CQEs without the interpreter.

Layout facts used (include/uapi/linux/io_uring.h): an SQE is 64 bytes, read as
eight little-endian u64 words ``[opcode|flags<<8|ioprio<<16|fd<<32, off, addr,
len|rw_flags<<32, user_data, buf_index|personality<<16|file_index<<32, 0, 0]``;
a CQE is 16 bytes ``[user_data, res|flags<<32]``. The SQ index array is set
to the identity once, so SQE slot ``tail & mask`` is always the next entry.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from dataclasses import dataclass

import numpy as np

from emulator.io import _sys

_MMAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


@dataclass(frozen=True)
class RingLayout:
    """Word indices (uint32 units) of the ring fields inside the mapped SQ / CQ rings."""

    sq_head: int
    sq_tail: int
    sq_mask: int
    sq_entries: int
    cq_head: int
    cq_tail: int
    cq_mask: int
    cq_entries: int


class RawRing:
    """An io_uring with ``entries`` submission slots (rounded up to a power of two by the kernel)."""

    def __init__(self, entries: int, max_files: int = 0, max_buffers: int = 0,
                 setup_flags: int = _sys.IORING_SETUP_COOP_TASKRUN):
        params = (ctypes.c_uint32 * 30)()  # struct io_uring_params, 120 bytes
        params[2] = int(setup_flags)
        try:
            self.fd = _sys.sys_call(_sys.SYS_IO_URING_SETUP, int(entries), ctypes.addressof(params))
        except OSError as e:  # an older kernel refuses newer flags: retry plain, as fio does
            if e.errno != errno.EINVAL or not setup_flags:
                raise
            params = (ctypes.c_uint32 * 30)()
            self.fd = _sys.sys_call(_sys.SYS_IO_URING_SETUP, int(entries), ctypes.addressof(params))
        self.setup_flags = int(params[2])
        self._maps: list[mmap.mmap] = []
        try:
            self._map(params)
            self.fixed_files = self._register_sparse(_sys.IORING_REGISTER_FILES2, max_files)
            self.fixed_buffers = self._register_sparse(_sys.IORING_REGISTER_BUFFERS2, max_buffers)
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------------------

    def _map(self, p) -> None:
        sq_entries, cq_entries, features = int(p[0]), int(p[1]), int(p[5])
        sq_off = [int(x) for x in p[10:17]]  # head, tail, ring_mask, ring_entries, flags, dropped, array
        cq_off = [int(x) for x in p[20:26]]  # head, tail, ring_mask, ring_entries, overflow, cqes
        sq_bytes = sq_off[6] + sq_entries * 4
        cq_bytes = cq_off[5] + cq_entries * _sys.CQE_BYTES
        single = bool(features & _sys.IORING_FEAT_SINGLE_MMAP)
        if single:
            sq_bytes = cq_bytes = max(sq_bytes, cq_bytes)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        sq_map = mmap.mmap(self.fd, sq_bytes, _MMAP_FLAGS, prot, offset=_sys.IORING_OFF_SQ_RING)
        self._maps.append(sq_map)
        if single:
            cq_map = sq_map
        else:
            cq_map = mmap.mmap(self.fd, cq_bytes, _MMAP_FLAGS, prot, offset=_sys.IORING_OFF_CQ_RING)
            self._maps.append(cq_map)
        sqe_map = mmap.mmap(self.fd, sq_entries * _sys.SQE_BYTES, _MMAP_FLAGS, prot, offset=_sys.IORING_OFF_SQES)
        self._maps.append(sqe_map)
        self.sq = np.frombuffer(sq_map, dtype=np.uint32)
        self.cq = np.frombuffer(cq_map, dtype=np.uint32)
        self.sqes = np.frombuffer(sqe_map, dtype=np.uint64)
        self.cqes = np.frombuffer(cq_map, dtype=np.uint64, count=cq_entries * 2, offset=cq_off[5])
        w = lambda off: off // 4  # noqa: E731  (byte offset -> uint32 word index)
        self.layout = RingLayout(
            sq_head=w(sq_off[0]), sq_tail=w(sq_off[1]), sq_mask=int(self.sq[w(sq_off[2])]),
            sq_entries=sq_entries, cq_head=w(cq_off[0]), cq_tail=w(cq_off[1]),
            cq_mask=int(self.cq[w(cq_off[2])]), cq_entries=cq_entries,
        )
        self.sq[w(sq_off[6]) : w(sq_off[6]) + sq_entries] = np.arange(sq_entries, dtype=np.uint32)
        self.info = np.array([
            self.fd, self.layout.sq_head, self.layout.sq_tail, self.layout.sq_mask,
            self.layout.cq_head, self.layout.cq_tail, self.layout.cq_mask, sq_entries,
        ], dtype=np.int64)

    def _register_sparse(self, opcode: int, nr: int) -> int:
        """Register an empty table of ``nr`` files / buffers; 0 if unsupported (old kernel) or nr == 0."""
        if nr <= 0:
            return 0
        reg = (ctypes.c_uint64 * 4)()  # struct io_uring_rsrc_register {u32 nr, u32 flags, u64 resv2, u64 data, u64 tags}
        reg[0] = int(nr) | (_sys.IORING_RSRC_REGISTER_SPARSE << 32)
        try:
            _sys.sys_call(_sys.SYS_IO_URING_REGISTER, self.fd, opcode, ctypes.addressof(reg), ctypes.sizeof(reg))
        except OSError:
            return 0
        return int(nr)

    # -- registered resources --------------------------------------------------------------------

    def set_file(self, slot: int, fd: int) -> None:
        """Put ``fd`` (or -1 to clear) in registered-file slot ``slot``."""
        fds = (ctypes.c_int32 * 1)(int(fd))
        upd = (ctypes.c_uint64 * 2)()  # struct io_uring_files_update {u32 offset, u32 resv, u64 fds}
        upd[0] = int(slot)
        upd[1] = ctypes.addressof(fds)
        _sys.sys_call(_sys.SYS_IO_URING_REGISTER, self.fd, _sys.IORING_REGISTER_FILES_UPDATE, ctypes.addressof(upd), 1)

    def set_buffer(self, slot: int, address: int, nbytes: int) -> None:
        """Register ``nbytes`` of memory at ``address`` as fixed buffer ``slot`` (0, 0 clears it)."""
        iov = (ctypes.c_uint64 * 2)(int(address), int(nbytes))
        tag = (ctypes.c_uint64 * 1)(0)
        upd = (ctypes.c_uint64 * 4)()  # struct io_uring_rsrc_update2 {u32 offset, u32 resv, u64 data, u64 tags, u32 nr, u32 resv2}
        upd[0] = int(slot)
        upd[1] = ctypes.addressof(iov)
        upd[2] = ctypes.addressof(tag)
        upd[3] = 1
        _sys.sys_call(_sys.SYS_IO_URING_REGISTER, self.fd, _sys.IORING_REGISTER_BUFFERS_UPDATE,
                      ctypes.addressof(upd), ctypes.sizeof(upd))

    # -- teardown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap and close; idempotent. Closing the ring waits for (or cancels) reads still in flight."""
        for name in ("sq", "cq", "sqes", "cqes"):
            if hasattr(self, name):
                delattr(self, name)  # drop the NumPy exports before unmapping
        for m in self._maps:
            try:
                m.close()
            except BufferError:  # a view is still referenced (the frame of a call Ctrl-C interrupted): the
                pass  # mapping goes when that view is collected; the ring itself is closed below
        self._maps = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

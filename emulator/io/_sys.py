"""Raw Linux system calls for io_uring, callable from Python (ctypes) and from Numba kernels.

The PyPI ``liburing`` package wraps every SQE preparation and every CQE access
in a Python call (about a microsecond each) and does not expose the ring
memory, so a Python loop over it tops out below fio (DESIGN.md: ~0.87x at QD
128, ~0.7x at QD 32). This module instead sets the ring up with the raw
``io_uring_setup`` system call, maps its memory into NumPy arrays, and gives
Numba kernels ``io_uring_enter`` (through libc's ``syscall``), ``errno``, a
memory fence and a monotonic clock, so that a whole batch of reads is driven
from compiled code without touching the interpreter.

Measured on the 2-core development VM (virtio disk, other jobs running, 4 KiB
random O_DIRECT reads, medians of 3 alternating runs): CPU per read was
4.4 us (1.5 us of it user time) for the best batched loop over the
``liburing`` package (``io_uring_prep_readv`` into pre-built ``Iovec``s,
``CqeIter`` reaping; ``io_uring_peek_batch_cqe`` is not implemented there),
4.0-5.4 us for fio itself, and 2.7-3.2 us (0.2-0.5 us user) for this raw ring
driven from Numba, which also runs without the GIL.

The Numba externals are bound by symbol name (``numba.types.ExternalFunction``),
so kernels that use them can still be cached on disk.
"""

from __future__ import annotations

import ctypes
import os
import platform

import numpy as np
from numba import types
from numba.extending import intrinsic

# x86-64 and aarch64 share the io_uring numbers (generic syscall table since 5.1).
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427
SUPPORTED_MACHINES = ("x86_64", "aarch64")

# include/uapi/linux/io_uring.h
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_SETUP_COOP_TASKRUN = 1 << 8  # Linux 5.19: no IPI to run completion work, it runs when we next enter
IORING_ENTER_GETEVENTS = 1 << 0
IORING_OP_READV = 1
IORING_OP_READ_FIXED = 4
IORING_OP_READ = 22
IOSQE_FIXED_FILE = 1 << 0
IORING_REGISTER_FILES_UPDATE = 6
IORING_REGISTER_FILES2 = 13
IORING_REGISTER_BUFFERS2 = 15
IORING_REGISTER_BUFFERS_UPDATE = 16
IORING_RSRC_REGISTER_SPARSE = 1 << 0
SQE_BYTES = 64
CQE_BYTES = 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sys_call(number: int, *args: int) -> int:
    """``syscall(number, *args)`` from Python; raises OSError on failure."""
    ret = _libc.syscall(ctypes.c_long(number), *[ctypes.c_long(int(a)) for a in args])
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def ring_supported() -> tuple[bool, str]:
    """Whether this process can create an io_uring, and if not, why (for test skips and messages)."""
    if platform.machine() not in SUPPORTED_MACHINES:
        return False, f"io_uring system call numbers are only wired for {', '.join(SUPPORTED_MACHINES)}"
    params = (ctypes.c_uint32 * 30)()
    try:
        fd = sys_call(SYS_IO_URING_SETUP, 2, ctypes.addressof(params))
    except OSError as e:
        return False, f"io_uring_setup failed: {e.strerror} (errno {e.errno}); kernel too old or io_uring disabled"
    os.close(fd)
    return True, ""


# ---- Numba side ------------------------------------------------------------------------------

_i64 = types.int64
#: ``long syscall(long number, ...)``; integer arguments only, so the variadic ABI matches.
nb_syscall6 = types.ExternalFunction("syscall", _i64(_i64, _i64, _i64, _i64, _i64, _i64, _i64))
#: ``int *__errno_location(void)`` (glibc): the calling thread's errno.
nb_errno_location = types.ExternalFunction("__errno_location", types.CPointer(types.int32)())
#: ``int clock_gettime(clockid_t, struct timespec *)``; the pointer is passed as an integer address.
nb_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.intp))

CLOCK_MONOTONIC = 1


@intrinsic
def nb_fence(typingctx):
    """A sequentially consistent memory fence (also a compiler barrier) around ring index updates."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def timespec_scratch() -> np.ndarray:
    """Two int64 slots (``tv_sec``, ``tv_nsec``) for :data:`nb_clock_gettime`."""
    return np.zeros(2, dtype=np.int64)

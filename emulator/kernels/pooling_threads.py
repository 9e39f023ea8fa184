"""Host threads for the pooling kernels: chunks of bags claimed by the caller and by helper threads.

``run_claimed(kernel, args, n_chunks, threads)`` runs the ``nogil`` Numba
``kernel(*args, state)`` on the calling thread and on ``threads - 1`` helper
threads at once; each claims chunks of bags one at a time with an atomic
counter (``state[0]``) and counts finished chunks (``state[1]``) and failed ones
(``state[2]``). The call returns when every chunk is finished. One thread pools
a whole bag, in lookup order, so the output is the same bits for any number of
threads (and any scheduling).

Why not Numba's ``prange``: measured here (``screc bench dram --threads 2``)
the claim loop was as fast on an idle machine and much steadier on a loaded
one. A ``prange`` region ends at a barrier that waits for every worker, so a
worker descheduled by another process stalls the whole call for a time slice;
here the caller pools whatever the helpers have not claimed and waits only
for chunks already started. The helpers block on a queue between calls (no
spinning: the emulated devices' threads keep their CPU time), and several
Python threads may call at once (each call has its own counter).

The helpers are daemon threads created on first use, up to the most threads
ever asked for, and forgotten in a forked child (threads do not survive fork).
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np

__all__ = ["run_claimed", "chunk_count", "CHUNKS_PER_THREAD"]

CHUNKS_PER_THREAD = 8  # chunks of equal lookups per thread: small enough to balance, large enough to stream

_helpers: list[queue.SimpleQueue] = []
_helpers_lock = threading.Lock()


def _helper(jobs: queue.SimpleQueue) -> None:
    while True:
        kernel, args = jobs.get()
        kernel(*args)


def _queues(n: int) -> list[queue.SimpleQueue]:
    """The job queues of ``n`` helper threads (started on first use)."""
    if len(_helpers) < n:
        with _helpers_lock:
            while len(_helpers) < n:
                jobs: queue.SimpleQueue = queue.SimpleQueue()
                threading.Thread(target=_helper, args=(jobs,), name=f"screc-pool-{len(_helpers)}",
                                 daemon=True).start()
                _helpers.append(jobs)
    return _helpers[:n]


def _forget_helpers() -> None:  # in a forked child: the threads are gone, their queues with them
    _helpers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def chunk_count(threads: int) -> int:
    return threads * CHUNKS_PER_THREAD


def run_claimed(kernel, args: tuple, n_chunks: int, threads: int) -> np.ndarray:
    """Run ``kernel(*args, state)`` on this thread and ``threads - 1`` helpers until all ``n_chunks``
    chunks are finished; returns ``state`` (``[claimed, finished, failed]``, int64)."""
    state = np.zeros(3, np.int64)
    call = (*args, state)
    for jobs in _queues(threads - 1):
        jobs.put((kernel, call))
    kernel(*call)  # returns when every chunk is claimed; helpers may still be finishing theirs
    while state[1] < n_chunks:  # an int64 load is atomic on x86-64 and arm64
        os.sched_yield()
    return state

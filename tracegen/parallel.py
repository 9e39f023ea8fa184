"""Work on a thread pool, results in order: the per-table steps of trace generation run on every core (their
Numba kernels and NumPy's random generators release the GIL), and the writer takes the tables in order.
"""

from __future__ import annotations

import collections
import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def thread_pool(workers: int | None) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``workers`` threads (default: :func:`default_workers`), or ``None`` for one worker (run
    inline). On exit, work not yet started is cancelled and running work is waited for."""
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if n == 1:
        yield None
        return
    pool = ThreadPoolExecutor(n, thread_name_prefix="tracegen")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ordered_map(pool: ThreadPoolExecutor | None, fn: Callable[[T], R], items: Iterable[T],
                cost: Callable[[T], int] = lambda _: 1, budget: int = 8) -> Iterator[R]:
    """``fn(item)`` for every item, yielded in the items' order, computed ahead on ``pool`` (inline when
    ``None``) while the results computed but not yet yielded cost at most ``budget`` (at least one is always
    under way). Closing the iterator early cancels the work not yet started."""
    if pool is None:
        for item in items:
            yield fn(item)
        return
    pending: collections.deque[tuple[Future, int]] = collections.deque()
    ahead = 0
    it = iter(items)
    end = object()
    nxt = next(it, end)
    try:
        while True:
            while nxt is not end and (not pending or ahead + cost(nxt) <= budget):
                c = int(cost(nxt))
                pending.append((pool.submit(fn, nxt), c))
                ahead += c
                nxt = next(it, end)
            if not pending:
                return
            fut, c = pending.popleft()
            result = fut.result()
            ahead -= c
            yield result
    finally:
        for fut, _ in pending:
            fut.cancel()

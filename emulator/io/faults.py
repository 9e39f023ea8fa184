"""Fault injection for IO engines (tests): short reads, EINTR/EAGAIN, EIO at chosen offsets, slow completions.

:class:`FaultyEngine` wraps any engine and keeps its contract. Faults are
injected at the lowest layer reachable from Python, so that the wrapped
engine's *own* retry code runs, exactly as it would against a misbehaving
kernel:

* ``pread``: the engine's ``_read_one`` (its byte-for-byte code, rebound to a
  namespace whose ``os.preadv`` is the injector) sees the system call fail with
  EINTR/EAGAIN/EIO, return fewer bytes than asked (a multiple of the O_DIRECT
  alignment, as a real short read is), or return late;
* ``liburing``: the engine's ``_read_batch`` sees the completion queue entries
  rewritten (``res`` = ``-EINTR``/``-EAGAIN``/``-EIO`` or a short count) after
  the kernel did the read, and the destination bytes the faked result says
  were not read are scribbled over, so only a correct continuation or retry
  yields the right bytes;
* ``uring`` (and ``null``): the retry loop lives inside a Numba kernel that
  Python cannot reach, so only persistent EIO and slow completions can be
  injected (around the batch); asking for transient faults is refused.

Decisions are seeded and deterministic: whether attempt ``k`` of a read of
``nbytes`` at ``offset`` of file ``name`` is faulted depends only on those and
``FaultPlan.seed``, not on thread scheduling. Every injected fault is counted in
a :class:`FaultLog` so a test can check that the faults really happened.

The Replayer builds engines by name; :func:`faulty_engines` registers a
``"faulty"`` entry in :data:`emulator.io.ENGINES` for the duration of a
``with`` block::

    with faulty_engines(FaultPlan(seed=1, short_read_p=0.3), inner="pread") as log:
        Replayer(store, plan, ReplayConfig(engine="faulty")).run(reader)
    assert log.counts()["short"] > 0
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import threading
import time
import types
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from emulator.io import types as T
from emulator.io.base import BatchOutcome, IOEngine, OpenFile, Requests
from emulator.io.types import Completions

FAULT_KINDS = ("short", "eintr", "eagain", "eio", "slow")
SCRIBBLE_BYTE = 0xA5  # what a faulted read leaves where the kernel "did not write"


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject, and how often (probabilities are per read attempt).

    ``eio``: ``(file name, byte offset)`` pairs; every read whose range covers
    that byte of the file with that base name (e.g. ``"t0.bin"``) fails with
    EIO, every time (a persistent media error).
    """

    seed: int = 0
    short_read_p: float = 0.0
    eintr_p: float = 0.0
    eagain_p: float = 0.0
    eio: tuple[tuple[str, int], ...] = ()
    slow_p: float = 0.0
    slow_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("short_read_p", "eintr_p", "eagain_p", "slow_p"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if self.short_read_p + self.eintr_p + self.eagain_p >= 1.0:
            raise ValueError("short_read_p + eintr_p + eagain_p must be < 1 (reads must eventually succeed)")
        if self.slow_s < 0:
            raise ValueError(f"slow_s must be >= 0, got {self.slow_s}")
        object.__setattr__(self, "eio", tuple((str(n), int(o)) for n, o in self.eio))

    @property
    def transient(self) -> bool:
        return self.short_read_p > 0 or self.eintr_p > 0 or self.eagain_p > 0


class FaultLog:
    """Thread-safe counts of the faults injected (``short``, ``eintr``, ``eagain``, ``eio``, ``slow``)
    and of the read attempts seen (``attempts``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("attempts",) + FAULT_KINDS, 0)

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class _Injector:
    """Seeded per-attempt decisions, shared by every hook of one engine."""

    def __init__(self, plan: FaultPlan, log: FaultLog, sleep: Callable[[float], None]):
        self.plan, self.log, self.sleep = plan, log, sleep
        self._lock = threading.Lock()
        self._attempts: dict[tuple[int, int, int], int] = {}
        self._eio: dict[str, list[int]] = {}
        for name, off in plan.eio:
            self._eio.setdefault(name, []).append(off)

    def decide(self, path: str, offset: int, nbytes: int, align: int) -> tuple[str, int]:
        """What attempt of a read of ``nbytes`` at ``offset`` of ``path`` gets: ``("ok", 0)``,
        ``("eio"|"eintr"|"eagain", 0)`` or ``("short", k)`` with ``0 < k < nbytes``. Sleeps when slow."""
        name = os.path.basename(path)
        key = (zlib.crc32(name.encode()), int(offset), int(nbytes))
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        self.log.add("attempts")
        rng = random.Random(hash((self.plan.seed, *key, attempt)))  # tuples of ints hash the same in every process
        if self.plan.slow_p and rng.random() < self.plan.slow_p:
            self.log.add("slow")
            self.sleep(self.plan.slow_s)
        if any(offset <= o < offset + nbytes for o in self._eio.get(name, ())):
            self.log.add("eio")
            return "eio", 0
        u = rng.random()
        p = self.plan
        if u < p.eintr_p:
            self.log.add("eintr")
            return "eintr", 0
        if u < p.eintr_p + p.eagain_p:
            self.log.add("eagain")
            return "eagain", 0
        if u < p.eintr_p + p.eagain_p + p.short_read_p:
            units = nbytes // align if nbytes % align == 0 else 0
            if units >= 2:
                k = align * rng.randint(1, units - 1)
            elif align == 1 and nbytes >= 2:
                k = rng.randint(1, nbytes - 1)
            else:
                return "ok", 0  # too small to split into aligned pieces
            self.log.add("short")
            return "short", k
        return "ok", 0


_ERRNO = {"eio": errno.EIO, "eintr": errno.EINTR, "eagain": errno.EAGAIN}


def _scribble(view: memoryview) -> None:
    if len(view):
        view[:] = bytes([SCRIBBLE_BYTE]) * len(view)


# --- pread: the system call ---------------------------------------------------------------------

class _PreadSyscalls:
    """Stands in for the ``os`` module inside :meth:`PreadEngine._read_one`; only ``preadv`` misbehaves."""

    def __init__(self, injector: _Injector, engine: IOEngine):
        self._inj, self._engine = injector, engine

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def preadv(self, fd: int, buffers, offset: int) -> int:
        f = next((f for f in self._engine.files if f is not None and f.fd == fd), None)
        if f is None or len(buffers) != 1:
            return os.preadv(fd, buffers, offset)
        view = memoryview(buffers[0]).cast("B")
        align = self._engine.direct_align_bytes if f.direct else 1
        kind, k = self._inj.decide(f.path, offset, len(view), align)
        if kind == "ok":
            return os.preadv(fd, [view], offset)
        if kind == "short":
            _scribble(view[k:])
            return os.preadv(fd, [view[:k]], offset)
        if kind != "eio":
            _scribble(view)  # an interrupted read may have touched the buffer: the retry must rewrite it
        raise OSError(_ERRNO[kind], os.strerror(_ERRNO[kind]))


def _rebind(fn: Callable, **names: Any) -> Callable:
    """``fn``'s own code with some of its global names replaced."""
    missing = [n for n in names if n not in fn.__code__.co_names]
    if missing:
        raise RuntimeError(f"cannot inject faults into {fn.__qualname__}: it no longer uses {', '.join(missing)}")
    g = dict(fn.__globals__)
    g.update(names)
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


def _hook_pread(inner: IOEngine, inj: _Injector) -> None:
    code = _rebind(type(inner)._read_one, os=_PreadSyscalls(inj, inner))
    inner._read_one = types.MethodType(code, inner)


# --- liburing: the completion queue -------------------------------------------------------------

class _BatchState:
    def __init__(self, engine: IOEngine, inj: _Injector, req: Requests):
        self.engine, self.inj, self.req = engine, inj, req
        self.done = np.zeros(len(req), dtype=np.int64)  # bytes of each read the engine has been told about


class _CqeView:
    """One completion as the engine sees it: the real ``user_data``, a possibly faked ``res``."""

    def __init__(self, real, st: _BatchState):
        self.user_data = i = real.user_data
        try:
            res = real.res
        except OSError as e:  # the package raises for negative results
            res = -(e.errno or errno.EIO)
        req, done = st.req, int(st.done[i])
        remaining = int(req.nbytes[i]) - done
        if res == remaining:
            f: OpenFile = st.engine.files[int(req.file_ids[i])]
            align = st.engine.direct_align_bytes if f.direct else 1
            kind, k = st.inj.decide(f.path, int(req.offsets[i]) + done, remaining, align)
            start = int(req.dest_offsets[i]) + done
            region = memoryview(req.dest)[start : start + remaining]
            if kind == "short":
                _scribble(region[k:])
                res = k
            elif kind != "ok":
                if kind != "eio":
                    _scribble(region)
                res = -_ERRNO[kind]
        if res > 0:
            st.done[i] += res
        self.res = res


class _CqeProxy:
    def __init__(self, real, st: _BatchState):
        self.real, self.st = real, st

    def __getitem__(self, k: int) -> _CqeView:
        return _CqeView(self.real[k], self.st)


class _LiburingProxy:
    """Stands in for the ``liburing`` module inside :meth:`LiburingEngine._read_batch`."""

    def __init__(self, lu):
        self._lu = lu

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lu, name)

    def CqeIter(self, ring, cqe):  # noqa: N802 (the package's name)
        return self._lu.CqeIter(ring, cqe.real if isinstance(cqe, _CqeProxy) else cqe)


def _hook_liburing(inner: IOEngine, inj: _Injector) -> None:
    from emulator.io import liburing_engine

    code = _rebind(type(inner)._read_batch, _lu=_LiburingProxy(liburing_engine._lu))

    def read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        real = self._cqe
        self._cqe = _CqeProxy(real, _BatchState(self, inj, req))
        try:
            return code(self, req, latency)
        finally:
            self._cqe = real

    inner._read_batch = types.MethodType(read_batch, inner)


def _install(inner: IOEngine, inj: _Injector) -> str | None:
    from emulator.io.liburing_engine import LiburingEngine
    from emulator.io.pread import PreadEngine

    if isinstance(inner, PreadEngine):
        _hook_pread(inner, inj)
        return "pread"
    if isinstance(inner, LiburingEngine):
        _hook_liburing(inner, inj)
        return "liburing"
    return None


# --- the wrapper --------------------------------------------------------------------------------

class FaultyEngine(IOEngine):
    """``inner`` with the faults of ``plan`` injected; counts go to ``log`` (a new one if omitted).

    Files opened through the wrapper are the inner engine's (same ids). The
    low-level ``queue``/``commit``/``reap`` pass through unfaulted.
    """

    def __init__(self, inner: IOEngine, plan: FaultPlan, log: FaultLog | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(inner.queue_depth, allow_buffered=inner.allow_buffered,
                         direct_align_bytes=inner.direct_align_bytes, clock=inner.clock)
        self.inner, self.plan = inner, plan
        self.log = log if log is not None else FaultLog()
        self.name = f"faulty-{inner.name}"
        self.files = inner.files  # the same list: a file id of the inner engine is one of ours
        self._inj = _Injector(plan, self.log, sleep)
        self.hook = _install(inner, self._inj)
        if plan.transient and self.hook is None:
            self.close()  # and the inner engine with it
            raise ValueError(f"transient faults need an engine whose retry path runs in Python (pread, liburing); "
                             f"the {inner.name} engine's is out of reach")

    def open(self, path: str | os.PathLike) -> int:
        self._check_open()
        file_id = self.inner.open(path)
        self.files = self.inner.files
        return file_id

    def _read_batch(self, req: Requests, latency: bool) -> BatchOutcome:
        with self.inner._lock:
            if self.hook is None:
                failed = self._batch_faults(req)
                if failed is not None:
                    return failed
            return self.inner._read_batch(req, latency)

    def _batch_faults(self, req: Requests) -> BatchOutcome | None:
        """EIO and slow completions around a batch, for engines whose per-read loop is out of reach."""
        for i in range(len(req)):
            f = self.files[int(req.file_ids[i])]
            kind, _ = self._inj.decide(f.path, int(req.offsets[i]), int(req.nbytes[i]), 1)
            if kind == "eio":
                stats = T.new_stats()
                stats[T.ST_FAILED_INDEX], stats[T.ST_ERRNO] = i, errno.EIO
                return BatchOutcome(np.zeros(len(req), np.int64), stats, None)
        return None

    def queue(self, file_id: int, offset: int, nbytes: int, dest: np.ndarray, dest_offset: int, tag: int) -> None:
        self.inner.queue(file_id, offset, nbytes, dest, dest_offset, tag)

    def commit(self) -> int:
        return self.inner.commit()

    def reap(self, min_n: int = 1, max_n: int = 1 << 30) -> Completions:
        return self.inner.reap(min_n, max_n)

    def _close_engine(self) -> None:
        self.inner.close()  # closes the files too
        self.files = []


@contextlib.contextmanager
def faulty_engines(plan: FaultPlan, inner: str = "pread", name: str = "faulty",
                   log: FaultLog | None = None, sleep: Callable[[float], None] = time.sleep) -> Iterator[FaultLog]:
    """Make ``make_engine(name, **options)`` build ``FaultyEngine(make_engine(inner, **options), plan)``
    inside the block (for the Replayer, which builds its engines by name). Yields the shared log."""
    from emulator import io as eio

    if name in eio.ENGINES:
        raise ValueError(f"engine name {name!r} is already registered")
    log = log if log is not None else FaultLog()

    def factory(**options) -> FaultyEngine:
        return FaultyEngine(eio.make_engine(inner, **options), plan, log, sleep)

    eio.ENGINES[name] = factory
    try:
        yield log
    finally:
        eio.ENGINES.pop(name, None)


__all__ = ["FAULT_KINDS", "FaultLog", "FaultPlan", "FaultyEngine", "faulty_engines"]

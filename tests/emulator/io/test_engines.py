"""One shared conformance suite that every IO engine's test class inherits (zarr-style).

Files live under pytest's tmp_path, which is on the real disk (ext4 here), so
O_DIRECT is exercised for real. A test class for io_uring skips with the
reason when a ring cannot be created.
"""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest

from emulator.io import (IOFailure, LiburingEngine, NullEngine, PreadEngine, UringEngine, aligned_empty, is_aligned,
                         liburing_available, null_pattern, uring_available)
from emulator.io import base as io_base
from emulator.io import liburing_engine
from emulator.io.base import OpenFile
from tests.naive import read_many_naive
from tracegen.errors import InputError

P = 4096
FILE_BYTES = 40 * P + 1000  # not a whole number of pages: the last page is short
URING_OK, URING_WHY = uring_available()


def _write(path, nbytes, seed):
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return str(path)


@pytest.fixture
def files(tmp_path):
    return [_write(tmp_path / "a.bin", FILE_BYTES, 1), _write(tmp_path / "b.bin", 8 * P, 2)]


def _random_requests(rng, n, sizes, max_pages=16):
    fids = rng.integers(0, len(sizes), n)
    pages = np.array([s // P for s in sizes])[fids]
    npages = rng.integers(1, max_pages + 1, n)
    offs = rng.integers(0, np.maximum(pages - 1, 1)) * P
    nbytes = npages * P
    doffs = np.concatenate([[0], np.cumsum(nbytes)[:-1]])
    return fids, offs, nbytes, doffs, int(nbytes.sum())


class EngineConformance:
    """Subclasses set ``make`` (keyword arguments -> engine) and may override ``expected``."""

    def make(self, **kw):
        raise NotImplementedError

    def expected(self, paths, fids, offs, nbytes, dest_size, doffs, fill=0):
        return read_many_naive(paths, fids, offs, nbytes, dest_size, doffs, fill)

    def test_submit_times_lie_within_the_call(self, files):
        # the device clock places each read at its recorded submission: on the perf_counter_ns clock, inside the
        # call, and each read completes (submit + latency) no later than the call returned
        with self.make(queue_depth=4) as eng:
            fid = eng.open(files[0])
            t_before = time.perf_counter_ns()
            res = eng.read_many([fid] * 16, np.arange(16) % 8 * P, [P] * 16, aligned_empty(16 * P),
                                np.arange(16) * P, latency=True)
            t_after = time.perf_counter_ns()
        assert res.submit_ns.shape == (16,) and res.latency_ns.shape == (16,)
        assert (res.submit_ns >= t_before).all() and (res.submit_ns + res.latency_ns <= t_after).all()

    @pytest.mark.parametrize("qd", [1, 64])
    def test_random_reads_match_buffered_read(self, files, qd):
        rng = np.random.default_rng(qd)
        sizes = [os.path.getsize(f) for f in files]
        fids, offs, nbytes, doffs, total = _random_requests(rng, 300, sizes)
        with self.make(queue_depth=qd) as eng:
            ids = [eng.open(f) for f in files]
            dest = aligned_empty(total)
            res = eng.read_many(np.array(ids)[fids], offs, nbytes, dest, doffs)
        want, nread = self.expected(files, fids, offs, nbytes, total, doffs)
        np.testing.assert_array_equal(dest, want)
        np.testing.assert_array_equal(res.nread, nread)
        assert res.requests == 300 and res.max_in_flight <= qd

    def test_buffers_are_aligned_and_misalignment_is_refused(self, files):
        dest = aligned_empty(3 * P)
        assert is_aligned(dest) and dest.dtype == np.uint8 and dest.shape == (3 * P,)
        with self.make() as eng:
            fid = eng.open(files[0])
            with pytest.raises(ValueError, match="aligned"):
                eng.read_many([fid], [0], [P], dest[1:], [0])  # dest address off by one byte
            with pytest.raises(ValueError, match="aligned"):
                eng.read_many([fid], [100], [P], dest, [0])  # file offset not on a block
            with pytest.raises(ValueError, match="fit in dest"):
                eng.read_many([fid], [0], [P], dest, [3 * P])

    def test_short_read_at_eof_is_zero_filled(self, files):
        with self.make() as eng:
            fid = eng.open(files[0])
            dest = aligned_empty(8 * P)
            dest[:] = 0xAA  # stale bytes that must not survive
            # read 1: pages 39..42 of a 40-page-plus-1000-byte file -> 4096 + 1000 real bytes
            # read 2: starts past the end -> 0 real bytes
            res = eng.read_many([fid, fid], [39 * P, 48 * P], [4 * P, 4 * P], dest, [0, 4 * P])
        want, _ = self.expected(files, [0, 0], [39 * P, 48 * P], [4 * P, 4 * P], 8 * P, [0, 4 * P])
        assert res.nread.tolist() == [P + 1000, 0]
        assert res.short_reads == 2
        np.testing.assert_array_equal(dest, want)
        assert not dest[P + 1000 :].any()

    def test_reads_spanning_many_pages(self, files):
        with self.make(queue_depth=4) as eng:
            fid = eng.open(files[0])
            dest = aligned_empty(40 * P)
            res = eng.read_many([fid, fid], [0, 8 * P], [8 * P, 32 * P], dest, [0, 8 * P])
        want, _ = self.expected(files, [0, 0], [0, 8 * P], [8 * P, 32 * P], 40 * P, [0, 8 * P])
        np.testing.assert_array_equal(dest, want)
        assert res.bytes_read == 40 * P

    def test_empty_batch(self, files):
        with self.make() as eng:
            eng.open(files[0])
            res = eng.read_many([], [], [], aligned_empty(P), [])
        assert res.requests == 0 and res.bytes_read == 0

    def test_queue_commit_reap(self, files):
        with self.make(queue_depth=16) as eng:
            fid = eng.open(files[0])
            dest = aligned_empty(10 * P)
            for k in range(10):
                eng.queue(fid, (3 * k) * P, P, dest, k * P, tag=100 + k)
            assert eng.commit() == 10
            tags, results = [], []
            while len(tags) < 10:
                c = eng.reap(min_n=1, max_n=4)
                assert len(c) <= 4
                tags += c.tags.tolist()
                results += c.results.tolist()
        assert sorted(tags) == list(range(100, 110)) and results == [P] * 10
        want, _ = self.expected(files, [0] * 10, [3 * k * P for k in range(10)], [P] * 10, 10 * P,
                                [k * P for k in range(10)])
        np.testing.assert_array_equal(dest, want)

    def test_pipelined_start_and_wait(self, files):
        with self.make(queue_depth=8) as eng:
            fid = eng.open(files[0])
            a, b = aligned_empty(4 * P), aligned_empty(4 * P)
            h1 = eng.start([fid] * 4, [0, P, 2 * P, 3 * P], [P] * 4, a, [0, P, 2 * P, 3 * P])
            h2 = eng.start([fid], [10 * P], [4 * P], b, [0])
            r1, r2 = eng.wait(h1), eng.wait(h2)
            c = eng.counters()
        np.testing.assert_array_equal(a, self.expected(files, [0], [0], [4 * P], 4 * P, [0])[0])
        np.testing.assert_array_equal(b, self.expected(files, [0], [10 * P], [4 * P], 4 * P, [0])[0])
        assert r1.requests == 4 and r2.requests == 1
        assert c.requests == 5 and c.bytes_read == 8 * P and c.wait_s >= 0 and c.busy_s >= 0

    def test_close_is_idempotent_and_final(self, files):
        eng = self.make()
        fid = eng.open(files[0])
        eng.close()
        eng.close()
        with pytest.raises(ValueError, match="closed"):
            eng.read_many([fid], [0], [P], aligned_empty(P), [0])
        with pytest.raises(ValueError, match="closed"):
            eng.open(files[0])

    def test_missing_file_is_input_error(self, tmp_path):
        with self.make() as eng, pytest.raises(InputError, match="no such file"):
            eng.open(tmp_path / "nope.bin")

    def test_direct_refused_is_input_error_unless_buffered(self, files, monkeypatch):
        # Emulates a filesystem without O_DIRECT (tmpfs before Linux 6.6 answers EINVAL).
        real_open = os.open

        def refusing_open(path, flags, *a):
            if flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_open(path, flags, *a)

        monkeypatch.setattr(io_base, "_os_open", refusing_open)
        with self.make() as eng, pytest.raises(InputError, match="--buffered-io") as ei:
            eng.open(files[0])
        assert files[0] in str(ei.value) and "\n" not in str(ei.value)
        with self.make(allow_buffered=True) as eng:
            fid = eng.open(files[0])
            assert not eng.file(fid).direct
            dest = aligned_empty(2 * P + 100)
            res = eng.read_many([fid], [123], [2 * P], dest, [100])  # unaligned is fine when buffered
        want, _ = self.expected(files, [0], [123], [2 * P], 2 * P + 100, [100])
        np.testing.assert_array_equal(dest[100:], want[100:])
        assert res.nread.tolist() == [2 * P]

    def test_direct_and_buffered_files_in_one_engine(self, files, tmp_path, monkeypatch):
        # b.bin refuses O_DIRECT; a.bin (O_DIRECT) still ends in a partial block that must read as EOF.
        real_open = os.open

        def open_b_buffered(path, flags, *a):
            if flags & os.O_DIRECT and str(path).endswith("b.bin"):
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_open(path, flags, *a)

        monkeypatch.setattr(io_base, "_os_open", open_b_buffered)
        with self.make(allow_buffered=True) as eng:
            fa, fb = eng.open(files[0]), eng.open(files[1])
            assert eng.file(fa).direct and not eng.file(fb).direct
            dest = aligned_empty(4 * P)
            res = eng.read_many([fa, fb], [40 * P, 7 * P], [2 * P, 2 * P], dest, [0, 2 * P])
        want, nread = self.expected(files, [0, 1], [40 * P, 7 * P], [2 * P, 2 * P], 4 * P, [0, 2 * P])
        assert res.nread.tolist() == nread.tolist() == [1000, P]
        np.testing.assert_array_equal(dest, want)

    def test_tmpfs(self):
        shm = "/dev/shm"
        if not os.path.isdir(shm):
            pytest.skip("no /dev/shm on this machine")
        path = os.path.join(shm, f"screc-io-test-{os.getpid()}.bin")
        with open(path, "wb") as f:
            f.write(b"x" * P)
        try:
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
                native_direct = True
            except OSError:
                native_direct = False
            if native_direct:
                pytest.skip("tmpfs supports O_DIRECT on this kernel (Linux >= 6.6); the refusal is covered by "
                            "test_direct_refused_is_input_error_unless_buffered")
            with self.make() as eng, pytest.raises(InputError, match="O_DIRECT"):
                eng.open(path)
            with self.make(allow_buffered=True) as eng:
                eng.open(path)
        finally:
            os.unlink(path)


class _FailingReads:
    """Mixin: swap a file's descriptor for a write-only one, so the kernel answers EBADF."""

    def _break(self, eng, fid, tmp_path):
        wpath = tmp_path / "write_only.bin"
        wpath.write_bytes(b"\0" * P)
        wfd = os.open(wpath, os.O_WRONLY)
        f = eng.files[fid]
        os.close(f.fd)
        eng.files[fid] = OpenFile(path=f.path, fd=wfd, direct=f.direct, size_bytes=f.size_bytes)
        eng._on_open(fid, eng.files[fid])

    def test_persistent_error_raises_io_failure(self, files, tmp_path):
        with self.make(queue_depth=8) as eng:
            good = eng.open(files[1])
            bad = eng.open(files[0])
            self._break(eng, bad, tmp_path)
            dest = aligned_empty(4 * P)
            with pytest.raises(IOFailure) as ei:
                eng.read_many([good, bad, good], [0, 2 * P, P], [P, P, P], dest, [0, P, 2 * P])
            assert ei.value.errno == errno.EBADF
            assert files[0] in str(ei.value) and "offset 8192" in str(ei.value)
            # the engine stays usable after a failed batch
            res = eng.read_many([good], [0], [P], dest, [0])
            assert res.nread.tolist() == [P]


@pytest.mark.skipif(not URING_OK, reason=f"io_uring unavailable: {URING_WHY}")
class TestUringEngine(EngineConformance, _FailingReads):
    def make(self, **kw):
        return UringEngine(**kw)

    def test_batched_submission(self, files):
        # 64 one-page reads at depth 64 need far fewer system calls than reads
        with self.make(queue_depth=64) as eng:
            fid = eng.open(files[0])
            res = eng.read_many([fid] * 64, np.arange(64) % 40 * P, [P] * 64, aligned_empty(64 * P),
                                np.arange(64) * P, latency=True)
        assert res.syscalls < 64 and res.max_in_flight == 64
        assert res.latency_ns.shape == (64,) and (res.latency_ns > 0).all()


@pytest.mark.skipif(not URING_OK, reason=f"io_uring unavailable: {URING_WHY}")
class TestUringEngineUnregisteredFiles(EngineConformance):
    def make(self, **kw):
        return UringEngine(registered_files=False, **kw)


@pytest.mark.skipif(not URING_OK, reason=f"io_uring unavailable: {URING_WHY}")
class TestUringEngineRegisteredBuffers(EngineConformance):
    def make(self, **kw):
        return UringEngine(registered_buffers=True, **kw)


class TestPreadEngine(EngineConformance, _FailingReads):
    def make(self, **kw):
        return PreadEngine(**kw)


class TestNullEngine(EngineConformance):
    """The null engine never reads: its "file content" is the pattern, cut at the real file size."""

    def make(self, **kw):
        return NullEngine(fill="pattern", **kw)

    def expected(self, paths, fids, offs, nbytes, dest_size, doffs, fill=0):
        dest = np.full(int(dest_size), fill, dtype=np.uint8)
        nread = np.zeros(len(fids), dtype=np.int64)
        for i, (f, o, n, d) in enumerate(zip(fids, offs, nbytes, doffs)):
            got = max(0, min(int(n), os.path.getsize(paths[int(f)]) - int(o)))
            dest[int(d) : int(d) + int(n)] = 0
            dest[int(d) : int(d) + got] = null_pattern(np.arange(int(o), int(o) + got))
            nread[i] = got
        return dest, nread


LIBURING_OK, LIBURING_WHY = liburing_available()


@pytest.mark.skipif(not LIBURING_OK, reason=f"io_uring through the liburing package unavailable: {LIBURING_WHY}")
class TestLiburingEngine(EngineConformance, _FailingReads):
    def make(self, **kw):
        return LiburingEngine(**kw)

    def test_batched_submission(self, files, monkeypatch):
        # 64 one-page reads at depth 64 go to the kernel in one submit call (counted by wrapping the package)
        real, submitted = liburing_engine._lu, []

        class CountingLiburing:
            def __getattr__(self, name):
                f = getattr(real, name)
                if name not in ("io_uring_submit", "io_uring_submit_and_wait"):
                    return f
                return lambda *a: submitted.append(f(*a)) or submitted[-1]

        monkeypatch.setattr(liburing_engine, "_lu", CountingLiburing())
        with self.make(queue_depth=64) as eng:
            fid = eng.open(files[0])
            res = eng.read_many([fid] * 64, np.arange(64) % 40 * P, [P] * 64, aligned_empty(64 * P),
                                np.arange(64) * P, latency=True)
        assert submitted[0] == 64 and sum(submitted) == 64 and res.max_in_flight == 64
        assert res.latency_ns.shape == (64,) and (res.latency_ns > 0).all()


@pytest.mark.skipif(not LIBURING_OK, reason=f"io_uring through the liburing package unavailable: {LIBURING_WHY}")
class TestLiburingEngineFixedFilesPollWait(EngineConformance, _FailingReads):
    """Registered files, a fresh Iovec per read, and waiting in poll(2) (GIL released) on every thread."""

    def make(self, **kw):
        return LiburingEngine(registered_files=True, cache_iovecs=False, release_gil=True, **kw)

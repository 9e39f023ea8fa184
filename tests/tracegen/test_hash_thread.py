"""The background hash: the digest of everything given, in order, whatever the queue's size."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tracegen.hash_thread import HashThread


@pytest.mark.parametrize("queue_bytes", [1, 1 << 10, 1 << 30])
def test_digest_is_hashlibs_of_the_same_bytes_in_order(queue_bytes):
    rng = np.random.default_rng(0)
    parts = [b"spec", rng.integers(0, 9, size=5000), b"", rng.integers(0, 9, size=7).astype(np.int32), b"x" * 3000]
    ref = hashlib.sha256()
    for p in parts:
        ref.update(p.tobytes() if isinstance(p, np.ndarray) else p)
    with HashThread("sha256", queue_bytes=queue_bytes) as h:
        for p in parts[:2]:
            h.update(p)
        mid = hashlib.sha256(b"spec" + parts[1].tobytes()).hexdigest()
        assert h.hexdigest() == mid  # waits for what was given so far
        for p in parts[2:]:
            h.update(p)
    assert h.hexdigest() == ref.hexdigest()


def test_refuses_strided_arrays_and_updates_after_close():
    h = HashThread()
    with pytest.raises(ValueError):
        h.update(np.arange(10)[::2])
    h.close()
    with pytest.raises(ValueError):
        h.update(b"late")


def test_abort_drops_the_queue():
    h = HashThread(queue_bytes=1 << 30)
    for _ in range(20):
        h.update(np.zeros(1 << 20))
    h.abort()  # returns without hashing all 160 MiB; the thread is gone
    assert not h._thread.is_alive()

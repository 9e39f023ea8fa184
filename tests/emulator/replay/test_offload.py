"""The host's split of a batch between itself and the devices, against plain loops."""

import numpy as np
import pytest

from emulator.replay.offload import host_pooled, route_lookups
from emulator.tiers import KIND_DRAM, KIND_PAGE, KIND_STAGED


@pytest.mark.parametrize("n_dev", [1, 3])
def test_route_lookups_equals_a_loop(n_dev):
    rng = np.random.default_rng(n_dev)
    B, members = 4, 5
    lengths = rng.integers(0, 5, B * members)
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    kind = rng.choice(np.array([KIND_DRAM, KIND_PAGE, KIND_STAGED], np.uint8), int(off[-1]))
    dev = rng.integers(0, n_dev, members)
    order, start, counts = route_lookups(off, kind, dev, B, n_dev)
    for s in range(1 + 2 * n_dev):
        want, per_bag = [], np.zeros(B * members, np.int64)
        for b in range(B * members):
            for k in range(off[b], off[b + 1]):
                d = dev[b // B]
                slot = 0 if kind[k] == KIND_DRAM else 1 + 2 * d + (kind[k] == KIND_STAGED)
                if slot == s:
                    want.append(k)
                    per_bag[b] += 1
        assert order[start[s]:start[s + 1]].tolist() == want
        assert counts[s].tolist() == per_bag.tolist()


def test_who_pools():
    assert host_pooled("all-ssd") and host_pooled("lru") and not host_pooled("screc") and not host_pooled("all-tt")
    assert host_pooled("screc", "host") and not host_pooled("all-ssd", "device")

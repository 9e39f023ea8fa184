"""emulator.replay.groups against naive references: a group's lookups gathered from the batch, one device's raw
reads planned over global page ids (each page once, mapped back to its file, every lookup located in the pages),
the group's TT rows rebuilt in order with the time charged to the right device."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from emulator.replay.groups import gather_group, plan_raw, rebuild_group
from emulator.tt.decomposition import random_tt, tt_rebuild_rows_reference
from tracegen.trace_io import TraceReader

PAGE = 4096


@pytest.mark.parametrize("members", [[0], [1, 2], [0, 1, 2, 3], [0, 3], [0, 2, 3], [3]])
def test_gather_group_equals_the_tables_end_to_end(tiny_trace, members):
    with TraceReader(tiny_trace) as r:
        for batch in r.batches(0, 2):
            ids, offs, counts = gather_group(SimpleNamespace(tables=np.array(members, np.int64)), batch)
            want_ids, want_offs, base = [], [0], 0
            for t in members:  # naive: each member's lookups and bag bounds, shifted to follow the previous ones
                i, o = batch.table(t)
                want_ids.append(i)
                want_offs.extend((o[1:] + base).tolist())
                base += i.size
            np.testing.assert_array_equal(ids, np.concatenate(want_ids))
            np.testing.assert_array_equal(offs, want_offs)
            np.testing.assert_array_equal(counts, [batch.table(t)[0].size for t in members])
            assert offs.size == len(members) * batch.batch_size + 1


def _fake_file(f: int, pages: int) -> np.ndarray:
    """A file whose every 8-byte word says (file, page, word): any byte range is recognisable."""
    words = np.arange(pages * PAGE // 8, dtype=np.int64)
    return (f * 10**9 + (words * 8 // PAGE) * 10**4 + words % (PAGE // 8)).view(np.uint8)


@pytest.mark.parametrize("max_read_bytes", [PAGE, 3 * PAGE, 128 << 10])
def test_plan_raw_reads_each_page_once_and_locates_every_lookup(max_read_bytes):
    rng = np.random.default_rng(3)
    sizes = [5, 1, 12]  # pages of the device's three raw files, laid end to end with a one-page gap
    page_base = np.array([0, 6, 8], np.int64)
    file_ids, file_tables = np.array([4, 7, 9], np.int64), np.array([2, 0, 5], np.int64)
    files = {fid: _fake_file(fid, n) for fid, n in zip(file_ids, sizes)}
    works, pending, want = [], [], []
    for _ in range(2):  # two groups' lookups on this device
        n = 40
        f = rng.integers(0, 3, n)
        page_in_file = np.array([rng.integers(0, sizes[k]) for k in f])
        word = rng.integers(0, PAGE // 8, n)
        w = SimpleNamespace(loc=np.full(n + 5, -1, np.int64))  # 5 lookups not raw: untouched
        pos = rng.permutation(n + 5)[:n]
        pending.append((w, pos, page_base[f] + page_in_file, word * 8))
        works.append(w)
        want.append((w, pos, file_ids[f], page_in_file, word))
    dest_pos = 3 * PAGE  # the slow tables' reads came first
    fid, off, nb, dest_off, tabs, used = plan_raw(pending, page_base, file_ids, file_tables, dest_pos,
                                                  max_read_bytes, PAGE)
    # each page needed is read exactly once, within the limit, from the right file
    needed = {(int(f), int(p)) for _, _, fs, ps, _ in want for f, p in zip(fs, ps)}
    got = [(int(f), int(o) // PAGE + j) for f, o, n in zip(fid, off, nb) for j in range(int(n) // PAGE)]
    assert sorted(got) == sorted(needed) and len(got) == len(set(got))
    assert (nb <= max_read_bytes).all() and (off % PAGE == 0).all() and used == PAGE * len(needed)
    np.testing.assert_array_equal(tabs, file_tables[np.searchsorted(file_ids, fid)])
    # do the reads naively, then every lookup's loc holds its word
    dest = np.zeros(dest_pos + used, np.uint8)
    for f, o, n, d in zip(fid, off, nb, dest_off):
        assert d >= dest_pos
        dest[d:d + n] = files[int(f)][o:o + n]
    for w, pos, fs, ps, word in want:
        assert (np.delete(w.loc, pos) == -1).all()
        for k, f, p, x in zip(pos, fs, ps, word):
            assert dest[w.loc[k]:w.loc[k] + 8].view(np.int64)[0] == f * 10**9 + p * 10**4 + x


def test_rebuild_group_stages_every_member_in_order():
    rng = np.random.default_rng(0)
    tts = {0: random_tt((4, 5, 6), (2, 2, 2), (1, 3, 3, 1), rng), 2: random_tt((4, 5, 6), (2, 2, 2), (1, 2, 2, 1), rng)}
    g = SimpleNamespace(dim=8, device=np.array([1, 0, 0], np.int64))
    rows = {0: np.array([3, 17, 99]), 2: np.array([0, 119])}
    w = SimpleNamespace(group=g, tt_rows=[(0, rows[0]), (2, rows[2])])
    ticks = iter(range(1000))
    compute_s = [0.0, 0.0]
    staged = rebuild_group(w, tts.__getitem__, lambda: float(next(ticks)), compute_s)
    want = np.concatenate([tt_rebuild_rows_reference(tts[0], rows[0]), tt_rebuild_rows_reference(tts[2], rows[2])])
    np.testing.assert_allclose(staged, want, rtol=1e-5, atol=1e-6)
    assert compute_s == [1.0, 1.0]  # one tick per member: member 0 is on device 1, member 2 on device 0

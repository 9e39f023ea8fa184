"""Page-read planning: the Numba planner against the naive reference, and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.io.pages import plan_page_reads, plan_row_reads
from tests.naive import plan_page_reads_naive

P = 4096


def test_hand_example_coalescing_and_limit():
    # pages 3,4,5,6 are one run but max_read_bytes = 3 pages splits it into [3..5] and [6];
    # 9,10,11 are a second run of exactly 3 pages (one read); 13 stands alone after a hole.
    # Slots pack densely: 3->0 4->1 5->2 | 6->3 | 9->4 10->5 11->6 | 13->7.
    pages = np.array([3, 4, 5, 6, 9, 10, 11, 13])
    ro, rn, do, slot = plan_page_reads(pages, P, max_read_bytes=3 * P)
    assert ro.tolist() == [3 * P, 6 * P, 9 * P, 13 * P]
    assert rn.tolist() == [3 * P, P, 3 * P, P]
    assert do.tolist() == [0, 3 * P, 4 * P, 7 * P]
    assert slot.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_hand_example_gap_filling():
    # max_gap_pages=1: 3 and 5 join through hole 4 (read 3 pages, slot 1 is the hole);
    # 8 is 2 pages past 5 so it starts a new read at slot 3.
    ro, rn, do, slot = plan_page_reads(np.array([3, 5, 8]), P, max_read_bytes=32 * P, max_gap_pages=1)
    assert ro.tolist() == [3 * P, 8 * P]
    assert rn.tolist() == [3 * P, P]
    assert do.tolist() == [0, 3 * P]
    assert slot.tolist() == [0, 2, 3]


def test_empty_and_single():
    ro, rn, do, slot = plan_page_reads(np.array([], dtype=np.int64))
    assert ro.size == rn.size == do.size == slot.size == 0
    ro, rn, do, slot = plan_page_reads(np.array([7]))
    assert (ro.tolist(), rn.tolist(), do.tolist(), slot.tolist()) == ([7 * P], [P], [0], [0])


@pytest.mark.parametrize("bad", [np.array([2, 1]), np.array([1, 1]), np.array([-1, 0])])
def test_rejects_unsorted_repeated_negative(bad):
    with pytest.raises(ValueError, match="sorted and unique"):
        plan_page_reads(bad)


def test_rejects_bad_limits():
    with pytest.raises(ValueError, match="multiple of page_bytes"):
        plan_page_reads(np.array([1]), P, max_read_bytes=P + 1)
    with pytest.raises(ValueError, match="max_gap_pages"):
        plan_page_reads(np.array([1]), P, max_gap_pages=-1)


@settings(max_examples=200, deadline=None)
@given(pages=st.lists(st.integers(0, 400), max_size=120, unique=True),
       max_pages=st.integers(1, 40), gap=st.integers(0, 3), page_bytes=st.sampled_from([512, 4096]))
def test_matches_naive(pages, max_pages, gap, page_bytes):
    pages = np.array(sorted(pages), dtype=np.int64)
    got = plan_page_reads(pages, page_bytes, max_pages * page_bytes, gap)
    want = plan_page_reads_naive(pages, page_bytes, max_pages * page_bytes, gap)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # every page lands inside the read that covers it
    ro, rn, do, slot = got
    for p, s in zip(pages, slot):
        k = np.searchsorted(ro, p * page_bytes, side="right") - 1
        assert ro[k] <= p * page_bytes < ro[k] + rn[k]
        assert s * page_bytes == do[k] + p * page_bytes - ro[k]


def test_row_plan_small_rows():
    # 128-byte rows: 32 per page. Rows 0 and 31 share page 0, row 32 is page 1, row 100 page 3.
    plan = plan_row_reads(np.array([100, 0, 31, 32, 0]), rows_per_page=32, pages_per_row=1, row_bytes=128)
    assert plan.pages.tolist() == [0, 1, 3]
    assert plan.read_offsets.tolist() == [0, 3 * P]  # pages 0-1 coalesce, page 3 alone
    assert plan.read_nbytes.tolist() == [2 * P, P]
    assert plan.dest_bytes == 3 * P
    # row 100 -> slot 2, byte (100 % 32) * 128 = 512; row 31 -> 31 * 128 = 3968; row 32 -> slot 1
    assert plan.row_dest_offsets.tolist() == [2 * P + 512, 0, 3968, P, 0]


def test_row_plan_big_rows_span_pages():
    # 10000-byte rows take 3 pages each; rows 1 and 2 are pages 3..5 and 6..8, contiguous in dest.
    plan = plan_row_reads(np.array([2, 1]), rows_per_page=1, pages_per_row=3, row_bytes=10000,
                          max_read_bytes=4 * P)
    assert plan.pages.tolist() == [3, 4, 5, 6, 7, 8]
    assert plan.read_nbytes.tolist() == [4 * P, 2 * P]  # split by the 4-page limit, still packed
    assert plan.row_dest_offsets.tolist() == [3 * P, 0]


def test_row_plan_extracts_right_bytes():
    # Build a fake table file image, "read" it by copying the planned ranges, check every row.
    rng = np.random.default_rng(0)
    row_bytes, rpp = 96, P // 96  # 42 rows per page, 64 bytes of padding per page
    rows_total = 1000
    pages_total = -(-rows_total // rpp)
    image = rng.integers(0, 256, pages_total * P, dtype=np.uint8)
    rows = rng.integers(0, rows_total, 300)
    plan = plan_row_reads(rows, rpp, 1, row_bytes, max_read_bytes=8 * P, max_gap_pages=2)
    dest = np.zeros(plan.dest_bytes, dtype=np.uint8)
    for o, n, d in zip(plan.read_offsets, plan.read_nbytes, plan.dest_offsets):
        dest[d : d + n] = image[o : o + n]
    for r, d in zip(rows, plan.row_dest_offsets):
        src = (r // rpp) * P + (r % rpp) * row_bytes
        np.testing.assert_array_equal(dest[d : d + row_bytes], image[src : src + row_bytes])


def test_row_plan_rejects_bad_layout():
    with pytest.raises(ValueError, match="does not fit"):
        plan_row_reads(np.array([0]), rows_per_page=64, pages_per_row=1, row_bytes=128)
    with pytest.raises(ValueError, match="non-negative"):
        plan_row_reads(np.array([-1]), rows_per_page=1, pages_per_row=1, row_bytes=128)

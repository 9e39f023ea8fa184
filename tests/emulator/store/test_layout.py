import numpy as np
import pytest

from emulator.store.layout import RowLayout


@pytest.mark.parametrize("rows,dim,dtype", [(1000, 16, "fp32"), (1003, 100, "fp32"), (1000, 8, "fp16"),
                                            (10, 2000, "fp32"), (999, 3, "fp16"), (1, 1, "fp32")])
def test_pack_then_read_back(rows, dim, dtype):
    lay = RowLayout(rows, dim, dtype)
    vals = np.random.default_rng(0).standard_normal((rows, dim)).astype(lay.np_dtype)
    raw = lay.pack(vals)
    assert raw.size == lay.file_bytes and raw.size % 4096 == 0
    r = np.arange(rows)
    assert np.array_equal(lay.rows_view(raw)[r // lay.rows_per_page, r % lay.rows_per_page], vals)
    off = lay.row_offsets(r)
    for i in (0, rows // 2, rows - 1):
        assert np.array_equal(raw[off[i] : off[i] + lay.row_bytes].view(lay.np_dtype), vals[i])
        # a row never straddles a page boundary unless it is wider than a page
        if lay.row_bytes <= 4096:
            assert off[i] // 4096 == (off[i] + lay.row_bytes - 1) // 4096


def test_hand_layout():
    # dim 100 fp32 = 400 bytes; 4096 // 400 = 10 rows per page, 96 bytes of padding per page
    lay = RowLayout(25, 100, "fp32")
    assert (lay.rows_per_page, lay.pages_per_row, lay.pages, lay.file_bytes) == (10, 1, 3, 3 * 4096)
    assert lay.row_offsets(np.array([0, 9, 10, 24])).tolist() == [0, 3600, 4096, 2 * 4096 + 4 * 400]
    # dim 2000 fp32 = 8000 bytes: two pages per row
    wide = RowLayout(3, 2000, "fp32")
    assert (wide.rows_per_page, wide.pages_per_row, wide.pages) == (1, 2, 6)
    assert wide.row_offsets(np.array([2])).tolist() == [2 * 8192]

"""bench.tables: 80-column tables that wrap headers, never cut a cell."""

from __future__ import annotations

import io

from rich.console import Console

from bench.tables import fit_table, ms_cell, num


def rendered(renderable, width: int = 80) -> str:
    """The plain text of ``renderable`` on a ``width``-column console."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def assert_fits(text: str, rows: list[tuple[str, ...]], width: int = 80) -> None:
    """No line wider than ``width``, no ellipsis, and every row's cells whole on the row's line."""
    assert "…" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for cells in rows:  # some line holds every cell of the row, each whole (spaces either side)
        assert any(line.startswith(cells[0] + " ") and all(f" {c} " in f" {line} " for c in cells)
                   for line in lines), cells


def test_cells_stay_whole_at_80_columns():
    cols = ("policy", "queries/s", "spread", "M lookups/s", "p50 ms", "p99 ms", "x all-ssd", "x lru")
    rows = [("static-topk", "10,439,614", "123%", "271.43", "1770", "99999", "1234.56", "1234.56"),
            ("all-dram", "21,370", "1%", "0.56", "1.23", "45.6", "1.00", "-")]
    text = rendered(fit_table("a title long enough to need wrapping " * 3, cols, rows))
    assert_fits(text, rows)
    assert "lookups/s" in text and "all-ssd" in text  # headers wrapped at spaces, not cut


def test_ms_cell_and_num():
    assert [ms_cell(s) for s in (0.00123, 0.0456, 1.77, 99.9, None)] == ["1.23", "45.6", "1770", "99900", "-"]
    assert num(0.25, ".0%") == "25%" and num(None, ".2f") == "-" and num(2.5e6, ".2f", 1e-6) == "2.50"

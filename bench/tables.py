"""Tables that fit an 80-column terminal and never cut a cell (``compare``, ``demo``, ``bench predict``).

A :func:`fit_table` has no outer edge and collapsed padding (two spaces between columns); every column is
at least as wide as its widest cell, so rich wraps headers at spaces instead of cutting a number to
``1,43…``. The cells themselves must be short: :func:`ms_cell` writes milliseconds in at most five
characters. A command whose columns would not fit splits them into a second table.
"""

from __future__ import annotations

from typing import Sequence

from rich import box
from rich.table import Table

TERMINAL_COLUMNS = 80


def fit_table(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]], *,
              left: int = 1) -> Table:
    """``cells`` as rows under ``columns`` (the first ``left`` columns left-aligned, the rest right)."""
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, title_justify="left", pad_edge=False,
              collapse_padding=True)
    for k, col in enumerate(columns):
        widest = max((len(c[k]) for c in cells), default=0)
        t.add_column(col, justify="left" if k < left else "right", min_width=widest)
    for c in cells:
        t.add_row(*c)
    return t


def num(v: float | None, fmt: str, scale: float = 1.0) -> str:
    """``format(v * scale, fmt)``, or ``-`` for a missing figure."""
    return "-" if v is None else format(v * scale, fmt)


def ms_cell(seconds: float | None) -> str:
    """Milliseconds in at most 5 characters below 100 s: 1.23, 45.6, 1770."""
    if seconds is None:
        return "-"
    v = seconds * 1e3
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"

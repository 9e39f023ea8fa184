"""Small helpers shared by the command modules: sizes, JSON output, consoles, progress."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tracegen.atomic import atomic_path
from tracegen.errors import InputError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(text: str, what: str = "size") -> int:
    """``"5GiB"`` -> 5368709120; ``"1.5GB"`` -> 1500000000. Bad text raises InputError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise InputError(f"{what} {text!r} is not a size like 512MiB, 5GB or 1.5TiB")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def stdout_console() -> Console:
    # Not a terminal (a pipe, a CI log): rich would assume 80 columns and wrap tables; use 120.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def is_live() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def make_progress(console: Console | None = None) -> Progress:
    """A rich progress bar on stderr (disabled, printing nothing, when stderr is not a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(),
        console=console or stderr_console(), disable=not is_live(), transient=False,
    )


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (``-`` writes to stdout)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_out(args) -> None:
    """Fail on an unwritable ``--out`` before a benchmark measures anything (or creates its test file)."""
    if getattr(args, "out", None):
        from tracegen.atomic import check_writable

        check_writable(args.out)


def emit_result(kind: str, result: dict, args, render) -> None:
    """The end of every ``screc bench`` command: a result directory under ``runs/``, ``--out FILE``,
    ``--json`` on stdout, else the rendered table."""
    from bench.results import write_run

    write_run(kind, sys.argv, result)
    if getattr(args, "out", None):
        write_json(args.out, result)
    if args.json:
        write_json("-", result)
    else:
        stdout_console().print(render(result))

"""Small helpers shared by the command modules: sizes, JSON output, consoles, progress."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tracegen.atomic import atomic_path, check_writable
from tracegen.errors import InputError

_SIZE_UNITS = {
    "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
SIZE_HELP = "a size with a unit (512KiB, 64MiB, 1.5GB, 100B)"

# One definition of the flags every command shares (same choices, same defaults).
ENGINES = ("uring", "liburing", "pread", "null")
DEFAULT_ENGINE = "uring"
DEFAULT_QD = 128
RUNS_DIR = "runs"


def parse_size(text: str, what: str = "size") -> int:
    """``"5GiB"`` -> 5368709120; ``"1.5GB"`` -> 1500000000; ``"0"`` -> 0. A unit is required (a bare number
    other than 0 is ambiguous); bad text raises InputError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m:
        raise InputError(f"{what} {text!r} is not {SIZE_HELP}")
    unit = m.group(2).lower()
    if unit == "" and float(m.group(1)) == 0:
        return 0
    if unit == "":
        raise InputError(f"{what} {text!r} has no unit: write {m.group(1)}B, {m.group(1)}MiB, {m.group(1)}GB, ...")
    if unit not in _SIZE_UNITS:
        raise InputError(f"{what} {text!r} is not {SIZE_HELP}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class SizeOrShare:
    """A ``--dram-budget``: a size in bytes, or a share (0, 1] of the model's bytes."""
    text: str
    size_bytes: int | None = None
    share: float | None = None

    def resolve(self, model_bytes: int) -> int:
        """Bytes of this budget for a model of ``model_bytes``."""
        return self.size_bytes if self.share is None else int(model_bytes * self.share)


def parse_size_or_share(text: str, what: str = "--dram-budget") -> SizeOrShare:
    """``"64MiB"`` or ``"5%"`` (of the model). A bare number is an error, not bytes."""
    text = str(text).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise InputError(f"{what} {text!r} is not {SIZE_HELP} or a share of the model like 5%") from None
        if not 0 < pct <= 100:
            raise InputError(f"{what} {text!r} must be a share in (0, 100]% of the model")
        return SizeOrShare(text, share=pct / 100)
    return SizeOrShare(text, size_bytes=parse_size(text, what))


def _argparse_type(parse, what: str):
    """An argparse ``type`` from a parser that raises InputError (argparse then exits 2 with one line)."""
    def convert(text: str):
        try:
            return parse(text, what)
        except InputError as e:
            raise argparse.ArgumentTypeError(e.problem.removeprefix(f"{what} ")) from None
    convert.__name__ = what.lstrip("-").replace("-", " ")
    return convert


def add_dram_budget_arg(p: argparse.ArgumentParser, *, required: bool = False, extra: str = "") -> None:
    """``--dram-budget SIZE|PCT%``: parsed (and refused) at parse time into a :class:`SizeOrShare`."""
    p.add_argument("--dram-budget", required=required, type=_argparse_type(parse_size_or_share, "--dram-budget"),
                   metavar="SIZE|PCT%", help="host DRAM for hot rows: a size with a unit (64MiB, 2GB) or a share "
                                             "of the model (5%%); a bare number is refused" + extra)


def size_arg(what: str):
    """An argparse ``type`` for a size with a unit (``--device-dram 4GiB``)."""
    return _argparse_type(parse_size, what)


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help=f"IO engine for SSD reads (default {DEFAULT_ENGINE}; null reads nothing and only measures "
                        "overhead, so it cannot be verified)")


def add_qd_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qd", type=int, default=DEFAULT_QD,
                   help=f"IO queue depth per device (default {DEFAULT_QD})")


def add_batch_size_arg(p: argparse.ArgumentParser, default: int | None = None) -> None:
    shown = "the model's" if default is None else str(default)
    p.add_argument("--batch-size", type=int, default=default, help=f"samples per batch (default {shown})")


def add_json_arg(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json [FILE]``: bare prints JSON to stdout, with FILE writes it there."""
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help=f"{what} as JSON: bare to stdout, or written to FILE")


def add_out_dir_arg(p: argparse.ArgumentParser, default: str = RUNS_DIR, what: str = "result directory") -> None:
    p.add_argument("--out-dir", default=default, metavar="DIR",
                   help=f"where the {what} goes (default {default}/)")


def add_model_arg(p: argparse.ArgumentParser, *, required: bool = False, default: str | None = None,
                  extra: str = "") -> None:
    p.add_argument("--model", required=required, default=default, metavar="NAME|FILE",
                   help="model spec: a preset name (tiny, criteo-kaggle, mlperf-dlrmv2, meta-2021) or a spec "
                        ".json/.toml file" + extra)


def ensure_writable_file(path: str | os.PathLike | None) -> None:
    """Fail (InputError, one line) unless a file could be written at ``path``; ``None`` and ``-`` (stdout)
    pass. Creates nothing: call it before any work."""
    if path is None or str(path) == "-":
        return
    check_writable(path, "file")
    _probe(Path(path).parent, Path(path))


def ensure_writable_dir(path: str | os.PathLike | None) -> None:
    """Fail (InputError, one line) unless a directory could be created or written at ``path``. Leaves
    nothing behind: call it before any work."""
    if path is None:
        return
    check_writable(path, "dir")
    _probe(Path(path), Path(path))


def _probe(directory: Path, named: Path) -> None:
    """Create and remove a file in the nearest existing ancestor of ``directory`` (catches a read-only
    filesystem or a directory we may not write, which ``os.access`` misses for root)."""
    while not directory.exists():
        directory = directory.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".screc-probe-", dir=directory)
    except OSError as e:
        raise InputError(f"cannot write here ({os.strerror(e.errno) if e.errno else e})", named) from None
    os.close(fd)
    os.unlink(tmp)


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


class ProgressAdapter:
    """Turns library progress callbacks ``(desc, done, total)`` into rich progress tasks."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, desc: str, done: int, total: int) -> None:
        if desc not in self.tasks:
            self.tasks[desc] = self.progress.add_task(desc, total=total)
        self.progress.update(self.tasks[desc], completed=done, total=total)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (``-`` writes to stdout)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


@contextlib.contextmanager
def stop_flag():
    """Ctrl-C sets a flag that the generator checks after every table (a KeyboardInterrupt raised at an
    arbitrary point could be lost inside HDF5 or numba code); a second Ctrl-C interrupts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def positive_int(what: str, value: int) -> int:
    """``value`` if it is >= 1, else a one-line InputError naming the flag ``what``."""
    if value < 1:
        raise InputError(f"{what} must be >= 1, got {value}")
    return value


def emit_json(json_arg: str | None, payload: Any) -> bool:
    """Write ``payload`` where ``--json [FILE]`` asks (nothing without the flag); True when it went to stdout
    (bare ``--json``), so the command must print nothing else."""
    if json_arg:
        write_json(json_arg, payload)
    return json_arg == "-"


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
    """Fail on an unwritable ``--out``, ``--json FILE`` or ``--out-dir`` (default ``runs/``) before a benchmark
    measures anything (or creates its test file)."""
    ensure_writable_file(getattr(args, "out", None))
    if isinstance(getattr(args, "json", None), str):
        ensure_writable_file(args.json)
    ensure_writable_dir(getattr(args, "out_dir", None) or RUNS_DIR)


def emit_result(kind: str, result: dict, args, render) -> None:
    """The end of every ``screc bench`` command: a result directory under ``--out-dir`` (default ``runs/``),
    ``--out FILE``, ``--json`` (bare: JSON on stdout instead of the table; FILE: written there, table shown)."""
    from bench.results import write_run

    write_run(kind, sys.argv, result, runs_dir=getattr(args, "out_dir", None) or RUNS_DIR)
    if getattr(args, "out", None):
        write_json(args.out, result)
    to = getattr(args, "json", None)
    if to is True or to == "-":
        write_json("-", result)
        return
    if to:
        write_json(to, result)
    stdout_console().print(render(result))

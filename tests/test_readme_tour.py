"""The README's tour runs as written: every command of its code block, in order, in a scratch directory.

The block under "## A tour of the commands" is read from README.md; each line
that is not blank or a comment is one shell command (a trailing ``# ...`` is a
comment, a trailing backslash continues the line). The commands run from a
scratch directory that holds a link to the repository's ``tests/data`` (the
tour reads Meta's published statistics from there) and ``scripts``; each must
exit 0. Heavier commands take the tour's own small sizes, so the README shows
what CI runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TOUR_HEADING = "## A tour of the commands"


def tour_commands(text: str) -> list[str]:
    """The shell commands of the tour's first code block (fenced or indented)."""
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    section = text[start:end if end >= 0 else len(text)]
    m = re.search(r"```(?:sh|bash|console)?\n(.*?)```", section, re.S)
    if m:
        lines = m.group(1).splitlines()
    else:  # an indented block
        lines = [l[4:] for l in section.splitlines() if l.startswith("    ")]
    commands, pending = [], ""
    for line in lines:
        line = line.rstrip()
        if pending:
            line = pending + " " + line.lstrip()
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        commands.append(_strip_comment(stripped))
    return commands


def _strip_comment(line: str) -> str:
    """The command without a trailing `` # comment`` (a ``#`` inside quotes stays); globs stay unquoted."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def test_tour_parser_reads_commands_comments_and_continuations():
    text = ("# x\n\n" + TOUR_HEADING + "\n\nSome prose.\n\n"
            "    screc a --b 1            # a comment\n"
            "    # a whole-line comment\n"
            "    screc c --d 'x # y' runs/*-a \\\n"
            "        --e 2\n"
            "\n## Next\n\n    screc not-this\n")
    assert tour_commands(text) == ["screc a --b 1", "screc c --d 'x # y' runs/*-a --e 2"]


@pytest.mark.skipif(shutil.which("screc") is None, reason="the screc entry point is not installed (pip install -e .)")
def test_readme_tour_runs_as_written(tmp_path):
    commands = tour_commands(README.read_text())
    assert len(commands) >= 15, "the tour lost its commands"
    (tmp_path / "tests").mkdir()
    os.symlink(REPO / "tests" / "data", tmp_path / "tests" / "data")
    os.symlink(REPO / "scripts", tmp_path / "scripts")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "80", "SOAK_DIR": str(tmp_path / "soak")}
    for cmd in commands:
        r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"tour command failed (exit {r.returncode}): {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, cmd
    print(f"\nREADME tour: {len(commands)} commands ran", file=sys.stderr)

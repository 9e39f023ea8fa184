"""The one error type every command turns into a one-line message and exit code 2.

It lives in the lowest package (``tracegen``) so that every other package can
raise it without breaking the one-way import order
``bench -> plans -> emulator -> tracegen``.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input from the user: a missing, corrupt or inconsistent file or value.

    ``str(err)`` is the complete one-line message, naming the file (when there
    is one) and the problem, e.g. ``"traces/t.h5: offsets are not monotonic"``.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")

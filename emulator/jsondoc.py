"""Versioned JSON documents (plans, calibrations): written atomically, read back with one-line errors.

A document is a JSON object with a ``format`` name and a ``version``;
:func:`load_json_doc` refuses anything else with an :class:`InputError` that
names the file and says what is wrong, and parses the rest with the caller's
``from_dict``, turning its exceptions into the same kind of error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from tracegen.atomic import atomic_path
from tracegen.errors import InputError

T = TypeVar("T")


def save_json_doc(path: str | os.PathLike, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` (sorted keys, indent 2) under a temporary name, renamed into place when complete."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def load_json_doc(path: str | os.PathLike, kind: str, fmt: str, versions: Sequence[int],
                  parse: Callable[[dict[str, Any]], T]) -> T:
    """``parse`` of the JSON object at ``path`` whose ``format`` is ``fmt`` and ``version`` one of ``versions``;
    InputError (naming ``path`` and the ``kind`` of document) if it is missing, not JSON, of another format or
    version, or if ``parse`` raises TypeError, ValueError, KeyError or AttributeError."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"is a directory, not a {kind} file", p)
    if not p.is_file():
        raise InputError(f"{kind} file not found", p)
    try:
        d = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a JSON {kind} ({e.__class__.__name__})", p) from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise InputError(f"not a screc {kind} (format field missing or wrong)", p)
    if d.get("version") not in versions:
        expected = versions[0] if len(versions) == 1 else f"one of {tuple(versions)}"
        raise InputError(f"{kind} version {d.get('version')} is not supported (expected {expected})", p)
    try:
        return parse(d)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise InputError(f"bad {kind}: {e}", p) from None

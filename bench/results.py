"""Self-describing result files: one directory per run under ``runs/`` (git-ignored).

``write_run`` creates ``runs/<UTC timestamp>-<kind>-<short id>/`` holding

* ``result.json``: ``{"format": "screc-result", "schema_version": 1, "kind",
  "run_id", "created_utc", "command" (argv list), "command_line", "versions"
  (python, numpy, numba, h5py, pulp, rich, liburing, matplotlib and torch when
  installed, screc), "machine" (CPU model, cores, memory, kernel, and the disk
  and filesystem of the store path), "store_id", "trace_id", "payload",
  "tables" (table name -> CSV file name)}``;
* one CSV per entry of ``tables`` (a list of flat dicts; nested values are
  written as JSON text).

The directory is built under a temporary name and renamed into place, so a run
directory that exists is complete. The payload keys of ``replay`` and
``compare`` runs are described in :mod:`bench.cmd_report`. Non-finite floats
are stored as ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import shlex
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from tracegen.atomic import atomic_dir, fsync_file
from tracegen.errors import InputError

RESULT_FORMAT = "screc-result"
RESULT_SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
REQUIRED_KEYS = {"format": str, "schema_version": int, "kind": str, "run_id": str, "created_utc": str,
                 "command": list, "versions": dict, "machine": dict, "payload": dict, "tables": dict}
_DISTRIBUTIONS = ("numpy", "numba", "h5py", "pulp", "rich", "liburing", "matplotlib", "torch", "screc")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays, tuples, paths and dataclasses converted;
    NaN and infinities become ``None``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return to_jsonable(obj.tolist())
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --- environment facts ----------------------------------------------------------------

def package_versions() -> dict[str, str]:
    """Versions of Python and of the installed distributions that matter (absent ones omitted)."""
    out = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def storage_facts(path: str | os.PathLike) -> dict[str, Any]:
    """Filesystem and disk of ``path``: mount point, fs type, device, its model, rotational, sizes."""
    real = os.path.realpath(os.fspath(path))
    facts: dict[str, Any] = {"path": real}
    best = ""
    for line in (_read("/proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best = mnt
            facts.update(mount_point=mnt, fs_type=fields[2], device=fields[0])
    dev = os.path.basename(str(facts.get("device", "")))
    if dev:
        sys_block = Path("/sys/class/block") / dev
        disk = sys_block.resolve().parent if (sys_block / "partition").exists() else sys_block.resolve()
        facts["disk_model"] = _read(str(disk / "device" / "model"))
        rot = _read(str(disk / "queue" / "rotational"))
        facts["rotational"] = None if rot is None else rot == "1"
    try:
        st = os.statvfs(real)
        facts.update(total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)
    except OSError:
        pass
    return facts


def machine_facts(store_path: str | os.PathLike | None = None) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu_model": _cpu_model(), "cores_logical": os.cpu_count(), "cores_usable": usable,
            "memory_bytes": _memory_bytes(), "kernel": platform.release(), "os": platform.platform(),
            "arch": platform.machine(), "python_implementation": platform.python_implementation(),
            "store_storage": None if store_path is None else storage_facts(store_path)}


# --- writing and reading ----------------------------------------------------------------

def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), restval="")
        w.writeheader()
        for row in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v)
                        for k, v in to_jsonable(dict(row)).items()})
    fsync_file(path)


def write_run(kind: str, command_argv: Sequence[str], payload: Mapping[str, Any], *, store_id: str | None = None,
              trace_id: str | None = None, tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
              runs_dir: str | os.PathLike = "runs", store_path: str | os.PathLike | None = None,
              created: datetime | None = None) -> Path:
    """Write one run directory atomically and return its path.

    ``kind`` names the command (``replay``, ``compare``, ``bench-io``...);
    ``store_path`` (optional) is where the store lives, for the disk facts;
    ``created`` (UTC, default now) is injectable for tests.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", kind):
        raise ValueError(f"run kind {kind!r} must be lower-case letters, digits, '-' or '_'")
    created = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
    tables = dict(tables or {})
    csv_names: dict[str, str] = {}
    for name in tables:
        file = f"{_SAFE_NAME.sub('_', str(name)).strip('._') or 'table'}.csv"
        if file in csv_names.values() or file == RESULT_FILE:
            raise ValueError(f"table name {name!r} collides with another file of the run")
        csv_names[str(name)] = file
    doc: dict[str, Any] = {
        "format": RESULT_FORMAT, "schema_version": RESULT_SCHEMA_VERSION, "kind": kind, "run_id": "",
        "created_utc": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "command": [str(a) for a in command_argv], "command_line": shlex.join(str(a) for a in command_argv),
        "versions": package_versions(), "machine": machine_facts(store_path),
        "store_id": store_id, "trace_id": trace_id, "payload": to_jsonable(payload), "tables": csv_names,
    }
    body = json.dumps(doc, sort_keys=True, allow_nan=False)
    short = hashlib.blake2b(body.encode(), digest_size=4).hexdigest()
    doc["run_id"] = f"{created:%Y%m%dT%H%M%SZ}-{kind}-{short}"
    final = Path(runs_dir) / doc["run_id"]
    with atomic_dir(final) as tmp:
        result = tmp / RESULT_FILE
        result.write_text(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
        fsync_file(result)
        for name, rows in tables.items():
            _write_csv(tmp / csv_names[str(name)], rows)
    return final


def result_path(path: str | os.PathLike) -> Path:
    """``result.json`` of a run directory, or the file itself."""
    p = Path(path)
    return p / RESULT_FILE if p.is_dir() else p


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a result (a run directory or its ``result.json``).

    Returns the document with one extra key, ``run_dir`` (where its CSVs are).
    A missing, unreadable or foreign file raises :class:`InputError`.
    """
    p = result_path(path)
    if not p.is_file():
        raise InputError("no result file here (expected a run directory or its result.json)", p)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a JSON result file ({e.__class__.__name__})", p) from None
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise InputError("not a screc result file (format field missing or wrong)", p)
    if doc.get("schema_version") != RESULT_SCHEMA_VERSION:
        raise InputError(f"result schema version {doc.get('schema_version')} is not supported "
                         f"(expected {RESULT_SCHEMA_VERSION})", p)
    for key, typ in REQUIRED_KEYS.items():
        if not isinstance(doc.get(key), typ):
            raise InputError(f"result field {key!r} is missing or not a {typ.__name__}", p)
    doc["run_dir"] = str(p.parent)
    return doc


def load_table(run: Mapping[str, Any], name: str) -> list[dict[str, str]]:
    """The rows of one CSV table of a loaded run (values as text)."""
    file = run["tables"].get(name)
    if file is None:
        raise InputError(f"run has no table {name!r} (tables: {', '.join(run['tables']) or 'none'})", run["run_dir"])
    path = Path(run["run_dir"]) / file
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"cannot read table ({e.strerror})", path) from None


__all__ = ["RESULT_FORMAT", "RESULT_SCHEMA_VERSION", "write_run", "load_run", "load_table", "result_path",
           "package_versions", "machine_facts", "storage_facts", "to_jsonable"]

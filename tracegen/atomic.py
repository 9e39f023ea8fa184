"""Crash-safe outputs: build under a temporary name, fsync, rename into place.

A reader never sees a half-written file or directory: either the previous
version or the complete new one.

* The temporary sibling is ``.<name>.tmp-<pid>-<random>``. A process killed
  mid-build leaves it behind; the next write to the same path removes the
  siblings of processes that are gone (:func:`clean_stale_siblings`), and a
  store never opens from such a name (:func:`is_temporary_sibling`).
* A directory replaces an existing one with one atomic exchange
  (``renameat2(RENAME_EXCHANGE)``) where the filesystem supports it, so the
  path always holds a complete version; elsewhere with two renames (a crash
  between them leaves no version at the path, and the old one in a sibling).
* A full disk (ENOSPC, EDQUOT, or EFBIG from a file-size limit) becomes an
  :class:`~tracegen.errors.InputError` naming the output, after the temporary
  files are removed; so does an output directory that cannot be created or
  written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from tracegen.errors import InputError

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary_sibling(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like the temporary sibling of an output being written (or abandoned)."""
    return _TMP_RE.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def clean_stale_siblings(final: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``final`` left by processes that no longer exist; returns them.

    Siblings of live processes (a concurrent build) are left alone.
    """
    final = Path(final)
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_RE.match(p.name)
        if m is None or m.group("name") != final.name or _pid_alive(int(m.group("pid"))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


_libc: ctypes.CDLL | None = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    fn = getattr(_get_libc(), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


_FALLOC_FL_KEEP_SIZE = 1


def _get_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def reserve_space(path: str | os.PathLike, total_bytes: int) -> None:
    """Reserve disk blocks so that the file at ``path`` can grow to ``total_bytes`` without running out.

    For writers whose library cannot fail a write cleanly (HDF5 cannot close a
    file after a failed write, and crashes at exit): they reserve ahead, so a
    full disk raises ``OSError(ENOSPC)`` here, in Python, before any of their
    writes fails. The file's size is unchanged (``fallocate`` with
    ``FALLOC_FL_KEEP_SIZE``); :func:`release_reserve` frees what was not used.
    A file-size limit (``RLIMIT_FSIZE``) below ``total_bytes`` raises
    ``OSError(EFBIG)``. Filesystems without ``fallocate`` are not reserved on.
    """
    import resource

    total_bytes = int(total_bytes)
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and total_bytes > soft:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), os.fspath(path))
    fn = getattr(_get_libc(), "fallocate", None)
    if fn is None:
        return
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CLOEXEC)
    try:
        if fn(fd, _FALLOC_FL_KEEP_SIZE, 0, total_bytes) != 0:
            err = ctypes.get_errno()
            if err in DISK_FULL_ERRNOS:
                raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages to disk now, without waiting
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so that the final fsync has little left to wait for; a no-op
    where unsupported."""
    fn = getattr(_get_libc(), "sync_file_range", None)
    if fn is None:
        return
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn(int(fd), 0, 0, _SYNC_FILE_RANGE_WRITE)


def release_reserve(path: str | os.PathLike) -> None:
    """Free the blocks :func:`reserve_space` reserved beyond the end of the (closed) file."""
    p = os.fspath(path)
    os.truncate(p, os.path.getsize(p))


def _write_error(e: BaseException, final: Path) -> BaseException:
    """A full disk as the one-line InputError naming the output; anything else as is."""
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
        return InputError(f"disk full while writing ({os.strerror(e.errno)}); nothing was written", final)
    return e


def check_writable(final: str | os.PathLike, kind: str = "file") -> None:
    """Raise InputError unless an output ``kind`` (``"file"`` or ``"dir"``) could be written at ``final``.

    Creates nothing: commands call it before any work so that a bad output path
    fails at once, instead of after a run that leaves other outputs behind.
    """
    final = Path(final)
    if kind == "file" and final.is_dir():
        raise InputError("is a directory; expected a file path to write", final)
    if kind == "dir" and final.exists() and not final.is_dir():
        raise InputError("exists and is not a directory", final)
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot create the output's directory ({parent} is not a directory)", final)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError("cannot write here (the directory is read-only or not ours)", final)


def _prepare(final: Path) -> None:
    """The output's directory exists and is writable (else InputError); stale leftovers are gone."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output's directory ({os.strerror(e.errno)})", final) from None
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise InputError("cannot write here (the directory is read-only or not ours)", final)
    clean_stale_siblings(final)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for a *file*; rename it to ``final`` on success.

    On any exception the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    if final.is_dir():
        raise InputError("is a directory; expected a file path to write", final)
    _prepare(final)
    tmp = _tmp_sibling(final)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        err = _write_error(e, final)
        if err is e:
            raise
        raise err from None


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling *directory*; swap it in for ``final`` on success.

    Files inside must be complete (and fsynced by their writers) when the block
    exits. An existing ``final`` is replaced only after the new one is whole;
    on failure the temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise InputError("exists and is not a directory", final)
    _prepare(final)
    tmp = _tmp_sibling(final)
    try:
        tmp.mkdir()
    except OSError as e:
        raise _write_error(e, final) from None
    try:
        yield tmp
        fsync_dir(tmp)
        if final.exists():
            if _exchange(tmp, final):
                old = tmp  # now holds the previous version
            else:
                old = _tmp_sibling(final)
                os.replace(final, old)
                os.replace(tmp, final)
            fsync_dir(final.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
            fsync_dir(final.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = _write_error(e, final)
        if err is e:
            raise
        raise err from None

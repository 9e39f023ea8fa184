"""Crash-safe builds: a store build or trace generation SIGKILLed at any moment leaves the previous output (or
none), never a half-built one that opens; leftovers of dead builds are cleaned by the next build; a full disk
is a one-line error that leaves no temporary files and keeps the previous output.

Kills come two ways: at chosen points (the child SIGKILLs itself right before/after a write, fsync, rename or
exchange: the windows that matter) and at seeded random moments (the parent kills the child after a random
delay). The children are separate processes (``subprocess`` running the real command line).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emulator.store.store import Store, StoreBuildConfig
from emulator.store.build import build_store, verify_store
from tracegen.atomic import clean_stale_siblings, is_temporary_sibling
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

from tests.conftest import one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
NEW_STORE = ["store", "build", "--model", "tiny", "--scale", "3", "--seed", "2", "--tt-ranks", "4"]
NEW_TRACE = ["trace", "gen", "--model", "tiny", "--batches", "100", "--seed", "2"]
KILLS: Counter = Counter()

# The child: installs a kill point (SIGKILL itself at the k-th call of a function, before or after it runs),
# says "ready" once imports are done, then runs the command line.
CHILD = r"""
import os, signal, sys
import bench.cli, emulator.store.store, emulator.store.build, emulator.store.build_parallel, emulator.tt.decomposition, tracegen.atomic as atomic, tracegen.trace_io
import tracegen.generate
point, k, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
argv = sys.argv[4:]
targets = {  # point -> the functions whose calls it counts (together)
    "raw_write": [(emulator.store.build_parallel, "_write_step")],  # one step of a table's rows (pwrite)
    "tt_save": [(emulator.tt.decomposition, "save_tt")],
    "store_fsync": [(emulator.store.build, "fsync_file")],
    "fsync_file": [(atomic, "fsync_file")],
    "fsync_dir": [(atomic, "fsync_dir")],
    "exchange": [(atomic, "_exchange")],
    "append": [(tracegen.trace_io.TraceWriter, "append"), (tracegen.trace_io.TraceWriter, "append_table")],
    "replace": [(os, "replace")],
    "none": [],
}
if point == "no_exchange":  # a filesystem without RENAME_EXCHANGE: the two-rename fallback
    atomic._exchange = lambda a, b: False
    point = "replace"
import threading
n = [0]
lock = threading.Lock()
def hook(real):
    def hooked(*a, **kw):
        if point == "replace" and not any(atomic.is_temporary_sibling(x) for x in a[:2]):
            return real(*a, **kw)  # only the renames of our outputs count
        with lock:  # calls may come from several threads (the store build's writers)
            n[0] += 1
            mine = n[0]
        if mine == k and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        r = real(*a, **kw)
        if mine == k and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return r
    return hooked
for obj, name in targets[point]:
    if hasattr(obj, name):
        setattr(obj, name, hook(getattr(obj, name)))
print("ready", flush=True)
sys.exit(bench.cli.main(argv))
"""


def _child(point: str, k: int, when: str, argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, point, str(k), when, *argv], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _siblings(final: Path) -> list[Path]:
    return [p for p in final.parent.iterdir() if p.name.startswith(f".{final.name}.tmp-")]


@pytest.fixture(scope="module")
def previous_store(tmp_path_factory, tiny_spec):
    s = build_store(tiny_spec, tmp_path_factory.mktemp("prev") / "s", StoreBuildConfig(weights_seed=1, tt_ranks=()))
    return s.path, s.store_id


@pytest.fixture(scope="module")
def previous_trace(tmp_path_factory, tiny_spec):
    from tracegen.generate import GeneratorParams, generate_trace

    p = tmp_path_factory.mktemp("prev") / "t.h5"
    return p, generate_trace(tiny_spec, GeneratorParams(seed=1, num_batches=2), p)


def _check_store_after_kill(out: Path, prev_id: str | None) -> str:
    """The path holds the previous store, a complete new one, or nothing; no sibling opens. Returns which."""
    for sib in _siblings(out):
        with pytest.raises(InputError):
            Store.open(sib)
    if not out.exists():
        return "none"
    s = Store.open(out)  # whatever is at the path opens...
    assert verify_store(out).ok  # ...and verifies
    if s.store_id == prev_id:
        return "previous"
    assert s.manifest.weights.seed == 2 and len(s.tables) == 4  # the complete new build
    return "new"


def _check_trace_after_kill(out: Path, prev_id: str | None) -> str:
    for sib in _siblings(out):
        with pytest.raises(InputError):
            TraceReader(sib)
    if not out.exists():
        return "none"
    with TraceReader(out) as r:
        for _ in r.batches():
            pass
        if r.trace_id == prev_id:
            return "previous"
        assert r.num_batches == 100 and r.seed == 2
        return "new"


STORE_POINTS = [  # (point, k, when): the windows of a store build
    ("raw_write", 2, "after"),  # rows half written
    ("store_fsync", 2, "after"),  # manifest written and synced, directory not yet renamed
    ("fsync_dir", 1, "after"),  # the new directory complete, not yet swapped in
    ("exchange", 1, "after"),  # swapped in, the previous one not yet removed
    ("no_exchange", 1, "after"),  # fallback without RENAME_EXCHANGE: previous moved aside, new not yet in place
]
TRACE_POINTS = [("append", 10, "after"), ("fsync_file", 1, "after"), ("replace", 1, "after")]


def _run_points(cases, tmp_path, make_prev, argv, check):
    """Run the kill-point children two at a time; check each output afterwards. Returns outcomes."""
    outcomes = []
    pending = []
    for j, (point, k, when, with_prev) in enumerate(cases):
        out = tmp_path / f"case{j}" / "out"
        out.parent.mkdir()
        prev_id = make_prev(out) if with_prev else None
        pending.append((_child(point, k, when, [*argv, "-o", str(out)]), out, prev_id, point, when))
        if len(pending) == 2 or j == len(cases) - 1:
            for proc, o, pid, pt, wh in pending:
                _, err = proc.communicate(timeout=180)
                assert proc.returncode == -signal.SIGKILL, (pt, wh, proc.returncode, err[-2000:])
                outcomes.append((pt, wh, check(o, pid)))
            pending = []
    return outcomes


def test_store_build_killed_at_each_critical_point(tmp_path, previous_store):
    prev_path, prev_id = previous_store

    def make_prev(out):
        shutil.copytree(prev_path, out)
        return prev_id

    cases = [(p, k, w, True) for p, k, w in STORE_POINTS] + [("fsync_dir", 1, "after", False)]
    outcomes = _run_points(cases, tmp_path, make_prev, NEW_STORE, _check_store_after_kill)
    KILLS["store build (kill points)"] += len(outcomes)
    # before the swap the previous store is intact; after the exchange the new one is complete; the fallback's
    # window between its two renames leaves none at the path (the previous one sits in a sibling that never opens)
    assert [o for _, _, o in outcomes] == ["previous", "previous", "previous", "new", "none", "none"]
    # the next build cleans every leftover of the dead builds
    for j in range(len(cases)):
        out = tmp_path / f"case{j}" / "out"
        clean_stale_siblings(out)
        assert _siblings(out) == []
        assert sorted(p.name for p in out.parent.iterdir()) in ([], ["out"])


def test_trace_gen_killed_at_each_critical_point(tmp_path, previous_trace):
    prev_path, prev_id = previous_trace

    def make_prev(out):
        shutil.copy(prev_path, out)
        return prev_id

    cases = [(p, k, w, True) for p, k, w in TRACE_POINTS] + [("append", 5, "after", False)]
    outcomes = _run_points(cases, tmp_path, make_prev, NEW_TRACE, _check_trace_after_kill)
    KILLS["trace gen (kill points)"] += len(outcomes)
    assert [o for _, _, o in outcomes] == ["previous", "previous", "new", "none"]


@pytest.mark.parametrize("what", ["store", "trace"])
def test_killed_at_random_moments(tmp_path, previous_store, previous_trace, what):
    """Seeded random delays after the child is ready; several seeds; then the next real build succeeds."""
    prev_path, prev_id = previous_store if what == "store" else previous_trace
    check = _check_store_after_kill if what == "store" else _check_trace_after_kill
    seen = Counter()
    for seed in range(3):
        out = tmp_path / f"s{seed}" / ("out" if what == "store" else "out.h5")
        out.parent.mkdir()
        (shutil.copytree if what == "store" else shutil.copy)(prev_path, out)
        proc = _child("none", 0, "-", [*(NEW_STORE if what == "store" else NEW_TRACE), "-o", str(out)])
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(np.random.default_rng(seed).uniform(0.0, 1.5)))
        proc.kill()
        proc.communicate(timeout=60)
        seen[check(out, prev_id)] += 1
        KILLS[f"{what} (random moment)"] += 1
    assert set(seen) <= {"previous", "new"}  # there was a previous version: it is never lost by a kill


def test_next_build_removes_leftovers_of_dead_builds_only(tmp_path, tiny_spec):
    out = tmp_path / "s"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".s.tmp-{dead.pid}-0123abcd"  # a dead build's directory, with a complete manifest
    build_store(tiny_spec, tmp_path / "complete", StoreBuildConfig(tt_ranks=())).path.rename(stale)
    live = tmp_path / f".s.tmp-{os.getppid()}-89abcdef"  # a concurrent build of a live process
    live.mkdir()
    other = tmp_path / f".x.tmp-{dead.pid}-0123abcd"  # another output's leftover
    other.mkdir()
    with pytest.raises(InputError, match="temporary directory"):
        Store.open(stale)
    assert is_temporary_sibling(stale) and not is_temporary_sibling(out)
    build_store(tiny_spec, out, StoreBuildConfig(tt_ranks=()))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s", live.name, other.name])


def test_build_refuses_to_replace_a_directory_that_is_not_a_store(tmp_path, tiny_spec, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    code, _, err = run_cli(["store", "build", "--model", "tiny", "--tt-ranks", "", "-o", str(d)], capsys)
    assert code == 2 and one_line_error(err) and "not a store" in err and str(d) in err
    assert (d / "precious.txt").read_text() == "keep me"
    code, _, err = run_cli(["trace", "gen", "--model", "tiny", "--batches", "1", "-o", str(d)], capsys)
    assert code == 2 and one_line_error(err) and "directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


# --- disk full ------------------------------------------------------------------------------------

def test_disk_full_while_writing_raw_rows(tmp_path, tiny_spec, previous_store, monkeypatch, capsys):
    """ENOSPC after N bytes (the raw rows' pwrite calls): clear error, temporaries removed, previous intact."""
    import threading

    import emulator.store.build_parallel as build_mod

    prev_path, prev_id = previous_store
    out = tmp_path / "s"
    shutil.copytree(prev_path, out)
    real_pwrite = os.pwrite

    class Disk:  # the room left on the disk, shared by the build's writer threads
        def __init__(self, room):
            self.room, self.lock = room, threading.Lock()

        def pwrite(self, fd, data, offset):
            with self.lock:
                if len(data) > self.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.room -= len(data)
            return real_pwrite(fd, data, offset)

    for room in (0, 5000, 60000):
        fake_os = type("FakeOS", (), {"__getattr__": lambda self, name: getattr(os, name)})()
        fake_os.pwrite = Disk(room).pwrite
        monkeypatch.setattr(build_mod, "os", fake_os)  # the raw rows' writes fill the disk; nothing else
        with pytest.raises(InputError, match="disk full") as ei:
            build_store(tiny_spec, out, StoreBuildConfig(tt_ranks=(4,), weights_seed=2))
        assert str(out) in str(ei.value) and ".tmp-" not in str(ei.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
        assert Store.open(out).store_id == prev_id and verify_store(out).ok
        KILLS["disk full (ENOSPC, patched write)"] += 1
    code, _, err = run_cli(["store", "build", "--model", "tiny", "-o", str(out)], capsys)
    assert code == 2 and one_line_error(err) and "disk full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


@pytest.mark.parametrize("what,limit", [("store", 64 << 10), ("store", 150 << 10), ("trace", 128 << 10)])
def test_file_size_limit_in_child_is_disk_full(tmp_path, previous_store, previous_trace, what, limit):
    """RLIMIT_FSIZE makes the kernel refuse writes (EFBIG) in raw files, HDF5 (TT cores, traces)."""
    import resource

    prev_path, prev_id = previous_store if what == "store" else previous_trace
    out = tmp_path / ("s" if what == "store" else "t.h5")
    (shutil.copytree if what == "store" else shutil.copy)(prev_path, out)

    def limit_fsize():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    argv = (NEW_STORE if what == "store" else NEW_TRACE) + ["-o", str(out)]
    proc = _child("none", 0, "-", argv, preexec_fn=limit_fsize)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 2 and one_line_error(err) and "disk full" in err and str(out) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    if what == "store":
        assert Store.open(out).store_id == prev_id and verify_store(out).ok
    else:
        with TraceReader(out) as r:
            assert r.trace_id == prev_id
    KILLS[f"disk full (RLIMIT_FSIZE, {what})"] += 1


@pytest.mark.parametrize("what", ["store", "trace"])
def test_real_enospc_on_a_small_tmpfs(tmp_path, previous_store, previous_trace, what):
    """A 1 MiB tmpfs holding the previous output; the new store needs ~2 MiB, the new trace ~1.4 MiB."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        prev_path, prev_id = previous_store if what == "store" else previous_trace
        out = mnt / ("s" if what == "store" else "t.h5")
        (shutil.copytree if what == "store" else shutil.copy)(prev_path, out)
        if what == "store":
            argv = [("6" if a == "3" else a) for a in NEW_STORE]  # --scale 6
        else:
            argv = [("400" if a == "100" else a) for a in NEW_TRACE]  # --batches 400
        proc = _child("none", 0, "-", argv + ["-o", str(out)])
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 2 and one_line_error(err) and "disk full" in err, err
        assert sorted(p.name for p in mnt.iterdir()) == [out.name]
        if what == "store":
            assert Store.open(out).store_id == prev_id and verify_store(out).ok
        else:
            with TraceReader(out) as tr:
                assert tr.trace_id == prev_id
        KILLS[f"disk full (real ENOSPC on tmpfs, {what})"] += 1
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.fixture(scope="module", autouse=True)
def _report_kills():
    yield
    print(f"\ncrash-safety runs by kind: {dict(KILLS)}")

"""Bad input to every command: exit 2, one stderr line naming the file and the problem, no traceback, nothing
written. Then property tests (hypothesis) that mutate valid traces, manifests and plans: either a clear
InputError, or a replay whose every bag equals the NumPy reference.

Each case runs the real command line in-process (``bench.cli.main``) in a fresh directory holding copies of
valid artefacts (store, trace, spec, plan, solved plan with its remap, calibration, a run); the case's
``setup`` damages some of them first. Totals of the cases and examples tried are printed at the end
(``pytest -s``) for the closing note.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.plan import Plan, uniform_plan
from emulator.kernels.reference import pool_reference
from emulator.replay.engine import BatchFailure, Replayer, ReplayConfig
from emulator.store.store import Store, manifest_id
from plans.planner import load_plan
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader
from tests import naive

TRIED: Counter = Counter()
KIT_FILES = ("store", "trace.h5", "spec.json", "plan.json", "calib.json", "solved.json", "solved.remap.h5", "run")


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nbad inputs tried by test_bad_inputs.py: {dict(TRIED)}")


@pytest.fixture(scope="module")
def kit(tmp_path_factory, tiny_store, tiny_trace, tiny_spec):
    """Valid artefacts of every kind the commands read."""
    from bench.cli import main
    from bench.results import write_run
    from plans.calibration import default_calibration

    d = tmp_path_factory.mktemp("kit")
    shutil.copytree(tiny_store, d / "store")
    shutil.copy(tiny_trace, d / "trace.h5")
    (d / "spec.json").write_text(tiny_spec.to_json())
    s = Store.open(d / "store")
    uniform_plan(s.store_id, {t.name: t.rows for t in s.tables}, "all-ssd").save(d / "plan.json")
    default_calibration().save(d / "calib.json")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["plan", "solve", "--store", str(d / "store"), "--trace", str(d / "trace.h5"), "--dram-budget",
                     "64KiB", "--planner", "greedy", "--calibration", str(d / "calib.json"),
                     "-o", str(d / "solved.json")]) == 0
    run = write_run("replay", ["screc", "replay"], {"policy": "all-ssd", "qps": 1.0, "batches": 1},
                    runs_dir=d / "runs")
    run.rename(d / "run")
    (d / "runs").rmdir()
    return d


def run_case(kit: Path, tmp: Path, argv: list[str], setup=None) -> tuple[object, str, list[str]]:
    """Run ``screc argv`` ('@' = the case directory) on fresh copies; returns (exit code, stderr, new files)."""
    from bench.cli import main

    for name in KIT_FILES:
        src = kit / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    if setup is not None:
        setup(tmp)
    before = {p for p in tmp.rglob("*")}
    err = io.StringIO()
    with contextlib.chdir(tmp), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([a.replace("@", f"{tmp}/") for a in argv])
        except SystemExit as e:  # argparse
            code = e.code
        except BaseException as e:  # noqa: BLE001 - the point is that nothing escapes
            code = f"escaped {e.__class__.__name__}: {e}"
    new = sorted(str(p.relative_to(tmp)) for p in set(tmp.rglob("*")) - before)
    return code, err.getvalue(), new


def one_error_line(err: str) -> str | None:
    """The single ``screc ... error:`` line (``--no-live`` status lines may precede it), or None."""
    lines = [l for l in err.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("screc")]
    if "Traceback" in err or len(errors) != 1 or not lines or lines[-1] != errors[0] or "error:" not in errors[0]:
        return None
    return errors[0]


# --- damage ---------------------------------------------------------------------------------------

def write(rel, data):
    def f(d):
        p = d / rel
        if p.is_dir():
            shutil.rmtree(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return f


def truncate(rel, frac=0.5):
    def f(d):
        p = d / rel
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * frac)])
    return f


def flip(rel, at, n=1):
    """Invert ``n`` bytes at fraction ``at`` of the file."""
    def f(d):
        p = d / rel
        b = bytearray(p.read_bytes())
        k = int(len(b) * at)
        for i in range(k, min(len(b), k + n)):
            b[i] ^= 0xFF
        p.write_bytes(bytes(b))
    return f


def remove(rel):
    def f(d):
        p = d / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return f


def jedit(rel, fn, fix_store_id=False):
    def f(d):
        p = d / rel
        j = json.loads(p.read_text())
        fn(j)
        if fix_store_id:
            j["store_id"] = manifest_id(j)
        p.write_text(json.dumps(j))
    return f


def h5edit(rel, fn):
    def f(d):
        with h5py.File(d / rel, "r+") as h:
            fn(h)
    return f


def both(*fs):
    def f(d):
        for g in fs:
            g(d)
    return f


def other_trace(preset, scale=1.0):
    def f(d):
        from tracegen.generate import GeneratorParams, generate_trace
        from tracegen.presets import get_preset

        (d / "trace.h5").unlink()
        generate_trace(get_preset(preset, scale=scale), GeneratorParams(seed=0, num_batches=1), d / "trace.h5")
    return f


def mset(path, value):
    """Set a nested field of a JSON document: ``mset(["tables", 0, "rows"], -5)``."""
    def fn(j):
        for k in path[:-1]:
            j = j[k]
        j[path[-1]] = value
    return fn


M = "store/manifest.json"
T, S, P = "@trace.h5", "@store", "@plan.json"
REPLAY = ["replay", "--no-live", "--engine", "pread", "--json", "@out.json", "--store", S, "--trace", T]
SOLVE = ["plan", "solve", "--store", S, "--trace", T, "--planner", "greedy", "--calibration", "@calib.json",
         "-o", "@p.json"]


def _file_cases(kind: str, argv, rel: str, wrong_kind: str, name: str):
    """missing / empty / truncated / corrupted / wrong kind of the file ``rel`` for a command."""
    return [
        (f"{kind}-missing", [a.replace(f"@{rel}", "@nope-" + rel.replace("/", "-")) for a in argv], None, "nope"),
        (f"{kind}-empty", argv, write(rel, b""), name),
        (f"{kind}-truncated", argv, truncate(rel), name),
        (f"{kind}-corrupt", argv, flip(rel, 0.3, 64), name),
        (f"{kind}-wrong-kind", [a.replace(f"@{rel}", f"@{wrong_kind}") for a in argv], None, wrong_kind),
    ]


CASES = [
    # ---- trace stats / trace gen ----
    *_file_cases("stats-trace", ["trace", "stats", T], "trace.h5", "plan.json", "trace.h5"),
    ("stats-version", ["trace", "stats", T], h5edit("trace.h5", lambda h: h.attrs.__setitem__("format_version", 9)),
     "version 9"),
    ("stats-attr-crc", ["trace", "stats", T], h5edit("trace.h5", lambda h: h.attrs.__setitem__("seed", 12345)),
     "checksum"),
    ("stats-index-range", ["trace", "stats", T], h5edit("trace.h5", lambda h: h["indices"].__setitem__(0, 10**6)),
     "out of range"),
    ("stats-index-negative", ["trace", "stats", T], h5edit("trace.h5", lambda h: h["indices"].__setitem__(0, -5)),
     "out of range"),
    ("stats-offsets-negative", ["trace", "stats", T], h5edit("trace.h5", lambda h: h["offsets"].__setitem__(3, -1)),
     "monotonic"),
    ("stats-offsets-nonmonotonic", ["trace", "stats", T],
     h5edit("trace.h5", lambda h: h["offsets"].__setitem__(5, 10**6)), "monotonic"),
    ("stats-batch-ptr", ["trace", "stats", T], h5edit("trace.h5", lambda h: h["batch_ptr"].__setitem__(1, -1)),
     "batch_ptr"),
    ("stats-batches-0", ["trace", "stats", T, "--batches", "0"], None, "--batches"),
    *_file_cases("gen-spec", ["trace", "gen", "--model", "@spec.json", "--batches", "2", "-o", "@o.h5"],
                 "spec.json", "trace.h5", "spec.json"),
    ("gen-spec-rows-negative", ["trace", "gen", "--model", "@spec.json", "--batches", "1", "-o", "@o.h5"],
     jedit("spec.json", mset(["tables", 0, "rows"], -1)), "rows"),
    ("gen-spec-rows-fraction", ["trace", "gen", "--model", "@spec.json", "--batches", "1", "-o", "@o.h5"],
     jedit("spec.json", mset(["tables", 0, "rows"], 1.5)), "whole number"),
    ("gen-spec-dtype", ["trace", "gen", "--model", "@spec.json", "--batches", "1", "-o", "@o.h5"],
     jedit("spec.json", mset(["tables", 0, "dtype"], "fp8")), "fp8"),
    ("gen-spec-pooling", ["trace", "gen", "--model", "@spec.json", "--batches", "1", "-o", "@o.h5"],
     jedit("spec.json", mset(["tables", 0, "pooling"], {"kind": "uniform", "min": 5, "max": 2})), "pooling"),
    ("gen-batches-0", ["trace", "gen", "--model", "tiny", "--batches", "0", "-o", "@o.h5"], None, "--batches"),
    ("gen-scale-nan", ["trace", "gen", "--model", "tiny", "--batches", "1", "--scale", "nan", "-o", "@o.h5"], None,
     "scale"),
    ("gen-out-is-dir", ["trace", "gen", "--model", "tiny", "--batches", "1", "-o", "@store"], None, "directory"),
    ("gen-out-under-file", ["trace", "gen", "--model", "tiny", "--batches", "1", "-o", "@plan.json/o.h5"], None,
     "plan.json"),
    # ---- store build / verify / info ----
    ("build-ranks", ["store", "build", "--model", "tiny", "--tt-ranks", "a,b", "-o", "@o"], None, "--tt-ranks"),
    ("build-seed", ["store", "build", "--model", "tiny", "--seed", "-1", "-o", "@o"], None, "seed"),
    ("build-import-missing", ["store", "build", "--model", "tiny", "--import", "t0=@w.npy", "-o", "@o"], None, "w.npy"),
    ("build-import-dims", ["store", "build", "--model", "tiny", "--import", "t0=@w.npy", "-o", "@o"],
     lambda d: np.save(d / "w.npy", np.zeros((500, 15), np.float32)), "(500, 15)"),
    ("build-import-dtype", ["store", "build", "--model", "tiny", "--import", "t0=@w.npy", "-o", "@o"],
     lambda d: np.save(d / "w.npy", np.zeros((500, 16), np.complex64)), "complex64"),
    ("build-import-nan", ["store", "build", "--model", "tiny", "--import", "t0=@w.npy", "-o", "@o"],
     lambda d: np.save(d / "w.npy", np.full((500, 16), np.nan, np.float32)), "not finite"),
    ("build-out-not-store", ["store", "build", "--model", "tiny", "-o", "@run"], None, "not a store"),
    *[c for cmd in ("verify", "info") for c in [
        (f"{cmd}-missing", ["store", cmd, "@nope"], None, "nope"),
        (f"{cmd}-no-manifest", ["store", cmd, S], remove(M), "manifest"),
        (f"{cmd}-manifest-empty", ["store", cmd, S], write(M, ""), "manifest.json"),
        (f"{cmd}-manifest-truncated", ["store", cmd, S], truncate(M), "manifest.json"),
        (f"{cmd}-manifest-corrupt", ["store", cmd, S], flip(M, 0.5, 2), "manifest.json"),
        (f"{cmd}-manifest-wrong-kind", ["store", cmd, S], lambda d: shutil.copy(d / "plan.json", d / M),
         "manifest.json"),
        (f"{cmd}-manifest-version", ["store", cmd, S], jedit(M, mset(["format_version"], 2), True), "version 2"),
        (f"{cmd}-manifest-edited", ["store", cmd, S], jedit(M, mset(["tables", 0, "rows"], 7)), "modified"),
        (f"{cmd}-manifest-rows", ["store", cmd, S], jedit(M, mset(["tables", 0, "rows"], -5), True), "tables[0]"),
        (f"{cmd}-manifest-dtype", ["store", cmd, S], jedit(M, mset(["tables", 0, "dtype"], "fp64"), True),
         "tables[0]"),
        (f"{cmd}-manifest-escape", ["store", cmd, S],
         jedit(M, mset(["tables", 0, "raw", "file"], "../../x.bin"), True), "raw"),
        (f"{cmd}-manifest-crcs", ["store", cmd, S], jedit(M, mset(["tables", 1, "raw", "crc32"], []), True),
         "crc32"),
        (f"{cmd}-manifest-page", ["store", cmd, S], jedit(M, mset(["page_bytes"], 0), True), "page_bytes"),
        (f"{cmd}-raw-truncated", ["store", cmd, S], truncate("store/raw/t0.bin"), "t0"),
        (f"{cmd}-raw-missing", ["store", cmd, S], remove("store/raw/t1.bin"), "t1"),
        (f"{cmd}-tt-missing", ["store", cmd, S], remove("store/tt.h5"), "tt.h5"),
        (f"{cmd}-wrong-kind", ["store", cmd, T], None, "trace.h5"),
    ]],
    ("verify-raw-flipped", ["store", "verify", S], flip("store/raw/t2.bin", 0.5), "table t2"),
    ("verify-tt-flipped", ["store", "verify", S], flip("store/tt.h5", 0.5), "tt.h5"),
    # ---- replay ----
    *_file_cases("replay-trace", REPLAY, "trace.h5", "calib.json", "trace.h5"),
    ("replay-trace-index", REPLAY, h5edit("trace.h5", lambda h: h["indices"].__setitem__(3, 10**6)), "out of range"),
    ("replay-trace-offsets", REPLAY, h5edit("trace.h5", lambda h: h["offsets"].__setitem__(3, -1)), "monotonic"),
    ("replay-trace-bigger", REPLAY, other_trace("tiny", 3.0), "rows"),
    ("replay-trace-other-model", REPLAY, other_trace("criteo-kaggle", 1e-4), "tables"),
    ("replay-store-missing", [a.replace(S, "@nope") for a in REPLAY], None, "nope"),
    ("replay-store-manifest", REPLAY, truncate(M), "manifest.json"),
    ("replay-tt-flipped", [*REPLAY, "--policy", "all-tt"], flip("store/tt.h5", 0.5, 8), "checksum"),
    *_file_cases("replay-plan", [*REPLAY, "--plan", P], "plan.json", "calib.json", "plan.json"),
    ("replay-plan-version", [*REPLAY, "--plan", P], jedit("plan.json", mset(["version"], 7)), "version 7"),
    ("replay-plan-other-store", [*REPLAY, "--plan", P], jedit("plan.json", mset(["store_id"], "0" * 32)),
     "made for store"),
    ("replay-plan-hot-negative", [*REPLAY, "--plan", P], jedit("plan.json", mset(["tables", 0, "hot_rows"], -1)),
     "hot_rows"),
    ("replay-plan-hot-fraction", [*REPLAY, "--plan", P], jedit("plan.json", mset(["tables", 0, "hot_rows"], 2.5)),
     "hot_rows"),
    ("replay-plan-tier", [*REPLAY, "--plan", P], jedit("plan.json", mset(["tables", 0, "cold_tier"], "tape")),
     "tape"),
    ("replay-plan-rank", [*REPLAY, "--plan", P], both(jedit("plan.json", mset(["tables", 0, "cold_tier"], "ssd_tt")),
                                                      jedit("plan.json", mset(["tables", 0, "tt_rank"], 99))), "99"),
    ("replay-plan-device", [*REPLAY, "--plan", P], jedit("plan.json", mset(["tables", 0, "device"], 0.5)), "device"),
    ("replay-plan-twice", [*REPLAY, "--plan", P], jedit("plan.json", lambda j: j["tables"].append(j["tables"][0])),
     "twice"),
    ("replay-plan-missing-table", [*REPLAY, "--plan", P], jedit("plan.json", lambda j: j["tables"].pop()), "t3"),
    ("replay-plan-budget", [*REPLAY, "--plan", P], jedit("plan.json", mset(["dram_budget_bytes"], "x")),
     "dram_budget_bytes"),
    ("replay-remap-missing", [*REPLAY, "--plan", "@solved.json"], remove("solved.remap.h5"), "solved.remap.h5"),
    ("replay-remap-corrupt", [*REPLAY, "--plan", "@solved.json"], write("solved.remap.h5", "x"), "solved.remap.h5"),
    ("replay-remap-range", [*REPLAY, "--plan", "@solved.json"],
     h5edit("solved.remap.h5", lambda h: [h[n].__setitem__(0, 10**6) for n in h]), "outside"),
    ("replay-remap-negative", [*REPLAY, "--plan", "@solved.json"],
     h5edit("solved.remap.h5", lambda h: [h[n].__setitem__(0, -1) for n in h]), "outside"),
    ("replay-remap-duplicate", [*REPLAY, "--plan", "@solved.json"],
     h5edit("solved.remap.h5", lambda h: [h[n].__setitem__(1, h[n][0]) for n in h]), "twice"),
    ("replay-verify-raw-flipped", [*REPLAY, "--verify"], flip("store/raw/t2.bin", 0.5), "checksum"),
    ("replay-qd", [*REPLAY, "--qd", "0"], None, "--qd"),
    ("replay-json-under-file", [*REPLAY[:-4], "--json", "@plan.json/r.json", "--store", S, "--trace", T], None,
     "plan.json"),
    # ---- plan solve / show ----
    ("solve-budget-5XB", [*SOLVE, "--dram-budget", "5XB"], None, "5XB"),
    ("solve-device-dram", [*SOLVE, "--dram-budget", "1KB", "--device-dram", "3QB"], None, "3QB"),
    ("solve-devices", [*SOLVE, "--dram-budget", "1KB", "--devices", "0"], None, "--devices"),
    ("solve-accuracy-nan", [*SOLVE, "--dram-budget", "1KB", "--accuracy-budget", "nan"], None, "--accuracy-budget"),
    ("solve-time-limit", [*SOLVE, "--dram-budget", "1KB", "--time-limit", "-1"], None, "--time-limit"),
    *_file_cases("solve-calibration", [*SOLVE, "--dram-budget", "1KB"], "calib.json", "plan.json", "calib.json"),
    ("solve-calibration-version", [*SOLVE, "--dram-budget", "1KB"], jedit("calib.json", mset(["version"], 99)),
     "version 99"),
    *[(f"solve-calibration-{k}", [*SOLVE, "--dram-budget", "1KB"], jedit("calib.json", mset([k], v)), "calib.json")
      for k, v in (("io_iops_by_qd", []), ("io_iops_by_qd", {"1": -5}), ("dram_lookups_per_s", 1e400),
                   ("io_latency_s_by_qd", {"1": -1}), ("tt_rows_per_s_by_rank", {"4": 0}), ("machine", "x"),
                   ("io_read_bytes", 0))],
    ("solve-trace-other-store", [*SOLVE, "--dram-budget", "1KB"], other_trace("tiny", 3.0), "rows"),
    ("solve-out-is-dir", [*SOLVE[:-2], "-o", "@store", "--dram-budget", "1KB"], None, "directory"),
    *_file_cases("show-plan", ["plan", "show", P], "plan.json", "calib.json", "plan.json"),
    ("show-other-store", ["plan", "show", P, "--store", S], jedit("plan.json", mset(["store_id"], "ab" * 16)),
     "made for store"),
    ("show-predicted", ["plan", "show", "@solved.json"], jedit("solved.json", mset(["predicted", "tables"], 5)),
     "predicted"),
    # ---- calibrate / accuracy / report ----
    ("calibrate-seconds-nan", ["calibrate", "--store", S, "--seconds", "nan", "-o", "@c.json"], None, "--seconds"),
    ("calibrate-store-missing", ["calibrate", "--store", "@nope", "-o", "@c.json"], None, "nope"),
    ("calibrate-dir-missing", ["calibrate", "--dir", "@nope", "--seconds", "0.1", "-o", "@c.json"], None, "nope"),
    ("calibrate-out-under-file", ["calibrate", "--store", S, "-o", "@plan.json/c.json"], None, "plan.json"),
    ("accuracy-batches", ["accuracy", "--store", S, "--trace", T, "--batches", "0"], None, "--batches"),
    ("accuracy-rank", ["accuracy", "--store", S, "--trace", T, "--tt-rank", "77"], None, "77"),
    ("accuracy-trace", ["accuracy", "--store", S, "--trace", T], truncate("trace.h5"), "trace.h5"),
    ("accuracy-tt-flipped", ["accuracy", "--store", S, "--trace", T], flip("store/tt.h5", 0.5, 8), "checksum"),
    ("accuracy-weights", ["accuracy", "--store", S, "--trace", T, "--dense-weights", "@plan.json"], None, "plan.json"),
    ("accuracy-json-under-file", ["accuracy", "--store", S, "--trace", T, "--json", "@plan.json/a.json"], None,
     "plan.json"),
    ("report-missing", ["report", "@nope"], None, "nope"),
    ("report-empty", ["report", "@run"], write("run/result.json", ""), "result.json"),
    ("report-truncated", ["report", "@run"], truncate("run/result.json"), "result.json"),
    ("report-wrong-kind", ["report", "@plan.json"], None, "plan.json"),
    ("report-version", ["report", "@run"], jedit("run/result.json", mset(["schema_version"], 9)), "version 9"),
    # ---- bench (cheap failures only) ----
    ("bench-io-size", ["bench", "io", "--file", "@f.bin", "--size", "5XB", "--seconds", "0.1"], None, "5XB"),
    ("bench-io-qd", ["bench", "io", "--file", "@f.bin", "--size", "1MiB", "--qd", "0", "--seconds", "0.1"], None,
     "--qd"),
    ("bench-io-file-is-dir", ["bench", "io", "--file", "@store", "--size", "1MiB", "--seconds", "0.1"], None,
     "store"),
    ("bench-dram-rows", ["bench", "dram", "--rows", "0", "--seconds", "0.1"], None, "--rows"),
    ("bench-dram-seconds", ["bench", "dram", "--seconds", "nan"], None, "--seconds"),
    ("bench-tt-rows", ["bench", "tt", "--rows", "0x10", "--seconds", "0.1"], None, "--rows"),
    ("bench-tt-ranks", ["bench", "tt", "--ranks", "x", "--seconds", "0.1"], None, "--ranks"),
    # an unwritable --json FILE or --out-dir fails before anything is measured or created (bench io's test file too)
    *[(f"bench-{cmd}-{flag.strip('-')}-under-file", ["bench", cmd, *extra, "--seconds", "0.1", flag, f"@plan.json/{out}"],
       None, "plan.json")
      for cmd, extra in (("io", ["--file", "@f.bin", "--size", "1MiB"]), ("dram", []), ("tt", []))
      for flag, out in (("--json", "r.json"), ("--out-dir", "runs"))],
    ("bench-predict-out-under-file", ["bench", "predict", "--store", S, "--trace", T, "--json", "@plan.json/r.json"],
     None, "plan.json"),
    ("bench-predict-planner", ["bench", "predict", "--store", S, "--trace", T, "--planners", "mip,nope"], None,
     "nope"),
]


@pytest.mark.parametrize("name,argv,setup,expect", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(kit, tmp_path, name, argv, setup, expect):
    code, err, new = run_case(kit, tmp_path, argv, setup)
    line = one_error_line(err)
    assert code == 2, (code, err[-3000:])
    assert line is not None, err[-3000:]
    assert "unrecognized arguments" not in line, line  # a stale flag would pass for the wrong reason
    assert expect in line, (expect, line)
    assert new == [], f"left behind: {new}"
    TRIED[name.split("-")[0]] += 1


# --- property tests: mutated traces, manifests and plans ------------------------------------------

HYP = settings(max_examples=120, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class WrongOutput(AssertionError):
    """A replay served a bag that differs from the NumPy reference, or skipped a batch: never acceptable."""


def _hot_mask(plan: Plan, name: str, ids: np.ndarray, hot_rows: int) -> np.ndarray:
    """Which lookups the plan serves from DRAM, read straight from the remap file (plans/remap.py's format:
    ``dense`` = the new id of every old row, ``prefix`` = the old ids of the hottest rows, in order)."""
    if not plan.remap:
        return ids < hot_rows
    with h5py.File(plan.remap, "r") as f:
        if name not in f:
            return ids < hot_rows
        kind, data = str(f[name].attrs["kind"]), f[name][:].astype(np.int64)
    return data[ids] < hot_rows if kind == "dense" else np.isin(ids, data[:hot_rows])


def _expected(truth: Store, plan: Plan, t: int, ids: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, bool]:
    """Table ``t``'s reference bags from the unmutated store, and whether they must match exactly.

    Raw and DRAM rows are the stored rows (bit-exact); an ``ssd_tt`` table's cold rows are rebuilt by the
    NumPy TT reference from the store's cores of the plan's rank (compared with a float tolerance)."""
    from emulator.tt.decomposition import tt_rebuild_rows_reference

    from emulator.replay.offload import host_pooled

    rows = truth.read_rows(t, ids).astype(np.float32)
    pl = plan.placement(truth.tables[t].name)
    hot = _hot_mask(plan, pl.table, ids, pl.hot_rows)
    if pl.cold_tier != "ssd_tt":
        # devices pool their rows and the host adds their partials to its own: the reference in that grouping
        return naive.pool_split_ref(rows, off, np.ones(ids.size, bool) if host_pooled(plan.planner) else hot), True
    cold = ~hot
    if cold.any():
        rows[cold] = tt_rebuild_rows_reference(truth.load_tt(t, pl.tt_rank), ids[cold])
    return pool_reference(rows, off), not cold.any()


def _replay_equals_reference(store: Store, plan: Plan, trace: Path, truth: Store) -> int:
    """Replay ``trace`` (no ``--verify``: a wrong bag must not become an "error") and compare every bag of every
    batch with the reference built from ``truth`` (the unmutated store): raw and DRAM bags bit for bit, TT
    bags within 1e-4 relative. Raises :class:`WrongOutput` on any difference or a missing batch."""
    outs = []
    with Replayer(store, plan, ReplayConfig(engine="pread", queue_depth=4)) as rep, TraceReader(trace) as r:
        rep.run(r, on_batch=lambda o: outs.append((o.index, [x.copy() for x in o.pooled])))
        if [i for i, _ in outs] != list(range(r.num_batches)):
            raise WrongOutput(f"served batches {[i for i, _ in outs]} of {r.num_batches}")
        for index, pooled in outs:
            b = r.batch(index)
            for t in range(len(truth.tables)):
                ids, off = b.table(t)
                want, exact = _expected(truth, plan, t, ids, off)
                same = np.array_equal(pooled[t], want) if exact else \
                    np.allclose(pooled[t], want, rtol=1e-4, atol=1e-5 * (np.abs(want).max(initial=0) + 1e-30))
                if not same:
                    raise WrongOutput(f"batch {index}, table {truth.tables[t].name}: pooled bags differ from "
                                      f"the reference (max abs diff {np.abs(pooled[t] - want).max():.3g})")
    return len(outs)


def _outcome(fn, names: tuple[str, ...]) -> str:
    """Run ``fn``: "ok" (it served the reference) or "error": a clean refusal, an InputError of one line that
    names one of ``names`` (the input files). A "verify failed" or failed-batch message is not a clean
    refusal (the input was accepted and served), and :class:`WrongOutput` or anything else fails the test."""
    try:
        fn()
        return "ok"
    except BatchFailure as e:
        raise AssertionError(f"the input was accepted, then a batch failed: {e}") from None
    except InputError as e:
        msg = str(e)
        assert msg and "\n" not in msg, repr(msg)
        assert "verify failed" not in msg, f"wrong output, not a refusal: {msg}"
        assert any(n in msg for n in names), f"the error names none of {names}: {msg}"
        return "error"


def _off_by_one(monkeypatch) -> None:
    """Make every pooled bag of the replay off by one (the pooling kernel adds 1 to its output)."""
    import sys

    import emulator.kernels.pooling as pooling

    real = pooling.pool_sources

    def wrong(*args, **kwargs):
        result = real(*args, **kwargs)
        out = kwargs["out"] if "out" in kwargs else args[8]
        out += 1.0
        return result

    for name, module in list(sys.modules.items()):  # wherever the engine took the kernel from
        if name.startswith("emulator") and getattr(module, "pool_sources", None) is real:
            monkeypatch.setattr(module, "pool_sources", wrong)


def test_wrong_output_fails_the_property_checks(kit, monkeypatch):
    """A replay whose every bag is off by one must fail the checks above, not pass as an accepted error."""
    store = Store.open(kit / "store")
    plan = uniform_plan(store.store_id, {t.name: t.rows for t in store.tables}, "all-ssd")
    names = (str(kit),)
    assert _outcome(lambda: _replay_equals_reference(store, plan, kit / "trace.h5", store), names) == "ok"
    _off_by_one(monkeypatch)
    with pytest.raises(WrongOutput, match="differ"):
        _replay_equals_reference(store, plan, kit / "trace.h5", store)
    with pytest.raises(WrongOutput):
        _outcome(lambda: _replay_equals_reference(store, plan, kit / "trace.h5", store), names)

    def with_verify():  # the old check: --verify turned the wrong output into a one-line InputError
        with Replayer(store, plan, ReplayConfig(engine="pread", queue_depth=4, verify=True)) as rep, \
                TraceReader(kit / "trace.h5") as r:
            rep.run(r)

    with pytest.raises(InputError, match="verify failed"):
        with_verify()
    with pytest.raises(AssertionError, match="not a refusal"):
        _outcome(with_verify, names)


JSON_VALUES = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([0, 1, -1, 2**63, 10**9]),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.none(),
                        st.booleans(), st.lists(st.integers(-3, 3), max_size=3), st.just({}))


def _paths(doc, prefix=()):
    """Every (path, value) of a JSON document, leaves and containers."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, data, skip=(), avoid=()):
    paths = [p for p, _ in _paths(doc) if p and p[0] not in skip and not set(p) & set(avoid)]
    path = data.draw(st.sampled_from(paths), label="path")
    op = data.draw(st.sampled_from(["set", "delete"] if isinstance(path[-1], str) else ["set"]), label="op")
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES, label="value")
    return path, op


@HYP
@given(data=st.data())
def test_mutated_manifest_is_refused_or_serves_the_reference(kit, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("m")
    shutil.copytree(kit / "store", d / "store")
    m = json.loads((d / M).read_text())
    path, op = _mutate(m, data, skip=("store_id",))
    refit = data.draw(st.booleans(), label="recompute store_id")
    if refit:
        m["store_id"] = manifest_id(m)
    (d / M).write_text(json.dumps(m))
    truth = Store.open(kit / "store")

    def go():
        store = Store.open(d / "store")
        plan = uniform_plan(store.store_id, {t.name: t.rows for t in store.tables}, "all-ssd")
        _replay_equals_reference(store, plan, kit / "trace.h5", truth)

    outcome = _outcome(go, (str(d / "store"), str(kit / "trace.h5")))
    TRIED[f"manifest mutation ({outcome})"] += 1
    if not refit:
        assert outcome == "error"  # any edit without a matching store_id is refused


# Fields of a plan whose every change must be refused: the plan's identity and the table names.
_PLAN_IDENTITY = (("format",), ("version",), ("store_id",))


@HYP
@given(data=st.data())
def test_mutated_plan_is_refused_or_serves_the_reference(kit, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("p")
    which = data.draw(st.sampled_from(["plan.json", "solved.json"]), label="plan")
    shutil.copy(kit / which, d / which)
    shutil.copy(kit / "solved.remap.h5", d / "solved.remap.h5")
    doc = json.loads((kit / which).read_text())
    before = json.dumps(doc, sort_keys=True)
    path, op = _mutate(doc, data, skip=("predicted", "solver"))  # free-form, reported only
    changed = json.dumps(doc, sort_keys=True) != before
    (d / which).write_text(json.dumps(doc))
    store = Store.open(kit / "store")

    def go():
        plan = load_plan(d / which, store)  # what replay --plan does: identity, tables, rows and ranks checked
        _replay_equals_reference(store, plan, kit / "trace.h5", store)

    outcome = _outcome(go, (str(d / which),))
    TRIED[f"plan mutation ({outcome})"] += 1
    if changed and (path in _PLAN_IDENTITY or (len(path) == 3 and path[0] == "tables" and path[2] == "table")):
        assert outcome == "error", (path, op)
    if changed and op == "set" and len(path) == 3 and path[0] == "tables" and path[2] in ("hot_rows", "lru_rows"):
        value, rows = doc["tables"][path[1]][path[2]], {t.name: t.rows for t in store.tables}
        if isinstance(value, int) and not isinstance(value, bool) and value > rows[doc["tables"][path[1]]["table"]]:
            assert outcome == "error", (path, value)  # more hot (or cached) rows than the table has
    if not changed:
        assert outcome == "ok", (path, op)  # setting a field to its own value changes nothing


def _trace_edits():
    ints = st.integers(-2**33, 2**33) | st.sampled_from([0, 1, -1, 499, 500, 1999, 2000])
    return st.one_of(
        st.tuples(st.just("indices"), st.integers(0, 10**6), ints),
        st.tuples(st.just("offsets"), st.integers(0, 10**6), ints),
        st.tuples(st.just("batch_ptr"), st.integers(0, 3), ints),
        st.tuples(st.just("attr"), st.sampled_from(["batch_size", "num_tables", "num_batches", "num_lookups",
                                                     "format_version", "seed", "spec", "trace_id", "format"]),
                  ints | st.text(max_size=8)),
        st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    )


@HYP
@given(edit=_trace_edits(), refit=st.booleans())
def test_mutated_trace_is_refused_or_serves_the_reference(kit, tmp_path_factory, edit, refit):
    """Datasets edited through HDF5 (so their chunk checksums stay valid), attributes edited with or without
    a matching ``attrs_crc32``, or one raw byte flipped."""
    from tracegen.trace_io import ATTRS_CRC, attrs_crc32

    d = tmp_path_factory.mktemp("t")
    trace = d / "trace.h5"
    shutil.copy(kit / "trace.h5", trace)
    kind, where, value = edit
    if kind == "flip":  # a corrupted byte: refused, or harmless (the content is unchanged)
        b = bytearray(trace.read_bytes())
        b[int(where * len(b))] ^= value
        trace.write_bytes(bytes(b))
    else:
        with h5py.File(trace, "r+") as h:
            if kind == "attr":
                h.attrs[where] = value
                if refit:
                    h.attrs[ATTRS_CRC] = attrs_crc32(h.attrs)
            else:
                ds = h[kind]
                info = np.iinfo(ds.dtype)
                ds[where % ds.shape[0]] = int(np.clip(value, info.min, info.max))
    store = Store.open(kit / "store")
    plan = uniform_plan(store.store_id, {t.name: t.rows for t in store.tables}, "all-ssd")

    def go():
        _replay_equals_reference(store, plan, trace, store)
        if kind == "flip":
            with TraceReader(trace) as r, TraceReader(kit / "trace.h5") as ref:
                for a, b in zip(r.batches(), ref.batches()):
                    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.offsets, b.offsets)
                assert r.trace_id == ref.trace_id and r.spec == ref.spec

    TRIED[f"trace mutation {kind} ({_outcome(go, (str(trace),))})"] += 1


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), where=st.floats(0, 1, exclude_max=True), bits=st.integers(1, 255))
def test_store_verify_names_any_flipped_byte(kit, tmp_path_factory, which, where, bits):
    """One flipped byte anywhere in any file of a store: `store verify` exits 2 naming the file (and the table
    for a raw file) and a byte range holding the flipped byte; the manifest is protected by its store_id."""
    import re

    d = tmp_path_factory.mktemp("v")
    shutil.copytree(kit / "store", d / "store")
    files = sorted(p for p in (d / "store").rglob("*") if p.is_file())
    f = files[which % len(files)]
    b = bytearray(f.read_bytes())
    pos = int(where * len(b))
    b[pos] ^= bits
    f.write_bytes(bytes(b))
    code, err, new = run_case_in(d, ["store", "verify", str(d / "store")])
    line = one_error_line(err)
    assert code == 2 and line is not None and new == [], err
    rel = str(f.relative_to(d / "store"))
    if f.name == "manifest.json":
        assert "manifest" in line
    else:
        assert rel in line
        if rel.startswith("raw/"):
            assert f"table {f.stem}" in line
        lo, hi = (int(x) for x in re.search(r"bytes (\d+)-(\d+)", line).groups())
        assert lo <= pos < hi
    TRIED["store verify, one flipped byte"] += 1


def run_case_in(d: Path, argv: list[str]) -> tuple[object, str, list[str]]:
    """Run ``screc argv`` in ``d`` as it is (no copies); returns (exit code, stderr, new files)."""
    from bench.cli import main

    before = set(d.rglob("*"))
    err = io.StringIO()
    with contextlib.chdir(d), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue(), sorted(str(p.relative_to(d)) for p in set(d.rglob("*")) - before)

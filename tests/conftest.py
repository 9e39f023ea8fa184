"""Shared fixtures: a tiny model, its trace and its store, built once per session; strict skips for CI."""

from __future__ import annotations

import os
import re

import signal

import numpy as np
import pytest

# A shell without job control starts background commands (`cmd &` in a script, as CI harnesses may) with SIGINT
# ignored, and the children the tests press Ctrl-C on would inherit that: give this process a handler, so every
# child starts with SIGINT at its default (a caught signal is reset by exec; an ignored one is not).
if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
    signal.signal(signal.SIGINT, signal.default_int_handler)

from tracegen.spec import ModelSpec, PoolingSpec, TableSpec


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    from tracegen.presets import get_preset

    return get_preset("tiny")


@pytest.fixture(scope="session")
def tiny_trace(tmp_path_factory, tiny_spec):
    from tracegen.generate import GeneratorParams, generate_trace

    path = tmp_path_factory.mktemp("trace") / "tiny.h5"
    generate_trace(tiny_spec, GeneratorParams(seed=3, num_batches=4), path)
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_spec):
    from emulator.store.store import StoreBuildConfig
    from emulator.store.build import build_store

    path = tmp_path_factory.mktemp("store") / "tiny"
    build_store(tiny_spec, path, StoreBuildConfig(weights_seed=1, tt_ranks=(4, 8)))
    return path


def small_spec(batch_size: int = 4) -> ModelSpec:
    """Two hand-sized tables for format tests."""
    return ModelSpec("small", (TableSpec("a", 10, 4), TableSpec("b", 5, 2, "fp16", PoolingSpec.fixed(2))),
                     batch_size=batch_size)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from bench.cli import main

    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(err: str) -> bool:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    return len(lines) == 1 and lines[0].startswith("screc") and "Traceback" not in err


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# --- strict skips (CI) -----------------------------------------------------------------------------
# With SCREC_STRICT_SKIPS=1 (set by .ci/run) a skip whose reason says the environment lacks something CI must
# provide (a raw io_uring, fio, the tests' reference data) fails instead: those tests are then run, or the
# failure says why not. The liburing package's wheel dying with SIGILL on CPUs without AVX-512 is a property
# of the CPU, not of the set-up, so that skip stays allowed (with its reason shown by -rs).
STRICT_SKIPS_ENV = "SCREC_STRICT_SKIPS"
STRICT_SKIP_REASONS = (
    re.compile(r"io_uring", re.I),  # "io_uring unavailable: ...", "io_uring_setup failed: ..."
    re.compile(r"\bfio\b", re.I),  # "fio is not installed", "fio not found"
    re.compile(r"not present|data (is |are )?missing|missing (reference )?data", re.I),
    re.compile(r"Ray is not installed"),  # the cluster extra (tests/emulator/cluster/conftest.py)
)
ALLOWED_SKIP_REASONS = (re.compile(r"SIGILL"),)


def strict_skips() -> bool:
    return os.environ.get(STRICT_SKIPS_ENV, "") not in ("", "0")


def skip_is_forbidden(reason: str) -> bool:
    """Whether a skip with this reason is a failure under strict skips."""
    if any(p.search(reason) for p in ALLOWED_SKIP_REASONS):
        return False
    return any(p.search(reason) for p in STRICT_SKIP_REASONS)


def _skip_reason(report) -> str | None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    lr = report.longrepr
    return str(lr[2] if isinstance(lr, tuple) and len(lr) == 3 else lr)


def _fail_forbidden_skip(report) -> None:
    reason = _skip_reason(report)
    if reason is not None and strict_skips() and skip_is_forbidden(reason):
        report.outcome = "failed"
        report.longrepr = f"{STRICT_SKIPS_ENV}=1 forbids this skip (CI must provide what it needs): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())

"""Shared fixtures: a tiny model, its trace and its store, built once per session."""

from __future__ import annotations

import numpy as np
import pytest

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

"""Selecting tables of a model: a Python slice (``0::4``, ``10:20``) or a comma-separated list of names."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from tracegen.errors import InputError
from tracegen.params import GeneratorParams
from tracegen.spec import ModelSpec

_SLICE = re.compile(r"^\s*(-?\d*)\s*:\s*(-?\d*)\s*(?::\s*(-?\d*)\s*)?$")


def select_tables(spec: ModelSpec, selection: str) -> np.ndarray:
    """Indices (ascending, in the spec's order) of the tables ``selection`` names.

    ``"0::4"`` is every 4th table from the first (Python slice rules, negative
    bounds included); ``"t3,t17"`` names tables. An empty result, a step of 0
    or an unknown name raises :class:`InputError`.
    """
    text = str(selection).strip()
    m = _SLICE.match(text)
    if m:
        parts = [int(g) if g not in (None, "") else None for g in m.groups()]
        if parts[2] == 0:
            raise InputError(f"table selection {text!r}: slice step cannot be 0")
        idx = np.arange(spec.num_tables)[slice(*parts)]
        if parts[2] is not None and parts[2] < 0:
            idx = idx[::-1]
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        where = {t.name: i for i, t in enumerate(spec.tables)}
        unknown = [n for n in names if n not in where]
        if unknown:
            raise InputError(f"table selection names {len(unknown)} table(s) that {spec.name} does not have, "
                             f"e.g. {unknown[0]!r} (give names like {spec.tables[0].name!r}, or a slice like 0::4)")
        idx = np.array(sorted({where[n] for n in names}), dtype=np.int64)
    if idx.size == 0:
        raise InputError(f"table selection {text!r} selects no table of {spec.name} ({spec.num_tables} tables)")
    return np.asarray(idx, dtype=np.int64)


def subset_spec(spec: ModelSpec, tables: np.ndarray, label: str | None = None) -> ModelSpec:
    """``spec`` with only ``tables`` (indices), named after the selection."""
    return dataclasses.replace(spec, tables=tuple(spec.tables[int(i)] for i in tables),
                               name=f"{spec.name}[{label or f'{len(tables)} of {spec.num_tables} tables'}]")


def select(spec: ModelSpec, params: GeneratorParams, selection: str | None) -> tuple[ModelSpec, GeneratorParams]:
    """The spec and parameters that generate only the selected tables, each exactly as in the whole model
    (same seeds, same permutation, same fitted popularity); unchanged when ``selection`` is None."""
    if selection is None:
        return spec, params
    idx = select_tables(spec, selection)
    sub = subset_spec(spec, idx, str(selection).strip())
    base = params.source_tables or tuple(range(spec.num_tables))
    return sub, params.restricted({t.name for t in sub.tables}, tuple(int(base[i]) for i in idx))

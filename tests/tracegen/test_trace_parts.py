"""tracegen.trace_parts without Ray: parts written by hand (table groups x batch ranges of the tiny model) read
as the one-process trace, merged with its trace_id; manifests whose parts do not tile the trace are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tracegen.errors import InputError
from tracegen.generate import GeneratorParams, TraceGenerator, generate_trace
from tracegen.selection import select
from tracegen.trace_io import TraceReader
from tracegen.trace_parts import (
    PartEntry,
    PartsReader,
    merge_parts,
    open_trace,
    parts_manifest,
)
from tracegen.trace_write import TraceWriter

PARAMS = GeneratorParams(seed=11, num_batches=3)


def _write_parts(spec, out, groups, ranges):
    out.mkdir()
    entries = []
    for b0, b1 in ranges:
        for t0, t1 in groups:
            sub, params = select(spec, PARAMS, f"{t0}:{t1}")
            gen = TraceGenerator(sub, params)
            name = f"p{b0}-{t0}.h5"
            with TraceWriter(out / name, gen.spec, seed=params.seed, params=params.to_dict()) as w:
                for i in range(b0, b1):
                    w.append(*gen.batch(i))
            with TraceReader(out / name) as r:
                entries.append(PartEntry(name, (t0, t1), (b0, b1), r.trace_id, r.num_lookups))
    doc = parts_manifest(PARAMS.effective_spec(spec), PARAMS.to_dict(), PARAMS.seed, entries)
    (out / "parts.json").write_text(json.dumps(doc))
    return doc


def test_hand_written_parts_read_as_one_trace(tiny_spec, tmp_path):
    T = tiny_spec.num_tables
    _write_parts(tiny_spec, tmp_path / "p", [(0, 1), (1, T)], [(0, 2), (2, 3)])
    whole_id = generate_trace(tiny_spec, PARAMS, tmp_path / "whole.h5")
    with open_trace(tmp_path / "p") as parts, TraceReader(tmp_path / "whole.h5") as whole:
        assert isinstance(parts, PartsReader) and parts.num_batches == 3 and parts.spec == whole.spec
        for i in range(3):
            a, b = parts.batch(i), whole.batch(i)
            np.testing.assert_array_equal(a.offsets, b.offsets)
            np.testing.assert_array_equal(a.indices, b.indices)
        assert [b.index for b in parts.batches(1)] == [1, 2]
    assert merge_parts(tmp_path / "p", tmp_path / "merged.h5") == whole_id
    with open_trace(tmp_path / "whole.h5") as r:
        assert isinstance(r, TraceReader)


def test_parts_that_do_not_tile_are_refused(tiny_spec, tmp_path):
    T = tiny_spec.num_tables
    doc = _write_parts(tiny_spec, tmp_path / "p", [(0, 1), (1, T)], [(0, 3)])
    bad = dict(doc, parts=doc["parts"][:1])  # table 1.. missing
    (tmp_path / "p" / "parts.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="cover every table once"):
        PartsReader(tmp_path / "p")
    bad = dict(doc, trace_id="0" * 32)
    (tmp_path / "p" / "parts.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="trace_id"):
        PartsReader(tmp_path / "p")
    (tmp_path / "p" / "parts.json").write_text("{")
    with pytest.raises(InputError, match="corrupt parts manifest"):
        PartsReader(tmp_path / "p")
    with pytest.raises(InputError, match="no parts.json"):
        PartsReader(tmp_path)

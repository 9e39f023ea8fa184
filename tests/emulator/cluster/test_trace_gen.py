"""emulator.cluster.trace_gen and tracegen.trace_parts: a trace generated as parts by Ray tasks on the test
cluster reads as one trace (every batch equal to the trace generated in one process), merges into the same
file (same trace_id), with reuse too (table groups only); the groups and ranges by hand; bad parts refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emulator.cluster.trace_gen import batch_ranges, table_groups
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec


def test_groups_and_ranges_by_hand():
    spec = ModelSpec("g", tuple(TableSpec(f"t{i}", 10, 4, pooling=PoolingSpec.fixed(n))
                                for i, n in enumerate((1, 1, 1, 1, 4, 4))), batch_size=2)
    # lookups per bag 1,1,1,1,4,4: cumulative 0,1,2,3,4,8,12 at the table boundaries; a cut goes at the first
    # boundary whose cumulative count reaches g/n of the total: half of 12 is 6, first reached at boundary 5
    assert table_groups(spec, 2) == [(0, 5), (5, 6)]
    assert table_groups(spec, 6) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert table_groups(spec, 10) == table_groups(spec, 6)  # never an empty group
    assert batch_ranges(5, 2) == [(0, 2), (2, 5)] and batch_ranges(2, 4) == [(0, 1), (1, 2)]
    with pytest.raises(InputError):
        table_groups(spec, 0)


def _same_batches(a, b) -> None:
    assert a.num_batches == b.num_batches and a.num_lookups == b.num_lookups and a.spec == b.spec
    for i in range(a.num_batches):
        x, y = a.batch(i), b.batch(i)
        np.testing.assert_array_equal(x.offsets, y.offsets)
        np.testing.assert_array_equal(x.indices, y.indices)


def test_parts_read_as_the_one_process_trace(ray_cluster, tiny_spec, tiny_trace, tmp_path):
    from emulator.cluster.trace_gen import generate_parts
    from tracegen.generate import GeneratorParams
    from tracegen.trace_io import TraceReader
    from tracegen.trace_parts import PartsReader, merge_parts, open_trace

    doc = generate_parts(tiny_spec, GeneratorParams(seed=3, num_batches=4), tmp_path / "p", parts=3, batch_parts=2)
    assert len(doc["parts"]) == 6 and all(p["made_on"]["address"] == "127.0.0.1" for p in doc["parts"])
    assert len({p["made_on"]["node_id"] for p in doc["parts"]}) >= 2  # spread over the nodes
    with PartsReader(tmp_path / "p") as parts, TraceReader(tiny_trace) as whole:
        _same_batches(parts, whole)
        whole_id = whole.trace_id
    with open_trace(tmp_path / "p" / "parts.json") as r:
        assert isinstance(r, PartsReader) and r.trace_id == doc["trace_id"]
    assert merge_parts(tmp_path / "p", tmp_path / "merged.h5") == whole_id  # the same file as one process's

    # a part that is not the one parts.json names is refused
    m = json.loads((tmp_path / "p" / "parts.json").read_text())
    m["parts"][0]["file"], m["parts"][1]["file"] = m["parts"][1]["file"], m["parts"][0]["file"]
    (tmp_path / "p" / "parts.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="is not the one parts.json names"):
        PartsReader(tmp_path / "p")


def test_parts_with_reuse_split_tables_only(ray_cluster, tiny_spec, tmp_path):
    from emulator.cluster.trace_gen import generate_parts
    from tracegen.generate import GeneratorParams, generate_trace
    from tracegen.trace_io import TraceReader
    from tracegen.trace_parts import PartsReader

    params = GeneratorParams(seed=4, num_batches=3, reuse=0.3, reuse_window=50)
    with pytest.raises(InputError, match="--reuse 0"):
        generate_parts(tiny_spec, params, tmp_path / "no", parts=2, batch_parts=2)
    assert not (tmp_path / "no").exists()
    generate_parts(tiny_spec, params, tmp_path / "p", parts=2)
    generate_trace(tiny_spec, params, tmp_path / "whole.h5")
    with PartsReader(tmp_path / "p") as parts, TraceReader(tmp_path / "whole.h5") as whole:
        _same_batches(parts, whole)

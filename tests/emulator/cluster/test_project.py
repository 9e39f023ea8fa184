"""emulator.cluster.project against figures derived by hand on a three-table model (no Ray needed)."""

from __future__ import annotations

import pytest

from emulator.cluster.project import ClusterAssumptions, NodeFigures, project
from tracegen.errors import InputError
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec

# A: 1000 rows x 4 fp32 = 16000 B, 2 lookups a sample; B and C: 500 x 4 = 8000 B, 1 lookup a sample
SPEC = ModelSpec("p", (TableSpec("A", 1000, 4, pooling=PoolingSpec.fixed(2)),
                       TableSpec("B", 500, 4, pooling=PoolingSpec.fixed(1)),
                       TableSpec("C", 500, 4, pooling=PoolingSpec.fixed(1))), batch_size=10)
FIG = NodeFigures(build_bytes_per_s=1000.0, lookups_per_s=100.0)
ASSUME = ClusterAssumptions(link_bytes_per_s=1000.0, link_latency_s=0.0, host_merge_bytes_per_s=1e6,
                            shard_overhead_s=0.0)


def test_whole_tables_on_two_nodes():
    (p,) = project(SPEC, FIG, [2], ASSUME)
    # A alone on node 0 (16000 B), B + C on node 1 (16000 B): build 16000 / 1000 = 16 s
    assert p.max_node_bytes == 16000 and p.byte_balance == 1.0 and p.build_s == 16.0
    # lookups per batch: node 0 10 x 2 = 20, node 1 10 x (1 + 1) = 20 -> pooling 20 / 100 = 0.2 s
    assert p.max_node_lookups == 20 and p.pool_s == pytest.approx(0.2)
    # partials sent: node 0 10 x 4 x 4 = 160 B, node 1 10 x 8 x 4 = 320 B (480 in all); all-to-all: node 0
    # sends 160/2 = 80 and receives (480-160)/2 = 160, node 1 sends 160 and receives 80 -> 160 B over 1000 B/s
    assert p.transfer_s == pytest.approx(0.16) and p.merge_s == pytest.approx(240 / 1e6)
    assert p.interval_s == pytest.approx(0.2) and p.bottleneck == "node pooling"
    assert p.queries_per_s == pytest.approx(50.0) and p.lookups_per_s == pytest.approx(200.0)
    assert p.latency_s == pytest.approx(0.2 + 0.16 + 240e-6)
    (h,) = project(SPEC, FIG, [2], ASSUME, exchange="host")  # one host receives all 480 B: 0.48 s
    assert h.transfer_s == pytest.approx(0.48) and h.bottleneck == "network link"
    assert h.queries_per_s == pytest.approx(10 / 0.48)


def test_split_rows_on_four_nodes():
    (p,) = project(SPEC, FIG, [4], ASSUME, split_rows=True)
    # even share 32000 / 4 = 8000 B: A cut into 2 row ranges of 8000 B and 1 lookup a sample; 4 pieces, one each
    assert p.max_node_bytes == 8000 and p.byte_balance == 1.0 and p.build_s == 8.0
    assert p.pool_s == pytest.approx(10 / 100)
    # each node sends 160 B (640 in all); sends 160 x 3/4 = 120, receives 480 / 4 = 120 -> 0.12 s
    assert p.transfer_s == pytest.approx(0.12) and p.bottleneck == "network link"
    (w,) = project(SPEC, FIG, [4], ASSUME)  # whole tables: A's node holds 16000 B, one node serves nothing
    assert w.max_node_bytes == 16000 and w.byte_balance == pytest.approx(2.0)


def test_bad_settings_are_refused():
    with pytest.raises(InputError):
        project(SPEC, NodeFigures(0.0, 1.0), [2])
    with pytest.raises(InputError):
        project(SPEC, FIG, [0])
    with pytest.raises(InputError):
        project(SPEC, FIG, [2], exchange="ring")

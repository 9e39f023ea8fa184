"""``trace gen --ray``: a trace generated as parts by Ray tasks, read as one trace (:mod:`tracegen.trace_parts`).

The model's tables are split into contiguous groups of about equal expected
lookups, and (only when reuse is off, where every batch is independent of the
ones before it) the batches into contiguous ranges; one task per (table group,
batch range) writes its part with the ordinary generator. Every table draws
from its own stream keyed by its index in the whole model
(``GeneratorParams.source_tables``), reuse included, so the parts hold exactly
the lookups of generating the whole trace in one process: merged, they give
the same file and ``trace_id``.

The parts directory is built under a temporary name and renamed when every
part and ``parts.json`` are written (a failed or interrupted run leaves
nothing). Tasks run on any node with a free CPU, each generating on one thread,
and write into that directory: it must be at the same path on every node (a
shared file system; on one machine, any directory). Each part records the node
that made it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emulator.cluster.connect import cluster_nodes, import_ray, remote, where_am_i
from tracegen.errors import InputError
from tracegen.params import GeneratorParams
from tracegen.spec import ModelSpec

WAIT_S = 0.5


def table_groups(spec: ModelSpec, groups: int) -> list[tuple[int, int]]:
    """``groups`` contiguous ``[start, stop)`` table ranges of about equal expected lookups per batch (each
    non-empty; fewer when the model has fewer tables)."""
    if groups < 1:
        raise InputError(f"--parts must be >= 1, got {groups}")
    n = min(groups, spec.num_tables)
    weight = np.array([max(t.pooling.mean_lookups, 1e-9) for t in spec.tables])
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    cuts = [0]
    for g in range(1, n):
        c = int(np.searchsorted(cum, cum[-1] * g / n, side="left"))
        cuts.append(min(max(c, cuts[-1] + 1), spec.num_tables - (n - g)))
    cuts.append(spec.num_tables)
    return [(cuts[g], cuts[g + 1]) for g in range(n)]


def batch_ranges(num_batches: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous batch ranges of about equal length (fewer when there are fewer batches)."""
    if parts < 1:
        raise InputError(f"--batch-parts must be >= 1, got {parts}")
    n = min(parts, num_batches)
    cuts = [round(num_batches * g / n) for g in range(n + 1)]
    return [(cuts[g], cuts[g + 1]) for g in range(n)]


def generate_part(spec: ModelSpec, params: GeneratorParams, tables: tuple[int, int], batches: tuple[int, int],
                  path: str) -> dict[str, Any]:
    """(A Ray task.) Write tables ``[t0, t1)`` of batches ``[b0, b1)`` of the trace ``(spec, params)`` to
    ``path`` as an ordinary trace file."""
    from tracegen.generate import TraceGenerator, generate_trace
    from tracegen.selection import select
    from tracegen.trace_io import TraceReader
    from tracegen.trace_write import TraceWriter

    t0 = time.perf_counter()
    sub, sub_params = select(spec, params, f"{tables[0]}:{tables[1]}")
    if batches == (0, params.num_batches):
        trace_id = generate_trace(sub, sub_params, path, workers=1)
    else:  # only without reuse (generate_parts checks): batch i does not depend on the batches before it
        gen = TraceGenerator(sub, sub_params)
        with TraceWriter(path, gen.spec, seed=sub_params.seed, params=sub_params.to_dict()) as w:
            for i in range(*batches):
                w.append(*gen.batch(i))
        trace_id = w.trace_id
    with TraceReader(path, validate=False) as r:
        lookups = r.num_lookups
    return {"trace_id": trace_id, "lookups": lookups, "node": where_am_i(), "seconds": time.perf_counter() - t0}


def generate_parts(spec: ModelSpec, params: GeneratorParams, out: str | Path, parts: int | None = None,
                   batch_parts: int = 1, on_part: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Generate the trace ``(spec, params)`` as parts on the connected cluster into the directory ``out``;
    returns the parts manifest. ``parts`` table groups (default: the cluster's CPUs) x ``batch_parts`` batch
    ranges (more than 1 only when reuse is off)."""
    from tracegen.atomic import atomic_dir, fsync_file
    from tracegen.trace_parts import PARTS_MANIFEST, PartEntry, parts_manifest

    ray = import_ray()
    out = Path(out)
    if batch_parts > 1 and params.reuse > 0:
        raise InputError("--batch-parts > 1 needs --reuse 0: with reuse a batch depends on the batches before it "
                         "(split the tables instead, with --parts)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists; a parts trace is written into a new or empty directory", out)
    effective = params.effective_spec(spec)
    groups = table_groups(spec, parts or max(1, int(sum(n.cpus for n in cluster_nodes(disks=False)))))
    ranges = batch_ranges(params.num_batches, batch_parts)
    task = remote(generate_part, num_cpus=1, max_retries=0)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        tmp = Path(tmp).resolve()
        jobs = {}
        for b in ranges:
            for t in groups:
                name = f"part-b{b[0]:06d}-t{t[0]:05d}.h5"
                jobs[task.remote(spec, params, t, b, str(tmp / name))] = (name, t, b)
        entries = []
        try:
            while jobs:
                ready, _ = ray.wait(list(jobs), num_returns=1, timeout=WAIT_S)
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
                for ref in ready:
                    name, t, b = jobs.pop(ref)
                    try:
                        r = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, InputError) else e) from None
                    made_on = {**r["node"], "seconds": round(r["seconds"], 3)}
                    entries.append(PartEntry(name, t, b, r["trace_id"], r["lookups"], made_on))
                    if on_part is not None:
                        on_part(entries[-1].to_dict())
        except BaseException:
            for ref in jobs:
                ray.cancel(ref, force=True)
            raise
        doc = parts_manifest(effective, params.to_dict(), params.seed, entries)
        doc["seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / PARTS_MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        fsync_file(tmp / PARTS_MANIFEST)
    return doc

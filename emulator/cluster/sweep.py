"""Independent replays as Ray tasks: one replay per node at a time, and a record of which node measured what.

A job is one call ``measure(store, reader, *args, **kwargs)`` (for the command
line, :func:`bench.measure.measure_rounds` with its plans, batch range, replay
and measurement settings): the caller passes the function, this module never
imports ``bench``. Each job runs as a task holding one ``replay_slot`` (nodes
are started with ``--resources '{"replay_slot": 1}'``), so Ray never runs two
replays on one node at once and their timings do not pollute each other. The
task opens the store and the trace at the same paths on its node and refuses to
measure unless their ids are the driver's (``store_id``, ``trace_id``): every
node measures the same data. The store and trace must therefore be present at
those paths on every node with a replay slot (a shared file system, or copies).

Each result carries the node (Ray node id, address, host name), the node's load
average when the job ended, and the job's wall time: measured figures from
different nodes compare only as far as the nodes are alike, which the result
file lets a reader check.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from emulator.cluster.connect import (
    REPLAY_SLOT,
    import_ray,
    remote,
    replay_nodes,
    where_am_i,
)
from tracegen.errors import InputError

WAIT_S = 0.5


@dataclass(frozen=True)
class ReplayJob:
    """One independent replay job: ``measure(store, reader, *args, **kwargs)``, named ``key``."""

    key: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NodeResult:
    """What one job returned, and where and how it ran."""

    key: str
    value: Any
    node: dict[str, Any]  # node_id, address, hostname, disk
    seconds: float  # the job's wall time on its node (measured)
    load_average: tuple[float, float, float]  # the node's 1/5/15-minute load when the job ended
    started: float = 0.0  # the node's clock (Unix seconds) when the job started and ended
    ended: float = 0.0

    def record(self) -> dict[str, Any]:
        """The JSON record of where the job ran (no value)."""
        return {"job": self.key, **self.node, "seconds": round(self.seconds, 3), "started": self.started,
                "ended": self.ended, "load_average": [round(x, 2) for x in self.load_average]}


def measure_on_node(measure: Callable, store_path: str, store_id: str, trace_path: str, trace_id: str,
                    args: tuple, kwargs: dict) -> dict[str, Any]:
    """(A Ray task.) Open the store and the trace on this node, check they are the driver's, run ``measure``."""
    from emulator.store.store import Store
    from tracegen.trace_io import TraceReader

    t0, started = time.perf_counter(), time.time()
    node = where_am_i()
    store = Store.open(store_path)
    if store.store_id != store_id:
        raise InputError(f"the store on node {node['address']} ({store.store_id[:12]}) is not the driver's "
                         f"({store_id[:12]})", store_path)
    with TraceReader(trace_path) as reader:
        if reader.trace_id != trace_id:
            raise InputError(f"the trace on node {node['address']} is not the driver's", trace_path)
        value = measure(store, reader, *args, **kwargs)
    return {"value": value, "node": node, "seconds": time.perf_counter() - t0, "load": os.getloadavg(),
            "started": started, "ended": time.time()}


def _cause(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, InputError) else e


def replay_on_cluster(measure: Callable, store_path: str | os.PathLike, trace_path: str | os.PathLike,
                      jobs: Sequence[ReplayJob], on_done: Callable[[NodeResult], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> list[NodeResult]:
    """Run ``jobs`` on the connected cluster, each as a task holding one replay slot; results in job order.

    A job that fails raises here (an InputError from a node, e.g. a store that is not the driver's, as
    itself); ``should_stop()`` cancels the tasks and raises KeyboardInterrupt."""
    from emulator.store.store import Store
    from tracegen.trace_io import TraceReader

    ray = import_ray()
    replay_nodes()  # fail now, not wait forever, when no node has a slot
    store_path, trace_path = str(Path(store_path).resolve()), str(Path(trace_path).resolve())
    store_id = Store.open(store_path).store_id
    with TraceReader(trace_path, validate=False) as reader:
        trace_id = reader.trace_id
    task = remote(measure_on_node, num_cpus=0, resources={REPLAY_SLOT: 1}, max_retries=0)
    refs = {task.remote(measure, store_path, store_id, trace_path, trace_id, job.args, job.kwargs): i
            for i, job in enumerate(jobs)}
    results: list[NodeResult | None] = [None] * len(jobs)
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=WAIT_S)
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            for ref in ready:
                i = refs.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise _cause(e) from None
                results[i] = NodeResult(jobs[i].key, r["value"], r["node"], r["seconds"], tuple(r["load"]),
                                        r["started"], r["ended"])
                if on_done is not None:
                    on_done(results[i])
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    return [r for r in results if r is not None]

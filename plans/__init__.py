"""Planning: access statistics, the address remapper, the cost model and the placement MIP.

One module per stage, as torchrec's planner: ``types`` (shared vocabulary and
one abstract base per stage), ``stats`` (measured or modelled statistics),
``remap`` (hottest-first renumbering), ``machine`` (calibration, host costs
and device profiles as values), ``calibration`` (measuring them; device
profiles), ``host_fit`` (the replay host thread's costs, fitted on real
replays), ``cost`` (pure cost functions: the host-serial model of this
machine and the parallel model of SmartSSD-like devices), ``mip`` (build the
problem; its constraint families in ``mip_constraints``), ``mip_solve``
(solve, lexicographic, and extract), ``predicted`` (a plan with its
prediction attached), ``assign`` (tables to devices), ``baselines`` (every
planner behind one interface) and ``scale`` (the modelled meta-2021 workload).
"""

from plans.types import (Budgets, Calibration, DeviceProfile, Estimator, HostCosts, Perf, Planner, PlannerOptions,
                         StatsSource, Storage, TableStats, TTVariant, WorkloadStats)

__all__ = ["Budgets", "Calibration", "DeviceProfile", "Estimator", "HostCosts", "Perf", "Planner", "PlannerOptions",
           "StatsSource", "Storage", "TableStats", "TTVariant", "WorkloadStats"]

"""Planning: access statistics, the address remapper, the cost model and the placement MIP.

One module per stage, as torchrec's planner: ``types`` (shared vocabulary and
one abstract base per stage), ``stats`` (measured or modelled statistics),
``remap`` (hottest-first renumbering), ``calibration`` (measured rates and
device profiles), ``cost`` (pure cost functions), ``mip`` (build / solve /
extract), ``assign`` (tables to devices), ``baselines`` (every planner behind
one interface) and ``scale`` (the modelled meta-2021 workload).
"""

from plans.types import (Budgets, Calibration, DeviceProfile, Estimator, Perf, Planner, PlannerOptions, StatsSource,
                         Storage, TableStats, TTVariant, WorkloadStats)

__all__ = ["Budgets", "Calibration", "DeviceProfile", "Estimator", "Perf", "Planner", "PlannerOptions", "StatsSource",
           "Storage", "TableStats", "TTVariant", "WorkloadStats"]

"""The planning pipeline as a library: statistics -> calibration -> devices -> planner -> ``Plan`` + remap.

Called by ``screc plan solve``, ``compare``, ``bench predict``, ``demo`` and ``accuracy``; it never prints.

* :func:`measure_profile` measures (or models) the access statistics once;
* :func:`plan_from_profile` turns them into a plan under one :class:`PlanningConfig` (several budgets or
  planners can share one profile, as ``bench predict`` does);
* :func:`run_planning` is both in one call; :func:`save_planned` writes the plan and its remap beside it;
* :func:`preset_plan` builds the policies the CLI compares: ``all-dram``, ``all-ssd``, ``all-tt``, ``lru``
  (from the profile's lookups), ``static-topk`` and ``screc`` (the MIP) through the pipeline.

Every :class:`PlanNote` says whether what it reports rests on measured or modelled figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emulator.plan import Plan, TablePlacement, uniform_plan
from tracegen.errors import InputError

# The policy the MIP produces is called ``screc``; ``mip`` is kept as an alias of it.
PLANNER_NAMES = ("screc", "greedy", "static-topk", "all-ssd")
_LIBRARY_PLANNER = {"screc": "mip", "mip": "mip", "greedy": "greedy", "static-topk": "static-topk",
                    "all-ssd": "all-ssd"}
POLICIES = ("all-dram", "all-ssd", "all-tt", "lru", "static-topk", "screc")
PLANNED_POLICIES = ("static-topk", "screc")
# ``local``: the emulator on this machine (host-serial model); the others are device profiles of
# ``emulator.device.profile`` (a .toml/.json profile file is accepted too).
DEVICE_PROFILES = ("local", "host", "smartssd")


@dataclass(frozen=True)
class PlanNote:
    """One line about how a plan was made; ``basis`` is ``measured``, ``modelled`` or ``info``."""
    text: str
    basis: str = "info"

    def __str__(self) -> str:
        return self.text if self.basis == "info" else f"{self.text} [{self.basis}]"


@dataclass(frozen=True)
class PlanningConfig:
    """What to plan for. Measured statistics need ``store`` and ``trace``; ``model`` (a preset name or spec
    file) plans from its Zipf parameters instead (modelled)."""
    dram_budget_bytes: int
    planner: str = "screc"
    store: str | None = None
    trace: str | None = None
    model: str | None = None
    profile_batches: int | None = None
    folds: int = 10
    calibration: str | None = None
    devices: int = 1
    cores: int | None = None
    device_profile: str = "local"
    device_dram_bytes: int = 4 << 30
    accuracy_budget: float | None = None
    accuracy_mode: str = "weighted"
    time_limit_s: float = 60.0
    solver: str = "cbc"
    queue_depth: int = 128
    formulation: str = "auto"
    host_threads: int = 1  # host threads pooling DRAM rows (and, for plain-SSD policies, every row)

    def __post_init__(self) -> None:
        if self.planner not in _LIBRARY_PLANNER:
            raise InputError(f"unknown planner {self.planner!r} (one of {', '.join(PLANNER_NAMES)})")
        if self.model is None and not (self.store and self.trace):
            raise InputError("planning needs a store and a trace (or a model to plan from modelled statistics)")
        if self.device_profile not in DEVICE_PROFILES:
            if not _is_profile_file(self.device_profile):
                raise InputError(f"unknown device profile {self.device_profile!r} (one of "
                                 f"{', '.join(DEVICE_PROFILES)}, or a .toml/.json device profile file)")
            from emulator.device.profile import load_profile

            load_profile(self.device_profile)  # a bad file is refused before any work
        for name in ("devices", "folds", "queue_depth", "host_threads"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cores is not None and self.cores < 1:
            raise InputError(f"cores must be >= 1, got {self.cores}")
        if self.profile_batches is not None and self.profile_batches < 1:
            raise InputError(f"profile batches must be >= 1, got {self.profile_batches}")
        if self.dram_budget_bytes < 0:
            raise InputError(f"the DRAM budget must be >= 0 bytes, got {self.dram_budget_bytes}")

    @property
    def policy_name(self) -> str:
        """The name the plan carries (``screc`` for the MIP)."""
        return "screc" if _LIBRARY_PLANNER[self.planner] == "mip" else self.planner


def _is_profile_file(text: str) -> bool:
    return Path(text).suffix.lower() in (".toml", ".json") or Path(text).exists()


@dataclass(frozen=True)
class Profile:
    """Statistics of the profiled batches (with the remap they were ranked under, when measured), and the
    access counts of as many later batches, for the hot sets' drift."""
    stats: Any  # plans.types.WorkloadStats
    remap: Any | None  # plans.remap.Remap
    counts: Any | None  # per-table TableCounts of the profile
    later: Any | None  # per-table TableCounts of the later batches
    later_range: tuple[int, int] | None
    notes: tuple[PlanNote, ...]


@dataclass(frozen=True)
class PlanResult:
    """A plan (``plan.remap`` is None until :func:`save_planned`), the remap it needs, and how it was made."""
    plan: Plan
    remap: Any | None  # plans.remap.Remap
    notes: tuple[PlanNote, ...]

    @property
    def modelled(self) -> bool:
        """Whether any figure the plan rests on is modelled."""
        return any(n.basis == "modelled" for n in self.notes)


def measure_profile(cfg: PlanningConfig) -> Profile:
    """The access statistics ``cfg`` asks for: modelled from ``cfg.model``, or measured (cross-fitted over
    ``cfg.folds`` blocks) on the first ``cfg.profile_batches`` batches of ``cfg.trace``."""
    if cfg.model:
        from plans.modelled import modelled_stats
        from tracegen.presets import load_model

        stats = modelled_stats(load_model(cfg.model))
        return Profile(stats, None, None, None, None,
                       (PlanNote(f"statistics modelled from the Zipf parameters of {cfg.model}", "modelled"),))
    from emulator.store.store import Store
    from plans.stats import attach_store, count_accesses, trace_stats
    from tracegen.trace_io import TraceReader

    store = Store.open(cfg.store)
    later = later_range = None
    with TraceReader(cfg.trace) as reader:
        stop = reader.num_batches if cfg.profile_batches is None else min(cfg.profile_batches, reader.num_batches)
        stats, remap, counts = trace_stats(reader, (0, stop), folds=cfg.folds)
        if stop < reader.num_batches:  # the hot sets' drift on as many later batches as were profiled
            later_range = (stop, min(reader.num_batches, 2 * stop))
            later = count_accesses(reader, *later_range)
    stats = attach_store(stats, store)
    note = PlanNote(f"statistics measured on batches [0, {stop}) of {cfg.trace}: {stats.notes[0]}", "measured")
    return Profile(stats, remap, counts, later, later_range, (note,))


def _calibration_and_devices(cfg: PlanningConfig) -> tuple[Any, list, list[PlanNote]]:
    from plans.calibration import default_calibration, local_profiles
    from plans.types import Calibration

    notes = []
    if cfg.calibration:
        calib = Calibration.load(cfg.calibration)
        notes.append(PlanNote(f"rates from the calibration {cfg.calibration} ({calib.source})",
                              "measured" if calib.source == "measured" else "modelled"))
    else:
        calib = default_calibration()
        notes.append(PlanNote("no calibration given: modelled default rates (run `screc calibrate` to measure)",
                              "modelled"))
    if cfg.device_profile != "local":
        return calib, *_profile_devices(cfg, calib, notes)
    devices = local_profiles(calib, cfg.devices, cfg.cores, queue_depth=cfg.queue_depth,
                             device_dram_bytes=cfg.device_dram_bytes)
    if devices[0].execution == "host-serial":
        basis = "measured" if calib.host.source == "measured" else "modelled"
        notes.append(PlanNote("local devices: the emulator on this machine (one host thread runs every core, "
                              f"overlapped with IO at queue depth {cfg.queue_depth}); host costs {basis}", basis))
    else:
        notes.append(PlanNote("calibration has no host costs (version 1): local devices costed with the "
                              "parallel-resource model; re-run `screc calibrate`", "modelled"))
    return calib, devices, notes


def _profile_devices(cfg: PlanningConfig, calib: Any, notes: list[PlanNote]) -> tuple[list, list[PlanNote]]:
    """Devices of the device profile ``cfg.device_profile`` (built-in name or file), parallel-resource model."""
    from emulator.device.profile import load_profile
    from plans.machine import profile_devices

    profile = load_profile(cfg.device_profile)
    devices = profile_devices(profile, calib, cfg.devices, cfg.cores, queue_depth=cfg.queue_depth)
    basis = "modelled" if devices[0].modelled else "measured"
    how = ("predicted as the device clock composes a batch: host serial work + max(host pooling, each device) + "
           "host pooling after the devices (plans.clock_cost, on the calibration's task costs)") \
        if devices[0].clock and calib.tasks is not None else "every core and the IO working in parallel"
    notes.append(PlanNote(f"devices from the device profile {profile.name} ({profile.origin}; every figure and "
                          f"its source: `screc plan profiles`), {how}", basis))
    return devices, notes


def planning_machine(cfg: PlanningConfig) -> tuple[Any, list, list[PlanNote]]:
    """The calibration, device profiles and notes ``cfg`` plans for (what :func:`plan_from_profile` uses)."""
    return _calibration_and_devices(cfg)


def _with_drift(plan: Plan, profile: Profile) -> tuple[Plan, list[PlanNote]]:
    if profile.later is None:
        return plan, []
    from plans.remap import plan_drift

    drift = plan_drift(profile.counts, profile.later, [plan.placement(ts.name).hot_rows for ts in profile.stats.tables])
    lo, hi = profile.later_range
    drift["batches"] = [lo, hi]
    plan = dataclasses.replace(plan, predicted={**plan.predicted, "drift": drift})
    if drift["hit_ratio"] is None:
        return plan, []
    return plan, [PlanNote(f"hot-set drift on later batches [{lo}, {hi}): the plan's hot rows serve "
                           f"{drift['hit_ratio']:.1%} of the later lookups of the {drift['tables']} partly hot "
                           f"tables, their own top rows would serve {drift['oracle_hit_ratio']:.1%}; "
                           f"{drift['new_row_share']:.1%} of those top rows are new", "measured")]


def plan_from_profile(profile: Profile, cfg: PlanningConfig) -> PlanResult:
    """Calibration -> devices -> planner on already measured statistics."""
    from plans.baselines import make_planner
    from plans.types import Budgets, PlannerOptions

    calib, devices, notes = _calibration_and_devices(cfg)
    budgets = Budgets(cfg.dram_budget_bytes, cfg.accuracy_budget, cfg.accuracy_mode, cfg.host_threads)
    options = PlannerOptions(queue_depth=cfg.queue_depth, solver=cfg.solver, time_limit_s=cfg.time_limit_s,
                             formulation=cfg.formulation)
    plan = make_planner(_LIBRARY_PLANNER[cfg.planner], options).plan(profile.stats, calib, budgets, devices)
    plan = dataclasses.replace(plan, planner=cfg.policy_name)
    plan, drift_notes = _with_drift(plan, profile)
    return PlanResult(plan, profile.remap, (*profile.notes, *notes, *drift_notes))


def run_planning(cfg: PlanningConfig) -> PlanResult:
    """Statistics, calibration, devices and planner in one call."""
    return plan_from_profile(measure_profile(cfg), cfg)


def remap_path_for(output: str | Path) -> Path:
    """Where :func:`save_planned` writes the remap of a plan saved at ``output``."""
    output = Path(output)
    return output.with_name(output.stem + ".remap.h5")


def save_planned(result: PlanResult, output: str | Path) -> Plan:
    """Write the remap (if any) beside ``output``, then the plan; returns the plan as a replay loads it
    (its remap path resolved beside the plan file)."""
    output = Path(output)
    plan = result.plan
    if result.remap is not None:
        remap_path = remap_path_for(output)
        result.remap.save(remap_path)
        plan = dataclasses.replace(plan, remap=remap_path.name)
    plan.save(output)
    return Plan.load(output)


# --- the policies the CLI compares -------------------------------------------------------------------------

def load_plan(path: str | Path, store) -> Plan:
    """A plan file, refused unless it was made for ``store`` and places exactly its tables within their rows
    and TT ranks (a hand-edited plan is checked entry by entry)."""
    plan = Plan.load(path)
    plan.check_store(store.store_id, path)
    plan.check_tables({t.name: t.rows for t in store.tables}, path, {t.name: t.tt_ranks for t in store.tables})
    return plan


def all_tt_plan(store, trace_id: str | None = None, tt_rank: int | None = None) -> Plan:
    """Every table that has TT cores rebuilt from them (rank ``tt_rank``, or its smallest); the rest raw."""
    if tt_rank is not None and tt_rank < 1:
        raise InputError(f"TT rank must be >= 1, got {tt_rank}")
    tables = []
    for t in store.tables:
        ranks = t.tt_ranks
        if tt_rank is not None and ranks and tt_rank not in ranks:
            raise InputError(f"table {t.name} has no TT rank {tt_rank} (has {ranks})", store.path)
        if ranks:
            tables.append(TablePlacement(t.name, 0, "ssd_tt", tt_rank if tt_rank is not None else ranks[0]))
        else:
            tables.append(TablePlacement(t.name, 0, "ssd_raw"))
    if not any(tp.cold_tier == "ssd_tt" for tp in tables):
        raise InputError("all-tt: no table of this store has TT cores (build with --tt-ranks)", store.path)
    return Plan(store_id=store.store_id, tables=tuple(tables), trace_id=trace_id, planner="all-tt")


def water_fill(weights: np.ndarray, caps: np.ndarray, total: float) -> np.ndarray:
    """Share ``total`` in proportion to ``weights``, never above ``caps``; what a full entry leaves goes to
    the others (entries with zero weight or cap get nothing)."""
    alloc = np.zeros(len(weights))
    left = float(total)
    open_ = (weights > 0) & (caps > 0)
    while left > 0 and open_.any():
        give = left * weights * open_ / weights[open_].sum()
        take = np.minimum(give, caps - alloc)
        alloc += take
        left -= take.sum()
        open_ &= alloc < caps
        if take.sum() < 1:
            break
    return alloc


def lru_plan(store, reader, budget_bytes: int, profile_batches: int) -> Plan:
    """An LRU row cache per table, sized by the table's share of the lookups in the profiling batches."""
    from emulator.replay.cache import cache_bytes_per_row

    lookups = np.zeros(len(store.tables))
    for b in reader.batches(0, profile_batches):
        lookups += np.diff(b.table_bounds())
    per_row = np.array([cache_bytes_per_row(t.row_bytes) for t in store.tables], dtype=np.float64)
    cap = np.array([t.rows for t in store.tables], dtype=np.float64) * per_row  # never more than the table
    alloc = water_fill(lookups, cap, budget_bytes)
    tables = [TablePlacement(t.name, 0, "ssd_raw", lru_rows=int(a // b))
              for t, a, b in zip(store.tables, alloc, per_row)]
    return Plan(store_id=store.store_id, tables=tuple(tables), trace_id=reader.trace_id,
                dram_budget_bytes=budget_bytes, planner="lru")


def spread_over_devices(plan: Plan, store, devices: int) -> Plan:
    """A baseline plan on ``devices`` devices (``dev0``, ``dev1``, ...), so that it gets as many IO rings as the
    planned policies: tables by size, largest first, each to the least loaded device."""
    if devices <= 1:
        return plan
    from emulator.plan import DevicePlan

    size = {t.name: t.rows * t.row_bytes for t in store.tables}
    load = [0] * devices
    where = {}
    for tp in sorted(plan.tables, key=lambda tp: -size.get(tp.table, 0)):
        d = min(range(devices), key=load.__getitem__)
        where[tp.table] = d
        load[d] += size.get(tp.table, 0)
    tables = tuple(dataclasses.replace(tp, device=where[tp.table]) for tp in plan.tables)
    return dataclasses.replace(plan, tables=tables, devices=tuple(DevicePlan(f"dev{i}") for i in range(devices)))


@dataclass(frozen=True)
class PresetRequest:
    """What :func:`preset_plan` needs beyond the store and trace. ``planning`` is the template for the
    planned policies (its budget, planner and profile are replaced); ``plan_dir`` is where they are saved."""
    dram_budget_bytes: int = 0
    profile_batches: int | None = None
    tt_rank: int | None = None
    planning: PlanningConfig | None = None
    plan_dir: str | None = None


def preset_plan(policy: str, store, reader, request: PresetRequest = PresetRequest()) -> PlanResult:
    """The plan of one named policy (see :data:`POLICIES`) for ``store`` and the trace ``reader`` reads."""
    if policy not in POLICIES:
        raise InputError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
    if policy in ("all-dram", "all-ssd"):
        rows = {t.name: t.rows for t in store.tables}
        return PlanResult(uniform_plan(store.store_id, rows, policy, trace_id=reader.trace_id), None, ())
    if policy == "all-tt":
        return PlanResult(all_tt_plan(store, reader.trace_id, request.tt_rank), None, ())
    profile = request.profile_batches or reader.num_batches
    if policy == "lru":
        plan = lru_plan(store, reader, request.dram_budget_bytes, profile)
        return PlanResult(plan, None, (PlanNote(f"cache sizes from the lookups of batches [0, {profile})",
                                                "measured"),))
    if request.plan_dir is None:
        raise InputError(f"policy {policy} needs a directory for its plan and remap")
    where = {"dram_budget_bytes": request.dram_budget_bytes, "planner": policy, "store": str(store.path),
             "trace": str(reader.path), "model": None, "profile_batches": profile}
    cfg = dataclasses.replace(request.planning, **where) if request.planning else PlanningConfig(**where)
    result = run_planning(cfg)
    saved = save_planned(result, Path(request.plan_dir) / f"{policy}-{request.dram_budget_bytes}.json")
    return PlanResult(saved, result.remap, result.notes)


"""The machine as the planner sees it: measured rates (:class:`Calibration`), the replay host thread's costs
(:class:`HostCosts`) and computational-storage devices (:class:`DeviceProfile`). Re-exported by ``plans.types``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from emulator.device.profile import AUTO, Profile
from emulator.jsondoc import load_json_doc, save_json_doc
from plans.task_costs import TaskCosts
from tracegen.errors import InputError

PAGE_BYTES = 4096
CALIBRATION_FORMAT = "screc-calibration"
CALIBRATION_FORMAT_VERSION = 2
CALIBRATION_VERSIONS_READ = (1, 2)  # version 1 files have no host costs
EXECUTION_MODELS = ("parallel", "host-serial")


@dataclass(frozen=True)
class HostCosts:
    """Seconds the replay's one host thread spends per batch, by what it does (fitted on real replays by
    ``plans.host_fit``): per batch, per table, per lookup, per table with cold raw lookups, per extra SSD-served
    lookup, per read request, per table with TT lookups, per extra TT lookup, per unique TT row and per flop of
    its rebuild, and per device with reads (``io_device_s``: handing the reads to the device's IO thread and
    waiting for it; on a busy 2-core machine that thread is slow to get the GIL and a CPU). A device's IO per
    batch (fitted on the same replays' engine busy times): ``io_read_s`` per read request, ``io_page_s`` per 4 KiB page, ``io_other_page_s`` per page the other devices read at the
    same time (they share this machine's disk), never less than one latency at that depth
    (``Calibration.io_iops_by_qd``); ``io_handoff_s``: the gap between one batch's reads and the next on an
    IO-bound device (thread hand-offs). ``fit`` holds the replays and residuals; ``source`` "measured" or "modelled"."""

    batch_s: float
    table_s: float
    lookup_s: float
    raw_table_s: float
    raw_lookup_s: float
    read_s: float
    tt_table_s: float
    tt_lookup_s: float
    tt_row_s: float
    tt_flop_s: float
    io_device_s: float = 0.0
    io_read_s: float = 0.0
    io_page_s: float = 0.0
    io_other_page_s: float = 0.0
    io_handoff_s: float = 0.0
    fit: Mapping[str, Any] = field(default_factory=dict)
    source: str = "measured"

    def __post_init__(self) -> None:
        for f in self.__dataclass_fields__:
            if f.endswith("_s") and not getattr(self, f) >= 0:
                raise ValueError(f"host cost {f} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fit"] = dict(self.fit)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HostCosts":
        return cls(**d)


@dataclass(frozen=True)
class Calibration:
    """Rates measured on one machine (see ``plans.calibration.measure_calibration``).

    ``io_*_by_qd`` map a queue depth to random ``io_read_bytes`` reads (IOPS,
    mean latency); ``mem_core_lookups_per_s`` is one memory-centric core
    extracting rows from pages and pooling them; ``tt_rows_per_s_by_rank`` is
    one compute-centric core rebuilding rows of the reference TT shape, and
    ``compute_core_flops_per_s`` the same expressed in flops (so tables of
    other shapes can be costed). ``source`` is "measured" or "modelled".
    ``host``: the replay host thread's costs (None in version-1 files). ``tasks``: this host's thread-CPU
    costs of the device-worker engine's tasks (:class:`plans.task_costs.TaskCosts`; None in older files), what
    the device-clock cost model (:mod:`plans.clock_cost`) scales by a device profile.
    """

    dram_lookups_per_s: float
    dram_bytes_per_s: float
    io_iops_by_qd: Mapping[int, float]
    io_latency_s_by_qd: Mapping[int, float]
    read_bytes_per_s: float
    mem_core_lookups_per_s: float
    tt_rows_per_s_by_rank: Mapping[int, float]
    compute_core_flops_per_s: float
    io_read_bytes: int = PAGE_BYTES
    machine: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    source: str = "measured"
    version: int = CALIBRATION_FORMAT_VERSION
    host: HostCosts | None = None
    tasks: TaskCosts | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tasks, Mapping):
            object.__setattr__(self, "tasks", TaskCosts.from_dict(self.tasks))
        if self.tasks is not None and not isinstance(self.tasks, TaskCosts):
            raise ValueError("calibration task costs must be an object of per-unit seconds")
        if isinstance(self.host, Mapping):
            object.__setattr__(self, "host", HostCosts.from_dict(self.host))
        if self.host is not None and not isinstance(self.host, HostCosts):
            raise ValueError("calibration host costs must be an object of per-unit seconds")
        for name in ("io_iops_by_qd", "io_latency_s_by_qd", "tt_rows_per_s_by_rank", "machine"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"calibration {name} must be an object")
        object.__setattr__(self, "io_iops_by_qd", {int(k): float(v) for k, v in self.io_iops_by_qd.items()})
        object.__setattr__(self, "io_latency_s_by_qd",
                           {int(k): float(v) for k, v in self.io_latency_s_by_qd.items()})
        object.__setattr__(self, "tt_rows_per_s_by_rank",
                           {int(k): float(v) for k, v in self.tt_rows_per_s_by_rank.items()})
        if not self.io_iops_by_qd:
            raise ValueError("calibration has no IOPS measurement")
        for name in ("dram_lookups_per_s", "dram_bytes_per_s", "read_bytes_per_s", "mem_core_lookups_per_s",
                     "compute_core_flops_per_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"calibration {name} must be a finite number > 0")
        if any(not 0 < v < float("inf") for v in self.io_iops_by_qd.values()):
            raise ValueError("calibration IOPS must be finite and > 0")
        if any(not 0 <= v < float("inf") for v in self.io_latency_s_by_qd.values()):
            raise ValueError("calibration IO latencies must be finite and >= 0")
        if any(not 0 < v < float("inf") for v in self.tt_rows_per_s_by_rank.values()):
            raise ValueError("calibration TT rebuild rates must be finite and > 0")
        if isinstance(self.io_read_bytes, bool) or not isinstance(self.io_read_bytes, int) or self.io_read_bytes < 1:
            raise ValueError(f"calibration io_read_bytes must be a whole number >= 1, got {self.io_read_bytes!r}")

    def iops_at(self, queue_depth: int) -> float:
        """IOPS at ``queue_depth``: log-log interpolation between measured depths, clamped at the ends."""
        qds = sorted(self.io_iops_by_qd)
        x = np.log([float(q) for q in qds])
        y = np.log([self.io_iops_by_qd[q] for q in qds])
        return float(np.exp(np.interp(np.log(max(1, queue_depth)), x, y)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = CALIBRATION_FORMAT
        for name in ("io_iops_by_qd", "io_latency_s_by_qd", "tt_rows_per_s_by_rank"):
            d[name] = {str(k): v for k, v in d[name].items()}
        d["machine"] = dict(self.machine)
        d["notes"] = list(self.notes)
        d["host"] = None if self.host is None else self.host.to_dict()
        d["tasks"] = None if self.tasks is None else self.tasks.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Calibration":
        d = dict(d)
        d.pop("format", None)
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        save_json_doc(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        return load_json_doc(path, "calibration", CALIBRATION_FORMAT, CALIBRATION_VERSIONS_READ, cls.from_dict)


@dataclass(frozen=True)
class DeviceProfile:
    """One computational-storage device as the planner sees it.

    ``iops`` is at the planning queue depth; the per-core rates are for one
    memory-centric core (rows extracted and pooled per second) and one
    compute-centric core (flops per second rebuilding TT rows).
    ``modelled`` is True when the numbers were not measured on this machine.
    ``execution``: "parallel" (every resource works in parallel, the batch takes
    the slowest: a real device) or "host-serial" (the emulator on this machine:
    all cores share one host thread, overlapped only with IO; needs
    ``Calibration.host``). ``queue_depth``: reads in flight per device.
    """

    name: str
    cores: int
    device_dram_bytes: int
    ssd_capacity_bytes: int
    iops: float
    read_bytes_per_s: float
    mem_core_lookups_per_s: float
    compute_core_flops_per_s: float
    modelled: bool = False
    page_bytes: int = PAGE_BYTES
    execution: str = "parallel"
    queue_depth: int = 128
    clock: bool = False  # a device-clock profile's device: predicted as the emulator composes it (plans.clock_cost)
    link_bytes_per_s: float = float("inf")
    link_latency_s: float = 0.0
    ssd_latency_s: float = 0.0  # a target SSD's read latency (ssd_parallelism > 0)
    ssd_parallelism: int = 0  # a target SSD's reads in flight; 0: this machine's disk (measured)

    def __post_init__(self) -> None:
        if self.execution not in EXECUTION_MODELS:
            raise ValueError(f"device {self.name}: execution must be one of {EXECUTION_MODELS}")
        if self.queue_depth < 1:
            raise ValueError(f"device {self.name}: queue_depth must be >= 1")
        if self.cores < 1:
            raise ValueError(f"device {self.name}: cores must be >= 1")
        for name in ("iops", "read_bytes_per_s", "mem_core_lookups_per_s", "compute_core_flops_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"device {self.name}: {name} must be > 0")
        if self.device_dram_bytes < 0 or self.ssd_capacity_bytes < 0:
            raise ValueError(f"device {self.name}: capacities must be >= 0")


def profile_devices(profile: Profile, calib: Calibration | None, n_devices: int = 1, cores: int | None = None, *,
                    queue_depth: int = 128) -> list[DeviceProfile]:
    """``n_devices`` devices of a device profile (``emulator.device.profile``), costed with the parallel-resource
    model. Core rates: the profile's absolute rate, or its speed x this host's measured rate (``calib``). A
    ``measured`` SSD is this machine's disk shared by the devices (1/n of the IOPS at ``queue_depth``, of the
    bandwidth and of the free space, as :func:`local_profiles`); a ``target`` SSD is one per device.
    ``modelled`` unless every figure used is measured or a definition."""
    if n_devices < 1:
        raise InputError(f"need at least one device, got {n_devices}")
    cores = int(cores if cores is not None else profile.core_count)
    if cores < 1:
        raise InputError(f"need at least one core per device, got {cores}")
    needs_calib = profile.ssd.mode == "measured" or profile.mem.rate is None or profile.compute.rate is None
    if needs_calib and calib is None:
        raise InputError(f"device profile {profile.name} ({profile.origin}) scales this machine's measured rates: "
                         "it needs a calibration")
    modelled = profile.modelled or (needs_calib and calib.source != "measured")
    if profile.ssd.mode == "target":
        ssd = dict(ssd_capacity_bytes=int(profile.ssd.capacity_bytes.value), iops=float(profile.ssd.iops.value),
                   read_bytes_per_s=float(profile.ssd.read_bytes_per_s.value),
                   ssd_latency_s=float(profile.ssd.latency_s.value),
                   ssd_parallelism=int(profile.ssd.internal_parallelism.value))
    else:
        free = int(calib.machine.get("disk_free_bytes", 1 << 40))
        ssd = dict(ssd_capacity_bytes=free // n_devices, iops=calib.iops_at(queue_depth) / n_devices,
                   read_bytes_per_s=calib.read_bytes_per_s / n_devices)
    mem = profile.mem.rate_given(calib.mem_core_lookups_per_s if calib else 0.0)
    compute = profile.compute.rate_given(calib.compute_core_flops_per_s if calib else 0.0)
    # devices with cores of their own are predicted as the device clock composes them (the host profile's
    # devices share this machine's CPUs: the parallel-resource model)
    clock = str(profile.cores.value) != AUTO
    return [DeviceProfile(name=f"dev{d}", cores=cores, device_dram_bytes=int(profile.device_memory_bytes.value),
                          mem_core_lookups_per_s=mem, compute_core_flops_per_s=compute, modelled=modelled,
                          queue_depth=int(queue_depth), clock=clock,
                          link_bytes_per_s=float(profile.link.bytes_per_s.value),
                          link_latency_s=float(profile.link.latency_s.value), **ssd)
            for d in range(n_devices)]

"""Energy, modelled (every figure here is labelled modelled wherever it is shown).

* Device energy from the device clock's output and the profile's power figures:
  ``idle_w x batch seconds + sum over core kinds (busy core-seconds x busy W) + ssd_active_w x seconds with
  reads in flight`` (busy and active watts are above idle).
* Host energy from RAPL counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, package domains only, read
  before and after; a counter that wrapped adds its ``max_energy_range_uj``) where they are readable, otherwise
  utilisation x a stated TDP: ``cpu_seconds / (elapsed x cpus) x tdp_w x elapsed``.
* Queries per joule: the measure SCRec's 13.35x energy-efficiency figure is stated in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from emulator.device.clock import BatchTiming, DeviceTiming
from emulator.device.profile import CORE_KINDS, PowerSpec

POWERCAP_ROOT = "/sys/class/powercap"
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+$")  # sub-zones (intel-rapl:0:0, core/uncore/dram) are left out
HOST_W_PER_CPU = 10.0
HOST_W_PER_CPU_SOURCE = ("assumption: 10 W per host CPU thread, a 150-250 W server CPU package over its 16-28 "
                         "hardware threads (no RAPL on this machine; not measured)")


@dataclass(frozen=True)
class DeviceEnergy:
    """Modelled joules of one device over ``seconds``, by component."""
    idle_j: float
    cores_j: Mapping[str, float]
    ssd_j: float
    seconds: float

    @property
    def total_j(self) -> float:
        return self.idle_j + sum(self.cores_j.values()) + self.ssd_j


def device_energy(timing: DeviceTiming, batch_s: float, power: PowerSpec) -> DeviceEnergy:
    """Modelled energy of one device in one batch of ``batch_s`` emulated seconds."""
    if not batch_s >= 0:
        raise ValueError("batch_s must be >= 0")
    cores = {k: timing.busy_s.get(k, 0.0) * power.core_busy_w(k) for k in CORE_KINDS}
    return DeviceEnergy(float(power.idle_w.value) * batch_s, cores, float(power.ssd_active_w.value) * timing.io_busy_s,
                        batch_s)


def batch_device_energy_j(timing: BatchTiming, power: PowerSpec) -> float:
    """Modelled joules of every device over one emulated batch (each device idles for the whole batch)."""
    return sum(device_energy(d, timing.emulated_s, power).total_j for d in timing.devices)


@dataclass(frozen=True)
class HostEnergy:
    """Host joules over an interval; ``basis`` "rapl" (counters, per package zone) or "tdp" (utilisation x TDP);
    both are labelled modelled when shown (RAPL is itself a model of the package's power)."""
    joules: float
    basis: str
    detail: str


class RaplCounters:
    """The package energy counters under a powercap directory (``root``; a fake one in tests)."""

    def __init__(self, root: str | os.PathLike = POWERCAP_ROOT):
        self.root = Path(root)

    def zones(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir() if _PACKAGE_ZONE.match(p.name))
        except OSError:
            return []

    def read(self) -> dict[str, int] | None:
        """Microjoules per package zone, or None when there are none or any cannot be read."""
        zones = self.zones()
        if not zones:
            return None
        out = {}
        for z in zones:
            try:
                out[z.name] = int((z / "energy_uj").read_text().strip())
            except (OSError, ValueError):
                return None
        return out

    def max_range_uj(self, zone: str) -> int | None:
        try:
            return int((self.root / zone / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            return None

    def joules_between(self, before: Mapping[str, int], after: Mapping[str, int]) -> float | None:
        """Joules from two :meth:`read` snapshots; a counter that went down wrapped once (its range is added);
        None if the zones differ or a wrapped counter's range cannot be read."""
        if set(before) != set(after):
            return None
        total_uj = 0
        for zone, b in before.items():
            a = after[zone]
            if a < b:
                rng = self.max_range_uj(zone)
                if rng is None:
                    return None
                a += rng
            total_uj += a - b
        return total_uj / 1e6


def tdp_energy_j(cpu_seconds: float, elapsed_s: float, cpus: int, w_per_cpu: float = HOST_W_PER_CPU) -> float:
    """Utilisation x TDP: ``cpu_seconds / (elapsed_s x cpus)`` of ``cpus x w_per_cpu`` watts for ``elapsed_s``
    (which is ``cpu_seconds x w_per_cpu``, utilisation capped at 1)."""
    if elapsed_s <= 0 or cpus < 1:
        raise ValueError("need elapsed_s > 0 and cpus >= 1")
    utilisation = min(1.0, max(0.0, cpu_seconds) / (elapsed_s * cpus))
    return utilisation * cpus * w_per_cpu * elapsed_s


def host_energy(before: Mapping[str, int] | None, after: Mapping[str, int] | None, *, cpu_seconds: float,
                elapsed_s: float, cpus: int, counters: RaplCounters | None = None,
                w_per_cpu: float = HOST_W_PER_CPU) -> HostEnergy:
    """Host energy over an interval: RAPL when both snapshots exist and subtract, else utilisation x TDP."""
    if before is not None and after is not None:
        j = (counters or RaplCounters()).joules_between(before, after)
        if j is not None:
            return HostEnergy(j, "rapl", f"RAPL package counters ({', '.join(sorted(before))})")
    j = tdp_energy_j(cpu_seconds, elapsed_s, cpus, w_per_cpu)
    return HostEnergy(j, "tdp", f"utilisation x TDP ({cpus} CPUs x {w_per_cpu:g} W; {HOST_W_PER_CPU_SOURCE})"
                      if w_per_cpu == HOST_W_PER_CPU else f"utilisation x TDP ({cpus} CPUs x {w_per_cpu:g} W)")


def queries_per_joule(queries: int, joules: float) -> float:
    """Queries (samples) served per joule; ``inf`` for zero energy."""
    if queries < 0 or joules < 0:
        raise ValueError("queries and joules must be >= 0")
    return float("inf") if joules == 0 else queries / joules

"""Device profiles as data: one source of truth for the planner and the device clock.

A profile is a TOML or JSON document (``format = "screc-device-profile"``, ``version = 1``) describing one
computational-storage device. Every figure is a table ``{value, unit, source}``: the source is a citation, a
derivation from cited figures, ``measured: ...``, ``definition: ...`` or ``assumption: ...``; a figure without one
is refused. Sections:

* ``cores``: ``count`` (a number, or ``"auto"``: the host threads this process may run on), and per core kind
  (``mem``: memory-centric, ``compute``: compute-centric) either ``speed`` (x this host's measured kernels) or
  ``rate`` (the target core's lookups/s for ``mem``, flop/s for ``compute``);
* ``memory.device_bytes``: device memory for TT cores;
* ``ssd``: ``mode = "measured"`` (this machine's NVMe as measured) or ``"target"`` with ``capacity_bytes``,
  ``iops``, ``latency_s``, ``internal_parallelism`` and ``read_bytes_per_s``;
* ``link``: the device-to-host link, ``bytes_per_s`` (``inf`` or "inf": no link) and ``latency_s``;
* ``power``: ``idle_w``, ``mem_core_busy_w`` and ``compute_core_busy_w`` (above idle, per busy core) and
  ``ssd_active_w`` (above idle, while reads are in flight).

Built-in profiles (package data, ``emulator/device/profiles/``): ``host`` (the validation profile) and
``smartssd``. :func:`load_profile` takes a built-in name or a file; a bad file raises
:class:`~tracegen.errors.InputError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

from tracegen.errors import InputError

PROFILE_FORMAT = "screc-device-profile"
PROFILE_VERSION = 1
BUILTIN_PROFILES = ("host", "smartssd")
CORE_KINDS = ("mem", "compute")
CORE_RATE_UNITS = {"mem": "lookups/s", "compute": "flop/s"}
SSD_MODES = ("measured", "target")
AUTO = "auto"


@dataclass(frozen=True)
class Figure:
    """One number of a profile with its unit and where it comes from."""
    value: float | int | str
    unit: str
    source: str

    @property
    def modelled(self) -> bool:
        """True unless the figure is measured here or true by definition."""
        return not self.source.startswith(("measured", "definition"))

    def to_dict(self) -> dict[str, Any]:
        """``inf`` is written as the string "inf", so the JSON stays standard (the loader reads both)."""
        value = "inf" if isinstance(self.value, float) and math.isinf(self.value) else self.value
        return {"value": value, "unit": self.unit, "source": self.source}


@dataclass(frozen=True)
class CoreKindSpec:
    """One core kind: ``speed`` relative to this host's measured kernel, or the target core's absolute ``rate``."""
    speed: Figure | None = None
    rate: Figure | None = None

    def speed_vs_host(self, host_rate: float | None) -> float:
        """How many times faster than this host's kernel (whose measured rate is ``host_rate``) a core runs."""
        if self.speed is not None:
            return float(self.speed.value)
        if host_rate is None or not host_rate > 0:
            raise ValueError("an absolute core rate needs this host's measured rate (a calibration) to scale tasks")
        return float(self.rate.value) / float(host_rate)

    def rate_given(self, host_rate: float) -> float:
        """The core's rate in the kind's unit, given this host's measured rate (used when ``speed`` is set)."""
        return float(self.rate.value) if self.rate is not None else float(self.speed.value) * float(host_rate)


@dataclass(frozen=True)
class SSDSpec:
    """``mode`` "measured": this machine's NVMe (all figures None); "target": a modelled SSD."""
    mode: str
    capacity_bytes: Figure | None = None
    iops: Figure | None = None
    latency_s: Figure | None = None
    internal_parallelism: Figure | None = None
    read_bytes_per_s: Figure | None = None


@dataclass(frozen=True)
class LinkSpec:
    bytes_per_s: Figure
    latency_s: Figure


@dataclass(frozen=True)
class PowerSpec:
    idle_w: Figure
    mem_core_busy_w: Figure
    compute_core_busy_w: Figure
    ssd_active_w: Figure

    def core_busy_w(self, kind: str) -> float:
        return float((self.mem_core_busy_w if kind == "mem" else self.compute_core_busy_w).value)


@dataclass(frozen=True)
class Profile:
    """A device profile (see the module docstring). ``origin``: the file it was read from, or ``builtin:NAME``."""
    name: str
    description: str
    origin: str
    cores: Figure
    mem: CoreKindSpec
    compute: CoreKindSpec
    device_memory_bytes: Figure
    ssd: SSDSpec
    link: LinkSpec
    power: PowerSpec

    def core_kind(self, kind: str) -> CoreKindSpec:
        if kind not in CORE_KINDS:
            raise ValueError(f"unknown core kind {kind!r} (one of {', '.join(CORE_KINDS)})")
        return self.mem if kind == "mem" else self.compute

    @property
    def core_count(self) -> int:
        """Cores per device (``auto``: the host threads this process may run on)."""
        return host_threads() if self.cores.value == AUTO else int(self.cores.value)

    @property
    def modelled(self) -> bool:
        """True when any figure is neither measured nor a definition."""
        return any(f.modelled for _, f in self.figures())

    def figures(self) -> Iterator[tuple[str, Figure]]:
        """Every figure with its dotted field name, in file order."""
        yield "cores.count", self.cores
        for kind in CORE_KINDS:
            spec = self.core_kind(kind)
            for attr in ("speed", "rate"):
                if getattr(spec, attr) is not None:
                    yield f"cores.{kind}.{attr}", getattr(spec, attr)
        yield "memory.device_bytes", self.device_memory_bytes
        for attr in _SSD_FIELDS:
            if getattr(self.ssd, attr) is not None:
                yield f"ssd.{attr}", getattr(self.ssd, attr)
        yield "link.bytes_per_s", self.link.bytes_per_s
        yield "link.latency_s", self.link.latency_s
        for attr in _POWER_FIELDS:
            yield f"power.{attr}", getattr(self.power, attr)

    def to_dict(self) -> dict[str, Any]:
        """The profile as a document :func:`parse_profile` reads back (standard JSON: ``inf`` as "inf")."""
        d: dict[str, Any] = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "name": self.name,
                             "description": self.description, "ssd": {"mode": self.ssd.mode}}
        for field, fig in self.figures():
            node = d
            *parents, leaf = field.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = fig.to_dict()
        return d


def host_threads() -> int:
    """The CPUs this process may run on (what the host profile's ``auto`` core count means)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# field -> (unit kind, minimum, whether the minimum itself is allowed, whether inf is allowed)
_SSD_FIELDS = ("capacity_bytes", "iops", "latency_s", "internal_parallelism", "read_bytes_per_s")
_POWER_FIELDS = ("idle_w", "mem_core_busy_w", "compute_core_busy_w", "ssd_active_w")
_POSITIVE = (0.0, False, False)
_NONNEG = (0.0, True, False)


def _figure(section: Mapping[str, Any], key: str, where: str, rule=_POSITIVE, *, integer: bool = False,
            auto: bool = False, inf: bool = False) -> Figure:
    field = f"{where}.{key}"
    if key not in section:
        raise ValueError(f"field {field}: missing")
    raw = section[key]
    if not isinstance(raw, Mapping) or "value" not in raw:
        raise ValueError(f"field {field}: must be a table {{value, unit, source}}")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"field {field}: needs a source (a citation, 'measured: ...' or 'assumption: ...')")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise ValueError(f"field {field}: unit must be text")
    value = raw["value"]
    if inf and value == "inf":
        value = math.inf
    if auto and value == AUTO:
        return Figure(AUTO, unit, source.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        also = ' or "auto"' if auto else ""
        raise ValueError(f"field {field}: value must be a number{also}, got {value!r}")
    lo, closed, _ = rule
    if math.isnan(value) or (math.isinf(value) and not (inf and value > 0)):
        raise ValueError(f"field {field}: value must be finite{' or inf' if inf else ''}, got {value!r}")
    if value < lo or (value == lo and not closed):
        raise ValueError(f"field {field}: value must be {'>=' if closed else '>'} {lo:g}, got {value!r}")
    if integer and not math.isinf(value) and value != int(value):
        raise ValueError(f"field {field}: value must be a whole number, got {value!r}")
    return Figure(int(value) if integer else value, unit, source.strip())


def _section(d: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    field = f"{where}.{key}" if where else key
    s = d.get(key)
    if not isinstance(s, Mapping):
        raise ValueError(f"field {field}: missing section")
    return s


def _core_kind(cores: Mapping[str, Any], kind: str) -> CoreKindSpec:
    s = _section(cores, kind, "cores")
    where = f"cores.{kind}"
    if ("speed" in s) == ("rate" in s):
        raise ValueError(f"field {where}: give exactly one of speed (x host) or rate ({CORE_RATE_UNITS[kind]})")
    if "speed" in s:
        return CoreKindSpec(speed=_figure(s, "speed", where))
    return CoreKindSpec(rate=_figure(s, "rate", where))


def _ssd(d: Mapping[str, Any]) -> SSDSpec:
    s = _section(d, "ssd")
    mode = s.get("mode")
    if mode not in SSD_MODES:
        raise ValueError(f"field ssd.mode: must be one of {', '.join(SSD_MODES)}, got {mode!r}")
    if mode == "measured":
        return SSDSpec("measured")
    return SSDSpec("target", capacity_bytes=_figure(s, "capacity_bytes", "ssd", integer=True),
                   iops=_figure(s, "iops", "ssd"), latency_s=_figure(s, "latency_s", "ssd", _NONNEG),
                   internal_parallelism=_figure(s, "internal_parallelism", "ssd", (1.0, True, False), integer=True),
                   read_bytes_per_s=_figure(s, "read_bytes_per_s", "ssd"))


def parse_profile(d: Mapping[str, Any], origin: str) -> Profile:
    """A :class:`Profile` from a parsed document; ValueError names the bad field."""
    if d.get("format") != PROFILE_FORMAT:
        raise ValueError(f"field format: must be {PROFILE_FORMAT!r}, got {d.get('format')!r}")
    if d.get("version") != PROFILE_VERSION:
        raise ValueError(f"field version: this screc reads version {PROFILE_VERSION}, got {d.get('version')!r}")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("field name: missing")
    cores = _section(d, "cores")  # checked in file order, so the first bad field is the one named
    count = _figure(cores, "count", "cores", (1.0, True, False), integer=True, auto=True)
    mem, compute = _core_kind(cores, "mem"), _core_kind(cores, "compute")
    memory = _figure(_section(d, "memory"), "device_bytes", "memory", _NONNEG, integer=True)
    ssd = _ssd(d)
    link = _section(d, "link")
    link_spec = LinkSpec(_figure(link, "bytes_per_s", "link", inf=True), _figure(link, "latency_s", "link", _NONNEG))
    power = _section(d, "power")
    return Profile(name=name.strip(), description=str(d.get("description", "")), origin=origin, cores=count,
                   mem=mem, compute=compute, device_memory_bytes=memory, ssd=ssd, link=link_spec,
                   power=PowerSpec(*(_figure(power, k, "power", _NONNEG) for k in _POWER_FIELDS)))


def _read_document(text: str, suffix: str) -> Mapping[str, Any]:
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    return d


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A built-in profile by name (:data:`BUILTIN_PROFILES`) or a ``.toml`` / ``.json`` profile file."""
    text_name = os.fspath(name_or_path)
    if text_name in BUILTIN_PROFILES:
        res = resources.files("emulator.device").joinpath("profiles", f"{text_name}.toml")
        return parse_profile(_read_document(res.read_text(encoding="utf-8"), ".toml"), f"builtin:{text_name}")
    p = Path(text_name)
    if p.is_dir():
        raise InputError("is a directory, not a device profile file", p)
    if not p.is_file():
        if p.suffix.lower() not in (".toml", ".json"):
            raise InputError(f"unknown device profile {text_name!r}: a built-in name "
                             f"({', '.join(BUILTIN_PROFILES)}) or a .toml/.json profile file")
        raise InputError("device profile file not found", p)
    try:
        return parse_profile(_read_document(p.read_text(encoding="utf-8"), p.suffix.lower()), str(p))
    except (ValueError, TypeError, UnicodeDecodeError) as e:  # tomllib.TOMLDecodeError is a ValueError
        raise InputError(f"bad device profile: {e}", p) from None

"""``screc plan profiles``: the device profiles (built-in and given files), every figure with its source."""

from __future__ import annotations

import argparse
import math
import textwrap
from typing import Any, Sequence

from rich.console import Group
from rich.text import Text

from bench.common import emit_json, add_json_arg, ensure_writable_file, stdout_console
from bench.tables import TERMINAL_COLUMNS, fit_table
from emulator.device.profile import BUILTIN_PROFILES, AUTO, Figure, Profile, load_profile

EXAMPLE = """example:
  screc plan profiles                        # host and smartssd, side by side
  screc plan profiles my_device.toml --json  # and a profile file of your own

A profile is data: per core kind a speed (x this host's measured kernels) or
the target core's rate; cores per device; device memory; the SSD ("measured":
this machine's disk, or a target's IOPS, latency, internal parallelism and
bandwidth); the device-to-host link; power figures for the modelled energy.
Every figure has a source: a citation, a derivation, "measured: ...",
"definition: ..." or "assumption: ..."; it is modelled unless measured or a
definition. Use one with `screc plan solve --device-profile NAME|FILE`; write
your own in the built-in files' format (emulator/device/profiles/*.toml).
"""

LABELS = {
    "cores.count": "cores per device", "cores.mem.speed": "mem core speed", "cores.mem.rate": "mem core rate",
    "cores.compute.speed": "compute core speed", "cores.compute.rate": "compute core rate",
    "memory.device_bytes": "device memory", "ssd.capacity_bytes": "SSD capacity", "ssd.iops": "SSD 4 KiB reads",
    "ssd.latency_s": "SSD read latency", "ssd.internal_parallelism": "SSD parallelism",
    "ssd.read_bytes_per_s": "SSD read bandwidth", "link.bytes_per_s": "link bandwidth",
    "link.latency_s": "link latency", "power.idle_w": "idle power", "power.mem_core_busy_w": "busy mem core",
    "power.compute_core_busy_w": "busy compute core", "power.ssd_active_w": "SSD reading",
}


def _si(v: float, unit: str, base: float = 1000.0) -> str:
    for prefix in ("", "k", "M", "G", "T"):
        if abs(v) < base or prefix == "T":
            return f"{v:.3g} {prefix}{unit}".replace("  ", " ")
        v /= base
    return f"{v:.3g} T{unit}"


def format_figure(fig: Figure, field: str = "") -> str:
    """A short cell for a figure: ``3.84 TB``, ``540 kIO/s``, ``85 us``, ``1x host``, ``none``; power drawn above
    idle (busy cores, reads in flight) as ``+0.5 W``."""
    v, unit = fig.value, fig.unit
    if v == AUTO:
        return f"auto ({load_cores_auto()})"
    if isinstance(v, (int, float)) and math.isinf(v):
        return "none (no link)" if unit == "B/s" else "inf"
    if unit == "B":
        return f"{v / 2**30:.3g} GiB" if v % 2**30 == 0 else _si(float(v), "B")
    if unit == "s":
        return "0" if v == 0 else f"{v * 1e6:.3g} us" if v < 1e-3 else f"{v * 1e3:.3g} ms"
    if unit in ("B/s", "IO/s", "lookups/s", "flop/s"):
        return _si(float(v), {"lookups/s": "lookup/s", "flop/s": "FLOP/s"}.get(unit, unit))
    if unit == "x host":
        return f"{v:g}x host"
    if unit == "W":
        return f"{v:g} W" if field in ("", "power.idle_w") else f"+{v:g} W"
    return f"{v:g} {unit}".strip()


def load_cores_auto() -> int:
    from emulator.device.profile import host_threads

    return host_threads()


def _basis(fig: Figure) -> str:
    return "modelled" if fig.modelled else "measured" if fig.source.startswith("measured") else "definition"


def render_profiles(profiles: Sequence[Profile]) -> Group:
    """One table (a row per figure, a column per profile, a note number per source) and the numbered sources."""
    notes: dict[str, int] = {}
    rows: dict[str, list[str]] = {}
    for k, prof in enumerate(profiles):
        rows.setdefault("ssd.mode", [""] * len(profiles))[k] = f"SSD {prof.ssd.mode}"
        for field, fig in prof.figures():
            n = notes.setdefault(f"({_basis(fig)}) {fig.source}", len(notes) + 1)
            rows.setdefault(field, [""] * len(profiles))[k] = f"{format_figure(fig, field)} [{n}]"
    order = ["ssd.mode"] + [f for f in LABELS if f in rows] + [f for f in rows if f not in LABELS and f != "ssd.mode"]
    cells = [[LABELS.get(f, "SSD model" if f == "ssd.mode" else f), *(c or "-" for c in rows[f])] for f in order]
    table = fit_table("device profiles (numbers in brackets: sources below)",
                      ["figure", *(p.name for p in profiles)], cells)
    lines = [_wrapped(f"[{n}] {text}") for text, n in notes.items()]
    heads = [_wrapped(f"{p.name}: {p.description} ({p.origin})") for p in profiles]
    return Group(*heads, table, Text("sources (+W: drawn above idle while busy):"), *lines)


def _wrapped(text: str) -> Text:
    """``text`` wrapped at 80 columns (continuation lines indented), whatever the console's width."""
    return Text("\n".join(textwrap.wrap(text, TERMINAL_COLUMNS, subsequent_indent="     ")))


def profiles_payload(profiles: Sequence[Profile]) -> dict[str, Any]:
    return {"profiles": [{**p.to_dict(), "origin": p.origin, "cores_per_device": p.core_count,
                          "modelled": p.modelled} for p in profiles]}


def cmd_profiles(args: argparse.Namespace) -> int:
    ensure_writable_file(args.json)
    profiles = [load_profile(n) for n in (*BUILTIN_PROFILES, *args.files)]
    if emit_json(args.json, profiles_payload(profiles)):
        return 0
    stdout_console().print(render_profiles(profiles))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("profiles", help="list the device profiles: every figure with its source",
                              description="List the built-in device profiles (and any given profile files).",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="FILE", help="device profile files (.toml/.json) to list as well")
    add_json_arg(p, "every profile with its figures and sources")
    p.set_defaults(func=cmd_profiles)

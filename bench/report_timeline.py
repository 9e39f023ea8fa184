"""``screc report``'s emulated timeline: one batch's per-device, per-core tasks and the cores' utilisation.

Drawn from a replay row's ``emulated.timeline`` (the last batch of the run on the device clock; emulated, under
the row's device profile): a Gantt chart with one line per core of each device (the ``host`` profile places every
task of every device and of the host on this machine's CPUs, one pool named ``cpus``), the reads' span, and a bar
per core of busy time / the batch's parallel phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

TIMELINE_FILE = "device_timeline.png"
_COLOURS = {"mem": "tab:blue", "compute": "tab:orange"}


def timeline_rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict]]:
    """(policy, timeline) of every row that carries one."""
    out = []
    for r in rows:
        tl = (r.get("emulated") or {}).get("timeline") if isinstance(r.get("emulated"), dict) else None
        if isinstance(tl, dict) and isinstance(tl.get("devices"), list):
            out.append((str(r.get("policy", "?")), tl))
    return out


def core_utilisation(tl: Mapping[str, Any]) -> dict[str, float]:
    """Per ``device/core``: busy seconds / the batch's parallel phase (emulated)."""
    span = max(float(tl.get("parallel_s") or 0.0), 1e-12)
    out: dict[str, float] = {}
    for d in tl["devices"]:
        for core, _kind, start, end, _task in d["slots"]:
            key = f"{d['device']}/{core}"
            out[key] = out.get(key, 0.0) + (float(end) - float(start)) / span
    return out


def plot_timeline(rows: Sequence[Mapping[str, Any]], path: Path, figure, save) -> Path | None:
    """The first timeline-carrying rows (up to 3 policies) as Gantt charts plus utilisation bars."""
    found = timeline_rows(rows)[:3]
    if not found:
        return None
    fig, _ = figure(10.0, 3.2 * len(found))
    fig.clear()
    axes = fig.subplots(len(found), 2, squeeze=False, width_ratios=[3, 1])
    for (policy, tl), (gantt, util) in zip(found, axes):
        lanes = []
        for d in tl["devices"]:
            cores = sorted({s[0] for s in d["slots"]})
            for core in cores:
                y = len(lanes)
                lanes.append(f"{d['device']}/{core}")
                for c, kind, start, end, _task in d["slots"]:
                    if c == core:
                        gantt.barh(y, (end - start) * 1e3, left=start * 1e3, color=_COLOURS.get(kind, "tab:gray"),
                                   edgecolor="black", linewidth=0.3)
            if d.get("reads"):
                lanes.append(f"{d['device']}/reads")
                a, b = d["reads"]
                gantt.barh(len(lanes) - 1, (b - a) * 1e3, left=a * 1e3, color="tab:green", alpha=0.6)
        gantt.set_yticks(range(len(lanes)), lanes, fontsize=7)
        gantt.set_xlabel("ms from dispatch (emulated)")
        gantt.set_title(f"{policy}: batch {tl['batch']} under profile {tl['profile']} (emulated); "
                        f"blue mem-centric, orange compute-centric, green reads", fontsize=8)
        u = core_utilisation(tl)
        util.barh(range(len(u)), list(u.values()), color="tab:purple")
        util.set_yticks(range(len(u)), list(u.keys()), fontsize=7)
        util.set_xlim(0, 1.05)
        util.set_xlabel("busy / parallel phase")
    return save(fig, path)

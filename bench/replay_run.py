"""The live-display replay driver shared by ``replay``, ``compare`` and ``demo``.

:func:`add_replay_args` adds the replay flags (engine, queue depth, batches, buffered IO, pipeline, live
display), :func:`replay_config` turns them into a :class:`ReplayConfig`, :func:`run_replay` replays under the
live view and returns the ``replay`` result payload.
"""

from __future__ import annotations

import argparse

from bench.common import add_engine_arg, add_qd_arg, stderr_console
from emulator.plan import Plan
from emulator.replay.counters import ReplayStats
from emulator.replay.engine import Replayer, ReplayConfig
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


def prediction_check(plan: Plan, payload: dict) -> dict | None:
    """The plan's predicted batch time against the measured one of this replay: the steady-state interval
    per batch after the first batch (which alone pays first-touch costs; ``elapsed_s / batches`` is kept
    beside it as ``measured_with_first_batch_s``). The prediction is modelled (the planner's cost model)."""
    perf = (plan.predicted or {}).get("perf") or {}
    predicted = perf.get("total_s") if isinstance(perf, dict) else None
    batches = payload.get("batches") or 0
    if isinstance(predicted, bool) or not isinstance(predicted, (int, float)) or not predicted > 0 or not batches:
        return None  # no prediction (or a malformed one: it is only reported, never used)
    with_first = payload["elapsed_s"] / batches
    measured = payload.get("steady_batch_s") or with_first
    return {"predicted_batch_s": predicted, "measured_batch_s": measured, "measured_with_first_batch_s": with_first,
            "relative_error": measured / predicted - 1.0, "bottleneck": perf.get("bottleneck"),
            "calibration": plan.predicted.get("calibration_source"), "verify_serialised": bool(payload.get("verify"))}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def check_engine_verify(engine: str, verify: bool) -> None:
    """The null engine reads nothing, so there is nothing to verify: refuse the pair up front."""
    if verify and engine == "null":
        raise InputError("--engine null reads nothing (it only measures overhead), so --verify has nothing to "
                         "check; use --engine uring or pread with --verify")


def replay_config(args: argparse.Namespace) -> ReplayConfig:
    if args.qd < 1:
        raise InputError(f"--qd must be >= 1, got {args.qd}")
    if args.batches is not None and args.batches < 1:
        raise InputError(f"--batches must be >= 1, got {args.batches}")
    start = getattr(args, "start_batch", 0)
    if start < 0:
        raise InputError(f"--start-batch must be >= 0, got {start}")
    verify = bool(getattr(args, "verify", False))
    check_engine_verify(args.engine, verify)
    if args.host_threads is not None and args.host_threads < 1:
        raise InputError(f"--host-threads must be >= 1, got {args.host_threads}")
    profile, rates = device_clock_args(args)
    return ReplayConfig(engine=args.engine, queue_depth=args.qd, allow_buffered=args.buffered_io,
                        pipeline=not args.no_pipeline, verify=verify, max_batches=args.batches, start_batch=start,
                        host_threads=args.host_threads, offload=args.offload, device_profile=profile,
                        host_rates=rates)


def device_clock_args(args: argparse.Namespace):
    """The device profile to emulate under (``--device-profile``, default ``host``) and this host's measured
    core rates (``--calibration``; a profile with absolute core rates needs them to scale task times)."""
    from emulator.device.profile import load_profile

    name = getattr(args, "device_profile", None) or "host"
    profile = load_profile(name)
    rates = (None, None)
    if profile.mem.rate is not None or profile.compute.rate is not None:
        from plans.calibration import default_calibration
        from plans.types import Calibration

        cal_path = getattr(args, "calibration", None)
        calib = Calibration.load(cal_path) if cal_path else default_calibration()
        rates = (calib.mem_core_lookups_per_s, calib.compute_core_flops_per_s)
    return profile, rates


def check_batch_range(config: ReplayConfig, reader: TraceReader) -> None:
    """Refuse a start batch at or past the end of the trace (nothing would be replayed)."""
    if config.start_batch >= reader.num_batches:
        raise InputError(f"--start-batch {config.start_batch} is past the last batch (the trace has "
                         f"{reader.num_batches} batches, numbered 0 to {reader.num_batches - 1})", reader.path)


def run_replay(store: Store, reader: TraceReader, plan: Plan, config: ReplayConfig, *, live: bool) -> dict:
    """Replay with the live view; returns the ``replay`` result payload."""
    from bench.live import LiveView

    check_batch_range(config, reader)
    check_engine_verify(config.engine, config.verify)
    stats = ReplayStats()
    rss_before = peak_rss_bytes()
    with Replayer(store, plan, config, stats=stats) as rep:
        with LiveView(stats.snapshot, stderr_console(), live=live):
            totals = rep.run(reader)
        payload = stats.summary()
        payload.update({
            "policy": plan.planner, "engine": config.engine, "queue_depth": config.queue_depth,
            "pipeline": config.pipeline and not config.verify, "ios": totals["ios"], "bytes_read": totals["bytes_read"],
            "dram_used_bytes": rep.dram_bytes, "dram_budget_bytes": plan.dram_budget_bytes,
            "verify": totals.get("verify"), "store": str(store.path), "trace": str(reader.path),
            "first_batch_s": totals.get("first_batch_s"), "steady_batch_s": totals.get("steady_batch_s"),
            "host_threads": rep.host_threads, "pooled_by": "host" if rep.host_pooled else "devices",
            "device_cores": [{"name": dp.name, "mem_cores": c[0], "compute_cores": c[1]}
                        for dp, c in zip(plan.devices, rep._cores)],
        })
        if rep.emulation is not None:
            payload["emulated"] = rep.emulation.summary(reader.batch_size)
    payload["prediction"] = prediction_check(plan, payload)
    peak = peak_rss_bytes()
    # Memory: the process's peak resident set against the DRAM the plan holds. The overhead is what the
    # process needed besides the DRAM tier: interpreter, libraries and JIT code (rss_before), IO buffers,
    # one batch of lookups, and (with --verify) the pages of the reference reads.
    payload["memory"] = {"peak_rss_bytes": peak, "rss_before_replay_bytes": rss_before,
                         "dram_tier_bytes": payload["dram_used_bytes"],
                         "overhead_bytes": peak - payload["dram_used_bytes"]}
    return payload


def add_replay_args(p: argparse.ArgumentParser) -> None:
    add_engine_arg(p)
    add_qd_arg(p)
    p.add_argument("--batches", type=int, default=None, help="replay at most this many batches")
    p.add_argument("--buffered-io", action="store_true",
                   help="allow page-cache reads where the filesystem refuses O_DIRECT (numbers are then not SSD numbers)")
    p.add_argument("--no-pipeline", action="store_true", help="do not overlap the next batch's IO with pooling")
    p.add_argument("--no-live", action="store_true", help="plain periodic lines instead of the live dashboard")
    add_device_args(p)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """The device-emulation flags of ``replay`` and ``compare``."""
    p.add_argument("--host-threads", type=int, default=None,
                   help="host threads pooling DRAM rows and merging partials (default: every CPU)")
    p.add_argument("--offload", choices=("auto", "device", "host"), default="auto",
                   help="who pools SSD rows: devices (SCRec), the host (plain SSDs), or auto: the host for "
                        "all-dram, all-ssd, lru and static-topk, the devices otherwise (default auto)")
    p.add_argument("--device-profile", default="host", metavar="NAME|FILE",
                   help="emulate device time under this profile: host (this machine; the validation profile), "
                        "smartssd, or a profile file (default host)")
    if not any(a.dest == "calibration" for a in p._actions):
        p.add_argument("--calibration", default=None,
                       help="calibration JSON from `screc calibrate`: this host's core rates, for profiles with "
                            "absolute core rates (default: modelled rates)")


def add_remote_args(p: argparse.ArgumentParser) -> None:
    """``--ray ADDRESS --remote-devices [--remote-store DIR]``: the plan's devices as Ray actors on the nodes."""
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="a Ray cluster (HOST:PORT or auto) whose nodes run the devices (with --remote-devices)")
    p.add_argument("--remote-devices", action="store_true",
                   help="each device of the plan an actor on a node of --ray (spread over the nodes in turn), "
                        "reading that node's copy of the store; the network is measured apart")
    p.add_argument("--remote-store", default=None, metavar="DIR",
                   help="the store on every node: relative to each node's SCREC_DISK, or absolute (default: "
                        "--store's path, on a shared file system or copied to the same path)")


def remote_devices(args: argparse.Namespace, store: Store, plan: Plan):
    """The device factory of ``--ray ADDRESS --remote-devices`` (None without them)."""
    ray, remote = getattr(args, "ray", None), getattr(args, "remote_devices", False)
    if remote and not ray:
        raise InputError("--remote-devices needs --ray ADDRESS (the cluster whose nodes run the devices)")
    if ray and not remote:
        raise InputError("--ray: replay runs its devices on the cluster only with --remote-devices")
    if getattr(args, "remote_store", None) and not remote:
        raise InputError("--remote-store applies to --remote-devices")
    if not remote:
        return None
    from emulator.cluster.remote_device import RemoteDevices

    return RemoteDevices(ray, store, plan, store_dir=args.remote_store)


def network_line(payload: dict) -> str:
    """The remote devices' network figures of a payload (measured), or ''."""
    net = payload.get("network")
    if not net:
        return ""
    devs = net["devices"]
    sent = sum(d["request_bytes_per_batch"] for d in devs)
    got = sum(d["response_bytes_per_batch"] for d in devs)
    pages = sum(d["pages_bytes_per_batch"] for d in devs)
    wire = max((d["wire_s_per_batch"] for d in devs), default=0.0)
    return (f"\n  network (measured, Ray, apart from the device link): {len(devs)} remote devices, per batch "
            f"{sent / 1e3:,.1f} kB sent, {got / 1e3:,.1f} kB received ({pages / 1e3:,.1f} kB of pages), "
            f"wire time up to {wire * 1e3:.2f} ms per device")

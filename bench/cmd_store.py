"""``screc store build | verify | info``."""

from __future__ import annotations

import argparse
import time

from rich.console import Group
from rich.table import Table

from bench.common import (emit_json, ProgressAdapter, add_json_arg, add_model_arg, ensure_writable_dir, ensure_writable_file,
                          format_bytes, make_progress, stderr_console, stdout_console, stop_flag, write_json)
from emulator.store.store import Store, StoreBuildConfig
from emulator.store.build import TT_METHODS, build_store, verify_store
from emulator.store.weights import DEFAULT_GENERATOR, GENERATORS
from tracegen.errors import InputError


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{what} {text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in vals):
        raise InputError(f"{what} must be >= 1")
    return vals


def _row_formats(text: str) -> tuple[str, ...]:
    from emulator.store.quant import STORED_FORMATS

    names = tuple(x.strip() for x in (text or "").split(",") if x.strip())
    bad = [n for n in names if n not in STORED_FORMATS]
    if bad or len(set(names)) != len(names):
        raise InputError(f"--row-formats {text!r}: give distinct names among {','.join(STORED_FORMATS)}")
    return names


def _imports(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--import {item!r} is not TABLE=FILE.npy or TABLE=FILE.h5[:DATASET]")
        out[name] = path
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from tracegen.presets import load_model

    ensure_writable_dir(args.output)  # before building for minutes
    ensure_writable_file(args.json)
    spec = load_model(args.model, scale=args.scale, batch_size=None)
    tt_ranks = () if args.tt_tol is not None else _int_list(args.tt_ranks, "--tt-ranks") if args.tt_ranks else ()
    if args.tt_tol is not None and not (0 < args.tt_tol < 1):
        raise InputError(f"--tt-tol must be in (0, 1), got {args.tt_tol}")
    config = StoreBuildConfig(weights_seed=args.seed, signal_rank=args.signal_rank, noise_ratio=args.noise_ratio,
                              tt_ranks=tt_ranks, tt_rel_tol=args.tt_tol, imports=_imports(args.imports),
                              row_formats=_row_formats(args.row_formats))
    if args.ray:
        return _build_sharded(args, spec, config)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    t0 = time.perf_counter()
    with make_progress() as progress:
        store = build_store(spec, args.output, config, progress=ProgressAdapter(progress), workers=args.workers,
                            weights_generator=args.weights_generator, tt_method=args.tt_method)
    secs = time.perf_counter() - t0
    summary = {"store": str(store.path), "store_id": store.store_id, "tables": len(store.tables),
               "raw_bytes": store.raw_bytes, "seconds": round(secs, 3), "workers": args.workers,
               "weights_generator": args.weights_generator, "tt_method": args.tt_method,
               "write_bytes_per_s": store.raw_bytes / secs if secs > 0 else None}
    if args.json:
        write_json(args.json, summary)
    if args.json != "-":
        stdout_console().print(f"built {store.path}: {len(store.tables)} tables, {format_bytes(store.raw_bytes)} raw, "
                               f"{secs:.1f} s ({format_bytes(store.raw_bytes / max(secs, 1e-9))}/s), "
                               f"store_id {store.store_id}")
    return 0


def _build_sharded(args: argparse.Namespace, spec, config: StoreBuildConfig) -> int:
    """store build --ray: table shards built on the cluster's storage nodes (emulator.cluster.shards)."""
    from emulator.cluster.connect import connect
    from emulator.cluster.shards import build_sharded

    connect(args.ray)
    err = stderr_console()
    t0 = time.perf_counter()
    with stop_flag() as stop:
        m = build_sharded(spec, args.output, config, shards=args.shards, should_stop=stop.is_set, on_shard=lambda s: err.print(
            f"shard {s.index} ({len(s.tables)} tables) on {s.location.key}: {s.status} {s.problem}", markup=False))
    secs = time.perf_counter() - t0
    summary = {"store": str(args.output), "complete": m.complete, "raw_bytes": m.raw_bytes, "seconds": round(secs, 3),
               "shards": [{"index": s.index, "location": s.location.key, "path": s.path, "status": s.status,
                           "store_id": s.store_id, "tables": len(s.tables), "raw_bytes": s.raw_bytes,
                           "seconds": s.seconds, "problem": s.problem} for s in m.shards], "notes": list(m.notes)}
    if emit_json(args.json, summary):
        return 0 if m.complete else 1
    for note in m.notes:
        stdout_console().print(f"note: {note}", markup=False)
    failed = [s for s in m.shards if not s.done]
    if failed:
        stderr_console().print(f"screc store build: {len(failed)} of {len(m.shards)} shards not built (first: shard "
                               f"{failed[0].index} on {failed[0].location.key}: {failed[0].problem}); run the same "
                               f"command again to resume", markup=False, highlight=False)
        return 1
    kept = sum(s.status == "kept" for s in m.shards)
    stdout_console().print(f"built {args.output}: {len(m.shards)} shards ({kept} kept from an earlier run) on "
                           f"{len({s.location.key for s in m.shards})} nodes, {format_bytes(m.raw_bytes)} raw, "
                           f"{secs:.1f} s (measured)", markup=False, highlight=False)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from emulator.cluster.manifest import is_cluster_store

    ensure_writable_file(args.json)
    if args.ray or is_cluster_store(args.store):  # every shard checked on its node (emulator.cluster.shards)
        if not args.ray:
            raise InputError("is a cluster store: verify it on its nodes with --ray ADDRESS", args.store)
        from emulator.cluster.connect import connect
        from emulator.cluster.shards import verify_sharded

        connect(args.ray)
        report = verify_sharded(args.store)
    else:
        with make_progress() as progress:
            report = verify_store(args.store, progress=ProgressAdapter(progress))
    if args.json:
        write_json(args.json, report.to_dict())
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise InputError(f"{report.problems[0]}{more}", args.store)
    if args.json != "-":
        stdout_console().print(f"ok: {report.files} files, {format_bytes(report.bytes)} checked, all checksums match")
    return 0


def store_info(store: Store) -> dict:
    keep = ("rank", "tt_p_shapes", "tt_q_shapes", "tt_ranks", "bytes", "compression_ratio", "rel_fro_error",
            "max_abs_error")
    return {"store": str(store.path), "store_id": store.store_id, "spec": store.spec.name,
            "raw_bytes": store.raw_bytes, "tables": [
                {"name": t.name, "rows": t.rows, "dim": t.dim, "dtype": t.dtype, "row_bytes": t.row_bytes,
                 "rows_per_page": t.rows_per_page, "raw_bytes": t.raw.bytes,
                 "tt": [{k: v for k, v in tt.to_dict().items() if k in keep} for tt in t.tt],
                 "formats": [{"format": f.format, "row_bytes": f.row_bytes, "bytes": f.file.bytes,
                              "compression_ratio": t.raw.bytes / f.file.bytes, "rel_fro_error": f.rel_fro_error,
                              "max_abs_error": f.max_abs_error} for f in t.formats]}
                for t in store.tables]}


def render_store_info(info: dict) -> Group:
    """The tables of a store, then its TT variants (two tables, to fit 80 columns; pure)."""
    tables = Table(title=f"store {info['store']} ({info['spec']}, id {info['store_id'][:12]})")
    for col in ("table", "rows", "dim", "dtype", "raw"):
        tables.add_column(col, justify="left" if col in ("table", "dtype") else "right", overflow="fold")
    tt = Table(title="TT variants (errors measured on sampled rows at build time)")
    for col in ("table", "TT rank", "TT bytes", "ratio", "rel err", "max abs err"):
        tt.add_column(col, justify="left" if col == "table" else "right", overflow="fold")
    for t in info["tables"]:
        tables.add_row(t["name"], f"{t['rows']:,}", str(t["dim"]), t["dtype"], format_bytes(t["raw_bytes"]))
        for v in t["tt"]:
            tt.add_row(t["name"], str(v["rank"]), format_bytes(v["bytes"]), f"{v['compression_ratio']:.1f}x",
                       f"{v['rel_fro_error']:.4f}", f"{v['max_abs_error']:.4f}")
    fmts = Table(title="row formats (errors measured on sampled rows read back at build time)")
    for col in ("table", "format", "row B", "bytes", "ratio", "rel err", "max abs err"):
        fmts.add_column(col, justify="left" if col in ("table", "format") else "right", overflow="fold")
    for t in info["tables"]:
        for f in t.get("formats", []):
            fmts.add_row(t["name"], f["format"], str(f["row_bytes"]), format_bytes(f["bytes"]),
                         f"{f['compression_ratio']:.1f}x", f"{f['rel_fro_error']:.4f}", f"{f['max_abs_error']:.4f}")
    total = f"total raw {format_bytes(info['raw_bytes'])} in {len(info['tables'])} tables"
    parts = [tables] + ([tt] if tt.row_count else []) + ([fmts] if fmts.row_count else [])
    return Group(*parts, total if tt.row_count else total + ", no TT variants")


def cmd_info(args: argparse.Namespace) -> int:
    ensure_writable_file(args.json)
    store = Store.open(args.store)
    info = store_info(store)
    if emit_json(args.json, info):
        return 0
    stdout_console().print(render_store_info(info))
    return 0


BUILD_EXAMPLE = """example:
  screc store build --model tiny --out-dir stores/tiny
  screc store build --model criteo-kaggle --scale 0.05 --tt-ranks 8,16 --out-dir stores/ck --json
  screc store build --model my_spec.toml --import t0=t0.npy --out-dir stores/mine --json runs/build.json
  screc store build --model tiny --row-formats fp16,int8,int4 --out-dir stores/tiny-q
  screc store build --model meta-2021 --scale 0.001 --out-dir stores/m21 --workers 2   (screc bench build: vs fio)
  screc store build --model meta-2021 --scale 0.01 --ray auto --out-dir stores/meta   (shards on the nodes)
"""
VERIFY_EXAMPLE = """example:
  screc store verify stores/tiny
  screc store verify stores/tiny --json runs/verify.json
  screc store verify stores/meta --ray auto          (a cluster store: each shard on its node)
"""
INFO_EXAMPLE = """example:
  screc store info stores/tiny
  screc store info stores/tiny --json

columns:
  raw          bytes of the table's raw row file (rows padded to 4 KiB pages)
  TT rank      rank of a TT-compressed variant (one line per variant)
  TT bytes     bytes of that variant's cores
  ratio        compression: raw bytes / TT bytes
  rel err      relative Frobenius error of the rebuilt rows, ||rebuilt - raw|| / ||raw||, over sampled rows
  max abs err  largest absolute difference of one rebuilt element from the raw one, over the same rows
               (measured at build time; `replay --verify` bounds TT bags with it)
  format       a row format stored beside the raw rows: fp16, int8 (float32 scale and bias after the
               codes), int4 (float16 scale and bias), FBGEMM's fused row-wise layouts
  row B        bytes per row in that format;  ratio  raw file bytes / format file bytes
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a store (raw rows + TT cores) for a model spec",
                       description="Build a store: raw row files padded to 4 KiB pages and TT cores in HDF5.",
                       epilog=BUILD_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p, required=True)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every table's row count (default 1)")
    p.add_argument("--out-dir", "-o", "--output", dest="output", required=True, metavar="DIR",
                   help="store directory to create (replaced only when complete)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    p.add_argument("--signal-rank", type=int, default=8, help="TT rank of the synthetic signal (default 8)")
    p.add_argument("--noise-ratio", type=float, default=0.05, help="noise std / signal std (default 0.05)")
    p.add_argument("--tt-ranks", default="8,16", help="TT ranks to store, comma separated ('' for none; default 8,16)")
    p.add_argument("--tt-tol", type=float, default=None, help="choose the TT rank from this relative error instead")
    p.add_argument("--row-formats", default="", metavar="LIST",
                   help="also store every table in these row formats, comma separated: fp16,int8,int4 "
                        "(FBGEMM's row-wise layouts; default none)")
    p.add_argument("--workers", type=int, default=None,
                   help="build threads (default: twice the cores; the store's bytes do not depend on it)")
    p.add_argument("--weights-generator", choices=GENERATORS, default=DEFAULT_GENERATOR,
                   help="synthetic weights: tt-hash (fast, the default) or tt-gauss (stores built before the "
                        "generator was recorded)")
    p.add_argument("--tt-method", choices=TT_METHODS, default="fast",
                   help="TT-SVD: fast (streamed float32 Gram or randomized first step, the default) or svd "
                        "(float64, once per rank: stores built before the method was recorded)")
    p.add_argument("--import", dest="imports", action="append", metavar="TABLE=FILE",
                   help="take a table's weights from FILE.npy or FILE.h5[:DATASET] (repeatable)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="build table shards as Ray tasks, each on the node that serves it, into that node's "
                        "screc-disk directory; --out-dir then holds the cluster manifest (HOST:PORT or auto; "
                        "re-run to resume; docs/cluster.md)")
    p.add_argument("--shards", type=int, default=None, help="with --ray: table shards (default one per storage node)")
    add_json_arg(p, "a summary (path, id, tables, bytes, seconds)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="re-read a store and check every checksum",
                       description="Check every chunk of every file against the manifest; exit 2 on any mismatch.",
                       epilog=VERIFY_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="store directory")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="a cluster store: check every shard on the node where it lives (HOST:PORT or auto)")
    add_json_arg(p, "the report (files, bytes, problems)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("info", help="describe a store's tables, sizes and TT variants",
                       description="Describe a store: per table its rows, width, raw size and TT variants.",
                       epilog=INFO_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="store directory")
    add_json_arg(p, "the description")
    p.set_defaults(func=cmd_info)

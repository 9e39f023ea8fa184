"""``screc trace fit``: fit the trace generator's locality model to Meta's published statistics, and say how well
it fits in sample, on held-out tables, on a generated full batch and on other blocks."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.table import Table

from bench.common import make_progress, stdout_console, stop_flag, write_json
from bench.common import positive_int as _positive_int
from tracegen.errors import InputError

FIT_EXAMPLE = """example:
  screc trace fit --target tests/data/dlrm_datasets_2021_locality_stats.txt \\
      --block fbgemm_t856_bs65536.pt --model meta-2021 -o runs/meta2021_fit.json
  screc trace fit --target locality_stats.txt --all --model meta-2021 --transfer --out-dir runs/fits/
  screc trace fit --target locality_stats.txt --block fbgemm_t856_bs65536_0.pt --model meta-2021 \\
      --full-batch -o runs/fit0.json --json runs/fit0_report.json   (also measure a generated full batch)
  screc trace gen --model meta-2021 --params runs/meta2021_fit.json --batches 1 -o traces/meta2021.h5
"""

def _fit_config(args: argparse.Namespace):
    from tracegen.fit import FitConfig

    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    return FitConfig(kind=args.kind, knots=args.knots, seed=args.seed, batch_size=args.batch_size)


def _fit_outputs(args: argparse.Namespace, targets) -> list[Path]:
    from tracegen.atomic import check_writable

    many = len(targets) > 1
    if many and args.output:
        raise InputError("several blocks: give --out-dir DIR (one parameters file per block), not -o")
    if not many and not args.output:
        raise InputError("give -o FILE for the parameters of the block")
    if many:
        out_dir = Path(args.out_dir or "runs/fits")
        check_writable(out_dir, "dir")
        paths = [out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", t.name.removesuffix(".pt")) + ".json") for t in targets]
    else:
        paths = [Path(args.output)]
    for path in paths:
        check_writable(path)
    if args.json not in (None, "-"):
        check_writable(args.json)
    return paths


def _dist(d) -> str:
    return "-" if d is None else f"{d.unique_l1:.3f} {d.lookup_l1:.3f} {d.ratio_error:.1%}"


def cmd_fit(args: argparse.Namespace) -> int:
    from tracegen.fit import fit, load_targets, model_summary, transfer
    from tracegen.fit_check import full_batch_check
    from tracegen.presets import load_model

    if args.all == bool(args.block):
        raise InputError("choose the blocks with --block NAME (repeatable) or --all")
    targets = load_targets(args.target, None if args.all else args.block, args.num_tables)
    spec = load_model(args.model, scale=args.scale)
    cfg = _fit_config(args)
    paths = _fit_outputs(args, targets)
    others = load_targets(args.target) if args.transfer else []
    t = Table(title=f"{spec.name} ({spec.num_tables} tables) fitted to {Path(args.target).name} ({cfg.kind}): "
                    f"L1 unique, L1 lookups, unique/lookup error")
    for col in ("block", "params", "in-sample (expected)", "held-out tables (expected)", "full batch (measured)",
                "fit s", "gen s"):
        t.add_column(col, justify="left" if col == "block" else "right", no_wrap=col != "block",
                     overflow="fold" if col == "block" else "ellipsis", min_width=12 if col == "block" else None)
    docs, notes = [], []
    with make_progress() as progress, stop_flag() as stop:
        task = progress.add_task("fit", total=len(targets))
        previous = _start_fit(args.start, spec, cfg) if args.start else None
        for target, path in zip(targets, paths):
            res = fit(spec, target, cfg, start=None if args.cold_start else previous)
            previous = res
            if stop.is_set():
                raise KeyboardInterrupt
            check = None
            if args.full_batch:
                check = full_batch_check(spec, res.params, target, path.parent, should_stop=stop.is_set)
                res = _with_check(res, check)
            doc = res.to_dict()
            if others:
                doc["transfer"] = [{"to": o.name, "kind": "expected, this block's model on another block",
                                    **transfer(res.model, spec, o, cfg.batch_size).to_dict()}
                                   for o in others if o.name != target.name]
            write_json(path, doc)
            docs.append(doc)
            t.add_row(target.name, str(res.model.num_parameters), _dist(res.in_sample), _dist(res.held_out),
                      _dist(None if check is None else check.distances), f"{res.fit_s:.1f}",
                      "-" if check is None else f"{check.generate_s:.1f}")
            notes.append(f"{target.name}: {model_summary(res.model)}")
            progress.update(task, advance=1)
    if args.json is not None:
        write_json(args.json, {"fits": docs, "outputs": [str(p) for p in paths]})
        if args.json == "-":
            return 0
    con = stdout_console()
    con.print(t)
    for line in notes:
        con.print(line, markup=False, highlight=False, soft_wrap=True)
    if others:
        con.print(_transfer_summary(docs), markup=False, highlight=False, soft_wrap=True)
    con.print(f"wrote {paths[0] if len(paths) == 1 else paths[0].parent} ({len(paths)} parameters file(s))",
              markup=False, highlight=False, soft_wrap=True)
    return 0


def _start_fit(path, spec, cfg):
    """A FitResult-like start from a fit document (its model and held-out model)."""
    import json
    import types

    from tracegen.fit import load_fit_document
    from tracegen.group_model import GroupModel

    p = Path(path)
    if not p.is_file():
        raise InputError("fit document not found", p)
    try:
        doc = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a JSON file ({e})", p) from None
    _, model = load_fit_document(doc, p)
    if model is None or model.kind != cfg.kind:
        raise InputError(f"holds no {cfg.kind} model to start from", p)
    held = doc.get("held_out_model")
    return types.SimpleNamespace(model=model, held_out_model=GroupModel.from_dict(held) if held else None)


def _with_check(res, check):
    import dataclasses

    return dataclasses.replace(res, full_batch=check.distances, full_batch_info=check.to_dict())


def _transfer_summary(docs) -> str:
    worst = [max(max(x["unique_l1"], x["lookup_l1"]) for x in d["transfer"]) for d in docs if d.get("transfer")]
    ratio = [max(x["ratio_error"] for x in d["transfer"]) for d in docs if d.get("transfer")]
    if not worst:
        return "transfer: the file has one block"
    return (f"transfer (expected; each block's model on every other block, only the pooling scale refitted): "
            f"worst L1 {max(worst):.3f}, median of the per-block worst {sorted(worst)[len(worst) // 2]:.3f}, "
            f"worst unique/lookup error {max(ratio):.1%}")



def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("fit", help="fit the locality model to a block of Meta's locality_stats.txt",
                              description="Fit a locality model with a few parameters shared through the tables' "
                                          "lookup density (tracegen.group_model) and the pooling scale of a spec to "
                                          "a locality_stats.txt block; report L1 distances of both histograms and "
                                          "the unique-rows-per-lookup error in sample (expected), on held-out "
                                          "tables (fitted on tables 0::2, measured on 1::2, expected), on a "
                                          "generated full batch (--full-batch, measured from its trace file) and "
                                          "on the other blocks (--transfer). Replaces `trace calibrate`.",
                              epilog=FIT_EXAMPLE, formatter_class=fmt)
    p.add_argument("--target", required=True, help="a locality_stats.txt file (dlrm_datasets layout)")
    p.add_argument("--block", action="append", default=[], help="block name (repeatable)")
    p.add_argument("--all", action="store_true", help="every block of the file (writes to --out-dir)")
    p.add_argument("--model", required=True, help="a preset (e.g. meta-2021) or a .json/.toml spec file")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the spec's rows (default 1)")
    from tracegen.group_model import DEFAULT_KIND, DEFAULT_KNOTS, KINDS

    p.add_argument("--kind", default=DEFAULT_KIND,
                   help=f"candidate locality model (default {DEFAULT_KIND}; {', '.join(KINDS)})")
    p.add_argument("--knots", type=int, default=DEFAULT_KNOTS,
                   help=f"density knots per parameter (default {DEFAULT_KNOTS})")
    p.add_argument("--num-tables", type=int, default=None,
                   help="tables of the published trace (default: from the block name, e.g. _t856_)")
    p.add_argument("--batch-size", type=int, default=None, help="fit at this batch size (default: the block's)")
    p.add_argument("--full-batch", action="store_true",
                   help="generate a full batch per block next to the output, count it from the file, report its "
                        "distances and the generation speed against numpy.tofile (about a minute per 500M lookups)")
    p.add_argument("--transfer", action="store_true", help="evaluate each block's model on every other block")
    p.add_argument("--start", default=None,
                   help="a fit document (-o of an earlier fit) whose model starts the search (refine a fit)")
    p.add_argument("--cold-start", action="store_true",
                   help="with several blocks, search each from scratch (default: from the previous block's model)")
    p.add_argument("--seed", type=int, default=0, help="seed written into the parameters (and the full batch)")
    p.add_argument("-o", "--output", default=None, help="parameters JSON to write (one block)")
    p.add_argument("--out-dir", default=None, help="directory for one parameters file per block (default runs/fits)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the report as JSON: bare to stdout, or written to FILE")
    p.set_defaults(func=cmd_fit)

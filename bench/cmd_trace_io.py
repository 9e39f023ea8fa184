"""``screc trace import-dlrm | export-dlrm | import-criteo``: bring real traces in (Meta's dlrm_datasets ``.pt``,
Criteo text) and send them back out (``.pt``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import make_progress, stdout_console, write_json
from bench.common import positive_int as _positive_int
from tracegen.errors import InputError

IMPORT_DLRM_EXAMPLE = """example:
  screc trace import-dlrm fbgemm_t856_bs65536_0.pt.gz --batch-size 4096 -o traces/meta_0.h5
  screc trace import-dlrm exported.pt --model runs/spec.json -o traces/back.h5
"""
EXPORT_DLRM_EXAMPLE = """example:
  screc trace export-dlrm traces/tiny.h5 -o runs/tiny.pt   (one batch of N*B samples; the batch size and spec
                                                            go to runs/tiny.pt.screc.json for import-dlrm)
  screc trace export-dlrm traces/kaggle.h5 --batches 4 -o runs/kaggle.pt.gz
"""
IMPORT_CRITEO_EXAMPLE = """example:
  screc trace import-criteo train.txt --rows 1048576 --batch-size 2048 -o traces/criteo.h5
  screc trace import-criteo day_0.gz --max-samples 1000000 -o traces/day0.h5 --spec-out runs/day0_spec.json
"""



def cmd_import_dlrm(args: argparse.Namespace) -> int:
    from tracegen.dlrm_io import import_dlrm
    from tracegen.presets import load_model

    spec = load_model(args.model) if args.model else None
    if args.batch_size is not None:
        _positive_int("--batch-size", args.batch_size)
    _positive_int("--dim", args.dim)
    t0 = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("import", total=None)
        trace_id, spec = import_dlrm(args.file, args.output, spec=spec, batch_size=args.batch_size, dim=args.dim,
                                     progress=lambda d, n: progress.update(task, completed=d, total=n))
    from tracegen.trace_io import TraceReader

    with TraceReader(args.output, validate=False) as r:
        nb, lookups = r.num_batches, r.num_lookups
    stdout_console().print(f"wrote {args.output}: {spec.num_tables} tables, {nb} batches of {spec.batch_size}, "
                           f"{lookups:,} lookups, {time.perf_counter() - t0:.2f} s, trace_id {trace_id}",
                           soft_wrap=True, markup=False, highlight=False)
    return 0


def cmd_export_dlrm(args: argparse.Namespace) -> int:
    from tracegen.dlrm_io import export_dlrm

    if args.batches is not None:
        _positive_int("--batches", args.batches)
    if args.start < 0:
        raise InputError(f"--start must be >= 0, got {args.start}")
    stop = None if args.batches is None else args.start + args.batches
    info = export_dlrm(args.trace, args.output, start=args.start, stop=stop)
    from tracegen.dlrm_io import sidecar_path

    stdout_console().print(f"wrote {args.output}: (indices, offsets, lengths) for {info['tables']} tables x "
                           f"{info['samples']:,} samples ({info['batches']} batches, recorded in "
                           f"{sidecar_path(args.output)}), {info['lookups']:,} lookups",
                           soft_wrap=True, markup=False, highlight=False)
    return 0


def cmd_import_criteo(args: argparse.Namespace) -> int:
    from tracegen.criteo_io import NUM_CATEGORICAL, import_criteo
    from tracegen.presets import load_model

    _positive_int("--batch-size", args.batch_size)
    if args.max_samples is not None:
        _positive_int("--max-samples", args.max_samples)
    rows = args.rows
    if args.model:
        m = load_model(args.model)
        if m.num_tables != NUM_CATEGORICAL:
            raise InputError(f"--model {args.model} has {m.num_tables} tables, Criteo has {NUM_CATEGORICAL}")
        rows = [t.rows for t in m.tables]
    else:
        _positive_int("--rows", rows)
    t0 = time.perf_counter()
    trace_id, spec, counts = import_criteo(args.file, args.output, rows=rows, batch_size=args.batch_size,
                                           dim=args.dim, max_samples=args.max_samples)
    spec_out = Path(args.spec_out) if args.spec_out else Path(args.output).with_suffix(".spec.json")
    write_json(spec_out, spec.to_dict())
    stdout_console().print(f"wrote {args.output} and {spec_out}: {counts['samples']:,} samples, {counts['batches']} "
                           f"batches of {args.batch_size} ({counts['dropped']} samples of a partial batch dropped), "
                           f"{time.perf_counter() - t0:.2f} s, trace_id {trace_id}",
                           soft_wrap=True, markup=False, highlight=False)
    return 0



def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("import-dlrm", help="import a dlrm_datasets .pt[.gz] file as a trace",
                              description="Import Meta's dlrm_datasets layout (a tuple indices, offsets, lengths; "
                                          "offsets table-major of length T*B+1), table by table. Needs torch.",
                              epilog=IMPORT_DLRM_EXAMPLE, formatter_class=fmt)
    p.add_argument("file", help=".pt or .pt.gz file")
    p.add_argument("--batch-size", type=int, default=None, help="cut into batches of this size (must divide B)")
    p.add_argument("--model", default=None, help="spec to record (table count must match); default: from the file")
    p.add_argument("--dim", type=int, default=128, help="embedding dim of the tables made from the file")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    p.set_defaults(func=cmd_import_dlrm)

    p = subparsers.add_parser("export-dlrm", help="export a trace to the dlrm_datasets .pt layout",
                              description="Write batches of a trace as one dlrm_datasets batch (indices, offsets, "
                                          "lengths) that FBGEMM-style tools replay. Needs torch.",
                              epilog=EXPORT_DLRM_EXAMPLE, formatter_class=fmt)
    p.add_argument("trace", help="trace file (HDF5)")
    p.add_argument("--start", type=int, default=0, help="first batch (default 0)")
    p.add_argument("--batches", type=int, default=None, help="number of batches (default: to the end)")
    p.add_argument("-o", "--output", required=True, help=".pt file to write (.pt.gz: gzip-compressed)")
    p.set_defaults(func=cmd_export_dlrm)

    p = subparsers.add_parser("import-criteo", help="import Criteo-layout text as a spec plus a trace",
                              description="Hash the 26 categorical tokens of Criteo-layout lines (label, 13 dense, "
                                          "26 categorical, tab separated) to rows: one table per feature, one lookup "
                                          "per table per sample.", epilog=IMPORT_CRITEO_EXAMPLE, formatter_class=fmt)
    p.add_argument("file", help="text file (may be gzip-compressed)")
    p.add_argument("--rows", type=int, default=1 << 20, help="rows of every table (default 1048576)")
    p.add_argument("--model", default=None, help="take the 26 tables' rows from this preset or spec instead")
    p.add_argument("--dim", type=int, default=16, help="embedding dim (default 16)")
    p.add_argument("--batch-size", type=int, default=2048, help="samples per batch (default 2048)")
    p.add_argument("--max-samples", type=int, default=None, help="read at most this many samples")
    p.add_argument("--spec-out", default=None, help="spec JSON to write (default: OUTPUT with .spec.json)")
    p.add_argument("-o", "--output", required=True, help="trace file to write (HDF5)")
    p.set_defaults(func=cmd_import_criteo)

"""The ``screc`` command line: parse, call a library function, render.

Each command group lives in its own module exposing ``register(subparsers)``;
the handler it sets (``func``) takes the parsed ``argparse.Namespace`` and
returns an exit code. Any :class:`tracegen.errors.InputError` becomes one line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tracegen.errors import InputError

# (module, group name or None): a module with a group registers its
# sub-commands under ``screc <group>``; otherwise it adds top-level commands.
COMMAND_MODULES: tuple[tuple[str, str | None, str], ...] = (
    ("bench.cmd_trace", "trace", "generate, inspect, fit, import and export lookup traces"),
    ("bench.cmd_trace_fit", "trace", ""),
    ("bench.cmd_trace_io", "trace", ""),
    ("bench.cmd_store", "store", "build, verify and describe embedding stores"),
    ("bench.cmd_plan", "plan", "solve and show placement plans"),
    ("bench.plan_profiles", "plan", ""),
    ("bench.cmd_calibrate", None, ""),
    ("bench.cmd_replay", None, ""),
    ("bench.cmd_compare", None, ""),
    ("bench.cmd_accuracy", None, ""),
    ("bench.bench_io", "bench", "micro-benchmarks against reference tools (fio, torch, SGEMM)"),
    ("bench.bench_dram", "bench", ""),
    ("bench.bench_tt", "bench", ""),
    ("bench.bench_predict", "bench", ""),
    ("bench.bench_quant", "bench", ""),
    ("bench.bench_build", "bench", ""),
    ("bench.bench_emulate", "bench", ""),
    ("bench.bench_tracegen", "bench", ""),
    ("bench.cmd_report", None, ""),
    ("bench.cmd_cluster", "cluster", "a Ray cluster: its nodes; the modelled projection to more nodes"),
    ("bench.cmd_demo", None, ""),
)


EPILOG = """example (the whole pipeline on a small built-in default): screc demo

flags mean the same in every command:
  --model NAME|FILE      a model spec: preset name or .json/.toml file
  --json [FILE]          the command's figures as JSON: bare to stdout, or written to FILE
  -o, --output FILE      the main output file;  --out-dir DIR  an output directory (result directories: runs/)
  --dram-budget SIZE|PCT%  host DRAM for hot rows: a size with a unit (64MiB, 2GB) or a share of the model (5%)
  --engine, --qd, --batch-size   IO engine (uring, liburing, pread, null; default uring), IO queue depth per
                         device (default 128), samples per batch
bad input: one line naming the file and the problem, exit 2; Ctrl-C: exit 130.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="screc", description="Emulate SCRec computational-storage serving of DLRM embedding tables.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for module_name, group, help_text in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not written yet
                continue
            raise
        if group is None:
            module.register(sub)
            continue
        if group not in groups:
            gp = sub.add_parser(group, help=help_text, description=help_text)
            groups[group] = gp.add_subparsers(dest=f"{group}_command", metavar="SUBCOMMAND", parser_class=_Parser)
            gp.set_defaults(func=lambda a, gp=gp: (gp.print_help(), 2)[1])
        module.register(groups[group])
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        print("screc: interrupted", file=sys.stderr)
        return 130
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"screc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("screc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

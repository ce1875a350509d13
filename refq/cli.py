"""The `refq` command line: one subcommand per module in `refq.commands`.

Each command module defines `register(subparsers)`, which adds its parser and
sets `func=handler` (a function taking the parsed args and returning an exit
code). Heavy imports happen inside the handlers so that `refq --help` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import refq.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refq",
        description="refq: reference implementations of SARDFQ (data-free ViT quantization), "
        "ASER (LLM post-training quantization) and a joint CNN-CTC text spotter, "
        "on a hand-written NumPy autograd and Numba integer kernels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(refq.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"refq.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv_all = argv  # the full command line, for manifests that record how a file was made
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # bad user input: one clear line, no traceback
        print(f"refq {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

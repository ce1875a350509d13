"""The `refq` command line: one subcommand per module in `refq.commands`.

Each command module defines `register(subparsers)`, which adds its parser and
sets `func=handler` (a function taking the parsed args and returning an exit
code). Heavy imports happen inside the handlers so that `refq --help` is fast. Modules whose name
starts with an underscore are helpers (refq.commands._args: argument types). A ValueError, OSError or
MemoryError out of a handler is printed as one line `refq COMMAND: error: ...` and the exit code is 2.
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
        if info.name.startswith("_"):  # helpers such as refq.commands._args, not commands
            continue
        module = importlib.import_module(f"refq.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:  # argparse printed the usage and a one-line error (code 2), or --help (code 0)
        return err.code if isinstance(err.code, int) else 2
    args.argv_all = argv  # the full command line, for manifests that record how a file was made
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # bad input, a missing or unreadable file: one clear line, no traceback
        print(f"refq {args.command}: error: {_describe(err)}", file=sys.stderr)
        return 2
    except MemoryError as err:  # sizes too large for this machine
        print(f"refq {args.command}: error: out of memory{f' ({err})' if str(err) else ''}; use smaller sizes",
              file=sys.stderr)
        return 2


def _describe(err: Exception) -> str:
    """One line for an error: the message, and for an OSError the file it is about."""
    if isinstance(err, OSError) and err.strerror:
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        return f"{' -> '.join(names)}: {err.strerror}" if names else err.strerror
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())

"""Argument types for the `refq` parsers: each checks one value and names it in argparse's one-line error.

Use them as `type=` of `add_argument` (e.g. `type=positive_int`, `type=float_in(0, 1)`, `type=input_file`),
so that bad values stop the command before any work is done. The module name starts with an underscore so
that refq.cli does not take it for a command.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 0")
    return value


def int_in(low: int, high: int):
    """Type: an integer in low..high."""
    def check(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be in {low}..{high}")
        return value
    check.__name__ = f"int in {low}..{high}"
    return check


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def float_in(low: float, high: float):
    """Type: a finite float in [low, high] (high may be math.inf: no upper bound)."""
    def check(text: str) -> float:
        value = finite_float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be in [{low}, {high}]")
        return value
    check.__name__ = f"float in [{low}, {high}]"
    return check


def input_file(text: str) -> str:
    """The path of an existing regular file, readable by this process."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file" if path.is_dir()
                                         else f"{text} is not a regular file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: permission denied")
    return text


def input_dir(text: str) -> str:
    """The path of an existing directory."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory" if path.exists() else
                                         f"{text}: directory not found")
    return text


def output_file(text: str) -> str:
    """A file path that can be written: not a directory, in an existing, writable directory."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, expected a file path")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: folder {parent} is not writable")
    return text


def same_file(a, b) -> bool:
    """Whether paths a and b name one file (b need not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)

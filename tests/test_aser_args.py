"""Command-line options of the ASER commands (refq.commands._aser_args) and their mapping to QuantSettings."""
from __future__ import annotations

import argparse

import pytest

from refq.commands._aser_args import add_quant_arguments, settings_from_args
from refq.cli import build_parser


def parse(argv, default_rank=4):
    p = argparse.ArgumentParser()
    add_quant_arguments(p, default_rank)
    args = p.parse_args(argv)
    return settings_from_args(args, default_rank)


def test_defaults_and_rank_rules():
    s = parse(["--method", "aser"])
    assert (s.wbits, s.abits, s.rank, s.energy, s.smooth, s.base) == (4, 8, 4, None, True, "rtn")
    assert parse(["--method", "lorc", "--energy", "0.6"]).rank is None
    assert parse(["--method", "rtn", "--rank", "9"]).rank is None  # no low-rank branch
    s = parse(["--method", "aser", "--abits", "16", "--no-smooth", "--base", "gptq", "--mask-outliers",
               "--whitening", "diag", "--rank", "2", "--outliers", "1", "--alpha", "0.75"])
    assert (s.abits, s.smooth, s.base, s.mask_outlier_acts, s.whitening, s.rank, s.outliers, s.alpha) == (
        None, False, "gptq", True, "diag", 2, 1, 0.75)


@pytest.mark.parametrize("argv, match", [(["--abits", "12"], "--abits 12"), (["--wbits", "9"], "wbits=9"),
                                         (["--alpha", "-1"], "alpha=-1")])
def test_bad_values_raise(argv, match):
    with pytest.raises(ValueError, match=match):
        parse(["--method", "aser", *argv])


def test_both_commands_are_registered(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["minilm", "quantize", "--method", "l2qer", "--rank", "8"])
    assert args.method == "l2qer" and settings_from_args(args, 16).rank == 8
    for name in "ctx":  # the input files must exist when the command line is parsed
        (tmp_path / name).write_bytes(b"")
    c, t, x = (str(tmp_path / name) for name in "ctx")
    args = parser.parse_args(["lm", "quantize", "--checkpoint", c, "--tokenizer", t, "--text", x,
                              "--method", "aser", "--calib", "generated", "--seed", "5"])
    assert (args.calib, args.seed, args.calib_stories) == ("generated", 5, 4)

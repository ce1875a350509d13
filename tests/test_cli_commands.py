"""One command style: every command is nested argparse subcommands; `--help` lists them, a bad one is one error."""
from __future__ import annotations

import pytest

from refq.cli import main

SUBCOMMANDS = {
    "vit": ("train", "average", "eval", "dfq", "table"),
    "lm": ("generate", "ppl", "quantize", "table"),
    "spot": ("run", "eval", "train", "table", "synth"),
    "minilm": ("quantize",),
    "bench": ("gemm", "quant", "autograd", "ctc", "e2e", "compile"),
}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_help_lists_the_subcommands(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS[command]:
        assert name in out, (name, out)


@pytest.mark.parametrize("command, sub", [(c, s) for c, subs in SUBCOMMANDS.items() for s in subs])
def test_every_subcommand_has_help(command, sub, capsys):
    assert main([command, sub, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: refq {command} {sub}")


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_a_bad_subcommand_is_one_error_line(command, capsys):
    assert main([command, "bogus"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"refq {command}: error: ") and "bogus" in line, err


def test_spotting_images_is_the_run_subcommand(capsys):
    assert main(["spot", "missing.png"]) == 2
    assert "invalid choice: 'missing.png'" in capsys.readouterr().err

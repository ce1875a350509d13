"""Parity with llama2.c on the public stories260K model: `refq lm generate` prints what the model card shows.

The expected texts are read at test time from the model card (assets/llama2c/stories260K.md), together
with the run.c flags that produced them; run.c's default of 256 steps applies to both.
"""
import json
import re
import shlex

import numpy as np
import pytest

from refq.cli import main
from refq.io.llama2c import read_checkpoint
from refq.models.llama import LlamaConfig, forward, forward_numpy
from refq.models.llama_tokenizer import LlamaTokenizer
from refq.models.perplexity import perplexity, stories_to_tokens
from tests.assets import asset

RUN_C_FLAGS = {"-t": "--temperature", "-p": "--top-p", "-s": "--seed", "-n": "--steps", "-i": "--prompt"}


def card_samples() -> list[tuple[dict, str]]:
    """(run.c flags, printed text) of every `./run ...` block in the model card."""
    card = asset("llama2c/stories260K.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```\n\$ (\./run [^\n]*)\n(.*?)\n```", card, flags=re.S)
    assert len(blocks) == 2, "the card should show the greedy and the seeded top-p sample"
    samples = []
    for command, text in blocks:
        words = shlex.split(command)[2:]  # drop "./run" and the checkpoint
        samples.append((dict(zip(words[0::2], words[1::2])), text))
    return samples


def refq_args(flags: dict) -> list[str]:
    args = ["lm", "generate", "--checkpoint", str(asset("llama2c/stories260K.bin")),
            "--tokenizer", str(asset("llama2c/tok512.bin"))]
    for flag, value in flags.items():
        if flag in RUN_C_FLAGS:
            args += [RUN_C_FLAGS[flag], value]
    return args


@pytest.mark.parametrize("which", ["greedy", "seeded top-p"])
def test_generate_prints_the_model_card_sample(capsysbinary, which):
    flags, text = card_samples()[0 if which == "greedy" else 1]
    assert (flags["-t"] == "0.0") == (which == "greedy")
    assert main(refq_args(flags)) == 0
    out = capsysbinary.readouterr()
    assert out.out.decode("utf-8") == text + "\n"  # run.c ends with a newline
    assert b"achieved tok/s" in out.err


def test_prompted_generation_starts_with_the_prompt(capsysbinary):
    assert main(refq_args({"-t": "0", "-n": "40", "-i": "Lily had a big dog"})) == 0
    out = capsysbinary.readouterr().out.decode()
    assert out.startswith("Lily had a big dog") and len(out) > len("Lily had a big dog") + 20


def test_bad_generate_arguments_exit_2(capsys):
    assert main(refq_args({"-n": "513"})) == 2
    assert "--steps 513" in capsys.readouterr().err
    assert main(refq_args({"-s": str(1 << 64)})) == 2
    assert "--seed" in capsys.readouterr().err


def test_run_c_seeds_zero_and_negative_are_accepted(capsysbinary):
    """run.c: -s 0 seeds from the clock, a negative -s wraps to unsigned; greedy output ignores the seed."""
    flags, text = card_samples()[0]
    for seed in ("0", "-7"):
        assert main(refq_args({**flags, "-s": seed})) == 0
        out = capsysbinary.readouterr()
        assert out.out.decode("utf-8") == text + "\n"
    assert f"seed: {(1 << 64) - 7}".encode() in out.err


@pytest.fixture(scope="module")
def stories():
    params, config = read_checkpoint(asset("llama2c/stories260K.bin"))
    tokenizer = LlamaTokenizer.from_file(asset("llama2c/tok512.bin"), vocab_size=512)
    text = asset("text/tinystories_excerpt.txt").read_text(encoding="utf-8")
    return params, LlamaConfig.from_dict(config), stories_to_tokens(tokenizer, text)


def test_tensor_path_agrees_with_numpy_on_a_full_window(stories):
    params, cfg, ids = stories
    window = ids[None, :512]
    expected = forward_numpy(window, params, cfg)
    np.testing.assert_allclose(forward(window, params, cfg).data, expected, rtol=1e-4, atol=1e-4)


def test_perplexity_on_the_excerpt_is_in_the_trained_range(stories):
    """The first story (409 tokens, one window): the model's loss is far below ln(512), the uniform guess."""
    params, cfg, ids = stories
    first = ids[:np.flatnonzero(ids == 1)[1]]
    result = perplexity(params, cfg, first)
    assert result["tokens"] == first.size - 1 and result["windows"] == 1
    assert 1.0 < result["nll"] < 2.5 < np.log(512)


def test_ppl_command_json(tmp_path, capsys):
    text = asset("text/tinystories_excerpt.txt").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "two.txt"
    path.write_text("\n\n" + text[18] + "\n", encoding="utf-8")  # blank lines are skipped
    assert main(["lm", "ppl", "--checkpoint", str(asset("llama2c/stories260K.bin")), "--tokenizer",
                 str(asset("llama2c/tok512.bin")), "--text", str(path), "--window", "128", "--stride", "64",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["window"] == 128 and record["stride"] == 64 and record["tokens"] == 285 - 1
    assert np.isclose(np.exp(record["nll"]), record["ppl"])

"""Hostile command lines (issue #22): each bad input is one `refq ...: error:` line and exit code 2, before any
work; run.c-valid llama2.c options behave as in run.c. The input files are made here by small generators."""
from __future__ import annotations

import numpy as np
import pytest

from refq.cli import main
from refq.commands.lm import run_c_seed
from refq.io.llama2c import weight_shapes, write_checkpoint, write_tokenizer


def fails(argv, capsys, *needles) -> str:
    """Run argv, check exit code 2, no traceback, and that the last stderr line is the error naming needles."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("refq") and ": error: " in line, err
    for needle in needles:
        assert str(needle) in line, (needle, line)
    return line


@pytest.fixture
def llama(tmp_path):
    """(checkpoint, tokenizer) of a tiny random llama2.c model: 3 specials, 256 byte pieces, ' ', ' a'."""
    pieces = [b"<unk>", b"<s>", b"</s>", *(f"<0x{i:02X}>".encode() for i in range(256)), b" ", b" a"]
    config = dict(dim=8, hidden_dim=12, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=len(pieces), seq_len=8,
                  shared_classifier=True)
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in weight_shapes(config).items()}
    write_checkpoint(tmp_path / "m.bin", params, config)
    write_tokenizer(tmp_path / "tok.bin", pieces, np.zeros(len(pieces)))
    return tmp_path / "m.bin", tmp_path / "tok.bin"


def generate(llama, *extra):
    ckpt, tok = llama
    return ["lm", "generate", "--checkpoint", ckpt, "--tokenizer", tok, "--steps", "4", *extra]


# ---- missing files, directories and unwritable outputs ---------------------------------------------------
def test_missing_and_directory_inputs(llama, tmp_path, capsys):
    ckpt, tok = llama
    fails(["lm", "generate", "--checkpoint", "/nope", "--tokenizer", tok], capsys, "/nope", "no such file")
    fails(["lm", "generate", "--checkpoint", tmp_path, "--tokenizer", tok], capsys, tmp_path, "directory")
    fails(["lm", "generate", "--checkpoint", ckpt, "--tokenizer", tmp_path], capsys, "--tokenizer", "directory")
    fails(["lm", "ppl", "--checkpoint", ckpt, "--tokenizer", tok, "--text", tmp_path], capsys, "--text", "directory")
    fails(["spot", "run", tmp_path / "x.png", "--lexicon", tmp_path], capsys, "--lexicon", "directory")
    fails(["convert", tmp_path, tmp_path / "o.npz"], capsys, "directory")


def test_outputs_in_missing_folders_fail_before_any_work(tmp_path, capsys):
    fails(["vit", "train", "--out", "/nope_dir/t.npz", "--data", "/nope_data"], capsys, "/nope_dir", "does not exist")
    fails(["convert", tmp_path / "x", tmp_path / "no" / "o.npz"], capsys, "no such file")  # SRC is checked first
    (tmp_path / "x").write_bytes(b"")
    fails(["convert", tmp_path / "x", tmp_path / "no" / "o.npz"], capsys, "does not exist")
    fails(["spot", "train", "--data", tmp_path, "--out", tmp_path / "no" / "s.npz"], capsys, "does not exist")
    fails(["spot", "table", "--data", tmp_path, "--md", tmp_path / "no" / "t.md"], capsys, "does not exist")
    fails(["vit", "dfq", "--save-images", tmp_path / "no" / "g.png"], capsys, "does not exist")


def test_library_os_errors_become_one_line(monkeypatch, tmp_path, capsys):
    import refq.commands.vit as vit

    def boom(args):
        open(tmp_path / "missing" / "f.bin", "rb")

    monkeypatch.setattr(vit, "_eval", boom)
    fails(["vit", "eval"], capsys, "missing/f.bin", "No such file or directory")

    def oom(args):
        raise MemoryError("Unable to allocate 7.28 TiB")

    monkeypatch.setattr(vit, "_eval", oom)
    fails(["vit", "eval"], capsys, "out of memory", "7.28 TiB")


# ---- sizes and counts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needles", [
    (["vit", "train", "--out", "{tmp}/t.npz", "--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["vit", "train", "--out", "{tmp}/t.npz", "--heads", "0"], ["--heads", "at least 1"]),
    (["vit", "dfq", "--heads", "0"], ["--heads"]),
    (["embed", "x", "--batch-size", "0"], ["--batch-size"]),
    (["spot", "train", "--data", "{tmp}", "--out", "{tmp}/s.npz", "--batch-size", "0"], ["--batch-size"]),
    (["spot", "synth", "--out", "{tmp}/d", "--n", "1", "--seed", "0", "--size", "100000"], ["--size", "100000"]),
    (["bench", "gemm", "--sizes", "1000000"], ["--sizes 1000000", "elements"]),
    (["bench", "gemm", "--shapes", "8x1000000x1000"], ["8x1000000x1000"]),
    (["bench", "gemm", "--sizes", "8", "--pause", "nan"], ["pause=nan"]),
    (["spot", "eval", "--data", "{tmp}", "--limit", "-1"], ["--limit", "-1"]),
    (["vit", "eval", "--limit", "-1"], ["--limit"]),
    (["spot", "run", "x.png", "--score-thresh", "nan"], ["--score-thresh", "finite"]),
    (["spot", "run", "x.png", "--score-thresh", "-1"], ["--score-thresh", "-1"]),
    (["spot", "eval", "--data", "{tmp}", "--nms-iou", "2"], ["--nms-iou"]),
    (["spot", "run", "x.png", "--max-pixels", "0"], ["--max-pixels"]),
    (["convert", "{tmp}/src.pth", "{tmp}/o.npz", "--vit-heads", "0"], ["--vit-heads"]),
])
def test_nonsense_numbers_are_rejected(argv, needles, tmp_path, capsys):
    (tmp_path / "src.pth").write_bytes(b"")
    fails([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys, *needles)


def test_llama_sampling_options_are_checked(llama, capsys):
    fails(generate(llama, "--temperature", "inf"), capsys, "--temperature", "finite")
    fails(generate(llama, "--temperature", "nan"), capsys, "--temperature")
    fails(generate(llama, "--temperature", "-1"), capsys, "--temperature")
    fails(generate(llama, "--top-p", "1.5"), capsys, "--top-p")
    fails(generate(llama, "--seed", str(1 << 64)), capsys, "--seed")


# ---- llama2.c compatibility: run.c's -s ---------------------------------------------------------------
def test_run_c_seed_rules():
    assert run_c_seed(42) == 42 and run_c_seed((1 << 64) - 1) == (1 << 64) - 1
    assert run_c_seed(-1) == (1 << 64) - 1 and run_c_seed(-5) == (1 << 64) - 5  # atoi -> unsigned long long
    assert run_c_seed(0, now=1_700_000_000.7) == 1_700_000_000  # (unsigned int)time(NULL)
    assert run_c_seed(0, now=(1 << 32) + 9.0) == 9


def test_greedy_with_seed_zero_runs_like_run_c(llama, capsys):
    assert main([str(a) for a in generate(llama, "--temperature", "0", "--seed", "0")]) == 0
    greedy = capsys.readouterr().out
    assert main([str(a) for a in generate(llama, "--temperature", "0", "--seed", "7")]) == 0
    assert capsys.readouterr().out == greedy  # greedy decoding draws no random numbers


def test_negative_seed_is_the_unsigned_seed(llama, capsys):
    assert main([str(a) for a in generate(llama, "--seed", "-3")]) == 0
    first = capsys.readouterr()
    assert f"seed: {(1 << 64) - 3}" in first.err
    assert main([str(a) for a in generate(llama, "--seed", str((1 << 64) - 3))]) == 0
    assert capsys.readouterr().out == first.out

"""`refq bench e2e` in-process through refq.cli.main on tiny sizes: JSON fields, agreement, skips, the table."""
from __future__ import annotations

import json

import numpy as np
import pytest

from refq.bench.e2e import logit_agreement, word_agreement
from refq.cli import main
from tests.assets import asset

ROW_FIELDS = {"name", "wbits", "abits", "best_ms", "median_ms", "per_second", "speedup_vs_float"}
LOGIT_FIELDS = {"argmax_agreement", "max_abs_logit_diff", "rel_logit_error"}


def run_json(capsys, *argv) -> dict:
    assert main(["bench", "e2e", "--repeat", "1", *argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert "numba threads" in err  # the machine line and progress go to stderr
    return json.loads(out)


def check_rows(record: dict, names: list[str], extra: set) -> dict:
    assert record["status"] == "ok"
    rows = {row["name"]: row for row in record["rows"]}
    assert list(rows) == names
    for row in rows.values():
        assert ROW_FIELDS | extra <= set(row)
        assert row["best_ms"] > 0 and row["median_ms"] >= row["best_ms"] and row["per_second"] > 0
    assert rows["float"]["speedup_vs_float"] == 1.0
    return rows


def test_vit_random_weights(capsys):
    result = run_json(capsys, "--models", "vit", "--vit-random", "--batch", "16", "--seed", "3")
    (record,) = result["models"]
    assert result["repeat"] == 1 and result["seed"] == 3 and result["machine"]["cores"] >= 1
    assert record["model"] == "vit" and "random weights" in record["weights"] and record["batch"] == 16
    rows = check_rows(record, ["float", "W8A8 int", "W4A4 int"], LOGIT_FIELDS)
    assert rows["float"]["argmax_agreement"] == 1.0 and rows["float"]["max_abs_logit_diff"] == 0.0
    w8, w4 = rows["W8A8 int"], rows["W4A4 int"]
    assert (w8["wbits"], w8["abits"], w4["wbits"], w4["abits"]) == (8, 8, 4, 4)
    assert w8["argmax_agreement"] >= 0.8  # same images, 8-bit codes: almost always the same class
    assert 0 < w8["rel_logit_error"] < w4["rel_logit_error"] < 1.0


def test_llama_stories260k(capsys):
    path = asset("llama2c/stories260K.bin")
    result = run_json(capsys, "--models", "llama", "--llama-checkpoint", str(path), "--llama-tokens", "32",
                      "--llama-batch", "2")
    (record,) = result["models"]
    assert record["model"] == "llama" and record["batch"] == 2 and record["tokens"] == 32
    rows = check_rows(record, ["float", "RTN W8A8 int", "RTN W4A8 int"], LOGIT_FIELDS)
    w8, w4 = rows["RTN W8A8 int"], rows["RTN W4A8 int"]
    assert w8["argmax_agreement"] >= 0.8
    assert 0 < w8["max_abs_logit_diff"] < w4["max_abs_logit_diff"]
    assert rows["float"]["per_second"] == pytest.approx(64 / (rows["float"]["best_ms"] / 1e3))


def test_spotter_int8(capsys):
    from refq.spotter.infer import SPOTTER_NPZ

    if not SPOTTER_NPZ.exists():
        pytest.skip(f"no shipped spotter weights ({SPOTTER_NPZ})")
    result = run_json(capsys, "--models", "spotter", "--spotter-images", "1", "--spotter-size", "64")
    (record,) = result["models"]
    rows = check_rows(record, ["float", "int8"], {"word_agreement", "max_abs_score_diff", "words"})
    assert rows["float"]["word_agreement"] == 1.0
    assert 0 <= rows["int8"]["word_agreement"] <= 1 and 0 <= rows["int8"]["max_abs_score_diff"] < 0.5


def test_missing_llama_checkpoint_is_a_skip_line(capsys):
    result = run_json(capsys, "--models", "llama")
    assert result["models"] == [{"model": "llama", "status": "skipped",
                                 "reason": "no --llama-checkpoint given (e.g. stories260K.bin)"}]
    assert main(["bench", "e2e", "--models", "llama", "vit", "--vit-random", "--batch", "2", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("machine: ")
    assert lines[1].startswith("stories260K (llama2.c): skipped: no --llama-checkpoint")
    assert lines[2].startswith("ViT: random weights") and "argmax agree" in lines[3]
    assert [line.split()[0] for line in lines[4:]] == ["float", "W8A8", "W4A4"]


@pytest.mark.parametrize("argv, named", [(["--repeat", "0"], "repeat=0"), (["--batch", "-1"], "batch=-1"),
                                         (["--llama-checkpoint", "/nonexistent/x.bin"], "/nonexistent/x.bin"),
                                         (["--vit-checkpoint", "/nonexistent/v.npz"], "/nonexistent/v.npz")])
def test_bad_input_is_a_clean_error(capsys, argv, named):
    models = ["--models", "llama"] if "--llama-checkpoint" in argv else ["--models", "vit"]
    assert main(["bench", "e2e", *models, *argv]) == 2
    assert named in capsys.readouterr().err


def test_logit_agreement():
    ref = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    other = np.array([[1.0, 1.5, 1.8], [3.0, 0.5, 0.0]])
    out = logit_agreement(ref, other)
    assert out["argmax_agreement"] == 0.5 and out["max_abs_logit_diff"] == pytest.approx(1.8)
    assert out["rel_logit_error"] == pytest.approx(np.linalg.norm(other - ref) / np.linalg.norm(ref))
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3,\)"):
        logit_agreement(ref, other[0])


def test_word_agreement_matches_text_and_boxes():
    a = [[{"box": [0, 0, 10, 10], "text": "cat"}, {"box": [20, 0, 30, 10], "text": "dog"}], []]
    b = [[{"box": [1, 0, 10, 10], "text": "cat"}, {"box": [20, 0, 30, 10], "text": "dig"}],
         [{"box": [0, 0, 5, 5], "text": "x"}]]
    out = word_agreement(a, b)
    assert out == {"word_agreement": 1 / 4, "words": 3, "words_matched": 1}  # union: 2 + 3 - 1 words
    assert word_agreement(a, a)["word_agreement"] == 1.0 and word_agreement([[]], [[]])["word_agreement"] == 1.0
    with pytest.raises(ValueError, match="2 and 1 images"):
        word_agreement(a, b[:1])

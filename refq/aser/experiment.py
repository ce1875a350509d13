"""End-to-end runs shared by `refq lm quantize`, `refq minilm quantize`, the docs/aser.md tables and the
walkthrough: load a model, calibrate once, then quantize with any method / settings and evaluate.

stories260K protocol (docs/aser.md, A7-A8):
* calibration "text": the first CALIB_STORIES distinct stories of the text file; evaluation: the other
  distinct stories (refq.aser.calibrate.split_stories), each encoded BOS + story and concatenated;
  calibration "generated" (data-free): `calib_tokens` tokens sampled from the FP model with
  np.random.default_rng(seed), evaluation unchanged;
* metric: perplexity of the FP model and of the quantized model on the same evaluation tokens, windows of
  seq_len (512), non-overlapping.
MiniLM protocol: calibration on refq.aser.sentences.CALIBRATION plus the sentences of an optional story
text, evaluation on the 222 sentences of the paraphrase pairs (cosine to FP, top-1 agreement).

References: docs/aser.md, A7 (calibration) and A8 (evaluation).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refq.aser.apply import bert_groups, bert_linear_weights, llama_groups, llama_linear_weights, quantize_layers
from refq.aser.calibrate import (CALIB_STORIES, calibrate_bert, calibrate_llama, generate_tokens, sentences_of,
                                 split_stories)
from refq.aser.evaluate import bert_embed, embedding_agreement, layer_errors, llama_perplexity, model_overhead
from refq.aser.settings import QuantSettings
from refq.aser.types import LayerStats

CALIB_TOKENS = 2560
HELD_OUT_TOKENS = 1024  # evaluation tokens whose layer inputs measure the layer-wise output error
HELD_OUT_SENTENCES = 64


@dataclass
class LlamaExperiment:
    """A loaded llama2.c model with its calibration statistics and evaluation tokens."""

    params: dict
    cfg: object
    weights: dict
    groups: list
    stats: dict[str, LayerStats]
    calib_ids: np.ndarray
    eval_ids: np.ndarray
    calib: str
    fp: dict  # perplexity record of the FP model on eval_ids
    held_out: dict[str, np.ndarray]  # layer name -> FP inputs [N, I] on the first evaluation tokens


def prepare_llama(checkpoint, tokenizer, text, calib: str = "text", calib_stories: int = CALIB_STORIES,
                  calib_tokens: int = CALIB_TOKENS, seed: int = 0, eval_tokens: int | None = None,
                  verbose: bool = False) -> LlamaExperiment:
    """Load, split, calibrate (text or generated), and score the FP model on the evaluation split (or its start)."""
    from refq.io.llama2c import read_checkpoint
    from refq.models.llama import LlamaConfig
    from refq.models.llama_tokenizer import LlamaTokenizer
    from refq.models.perplexity import stories_to_tokens

    if calib not in ("text", "generated"):
        raise ValueError(f"prepare_llama: calib={calib!r}, expected 'text' or 'generated'")
    params, config = read_checkpoint(checkpoint)
    cfg = LlamaConfig.from_dict(config)
    tok = LlamaTokenizer.from_file(tokenizer, vocab_size=cfg.vocab_size)
    calib_text, eval_text = split_stories(Path(text).read_text(encoding="utf-8"), calib_stories)
    eval_ids = stories_to_tokens(tok, "\n".join(eval_text))
    if eval_tokens is not None:
        if eval_tokens < 2:
            raise ValueError(f"prepare_llama: eval_tokens={eval_tokens} must be at least 2")
        eval_ids = eval_ids[:eval_tokens]
    if calib == "text":
        calib_ids = stories_to_tokens(tok, "\n".join(calib_text))
    else:
        calib_ids = generate_tokens(params, cfg, calib_tokens, np.random.default_rng(seed))
    _log(verbose, f"calibration: {calib} ({calib_ids.size} tokens), evaluation: {len(eval_text)} stories "
                  f"({eval_ids.size} tokens)")
    stats = calibrate_llama(params, cfg, calib_ids)
    held = calibrate_llama(params, cfg, eval_ids[:HELD_OUT_TOKENS], keep_inputs=HELD_OUT_TOKENS)
    fp = llama_perplexity(params, cfg, eval_ids)
    _log(verbose, f"FP perplexity {fp['ppl']:.4f}")
    return LlamaExperiment(params, cfg, llama_linear_weights(params, cfg), llama_groups(cfg), stats, calib_ids,
                           eval_ids, calib, fp, {n: s.inputs for n, s in held.items()})


def run_llama(exp: LlamaExperiment, method: str, settings: QuantSettings, integer: bool = False,
              verbose: bool = False) -> dict:
    """Quantize every block linear and measure perplexity on the evaluation split; a JSON-ready record."""
    t0 = time.perf_counter()
    layers = quantize_layers(exp.weights, exp.stats, method, settings, exp.groups)
    t1 = time.perf_counter()
    q = llama_perplexity(exp.params, exp.cfg, exp.eval_ids, layers, integer)
    t2 = time.perf_counter()
    errs = list(layer_errors(exp.weights, layers, exp.held_out).values())
    _log(verbose, f"{method} W{settings.wbits}A{settings.abits or 16}: ppl {q['ppl']:.4f} "
                  f"(quantize {t1 - t0:.1f}s, eval {t2 - t1:.1f}s)")
    return {"method": method, "wbits": settings.wbits, "abits": settings.abits or 16, "ppl_fp": exp.fp["ppl"],
            "ppl": q["ppl"], "nll": q["nll"], "eval_tokens": q["tokens"], "calib": exp.calib,
            "calib_tokens": int(exp.calib_ids.size), **model_overhead(layers),
            "layer_err_mean": float(np.mean(errs)), "layer_err_max": float(np.max(errs)),
            "quantize_s": t1 - t0, "eval_s": t2 - t1}


@dataclass
class MiniLMExperiment:
    """A loaded sentence model with calibration statistics and FP embeddings of the evaluation sentences."""

    model: object
    weights: dict
    groups: list
    stats: dict[str, LayerStats]
    eval_texts: list[str]
    partner: np.ndarray
    fp_emb: np.ndarray
    calib_sentences: int
    held_out: dict[str, np.ndarray]  # layer name -> FP inputs [N, I] on the first evaluation sentences


def prepare_minilm(model_dir=None, story_text=None, verbose: bool = False) -> MiniLMExperiment:
    """Load all-MiniLM-L6-v2, calibrate on CALIBRATION (+ story sentences), embed the evaluation sentences."""
    from refq.aser.sentences import CALIBRATION, evaluation_sentences, paraphrase_partner
    from refq.models.bert import default_minilm_dir, load_sentence_model

    model = load_sentence_model(model_dir or default_minilm_dir())
    texts = list(CALIBRATION)
    if story_text is not None:
        texts += sentences_of(Path(story_text).read_text(encoding="utf-8"))
    _log(verbose, f"calibrating MiniLM on {len(texts)} sentences")
    stats = calibrate_bert(model, texts, verbose=verbose)
    eval_texts = evaluation_sentences()
    partner = np.array([paraphrase_partner(i) for i in range(len(eval_texts))])
    held = calibrate_bert(model, eval_texts[:HELD_OUT_SENTENCES], keep_inputs=100_000)
    return MiniLMExperiment(model, bert_linear_weights(model.params, model.config), bert_groups(model.config), stats,
                            eval_texts, partner, bert_embed(model, eval_texts), len(texts),
                            {n: s.inputs for n, s in held.items()})


def run_minilm(exp: MiniLMExperiment, method: str, settings: QuantSettings, integer: bool = False,
               verbose: bool = False) -> dict:
    """Quantize every encoder linear and compare the sentence embeddings with the FP ones."""
    t0 = time.perf_counter()
    layers = quantize_layers(exp.weights, exp.stats, method, settings, exp.groups)
    t1 = time.perf_counter()
    agreement = embedding_agreement(exp.fp_emb, bert_embed(exp.model, exp.eval_texts, layers, integer), exp.partner)
    t2 = time.perf_counter()
    errs = list(layer_errors(exp.weights, layers, exp.held_out).values())
    _log(verbose, f"{method} W{settings.wbits}A{settings.abits or 16}: cos {agreement['cosine_mean']:.4f} "
                  f"(quantize {t1 - t0:.1f}s, eval {t2 - t1:.1f}s)")
    return {"method": method, "wbits": settings.wbits, "abits": settings.abits or 16, **agreement,
            "calib_sentences": exp.calib_sentences, "calib_tokens": int(next(iter(exp.stats.values())).count),
            **model_overhead(layers), "layer_err_mean": float(np.mean(errs)), "layer_err_max": float(np.max(errs)),
            "quantize_s": t1 - t0, "eval_s": t2 - t1}


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)

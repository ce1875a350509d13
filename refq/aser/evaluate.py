"""Metrics of a quantized model (docs/aser.md, A8):

* stories260K perplexity exp(mean NLL) on the evaluation split, through refq.models.perplexity with the
  quantized linear hook (the FP number comes from the same call without it, on the same tokens);
* MiniLM: mean (and min) cosine similarity cos(e_q, e_fp) of quantized vs FP sentence embeddings, and top-1
  retrieval agreement: the fraction of sentences whose nearest other sentence is the same under quantized
  and FP embeddings (plus each side's paraphrase-retrieval accuracy on refq.aser.sentences' pairs);
* layer-wise relative output error ||X W^T - f_q(X)||_F / ||X W^T||_F on held-out inputs X (ASER's Fig. 6);
* overhead of the low-rank branch: r (d_in + d_out) extra parameters and multiply-adds per token, against
  d_in d_out for the layer, i.e. r (d_in + d_out) / (d_in d_out) (ASER's "2rd" extra parameters for a square layer).

References: ASER, AAAI 2025 (0.26%-2.93% compute overhead of the low-rank branch); docs/aser.md, A8;
Reimers & Gurevych,
"Sentence-BERT", EMNLP 2019 (cosine similarity); Jelinek et al., JASA 1977 (perplexity).
"""
from __future__ import annotations

import numpy as np

from refq.aser.qlinear import QuantizedLinear, forward_sim


def overhead_ratio(d_in: int, d_out: int, rank: int) -> float:
    """r (d_in + d_out) / (d_in d_out): extra parameters (= extra MACs per token) of a rank-r branch."""
    if min(d_in, d_out) < 1 or rank < 0:
        raise ValueError(f"overhead_ratio: d_in={d_in}, d_out={d_out} must be >= 1 and rank={rank} >= 0")
    return rank * (d_in + d_out) / (d_in * d_out)


def model_overhead(layers: dict[str, QuantizedLinear]) -> dict:
    """Low-rank parameters (= MACs per token) summed over layers, in percent of the quantized weights."""
    extra = sum(layer.lowrank_params() for layer in layers.values())
    base = sum(layer.d_in * layer.d_out for layer in layers.values())
    ranks = [layer.rank for layer in layers.values()]
    return {"lowrank_params": int(extra), "quantized_weights": int(base),
            "overhead_pct": 100.0 * extra / max(base, 1), "rank_min": min(ranks, default=0),
            "rank_max": max(ranks, default=0), "rank_mean": float(np.mean(ranks)) if ranks else 0.0}


def llama_perplexity(params: dict, cfg, token_ids: np.ndarray, layers: dict | None = None, integer: bool = False,
                     verbose: bool = False) -> dict:
    """Perplexity record of refq.models.perplexity, FP when layers is None, else with the quantized layers."""
    from refq.aser.apply import QuantizedOps
    from refq.models.llama import FLOAT_OPS
    from refq.models.perplexity import perplexity

    ops = FLOAT_OPS if layers is None else QuantizedOps(layers, integer)
    return perplexity(params, cfg, token_ids, ops=ops, verbose=verbose)


def relative_output_error(w: np.ndarray, layer: QuantizedLinear, x: np.ndarray) -> float:
    """||x W^T - f_q(x)||_F / ||x W^T||_F for inputs x [N, I] (f_q: the fake-quant forward)."""
    ref = x.astype(np.float64) @ w.astype(np.float64).T  # [N, O]
    err = ref - forward_sim(layer, x.astype(np.float32)).astype(np.float64)  # [N, O]
    return float(np.linalg.norm(err) / max(np.linalg.norm(ref), 1e-30))


def layer_errors(weights: dict[str, np.ndarray], layers: dict[str, QuantizedLinear],
                 inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """relative_output_error for every quantized layer with held-out inputs."""
    return {n: relative_output_error(weights[n], layers[n], inputs[n]) for n in layers if n in inputs}


def top1_neighbours(emb: np.ndarray) -> np.ndarray:
    """For every row, the index of the most cosine-similar *other* row: [N, D] -> int [N]."""
    e = emb.astype(np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)  # [N, D]
    sim = e @ e.T  # [N, N]
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def embedding_agreement(fp: np.ndarray, quant: np.ndarray, partner: np.ndarray | None = None) -> dict:
    """Mean / min cos(e_q, e_fp), top-1 retrieval agreement, and paraphrase accuracy if partners are given."""
    if fp.shape != quant.shape or fp.ndim != 2 or fp.shape[0] < 2:
        raise ValueError(f"embedding_agreement: fp {fp.shape} and quant {quant.shape} must be equal [N >= 2, D]")
    a = fp.astype(np.float64) / np.maximum(np.linalg.norm(fp, axis=1, keepdims=True), 1e-12)  # [N, D]
    b = quant.astype(np.float64) / np.maximum(np.linalg.norm(quant, axis=1, keepdims=True), 1e-12)  # [N, D]
    cos = np.sum(a * b, axis=1)  # [N]
    nn_fp, nn_q = top1_neighbours(fp), top1_neighbours(quant)
    out = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
           "top1_agreement": float(np.mean(nn_fp == nn_q)), "sentences": int(fp.shape[0])}
    if partner is not None:
        out["paraphrase_top1_fp"] = float(np.mean(nn_fp == partner))
        out["paraphrase_top1_quant"] = float(np.mean(nn_q == partner))
    return out


def bert_embed(model, texts: list[str], layers: dict | None = None, integer: bool = False) -> np.ndarray:
    """Sentence embeddings [N, D] of a SentenceModel, FP or with the quantized layers."""
    from refq.aser.apply import QuantizedOps
    from refq.models.bert import embed_sentences

    if layers is None:
        return embed_sentences(model, texts)
    return embed_sentences(model, texts, ops=QuantizedOps(layers, integer))

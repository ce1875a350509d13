"""Whole-model quantization (refq.aser.apply / evaluate) on tiny random LLaMA and BERT models: every method
runs end to end, the integer path matches the simulation, full-rank ASER reproduces the FP model, shared
smoothing follows the norm groups, and the BERT hook is restored."""
from __future__ import annotations

import numpy as np
import pytest

from refq.aser.apply import (QuantizedOps, bert_groups, bert_linear_weights, llama_groups,
                             llama_linear_weights, quantize_layers)
from refq.aser.calibrate import calibrate_bert, calibrate_llama
from refq.aser.evaluate import (bert_embed, embedding_agreement, layer_errors, llama_perplexity, model_overhead,
                                overhead_ratio, top1_neighbours)
from refq.aser.methods import METHODS
from refq.aser.settings import QuantSettings
from refq.autograd.engine import no_grad
from refq.models import bert
from refq.models.llama import LlamaConfig, forward, init_params

TINY = LlamaConfig(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, seq_len=32)


@pytest.fixture(scope="module")
def tiny_llama():
    rng = np.random.default_rng(0)
    params = init_params(TINY, rng)
    calib, held_out = rng.integers(0, 40, 96), rng.integers(0, 40, 64)
    return params, calibrate_llama(params, TINY, calib), held_out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_quantizes_the_whole_llama(tiny_llama, method):
    params, stats, held_out = tiny_llama
    layers = quantize_layers(llama_linear_weights(params, TINY), stats, method, QuantSettings(rank=2),
                             llama_groups(TINY))
    assert len(layers) == 14
    fp, q = llama_perplexity(params, TINY, held_out), llama_perplexity(params, TINY, held_out, layers)
    assert np.isfinite(q["ppl"]) and q["tokens"] == fp["tokens"] == 63
    with no_grad():
        sim = forward(held_out[None, :32], params, TINY, QuantizedOps(layers)).data
        integer = forward(held_out[None, :32], params, TINY, QuantizedOps(layers, integer=True)).data
    np.testing.assert_allclose(integer, sim, rtol=1e-3, atol=1e-3 * np.abs(sim).max())


def test_full_rank_aser_without_activation_quantization_is_the_fp_model(tiny_llama):
    params, stats, held_out = tiny_llama
    layers = quantize_layers(llama_linear_weights(params, TINY), stats, "aser",
                             QuantSettings(wbits=4, abits=None, rank=24), llama_groups(TINY))
    with no_grad():
        fp = forward(held_out[None, :32], params, TINY).data
        q = forward(held_out[None, :32], params, TINY, QuantizedOps(layers)).data
    np.testing.assert_allclose(q, fp, atol=1e-4 * np.abs(fp).max())


def test_shared_smoothing_follows_the_norm_groups(tiny_llama):
    params, stats, _ = tiny_llama
    layers = quantize_layers(llama_linear_weights(params, TINY), stats, "smoothquant", QuantSettings(),
                             llama_groups(TINY))
    np.testing.assert_array_equal(layers["layers.0.wq"].smooth, layers["layers.0.wv"].smooth)
    np.testing.assert_array_equal(layers["layers.1.w1"].smooth, layers["layers.1.w3"].smooth)
    assert layers["layers.0.wo"].smooth is None and layers["layers.1.w2"].smooth is None
    per_layer = quantize_layers(llama_linear_weights(params, TINY), stats, "smoothquant",
                                QuantSettings(smooth_scope="layer"), llama_groups(TINY))
    assert per_layer["layers.0.wo"].smooth is not None
    assert not np.array_equal(per_layer["layers.0.wq"].smooth, per_layer["layers.0.wv"].smooth)
    with pytest.raises(ValueError, match="no calibration statistics"):
        quantize_layers(llama_linear_weights(params, TINY), {}, "rtn", QuantSettings(), llama_groups(TINY))


def test_layer_errors_and_overhead(tiny_llama, rng):
    params, stats, _ = tiny_llama
    weights = llama_linear_weights(params, TINY)
    inputs = {n: rng.standard_normal((20, w.shape[1])).astype(np.float32) for n, w in weights.items()}
    errs = {r: layer_errors(weights, quantize_layers(weights, stats, "aser", QuantSettings(abits=None, rank=r),
                                                     llama_groups(TINY)), inputs) for r in (0, 24)}
    assert all(0 < e < 1 for e in errs[0].values()) and all(e < 1e-4 for e in errs[24].values())
    layers = quantize_layers(weights, stats, "lorc", QuantSettings(rank=2), llama_groups(TINY))
    extra = sum(2 * (w.shape[0] + w.shape[1]) for w in weights.values())
    assert model_overhead(layers)["lowrank_params"] == extra
    assert overhead_ratio(64, 64, 4) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="rank=-1"):
        overhead_ratio(4, 4, -1)


def test_embedding_agreement_metrics(rng):
    fp = rng.standard_normal((6, 4))
    same = embedding_agreement(fp, 3.0 * fp, partner=np.array([1, 0, 3, 2, 5, 4]))
    assert same["cosine_mean"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    assert same["paraphrase_top1_fp"] == same["paraphrase_top1_quant"]
    np.testing.assert_array_equal(top1_neighbours(np.array([[1.0, 0], [0.9, 0.1], [0, 1.0]])), [1, 0, 1])
    assert embedding_agreement(fp, -fp)["cosine_mean"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="must be equal"):
        embedding_agreement(fp, fp[:3])


def tiny_bert(rng):
    cfg = bert.BertConfig(vocab_size=12, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=16, max_position_embeddings=16)
    params = {k: (0.3 * rng.standard_normal(s)).astype(np.float32) for k, s in bert.param_shapes(cfg).items()}
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e",
                                         ".", "f"])}
    return bert.SentenceModel(params, cfg, vocab)


def test_bert_ops_calibrate_and_quantize(rng):
    model = tiny_bert(rng)
    texts = [" ".join(rng.choice(list("abcdef"), size=rng.integers(3, 10))) for _ in range(30)]
    stats = calibrate_bert(model, texts)
    assert len(stats) == 12
    assert stats["encoder.layer.1.output.dense"].d_in == 16
    assert stats["encoder.layer.0.attention.self.query"] is stats["encoder.layer.0.attention.self.value"]
    unpadded = calibrate_bert(model, texts, batch_size=1)  # no padding at all
    for name, s in stats.items():
        assert s.count == unpadded[name].count == sum(len(t.split()) + 2 for t in texts)
        np.testing.assert_allclose(s.gram, unpadded[name].gram, rtol=1e-6, atol=1e-6)
    weights = bert_linear_weights(model.params, model.config)
    fp = bert_embed(model, texts[:6])
    exact = quantize_layers(weights, stats, "aser", QuantSettings(abits=None, rank=8), bert_groups(model.config))
    np.testing.assert_allclose(bert_embed(model, texts[:6], exact), fp, atol=1e-4)
    w4a8 = quantize_layers(weights, stats, "aser", QuantSettings(rank=2), bert_groups(model.config))
    np.testing.assert_allclose(bert_embed(model, texts[:6], w4a8, integer=True), bert_embed(model, texts[:6], w4a8),
                               atol=1e-3)

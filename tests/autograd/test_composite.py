"""Gradient checks of small composite graphs: an attention block and a conv-pool-classifier stack."""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from refq.autograd import functional as F
from tests.gradcheck import check_grad


def attention_block(x, wq, wk, wv, wo, ln_w, ln_b):
    """Pre-norm single-head self-attention with a residual: [T, D] -> [T, D]."""
    h = F.layer_norm(x, ln_w, ln_b)  # [T, D]
    q, k, v = F.linear(h, wq), F.linear(h, wk), F.linear(h, wv)  # [T, D] -> [T, D]
    scores = F.mul(F.matmul(q, F.transpose(k)), 1.0 / np.sqrt(x.shape[-1]))  # [T, T]
    causal = np.tril(np.ones((x.shape[0], x.shape[0]), dtype=bool))
    attn = F.softmax(F.where(causal, scores, -1e9), axis=-1)  # [T, T]
    return F.add(x, F.linear(F.gelu(F.matmul(attn, v)), wo))  # [T, D]


def test_attention_block_gradients(rng):
    T, D = 4, 3
    inputs = [rng.standard_normal((T, D))] + [rng.standard_normal((D, D)) * 0.5 for _ in range(4)]
    inputs += [1.0 + 0.1 * rng.standard_normal(D), 0.1 * rng.standard_normal(D)]
    check_grad(attention_block, inputs, rng, label="attention")


def test_attention_block_matches_numpy(rng):
    T, D = 5, 4
    x, wq, wk, wv, wo = (rng.standard_normal((T, D)),) + tuple(rng.standard_normal((D, D)) for _ in range(4))
    ones, zeros = np.ones(D), np.zeros(D)
    got = attention_block(x, wq, wk, wv, wo, ones, zeros).data
    h = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    s = (h @ wq.T) @ (h @ wk.T).T / np.sqrt(D) + np.triu(np.full((T, T), -np.inf), 1)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    u = a @ (h @ wv.T)
    np.testing.assert_allclose(got, x + (0.5 * u * (1 + erf(u / np.sqrt(2)))) @ wo.T, atol=1e-10)


def conv_classifier(x, w1, b1, w2, wfc, bfc, labels):
    """conv3x3 -> relu -> maxpool2 -> conv3x3 (stride 2) -> avgpool -> linear -> cross-entropy."""
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, padding=1)), 2)  # [B, 1, 6, 6] -> [B, 3, 3, 3]
    h = F.avg_pool2d(F.tanh(F.conv2d(h, w2, stride=2, padding=1)), 2)  # -> [B, 2, 2, 2] -> [B, 2, 1, 1]
    return F.cross_entropy(F.linear(F.reshape(h, (h.shape[0], -1)), wfc, bfc), labels)  # [B, 2] -> [B, K]


def test_conv_pool_cross_entropy_stack_gradients(rng):
    labels = np.array([2, 0])
    inputs = [rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3) * 0.1,
              rng.standard_normal((2, 3, 3, 3)) * 0.5, rng.standard_normal((3, 2)), rng.standard_normal(3) * 0.1]
    check_grad(lambda *t: conv_classifier(*t, labels), inputs, rng, label="conv stack")

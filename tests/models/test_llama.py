"""Llama forward paths on tiny random models: Tensor == NumPy == naive loops, KV cache, RoPE, gradients, generation."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refq.autograd import Tensor, functional as F
from refq.models.ops import ModelOps
from refq.models.llama import (KVCache, LlamaConfig, check_params, forward, forward_embeddings, forward_naive,
                               forward_numpy, generate_tokens, init_params, rope, rope_np, rope_tables)
from refq.models.sampling import Sampler
from tests.gradcheck import numerical_grad

CONFIGS = st.builds(
    lambda heads, kv, hs, layers, shared: LlamaConfig(dim=heads * hs, hidden_dim=10, n_layers=layers, n_heads=heads,
                                                      n_kv_heads=kv, vocab_size=23, seq_len=12, shared_classifier=shared),
    heads=st.sampled_from([2, 4]), kv=st.sampled_from([1, 2]), hs=st.sampled_from([2, 4]),
    layers=st.integers(1, 2), shared=st.booleans())


def tiny(shared=True, dtype=np.float64, seed=0):
    cfg = LlamaConfig(dim=8, hidden_dim=12, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=19, seq_len=16,
                      shared_classifier=shared)
    return cfg, init_params(cfg, np.random.default_rng(seed), dtype)


@given(cfg=CONFIGS, seed=st.integers(0, 2**32 - 1), t=st.integers(1, 6))
def test_numpy_forward_matches_naive_loops(cfg, seed, t):
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng, np.float64)
    tokens = rng.integers(0, cfg.vocab_size, t)
    np.testing.assert_allclose(forward_numpy(tokens[None], params, cfg)[0], forward_naive(list(tokens), params, cfg),
                               rtol=1e-10, atol=1e-10)


@given(cfg=CONFIGS, seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_tensor_forward_matches_numpy(cfg, seed, dtype):
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng, dtype)
    tokens = rng.integers(0, cfg.vocab_size, (2, 5))
    out = forward(tokens, params, cfg)
    assert out.dtype == dtype and out.shape == (2, 5, cfg.vocab_size)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.data, forward_numpy(tokens, params, cfg), rtol=tol, atol=tol)


@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 11), max_size=4))
def test_kv_cache_equals_full_recomputation(seed, cuts):
    cfg, params = tiny(seed=seed)
    tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, 12))
    bounds = [0] + sorted(set(cuts)) + [12]
    cache = KVCache(cfg, batch=2, dtype=np.float64)
    chunks = [forward_numpy(tokens[:, a:b], params, cfg, cache) for a, b in zip(bounds, bounds[1:])]
    assert cache.length == 12
    full = forward_numpy(tokens, params, cfg)
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), full, rtol=1e-12, atol=1e-12)


def test_kv_cache_grows_from_a_small_capacity():
    cfg, params = tiny(seed=3)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, (1, 11))
    cache = KVCache(cfg, dtype=np.float64, capacity=2)
    steps = [forward_numpy(tokens[:, t:t + 1], params, cfg, cache) for t in range(11)]
    assert cache.k.shape[2] == 16 and cache.length == 11  # 2 -> 4 -> 8 -> 16 (= seq_len)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), forward_numpy(tokens, params, cfg), rtol=1e-12,
                               atol=1e-12)


def test_generation_memory_follows_the_steps_not_seq_len():
    import tracemalloc

    cfg = LlamaConfig(dim=8, hidden_dim=12, n_layers=2, n_heads=2, n_kv_heads=2, vocab_size=19, seq_len=1 << 20)
    params = init_params(cfg, np.random.default_rng(0), np.float32)
    tracemalloc.start()
    try:
        out = list(generate_tokens(params, cfg, [1, 4], 6, Sampler(0.0, 0.9, 1)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 1 <= len(out) <= 6
    assert peak < 4 << 20, peak  # a seq_len-sized cache would take 2 x 2 x 2^20 x 8 x 4 bytes = 128 MiB


@given(pos=st.integers(0, 500), hs=st.sampled_from([2, 8, 16]), seed=st.integers(0, 2**32 - 1))
def test_rope_rotates_interleaved_pairs(pos, hs, seed):
    """Pair (2i, 2i+1) of each head is the complex number x_2i + j x_2i+1 times exp(j pos 10000^(-2i/Dh))."""
    x = np.random.default_rng(seed).standard_normal((1, 1, 3, hs))
    cos, sin = rope_tables(np.array([pos]), hs, np.float64)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * pos * 10000.0 ** (-np.arange(0, hs, 2) / hs))
    expected = np.stack([z.real, z.imag], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(rope_np(x, cos, sin), expected, atol=1e-12)
    np.testing.assert_allclose(rope(Tensor(x), cos, sin).data, expected, atol=1e-12)


@given(m=st.integers(0, 60), n=st.integers(0, 60), shift=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
def test_rope_scores_depend_only_on_relative_position(m, n, shift, seed):
    q, k = np.random.default_rng(seed).standard_normal((2, 1, 1, 1, 8))

    def score(a, b):
        ca, sa = rope_tables(np.array([a]), 8, np.float64)
        cb, sb = rope_tables(np.array([b]), 8, np.float64)
        return float((rope_np(q, ca, sa) * rope_np(k, cb, sb)).sum())

    assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=1e-9, abs_tol=1e-9)


def test_attention_is_causal():
    cfg, params = tiny()
    tokens = np.array([[3, 4, 5, 6, 7]])
    changed = tokens.copy()
    changed[0, 3:] = [1, 2]
    a, b = forward_numpy(tokens, params, cfg), forward_numpy(changed, params, cfg)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert not np.allclose(a[:, 3:], b[:, 3:])


def projected_loss_at(params: dict, name: str, idx: list[tuple], tokens, w, cfg):
    """L(v) = <logits, w> with params[name][idx] replaced by the vector v (NumPy path, float64)."""
    def loss(v):
        p = params[name].copy()
        for i, value in zip(idx, v):
            p[i] = value
        return float((forward_numpy(tokens, {**params, name: p}, cfg) * w).sum())
    return loss


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_match_finite_differences(shared, rng):
    cfg, params = tiny(shared)
    tokens = rng.integers(0, cfg.vocab_size, (2, 6))
    w = rng.standard_normal((2, 6, cfg.vocab_size))  # random projection of all logits onto one scalar
    tensors = {k: Tensor(v, requires_grad=True) for k, v in params.items()}
    F.sum(F.mul(forward(tokens, tensors, cfg), w)).backward()
    for name, p in params.items():
        idx = [tuple(int(rng.integers(0, s)) for s in p.shape) for _ in range(3)]
        if name == "token_embedding_table":
            idx += [(int(tokens[0, 0]), 1)]  # a row that is both looked up and (if shared) the classifier
        expected = numerical_grad(projected_loss_at(params, name, idx, tokens, w, cfg), np.array([p[i] for i in idx]))
        np.testing.assert_allclose([tensors[name].grad[i] for i in idx], expected, rtol=1e-6, atol=1e-7, err_msg=name)


def test_gradient_wrt_input_embeddings(rng):
    cfg, params = tiny()
    x = rng.standard_normal((1, 5, cfg.dim))
    w = rng.standard_normal((1, 5, cfg.vocab_size))
    xt = Tensor(x, requires_grad=True)
    F.sum(F.mul(forward_embeddings(xt, params, cfg), w)).backward()
    expected = numerical_grad(lambda v: float((forward_embeddings(v, params, cfg).data * w).sum()), x)
    np.testing.assert_allclose(xt.grad, expected, rtol=1e-6, atol=1e-8)
    assert np.all(xt.grad[0, 4] != 0) and not np.allclose(xt.grad[0, 0], 0)  # earlier tokens influence later logits


def test_every_linear_layer_goes_through_ops(rng):
    """A quantized model only overrides ops.linear; here a recording twin that doubles wcls's output."""
    class Recording(ModelOps):
        def __init__(self):
            self.names = []

        def linear(self, name, x, w):
            self.names.append(name)
            y = super().linear(name, x, w)
            return F.mul(y, 2.0) if name == "wcls" else y

    cfg, params = tiny(shared=False)
    tokens = rng.integers(0, cfg.vocab_size, (1, 4))
    ops = Recording()
    logits = forward(tokens, params, cfg, ops)
    per_layer = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"]
    assert ops.names == [f"layers.{l}.{n}" for l in range(2) for n in per_layer] + ["wcls"]
    np.testing.assert_allclose(logits.data, 2 * forward_numpy(tokens, params, cfg), rtol=1e-10)


class Scripted:
    """A 'sampler' that returns the given tokens in order and records the logits it saw."""

    def __init__(self, tokens):
        self.tokens, self.seen = list(tokens), []

    def __call__(self, logits):
        self.seen.append(logits.copy())
        return self.tokens.pop(0)


def test_greedy_generation_equals_argmax_of_full_recomputation():
    cfg, params = tiny(dtype=np.float32)
    prompt = [1, 7, 3]
    out = list(generate_tokens(params, cfg, prompt, 12, Sampler(0.0, 0.9, 1)))
    assert out[:2] == prompt[1:]
    seq = [prompt[0]] + out
    greedy = forward_numpy(np.array([seq]), params, cfg)[0].argmax(-1)  # [T]
    assert seq[3:] == [int(g) for g in greedy[2:len(seq) - 1]]
    assert len(out) == 12 or greedy[len(seq) - 1] == 1  # stopped early only on BOS


def test_generation_follows_run_c_loop():
    cfg, params = tiny(dtype=np.float32)
    sampler = Scripted([5, 6, 1, 9])
    out = list(generate_tokens(params, cfg, [1, 4, 8], 10, sampler))
    assert out == [4, 8, 5, 6]  # forced prompt tokens, samples, stop at BOS (not yielded)
    assert len(sampler.seen) == 3
    expected = forward_numpy(np.array([[1, 4, 8, 5]]), params, cfg)[0, -1]
    np.testing.assert_allclose(sampler.seen[1], expected, rtol=1e-4, atol=1e-5)
    assert list(generate_tokens(params, cfg, [1, 4, 8, 2], 2, Scripted([]))) == [4, 8]  # steps end inside the prompt
    assert list(generate_tokens(params, cfg, [1], 3, Scripted([3, 3, 3]))) == [3, 3, 3]


def test_input_validation():
    cfg, params = tiny()
    with pytest.raises(ValueError, match="token ids span 0..19"):
        forward_numpy(np.array([[0, 19]]), params, cfg)
    with pytest.raises(ValueError, match="exceed seq_len 16"):
        forward(np.zeros((1, 17), np.int64), params, cfg)
    with pytest.raises(ValueError, match="steps=17"):
        list(generate_tokens(params, cfg, [1], 17, Scripted([])))
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        LlamaConfig(dim=8, hidden_dim=8, n_layers=1, n_heads=4, n_kv_heads=3, vocab_size=5, seq_len=4)
    with pytest.raises(ValueError, match="wq has shape"):
        check_params({**params, "wq": params["wq"][:, :4]}, cfg)
    with pytest.raises(ValueError, match="unexpected \\['wcls'\\]"):
        check_params({**params, "wcls": params["token_embedding_table"]}, cfg)

"""Perplexity windows: every target scored once, results equal a direct computation, uniform model gives V."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from refq.models.llama import LlamaConfig, forward_numpy, init_params
from refq.models.llama_tokenizer import BOS, LlamaTokenizer
from refq.models.perplexity import perplexity, stories_to_tokens, window_nll, windows
from tests.assets import asset


def tiny(seed=0):
    cfg = LlamaConfig(dim=8, hidden_dim=12, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=17, seq_len=8)
    return cfg, init_params(cfg, np.random.default_rng(seed), np.float32)


@given(n=st.integers(2, 60), window=st.integers(1, 12), data=st.data())
def test_every_target_is_scored_once(n, window, data):
    stride = data.draw(st.integers(1, window))
    plan = windows(n, window, stride)
    scored = []
    for start, end, k in plan:
        assert 0 < end - start <= window and 0 < k <= end - start and end <= n - 1
        scored += list(range(end + 1 - k, end + 1))  # stream indices of the scored targets
    assert scored == list(range(1, n))
    if stride == window:
        assert all(k == end - start for start, end, k in plan)  # non-overlapping: everything in a window counts


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 30), window=st.integers(1, 8), data=st.data())
def test_perplexity_equals_direct_computation(seed, n, window, data):
    stride = data.draw(st.integers(1, window))
    cfg, params = tiny(seed % 7)
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, n)
    total = 0.0
    for start, end, k in windows(n, window, stride):  # the definition: score target i from the window that owns it
        nll = window_nll(forward_numpy(ids[None, start:end], params, cfg), ids[None, start + 1:end + 1])[0]
        total += nll[-k:].sum()
    result = perplexity(params, cfg, ids, window=window, stride=stride, batch_size=3)
    assert result["tokens"] == n - 1
    np.testing.assert_allclose(result["nll"], total / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(result["ppl"], np.exp(total / (n - 1)), rtol=1e-5)


def test_uniform_model_has_perplexity_vocab_size():
    cfg, params = tiny()
    params = {**params, "token_embedding_table": np.zeros_like(params["token_embedding_table"])}  # logits all 0
    result = perplexity(params, cfg, np.arange(20) % cfg.vocab_size, window=8)
    np.testing.assert_allclose(result["ppl"], cfg.vocab_size, rtol=1e-6)


def test_one_long_window_is_plain_next_token_loss():
    cfg, params = tiny()
    ids = np.array([1, 5, 6, 7, 1, 9, 3])
    logits = forward_numpy(ids[None, :-1], params, cfg)[0].astype(np.float64)  # [6, V]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_p[np.arange(6), ids[1:]].mean()
    np.testing.assert_allclose(perplexity(params, cfg, ids)["nll"], expected, rtol=1e-5)


def test_bad_arguments():
    cfg, params = tiny()
    with pytest.raises(ValueError, match="window=9"):
        perplexity(params, cfg, np.arange(5), window=9)
    with pytest.raises(ValueError, match="stride=5"):
        perplexity(params, cfg, np.arange(5), window=4, stride=5)
    with pytest.raises(ValueError, match="1-D integer array"):
        perplexity(params, cfg, np.array([3]))


def test_stories_are_bos_separated():
    tok = LlamaTokenizer.from_file(asset("llama2c/tok512.bin"), vocab_size=512)
    ids = stories_to_tokens(tok, "  One day.\n\nThe end. \n")
    first, second = tok.encode("One day."), tok.encode("The end.")
    assert ids.tolist() == first + second and ids[0] == BOS and ids[len(first)] == BOS
    with pytest.raises(ValueError, match="no non-empty line"):
        stories_to_tokens(tok, "\n \n")

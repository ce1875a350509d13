"""Calibration (refq.aser.calibrate): statistics, the model hook pass, the disjoint story split, data-free
generation, and the MiniLM sentence set."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.aser.calibrate import calibrate_llama, generate_tokens, llama_linear_names, sentences_of, split_stories
from refq.aser.sentences import CALIBRATION, evaluation_sentences, paraphrase_partner
from refq.aser.types import LayerStats
from refq.models.llama import LlamaConfig, init_params

TINY = LlamaConfig(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, seq_len=32)


@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 30), max_size=4), keep=st.integers(0, 40))
def test_batched_statistics_equal_one_pass(seed, cuts, keep):
    x = np.random.default_rng(seed).standard_normal((30, 5)).astype(np.float32)
    stats = LayerStats(5, keep_inputs=keep)
    for part in np.split(x, sorted(cuts)):
        stats.update(part)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(stats.gram, x64.T @ x64, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(stats.absmax, np.abs(x64).max(0))
    np.testing.assert_allclose(stats.mean_abs, np.abs(x64).mean(0), rtol=1e-12)
    assert stats.count == 30
    kept = stats.inputs
    assert (kept is None and keep == 0) or np.array_equal(kept, x[:min(keep, 30)])


def test_llama_pass_records_every_block_linear(rng):
    params = init_params(TINY, rng)
    ids = rng.integers(0, TINY.vocab_size, 70)
    stats = calibrate_llama(params, TINY, ids, window=32, keep_inputs=100)
    assert sorted(stats) == sorted(llama_linear_names(TINY)) and len(stats) == 14
    for name, s in stats.items():
        assert s.count == 70, name
        np.testing.assert_allclose(s.gram, s.inputs.astype(np.float64).T @ s.inputs, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(stats["layers.1.wq"].gram, stats["layers.1.wv"].gram)  # same input
    assert stats["layers.0.w2"].d_in == 24 and stats["layers.0.wo"].d_in == 16
    with pytest.raises(ValueError, match="window=33"):
        calibrate_llama(params, TINY, ids, window=33)


def test_story_split_is_disjoint_and_deduplicated():
    text = "A cat.\nThe Dog ran.\n\na cat.\nthe dog   ran.\nBirds sing.\nFish swim.\n"
    calib, evaluation = split_stories(text, 2)
    assert calib == ["A cat.", "The Dog ran."] and evaluation == ["Birds sing.", "Fish swim."]
    with pytest.raises(ValueError, match="n_calib=4"):
        split_stories(text, 4)


def test_generated_calibration_is_seeded(rng):
    params = init_params(TINY, rng)
    a = generate_tokens(params, TINY, 40, np.random.default_rng(7), max_story=16)
    b = generate_tokens(params, TINY, 40, np.random.default_rng(7), max_story=16)
    c = generate_tokens(params, TINY, 40, np.random.default_rng(8), max_story=16)
    np.testing.assert_array_equal(a, b)
    assert a.size >= 40 and a[0] == 1 and a.dtype == np.int64 and not np.array_equal(a[:40], c[:40])
    with pytest.raises(ValueError, match="np.random.Generator"):
        generate_tokens(params, TINY, 10, 7)


def test_sentence_sets():
    evaluation = evaluation_sentences()
    assert len(evaluation) >= 200 and len(set(evaluation)) == len(evaluation)
    assert not set(evaluation) & set(CALIBRATION)
    assert all(paraphrase_partner(paraphrase_partner(i)) == i != paraphrase_partner(i) for i in range(len(evaluation)))
    assert sentences_of('He ran. "Stop!" she said. Why? Then they all went home together.') == [
        "Then they all went home together."]

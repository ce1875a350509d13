"""CTC decoding: greedy best path, prefix beam search, and lexicon decoding.

* Greedy (Graves et al. 2006, Sec. 3.2 "best path decoding"):
  pi_t = argmax_k y_t^k, then the map B: merge consecutive repeats *then*
  drop blanks ("a - a" -> "aa", "a a" -> "a").
* Prefix beam search (Graves 2012, Ch. 7.5; Hannun et al. 2014, Alg. 1):
  every prefix keeps (log p_blank, log p_nonblank), the probability of the
  frames so far collapsing to the prefix with the last frame a blank / a
  label; identical prefixes merge. Without pruning (width >= K^T) the final
  beams hold the exact p(l|x) of every labeling.
* Lexicon (docs/spotter.md T8): the word of the largest exact CTC log-likelihood
  (forward pass, `refq.spotter.ctc.ctc_log_likelihoods`), or the word nearest
  to the greedy text in edit distance (ICDAR-style).

References:
    Graves, Fernandez, Gomez, Schmidhuber, "Connectionist Temporal
    Classification", ICML 2006, Sec. 3.2.
    Hannun, Maas, Jurafsky, Ng, "First-Pass Large Vocabulary Continuous Speech
    Recognition using Bi-Directional Recurrent DNNs", arXiv:1408.2873, 2014.
    docs/spotter.md, T8.
"""
from __future__ import annotations

import math

import numpy as np

from refq.spotter.alphabet import Alphabet
from refq.spotter.ctc import ctc_log_likelihoods
from refq.spotter.text_metrics import levenshtein

BLANK = 0
NEG_INF = -math.inf


def _log_softmax(logits: np.ndarray, input_length, fn: str) -> np.ndarray:
    """Validated float64 log-softmax of the first input_length frames of logits [T, K]."""
    a = np.asarray(logits)
    if a.ndim != 2 or a.dtype.kind != "f" or a.shape[1] == 0:
        raise ValueError(f"{fn}: logits have shape {a.shape} and dtype {a.dtype}, expected float [T, K]")
    if not np.isfinite(a).all():
        raise ValueError(f"{fn}: logits contain NaN or inf")
    T = a.shape[0] if input_length is None else int(input_length)
    if not 0 <= T <= a.shape[0]:
        raise ValueError(f"{fn}: input_length={input_length} outside 0..{a.shape[0]}")
    a = a[:T].astype(np.float64)  # [T, K]
    m = a.max(axis=1, keepdims=True) if T else np.zeros((0, 1))  # [T, 1]
    return a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))  # [T, K]


def collapse_path(path) -> np.ndarray:
    """B(path): merge consecutive repeats, then remove blanks; int32 [L]."""
    p = np.asarray(path, dtype=np.int64).ravel()  # [T]
    keep = np.ones(p.size, bool)  # [T]
    keep[1:] = p[1:] != p[:-1]
    return p[keep & (p != BLANK)].astype(np.int32)


def greedy_decode(logits, input_length=None) -> tuple[np.ndarray, float, float]:
    """Best-path decode of logits [T, K]: (ids [L] int32, confidence, path log-probability).

    confidence = mean over emitted characters of the largest y_t of that character within its run of
    frames; if nothing is emitted, the mean over frames of max_k y_t^k (1.0 for zero frames).
    The path log-probability sum_t max_k log y_t^k is a lower bound on log p(text|x).
    """
    lp = _log_softmax(logits, input_length, "greedy_decode")  # [T, K]
    path = lp.argmax(axis=1)  # [T]
    best = lp.max(axis=1)  # [T]
    starts = np.flatnonzero(np.r_[True, path[1:] != path[:-1]]) if path.size else np.zeros(0, np.int64)
    run_max = np.maximum.reduceat(best, starts) if path.size else best  # [runs]
    emitted = path[starts] != BLANK  # [runs]
    ids = path[starts][emitted].astype(np.int32)  # [L]
    if ids.size:
        confidence = float(np.exp(run_max[emitted]).mean())
    else:
        confidence = float(np.exp(best).mean()) if best.size else 1.0
    return ids, confidence, float(best.sum())


def greedy_decode_batch(logits, input_lengths=None) -> list[tuple[np.ndarray, float, float]]:
    """`greedy_decode` of every sample of logits [N, T, K] (frames t >= input_lengths[i] ignored)."""
    a = np.asarray(logits)
    if a.ndim != 3:
        raise ValueError(f"greedy_decode_batch: logits have shape {a.shape}, expected [N, T, K]")
    lengths = [None] * a.shape[0] if input_lengths is None else list(np.asarray(input_lengths))
    if len(lengths) != a.shape[0]:
        raise ValueError(f"greedy_decode_batch: {len(lengths)} input_lengths for {a.shape[0]} samples")
    return [greedy_decode(a[i], lengths[i]) for i in range(a.shape[0])]


def _lse2(a: float, b: float) -> float:
    """log(e^a + e^b) with -inf allowed."""
    if a < b:
        a, b = b, a
    return a if b == NEG_INF else a + math.log1p(math.exp(b - a))


def _accumulate(beams: dict, prefix: tuple[int, ...], log_blank: float, log_label: float) -> None:
    """Add probability mass ending in a blank / in a label to prefix's (log p_b, log p_nb)."""
    if log_blank == NEG_INF and log_label == NEG_INF:
        return  # no path reaches this prefix; keep it out of the beam
    entry = beams.setdefault(prefix, [NEG_INF, NEG_INF])
    entry[0] = _lse2(entry[0], log_blank)
    entry[1] = _lse2(entry[1], log_label)


def prefix_beam_search(logits, beam_width: int = 8, input_length=None) -> list[tuple[tuple[int, ...], float]]:
    """Prefix beam search over logits [T, K]: up to beam_width (labeling, log p) pairs, best first."""
    if not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
        raise ValueError(f"prefix_beam_search: beam_width={beam_width!r}, expected a positive int")
    lp = _log_softmax(logits, input_length, "prefix_beam_search").tolist()  # [T][K] Python floats (fast indexing)
    K = np.shape(logits)[1]
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix -> (log p_b, log p_nb)
    for row in lp:
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_b, p_nb) in beams.items():
            p_total = _lse2(p_b, p_nb)
            _accumulate(nxt, prefix, p_total + row[BLANK], NEG_INF)  # a blank keeps the prefix
            for k in range(1, K):
                if prefix and prefix[-1] == k:
                    _accumulate(nxt, prefix, NEG_INF, p_nb + row[k])  # a repeat merges into the same character
                    _accumulate(nxt, prefix + (k,), NEG_INF, p_b + row[k])  # a new copy needs a blank between
                else:
                    _accumulate(nxt, prefix + (k,), NEG_INF, p_total + row[k])
        ranked = sorted(nxt.items(), key=lambda item: -_lse2(*item[1]))
        beams = {prefix: (v[0], v[1]) for prefix, v in ranked[:beam_width]}
    return [(prefix, _lse2(p_b, p_nb)) for prefix, (p_b, p_nb) in beams.items()]


def lexicon_decode(logits, words, alphabet: Alphabet, input_length=None) -> tuple[str, float]:
    """Lexicon word with the largest CTC log-likelihood log p(word|x), and that log-likelihood.

    Words too long for the frames score -inf; if no word is feasible the first word is returned.
    """
    words = list(words)
    if not words:
        raise ValueError("lexicon_decode: the lexicon is empty")
    lp = _log_softmax(logits, input_length, "lexicon_decode")  # [T, K]
    if lp.shape[1] != alphabet.num_classes:
        raise ValueError(f"lexicon_decode: logits have K={lp.shape[1]} classes, alphabet has {alphabet.num_classes}")
    if lp.shape[0] == 0:
        raise ValueError("lexicon_decode: input_length is 0; no frames to score")
    encoded = [alphabet.encode(w) for w in words]
    lengths = np.array([e.size for e in encoded], np.int64)  # [W]
    flat = np.concatenate(encoded) if lengths.sum() else np.zeros(0, np.int32)  # [sum L]
    scores = ctc_log_likelihoods(lp, flat, lengths)  # [W]
    best = int(np.argmax(scores))
    return words[best], float(scores[best])


def lexicon_decode_edit(text: str, words, ignore_case: bool = False) -> tuple[str, int]:
    """Lexicon word nearest to `text` in Levenshtein distance (first on ties), and the distance."""
    words = list(words)
    if not words:
        raise ValueError("lexicon_decode_edit: the lexicon is empty")
    key = text.upper() if ignore_case else text
    distances = [levenshtein(key, w.upper() if ignore_case else w) for w in words]
    best = int(np.argmin(distances))
    return words[best], distances[best]

"""Plain float64 CTC for one sample: the oracle that the Numba kernel is tested against.

This is the CTC forward-backward of Graves et al. (2006, Sec. 4) written out with
Python loops, one cell at a time, in log space. It is slow on purpose: every
line maps to one equation. `refq.spotter.ctc` is the fast batched version.

Notation (Graves et al. 2006, Sec. 4.1): logits a [T, K], class
0 is the blank b, lp = log_softmax(a), target l = (l_1..l_L) without blanks,
extended target l' = (b, l_1, b, l_2, ..., l_L, b) of length S = 2L + 1.

* alpha_t(s): log-probability of all path prefixes that end in l'_s at frame t
  (Graves Eq. 5-7).
* beta_t(s): log-probability of all path suffixes from (t, s) to the end,
  *excluding* the emission at t (docs/spotter.md T9), so that for every t
  log p(l|x) = LSE_s(alpha_t(s) + beta_t(s)).
* gamma_t(k) = sum over s with l'_s = k of exp(alpha_t(s) + beta_t(s) - log p);
  d(-log p)/d a_t^k = y_t^k - gamma_t(k) (Graves Eq. 16).

The brute-force functions enumerate all K^T paths (Graves Eq. 2-3) and are
only usable for tiny T and K; the tests use them as a second oracle.

References:
    Graves, Fernandez, Gomez, Schmidhuber, "Connectionist Temporal
    Classification", ICML 2006, Sec. 3-4.
    docs/spotter.md, T9.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

BLANK = 0
NEG_INF = -math.inf


def lse(values) -> float:
    """log(sum(exp(values))) that drops -inf terms and returns -inf for none left."""
    finite = [v for v in values if v != NEG_INF]
    if not finite:
        return NEG_INF
    m = max(finite)
    return m + math.log(sum(math.exp(v - m) for v in finite))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    a = np.asarray(logits, dtype=np.float64)  # [T, K]
    m = a.max(axis=1, keepdims=True)  # [T, 1]
    return a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))  # [T, K]


def extend_labels(labels) -> list[int]:
    """l' = (b, l_1, b, l_2, ..., l_L, b), length 2L + 1."""
    ext = [BLANK]
    for label in labels:
        ext += [int(label), BLANK]
    return ext


def _check(logits: np.ndarray, labels) -> None:
    """Raise ValueError on a non-[T, K] logits array or labels outside 1..K-1."""
    if np.ndim(logits) != 2 or np.shape(logits)[0] < 1:
        raise ValueError(f"ctc_reference: logits has shape {np.shape(logits)}, expected [T >= 1, K]")
    num_classes = np.shape(logits)[1]
    for label in labels:
        if not 1 <= int(label) < num_classes:
            raise ValueError(f"ctc_reference: label {label} outside 1..{num_classes - 1} (0 is the blank)")


def ctc_alpha_beta(logits: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, float]:
    """Forward alpha [T, S], emission-exclusive backward beta [T, S] and log p(l|x)."""
    _check(logits, labels)
    lp = log_softmax(logits)  # [T, K]
    ext = extend_labels(labels)
    T, S = lp.shape[0], len(ext)
    alpha = np.full((T, S), NEG_INF)  # [T, S]
    beta = np.full((T, S), NEG_INF)  # [T, S]

    # Spec Sec. 6.2: alpha_0 starts in the first blank or the first label.
    alpha[0, 0] = lp[0, ext[0]]
    if S > 1:
        alpha[0, 1] = lp[0, ext[1]]
    for t in range(1, T):
        for s in range(S):
            terms = [alpha[t - 1, s]]
            if s >= 1:
                terms.append(alpha[t - 1, s - 1])
            if s >= 2 and ext[s] != BLANK and ext[s] != ext[s - 2]:
                terms.append(alpha[t - 1, s - 2])  # skip the blank between two different labels
            v = lse(terms)
            alpha[t, s] = NEG_INF if v == NEG_INF else v + lp[t, ext[s]]
    logp = lse([alpha[T - 1, S - 1]] + ([alpha[T - 1, S - 2]] if S > 1 else []))

    # Spec Sec. 6.3: beta ends in the last label or the final blank; y_t is not included.
    beta[T - 1, S - 1] = 0.0
    if S > 1:
        beta[T - 1, S - 2] = 0.0
    for t in range(T - 2, -1, -1):
        for s in range(S):
            terms = [beta[t + 1, s] + lp[t + 1, ext[s]]]
            if s + 1 < S:
                terms.append(beta[t + 1, s + 1] + lp[t + 1, ext[s + 1]])
            if s + 2 < S and ext[s + 2] != BLANK and ext[s + 2] != ext[s]:
                terms.append(beta[t + 1, s + 2] + lp[t + 1, ext[s + 2]])
            beta[t, s] = lse(terms)
    return alpha, beta, logp


def ctc_reference(logits: np.ndarray, labels) -> tuple[float, np.ndarray]:
    """Loss -log p(l|x) and its gradient y - gamma w.r.t. the logits [T, K] (float64).

    An infeasible target (T < L + repeats) gives loss +inf and a zero gradient.
    """
    alpha, beta, logp = ctc_alpha_beta(logits, labels)
    ext = extend_labels(labels)
    T, K = np.shape(logits)
    if logp == NEG_INF:
        return math.inf, np.zeros((T, K))
    gamma = np.zeros((T, K))  # [T, K] per-class occupancy, Graves Eq. 16
    for t in range(T):
        for s, k in enumerate(ext):
            if alpha[t, s] != NEG_INF and beta[t, s] != NEG_INF:
                gamma[t, k] += math.exp(alpha[t, s] + beta[t, s] - logp)
    return -logp, np.exp(log_softmax(logits)) - gamma


def collapse(path) -> tuple[int, ...]:
    """The CTC map B: merge consecutive repeats, then drop blanks (Graves Sec. 3.1)."""
    out, previous = [], None
    for k in path:
        if k != previous and k != BLANK:
            out.append(int(k))
        previous = k
    return tuple(out)


def brute_force_labelings(logits: np.ndarray) -> dict[tuple[int, ...], float]:
    """p(l|x) for every labeling l reachable in T frames, by summing all K^T paths."""
    lp = log_softmax(logits)  # [T, K]
    T, K = lp.shape
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(K), repeat=T):
        p = math.exp(sum(lp[t, k] for t, k in enumerate(path)))
        key = collapse(path)
        probs[key] = probs.get(key, 0.0) + p
    return probs


def brute_force_likelihood(logits: np.ndarray, labels) -> float:
    """p(l|x) = sum over paths pi with B(pi) = l of prod_t y_t^{pi_t} (Graves Eq. 3)."""
    _check(logits, labels)
    return brute_force_labelings(logits).get(tuple(int(k) for k in labels), 0.0)

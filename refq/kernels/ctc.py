"""Numba kernels of the batched CTC loss with its fused gradient: the alpha/beta recursions per sample.

Called by `refq.spotter.ctc` (input checks, batching over threads, the autograd op `CTCLoss`), which
describes the arrangement (gathered emissions, -inf padding columns, the reachable window of states);
`refq.spotter.ctc_reference` is the plain NumPy form, one line per equation, and the tests in
tests/spotter/test_ctc.py check the two agree.

References:
    Graves et al., "Connectionist Temporal Classification", ICML 2006, Eq. 5-16.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

BLANK = 0  # the blank class (PyTorch CTCLoss convention)


@njit(cache=True)
def _lse3(a, b, c):
    """log(e^a + e^b + e^c) with -inf terms allowed (all -inf gives -inf); skips exp(-inf)."""
    if a >= b and a >= c:
        m, u, v = a, b, c
    elif b >= c:
        m, u, v = b, a, c
    else:
        m, u, v = c, a, b
    if m == -np.inf:
        return m
    rest = 0.0  # sum of the two smaller terms relative to the largest
    if u > -np.inf:
        rest += math.exp(u - m)
    if v > -np.inf:
        rest += math.exp(v - m)
    return m + math.log(1.0 + rest) if rest > 0.0 else m


@njit(cache=True)
def _extend(target):
    """Extended target l' [S] and additive skip mask [S + 2] (0 where alpha may jump s-2 -> s)."""
    S = 2 * target.shape[0] + 1
    ext = np.empty(S, np.int64)  # [S]; np.empty plus loops everywhere here: np.zeros/np.full each cost compile time
    skip = np.empty(S + 2)  # [S + 2], the last two entries are padding
    for s in range(S + 2):
        if s < S:
            ext[s] = target[s // 2] if s % 2 else BLANK
        skip[s] = -np.inf
    for s in range(2, S):
        if ext[s] != BLANK and ext[s] != ext[s - 2]:
            skip[s] = 0.0
    return ext, skip


@njit(cache=True)
def _window(t, Tn, S):
    """States [lo, hi) that can lie on a complete path at frame t."""
    return max(0, S - 2 * (Tn - t)), min(S, 2 * t + 2)


@njit(cache=True)
def _forward(lpe, skip, Tn, S, alpha):
    """Fill alpha [Tn, S + 2] (state s in column s + 2) and return log p(l|x); Graves Eq. 5-8."""
    alpha[:, :] = -np.inf
    alpha[0, 2] = lpe[0, 0]
    if S > 1:
        alpha[0, 3] = lpe[0, 1]
    for t in range(1, Tn):
        lo, hi = _window(t, Tn, S)
        for s in range(lo, hi):
            alpha[t, s + 2] = lpe[t, s] + _lse3(alpha[t - 1, s + 2], alpha[t - 1, s + 1], alpha[t - 1, s] + skip[s])
    return _lse3(alpha[Tn - 1, S + 1], alpha[Tn - 1, S], -np.inf)


@njit(cache=True)
def _backward(lpe, skip, Tn, S, beta):
    """Fill the emission-exclusive beta [Tn, S + 2] (state s in column s); docs/spotter.md T9."""
    beta[:, :] = -np.inf
    beta[Tn - 1, S - 1] = 0.0
    if S > 1:
        beta[Tn - 1, S - 2] = 0.0
    for t in range(Tn - 2, -1, -1):
        lo, hi = _window(t, Tn, S)
        for s in range(lo, hi):
            beta[t, s] = _lse3(beta[t + 1, s] + lpe[t + 1, s],
                               beta[t + 1, s + 1] + lpe[t + 1, s + 1],
                               beta[t + 1, s + 2] + lpe[t + 1, s + 2] + skip[s + 2])


@njit(cache=True, inline="always")  # inlined into _ctc_batch: its code is compiled and optimised once, not twice
def _ctc_sample(x, from_log_probs, target, Tn, scale, zero_infinity, grad):
    """Loss of one sample x [T, K] with target [L]; writes scale * d(loss)/dx into grad [T, K]."""
    K = x.shape[1]
    S = 2 * target.shape[0] + 1
    grad[:, :] = 0.0
    if Tn == 0:
        return 0.0 if (S == 1 or zero_infinity) else np.inf
    ext, skip = _extend(target)
    y = np.empty((Tn, K))  # [Tn, K] softmax (zero for log-prob inputs)
    lpe = np.empty((Tn, S + 2))  # [Tn, S + 2] log y_t(l'_s), two -inf pads
    for t in range(Tn):
        norm = 0.0
        for k in range(K):
            y[t, k] = 0.0
        lpe[t, S] = lpe[t, S + 1] = -np.inf
        if not from_log_probs:
            m = float(x[t, 0])
            for k in range(1, K):
                m = max(m, float(x[t, k]))
            total = 0.0
            for k in range(K):
                y[t, k] = math.exp(float(x[t, k]) - m)
                total += y[t, k]
            inv_total = 1.0 / total
            for k in range(K):
                y[t, k] *= inv_total
            norm = m + math.log(total)
        for s in range(S):
            lpe[t, s] = float(x[t, ext[s]]) - norm
    alpha = np.empty((Tn, S + 2))  # [Tn, S + 2]
    logp = _forward(lpe, skip, Tn, S, alpha)
    if logp == -np.inf:  # infeasible: no alignment exists, the gradient stays zero
        return 0.0 if zero_infinity else np.inf
    beta = np.empty((Tn, S + 2))  # [Tn, S + 2]
    _backward(lpe, skip, Tn, S, beta)
    for t in range(Tn):
        lo, hi = _window(t, Tn, S)
        for s in range(lo, hi):
            v = alpha[t, s + 2] + beta[t, s]
            if v > -np.inf:
                y[t, ext[s]] -= math.exp(v - logp)  # y - gamma, Graves Eq. 16
        for k in range(K):
            grad[t, k] = scale * y[t, k]
    return -logp


@njit(cache=True, nogil=True)
def _ctc_batch(x, from_log_probs, labels, offsets, input_lengths, scales, zero_infinity, loss, grad, n0, n1):
    """Per-sample loss (float64) and scaled gradient [T, K] of samples n0..n1, one after the other."""
    for n in range(n0, n1):
        loss[n] = _ctc_sample(x[n], from_log_probs, labels[offsets[n]:offsets[n + 1]], input_lengths[n],
                              scales[n], zero_infinity, grad[n])


@njit(cache=True)
def _score_targets(lp, labels, offsets, out):
    """log p(w|x) for every target w against one sequence of log-probs lp [T, K]."""
    Tn = lp.shape[0]
    for w in range(offsets.shape[0] - 1):
        S = 2 * (offsets[w + 1] - offsets[w]) + 1
        ext, skip = _extend(labels[offsets[w]:offsets[w + 1]])
        lpe = np.empty((Tn, S + 2))  # [T, S + 2]
        for t in range(Tn):
            lpe[t, S] = lpe[t, S + 1] = -np.inf
            for s in range(S):
                lpe[t, s] = lp[t, ext[s]]
        alpha = np.empty((Tn, S + 2))  # [T, S + 2]
        out[w] = _forward(lpe, skip, Tn, S, alpha)

"""Batched CTC loss with its fused gradient (Numba), and the autograd op `CTCLoss`.

Same math as `refq.spotter.ctc_reference` (Graves et al. 2006, Sec. 4),
arranged for speed:

* one sample per loop iteration (the batch split over threads when it is
  large enough to pay for waking them, see `PARALLEL_MIN_WORK` and
  `refq.kernels.threads`); per
  sample, softmax and the gathered emissions lpe[t, s] = lp_t(l'_s) are
  computed once (Graves Eq. 5-7 only ever read y at the S extended-label classes);
* alpha is stored with two -inf columns on the left and beta with two on the
  right, and the "skip the blank" rule is an additive mask (0 or -inf), so the
  s-1 / s-2 (s+1 / s+2) terms need no index checks;
* for frame t only states s in [S - 2(T_i - t), 2t + 1] can lie on a complete
  path (Graves Sec. 4.1: the other states cannot reach the end); the rest stay -inf;
* gradient w.r.t. the logits is y - gamma (softmax fused, Graves Eq. 16), or
  -gamma when the inputs are already log-probabilities.

Semantics (PyTorch CTCLoss conventions, blank = 0):
* a target is feasible iff T_i >= L_i + R_i, R_i = number of adjacent repeats
  (`min_input_length`); an infeasible target has p = 0, loss +inf and a zero
  gradient, or loss 0 and zero gradient with `zero_infinity=True`. No NaN.
* frames t >= T_i (padding) get exactly zero gradient.
* reduction 'none' returns [N] losses, 'sum' their sum, 'mean' the batch mean
  of loss_i / max(L_i, 1); the gradient is scaled by the same factors.

References:
    Graves et al., "Connectionist Temporal Classification", ICML 2006, Eq. 5-16.
    docs/spotter.md, T9 (emission-exclusive beta).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from refq.autograd.engine import Function, Tensor
from refq.kernels.threads import run_chunks

BLANK = 0
REDUCTIONS = ("none", "sum", "mean")
PARALLEL_MIN_WORK = 200_000  # N * T * (K + 6 Lmax): below this, thread start-up costs more than it saves


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


def min_input_length(labels) -> int:
    """Fewest frames that can emit `labels`: L + number of adjacent repeats (a blank must separate each repeat)."""
    lab = np.asarray(labels).ravel()  # [L]
    return int(lab.size + np.count_nonzero(lab[1:] == lab[:-1]))


def _int_vector(values, name: str, n: int, fn: str) -> np.ndarray:
    """Validated non-negative integer vector [n] as int64."""
    a = np.asarray(values)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{fn}: {name} has dtype {a.dtype}, expected an integer array")
    if a.shape != (n,):
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected ({n},)")
    if n and a.min() < 0:
        i = int(np.argmin(a))
        raise ValueError(f"{fn}: {name}[{i}] = {a[i]} is negative")
    return a.astype(np.int64)


def _flatten_labels(labels, label_lengths: np.ndarray, num_classes: int, fn: str):
    """Concatenated targets (int32) and offsets [N + 1] from padded [N, Lmax] or concatenated labels."""
    lab = np.asarray(labels)
    N = label_lengths.shape[0]
    if lab.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels has dtype {lab.dtype}, expected an integer array")
    if lab.ndim == 2:
        if lab.shape[0] != N:
            raise ValueError(f"{fn}: labels has shape {lab.shape}, expected [{N}, Lmax]")
        too_long = np.flatnonzero(label_lengths > lab.shape[1])
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(f"{fn}: label_lengths[{i}] = {label_lengths[i]} > padded label width {lab.shape[1]}")
        flat = lab[np.arange(lab.shape[1]) < label_lengths[:, None]]  # [sum L], row-major order
    elif lab.ndim == 1:
        if lab.size != label_lengths.sum():
            raise ValueError(f"{fn}: concatenated labels have {lab.size} entries, "
                             f"label_lengths sum to {label_lengths.sum()}")
        flat = lab
    else:
        raise ValueError(f"{fn}: labels has shape {lab.shape}, expected [N, Lmax] or concatenated [sum L]")
    offsets = np.zeros(N + 1, np.int64)  # [N + 1]
    offsets[1:] = np.cumsum(label_lengths)
    bad = np.flatnonzero((flat < 1) | (flat >= num_classes))
    if bad.size:
        j = int(bad[0])
        n = int(np.searchsorted(offsets, j, side="right")) - 1
        raise ValueError(f"{fn}: labels of sample {n} contain {flat[j]}; "
                         f"targets must be in 1..{num_classes - 1} (0 is the blank)")
    return np.ascontiguousarray(flat, dtype=np.int32), offsets


def ctc_loss_and_grad(x, labels, input_lengths, label_lengths, reduction: str = "mean",
                      zero_infinity: bool = False, log_probs: bool = False, parallel: bool | None = None):
    """Reduced CTC loss and its gradient w.r.t. x [N, T, K] (logits, or log-probs if `log_probs`).

    Returns (loss, grad): loss has x's dtype and shape [N] for 'none' or () otherwise;
    grad [N, T, K] is d(loss.sum())/dx. labels: padded [N, Lmax] or concatenated [sum L].
    `parallel`: spread the batch over Numba's threads (None: only when the work exceeds
    PARALLEL_MIN_WORK); both paths give bit-identical results.
    """
    fn = "ctc_loss"
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{fn}: inputs have dtype {x.dtype}, expected float32 or float64")
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[2] == 0:
        raise ValueError(f"{fn}: inputs have shape {x.shape}, expected [N >= 1, T, K >= 1]")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction={reduction!r}, expected one of {REDUCTIONS}")
    N, T, K = x.shape
    bad = np.isnan(x) | (x == np.inf) if log_probs else ~np.isfinite(x)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{fn}: inputs[{where}] = {x[where]} is not allowed "
                         f"({'NaN/+inf' if log_probs else 'non-finite logit'})")
    in_len = _int_vector(input_lengths, "input_lengths", N, fn)
    lab_len = _int_vector(label_lengths, "label_lengths", N, fn)
    if in_len.max() > T:
        i = int(np.argmax(in_len))
        raise ValueError(f"{fn}: input_lengths[{i}] = {in_len[i]} > T = {T}")
    flat, offsets = _flatten_labels(labels, lab_len, K, fn)

    if reduction == "mean":
        scales = 1.0 / (N * np.maximum(lab_len, 1).astype(np.float64))  # [N]
    else:
        scales = np.ones(N)  # [N]
    loss = np.empty(N)  # [N] float64
    grad = np.empty((N, T, K), x.dtype)  # [N, T, K]
    if parallel is None:
        parallel = N > 1 and N * T * (K + 6 * int(lab_len.max())) >= PARALLEL_MIN_WORK
    run_chunks(_ctc_batch, N, np.ascontiguousarray(x), bool(log_probs), flat, offsets, in_len, scales,
               bool(zero_infinity), loss, grad, threads=None if parallel else 1)
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = (loss / np.maximum(lab_len, 1)).mean()
    return np.asarray(loss, dtype=x.dtype), grad


def ctc_log_likelihoods(log_probs, labels, label_lengths) -> np.ndarray:
    """log p(w|x) [W] (float64) of W targets under one sequence of log-probs [T, K]; no gradient."""
    fn = "ctc_log_likelihoods"
    lp = np.asarray(log_probs)
    if lp.dtype not in (np.float32, np.float64) or lp.ndim != 2 or lp.shape[0] == 0:
        raise ValueError(f"{fn}: log_probs has shape {lp.shape} and dtype {lp.dtype}, expected float [T >= 1, K]")
    if np.isnan(lp).any() or (lp == np.inf).any():
        raise ValueError(f"{fn}: log_probs contain NaN or +inf")
    lengths = np.asarray(label_lengths)
    if lengths.ndim != 1:
        raise ValueError(f"{fn}: label_lengths has shape {lengths.shape}, expected [W]")
    lab_len = _int_vector(lengths, "label_lengths", lengths.shape[0], fn)
    flat, offsets = _flatten_labels(labels, lab_len, lp.shape[1], fn)
    out = np.empty(lab_len.shape[0])  # [W]
    _score_targets(np.ascontiguousarray(lp, dtype=np.float64), flat, offsets, out)
    return out


class CTCLoss(Function):
    """CTC loss of logits (or log-probs) [N, T, K]; backward scales the stored fused gradient."""

    def forward(self, x, *, labels, input_lengths, label_lengths, reduction="mean",
                zero_infinity=False, log_probs=False):
        loss, self.grad = ctc_loss_and_grad(x, labels, input_lengths, label_lengths,
                                            reduction, zero_infinity, log_probs)
        self.reduction = reduction
        return loss

    def backward(self, g):
        g = np.asarray(g, dtype=self.grad.dtype)
        if self.reduction == "none":
            return (self.grad * g[:, None, None],)  # [N, T, K] * [N, 1, 1]
        return (self.grad * g,)  # [N, T, K] * []


def ctc_loss(logits, labels, input_lengths, label_lengths, reduction: str = "mean",
             zero_infinity: bool = False, log_probs: bool = False) -> Tensor:
    """CTC loss Tensor of logits [N, T, K] (PyTorch semantics, blank = 0); differentiable w.r.t. logits."""
    x = logits if isinstance(logits, Tensor) else Tensor(np.asarray(logits))
    return CTCLoss.apply(x, labels=labels, input_lengths=input_lengths, label_lengths=label_lengths,
                         reduction=reduction, zero_infinity=zero_infinity, log_probs=log_probs)

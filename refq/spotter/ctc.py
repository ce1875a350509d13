"""Batched CTC loss with its fused gradient (Numba kernels in `refq.kernels.ctc`), and the autograd op `CTCLoss`.

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

import numpy as np

from refq.autograd.engine import Function, Tensor
from refq.kernels.ctc import BLANK, _ctc_batch, _score_targets  # noqa: F401 (BLANK: public constant)
from refq.kernels.threads import run_chunks

REDUCTIONS = ("none", "sum", "mean")
PARALLEL_MIN_WORK = 200_000  # N * T * (K + 6 Lmax): below this, thread start-up costs more than it saves


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

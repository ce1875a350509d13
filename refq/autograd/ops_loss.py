"""Losses: softmax cross-entropy (hard or soft targets) and mean squared error.

Cross-entropy over the last (class) axis, averaged over the N = prod(leading dims) rows:
  L = -(1/N) sum_n sum_c t_nc log softmax(z_n)_c
  dL/dz_n = (softmax(z_n) - t_n) / N        (t one-hot for hard targets; sum_c t_nc = 1 assumed)
For soft targets that do not sum to 1 the exact gradient is softmax(z_n) sum_c t_nc - t_n, which
is what is implemented (SARDFQ's soft labels, docs/sardfq.md S4, are proper distributions).
MSE: L = mean((a - b)^2), dL/da = 2 (a - b) / n = -dL/db (then unbroadcast).

References: Goodfellow et al., "Deep Learning", MIT Press 2016, Sec. 6.2.2.3
(softmax units); SARDFQ, arXiv:2412.16553, Soft-Label learning (soft cross-entropy).
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function
from refq.autograd.ops_elementwise import unbroadcast, wants_grad
from refq.autograd.ops_nn import log_softmax_array


def check_target(logits_shape: tuple, logits_dtype, target) -> np.ndarray:
    """Validated cross-entropy target: int labels [...] in [0, C) or float probabilities [..., C] (cast to the logits dtype)."""
    target = np.asarray(target)
    if len(logits_shape) == 0:
        raise ValueError("cross_entropy: logits is a scalar, expected [N, C]")
    C = logits_shape[-1]
    if target.dtype.kind in "iu":
        if target.shape != logits_shape[:-1]:
            raise ValueError(f"cross_entropy: labels have shape {target.shape}, expected {logits_shape[:-1]}")
        if target.size and (target.min() < 0 or target.max() >= C):
            bad = target.min() if target.min() < 0 else target.max()
            raise ValueError(f"cross_entropy: label {bad} is out of range for {C} classes")
        return target
    if target.dtype.kind == "f":
        if target.shape != logits_shape:
            raise ValueError(f"cross_entropy: soft targets have shape {target.shape}, expected {logits_shape}")
        return target.astype(logits_dtype, copy=False)
    raise ValueError(f"cross_entropy: target has dtype {target.dtype}, expected int labels or float probabilities")


class CrossEntropy(Function):
    """Mean cross-entropy of logits [..., C] against int labels [...] or probabilities [..., C]."""

    def forward(self, logits, target=None):
        logp = log_softmax_array(logits, axis=-1)  # [..., C]
        self.n = logp.size // logp.shape[-1]
        self.target = target
        self.logp = logp
        if target.dtype.kind in "iu":
            picked = np.take_along_axis(logp, target[..., None], axis=-1)  # [..., 1]
            return -picked.sum() / self.n
        return -(target * logp).sum() / self.n

    def backward(self, g):
        p = np.exp(self.logp)  # [..., C] softmax
        t = self.target
        if t.dtype.kind in "iu":
            np.put_along_axis(p, t[..., None], np.take_along_axis(p, t[..., None], axis=-1) - 1.0, axis=-1)
        else:
            p = p * t.sum(axis=-1, keepdims=True) - t
        return (p * (g / self.n),)


class MSE(Function):
    def forward(self, a, b):
        self.diff = a - b
        self.sa, self.da, self.sb, self.db = a.shape, a.dtype, b.shape, b.dtype
        return np.square(self.diff).mean()

    def backward(self, g):
        ga = self.diff * (g * (2.0 / self.diff.size))
        return (unbroadcast(ga, self.sa, self.da) if wants_grad(self, 0) else None,
                unbroadcast(-ga, self.sb, self.db) if wants_grad(self, 1) else None)

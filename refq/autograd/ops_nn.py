"""Activations, softmax and normalization layers with hand-derived backward passes.

  relu(x)     = max(x, 0)                  relu'   = [x > 0]
  gelu(x)     = x Phi(x) (erf)             gelu'   = Phi(x) + x phi(x)        (Hendrycks & Gimpel 2016, Eq. 1)
                (float32: the erfc polynomial of refq.kernels.gelu)
  silu(x)     = x s(x), s = sigmoid        silu'   = s (1 + x (1 - s))        (Elfwing et al. 2018)
  tanh'       = 1 - tanh^2                 sigmoid' = s (1 - s)
  softmax:      dx = y * (g - sum(g * y))                  along the softmax axis
  log_softmax:  dx = g - softmax(x) * sum(g)
  layer_norm:   y = xhat * w + b, xhat = (x - mu) * r, r = (var + eps)^-1/2  (Ba et al. 2016, Eq. 4)
                dx = r * (gh - mean(gh) - xhat * mean(gh * xhat)),  gh = g * w
  rms_norm:     y = x * r * w, r = (mean(x^2) + eps)^-1/2                   (Zhang & Sennrich 2019, Eq. 4)
                dx = r * (gh - xhat * mean(gh * xhat)),  xhat = x * r
Both norms act over the last axis, as in ViT (LayerNorm) and LLaMA (RMSNorm).

References: Hendrycks & Gimpel, "Gaussian Error Linear Units (GELUs)", 2016;
Elfwing et al., "Sigmoid-weighted linear units", Neural Networks 2018;
Ba et al., "Layer Normalization", 2016; Zhang & Sennrich, "Root Mean Square
Layer Normalization", NeurIPS 2019.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, expit

from refq.autograd.engine import Function
from refq.kernels.gelu import gelu_f32, gelu_grad_f32
from refq.autograd.ops_elementwise import wants_grad

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Relu(Function):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, g):
        return (g * self.mask,)


class Gelu(Function):
    """GELU x * Phi(x), Phi the standard normal CDF: exact erf, or for float32 the one-pass kernel of
    refq.kernels.gelu (erfc polynomial, |error| <= 1.5e-7, tested against this form)."""

    def forward(self, x):
        if x.dtype == np.float32 and not self.needs_grad:
            return gelu_f32(x, save=False)
        self.x = x
        if x.dtype == np.float32:
            y, self.cdf, self.pdf = gelu_f32(x)
            return y
        self.cdf = 0.5 * (1.0 + erf(x * _INV_SQRT2))  # Phi(x)
        return x * self.cdf

    def backward(self, g):
        x = self.x
        if x.dtype == np.float32 and g.dtype == np.float32:
            return (gelu_grad_f32(g, x, self.cdf, self.pdf),)
        pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI  # phi(x)
        return (g * (self.cdf + x * pdf),)


class Silu(Function):
    def forward(self, x):
        self.x, self.s = x, expit(x)
        return x * self.s

    def backward(self, g):
        s = self.s
        return (g * (s * (1.0 + self.x * (1.0 - s))),)


class Tanh(Function):
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, g):
        return (g * (1.0 - self.out * self.out),)


class Sigmoid(Function):
    def forward(self, x):
        self.out = expit(x)  # stable for large |x|
        return self.out

    def backward(self, g):
        return (g * (self.out * (1.0 - self.out)),)


def softmax_array(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of a plain array (max subtracted first)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_array(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax of a plain array: x - logsumexp(x)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        self.out = softmax_array(x, axis)
        return self.out

    def backward(self, g):
        y = self.out
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        self.out = log_softmax_array(x, axis)
        return self.out

    def backward(self, g):
        return (g - np.exp(self.out) * g.sum(axis=self.axis, keepdims=True),)


def _sum_rows(a: np.ndarray) -> np.ndarray:
    """Sum over all axes but the last: [..., D] -> [D]."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis."""

    def forward(self, x, weight, bias, eps=1e-5):
        mu = x.mean(axis=-1, keepdims=True)  # [..., 1]
        centered = x - mu
        self.rstd = 1.0 / np.sqrt(np.square(centered).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
        self.xhat = centered * self.rstd  # [..., D]
        self.weight = weight
        return self.xhat * weight + bias

    def backward(self, g):
        xhat = self.xhat
        gx = gw = gb = None
        if wants_grad(self, 0):
            gh = g * self.weight
            gx = self.rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
        if wants_grad(self, 1):
            gw = _sum_rows(g * xhat).astype(self.weight.dtype, copy=False)
        if wants_grad(self, 2):
            gb = _sum_rows(g).astype(self.parents[2].dtype, copy=False)
        return gx, gw, gb


class RMSNorm(Function):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""

    def forward(self, x, weight, eps=1e-5):
        self.rstd = 1.0 / np.sqrt(np.square(x).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
        self.xhat = x * self.rstd  # [..., D]
        self.weight = weight
        return self.xhat * weight

    def backward(self, g):
        xhat = self.xhat
        gx = gw = None
        if wants_grad(self, 0):
            gh = g * self.weight
            gx = self.rstd * (gh - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
        if wants_grad(self, 1):
            gw = _sum_rows(g * xhat).astype(self.weight.dtype, copy=False)
        return gx, gw

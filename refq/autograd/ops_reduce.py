"""Reductions over axes: sum, mean, max and (population) variance.

The backward of a reduction broadcasts the upstream gradient back over the
reduced axes, scaled by the local derivative:
  sum:  dL/dx = g
  mean: dL/dx = g / n
  max:  dL/dx = g * [x == max] / #ties   (a tie shares the gradient equally)
  var:  dL/dx = g * 2 (x - mean) / n     (var = mean((x - mean)^2), ddof = 0 as np.var)

References: Baydin et al., "Automatic differentiation in machine learning: a
survey", JMLR 2018, Sec. 3.2.
"""
from __future__ import annotations

import math

import numpy as np

from refq.autograd.engine import Function


def normalize_axes(axis, ndim: int) -> tuple:
    """Sorted tuple of non-negative axes; `None` means all axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = set()
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an input with {ndim} dimensions")
        out.add(int(a) % ndim)
    if len(out) != len(axes):
        raise ValueError(f"axis {axis} repeats an axis")
    return tuple(sorted(out))


def kept_shape(shape: tuple, axes: tuple) -> tuple:
    """`shape` with every reduced axis set to 1 (the keepdims shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes = normalize_axes(axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return (np.broadcast_to(g.reshape(kept_shape(self.shape, self.axes)), self.shape),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes = normalize_axes(axis, x.ndim)
        self.n = math.prod(x.shape[a] for a in self.axes)
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        g = g.reshape(kept_shape(self.shape, self.axes)) * (1.0 / self.n)
        return (np.broadcast_to(g, self.shape),)


class Max(Function):
    def forward(self, x, axis=None, keepdims=False):
        axes = normalize_axes(axis, x.ndim)
        if any(x.shape[a] == 0 for a in axes):
            raise ValueError(f"max: cannot reduce an empty axis of shape {x.shape} over axis {axis}")
        out = x.max(axis=axes, keepdims=True)
        self.mask = x == out  # [...]: True at the maximum (several on ties)
        self.count = self.mask.sum(axis=axes, keepdims=True).astype(x.dtype)
        self.kshape = out.shape
        return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, g):
        return (self.mask * (g.reshape(self.kshape) / self.count),)


class Var(Function):
    def forward(self, x, axis=None, keepdims=False):
        axes = normalize_axes(axis, x.ndim)
        self.n = math.prod(x.shape[a] for a in axes)
        self.centered = x - x.mean(axis=axes, keepdims=True)
        self.kshape = kept_shape(x.shape, axes)
        return np.square(self.centered).mean(axis=axes, keepdims=keepdims)

    def backward(self, g):
        return (g.reshape(self.kshape) * self.centered * (2.0 / self.n),)

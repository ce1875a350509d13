"""Elementwise operations with NumPy broadcasting, and the shared `unbroadcast` rule.

Every binary op broadcasts its inputs like NumPy does. The chain rule for a
broadcast input sums the upstream gradient over the axes that were stretched:
if `y = f(a, b)` with `a` broadcast from shape `s` to `y.shape`, then
dL/da = unbroadcast(dL/dy * df/da, s)  (Baydin et al. 2018, Sec. 3.2 on
reverse-mode accumulation over fan-out; a broadcast is a fan-out of `a`).

Kinks use the following subgradients: abs and clip pass the gradient on the
open side only (abs'(0) = 0, clip passes it inside [lo, hi] inclusive), and
maximum/minimum split a tie equally between both inputs, so that
maximum(x, x) has derivative 1.

References: Baydin et al., "Automatic differentiation in machine learning: a
survey", JMLR 2018.
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function


def unbroadcast(g: np.ndarray, shape: tuple, dtype=None) -> np.ndarray:
    """Sum `g` over the axes along which an input of `shape` was broadcast (and cast to `dtype`)."""
    if g.shape != shape:
        lead = g.ndim - len(shape)
        stretched = tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
        axes = tuple(range(lead)) + stretched
        g = g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)
    if dtype is not None and g.dtype != dtype:
        g = g.astype(dtype)
    return g


def wants_grad(ctx: Function, i: int) -> bool:
    """Whether positional input `i` of a recorded node needs a gradient (skips work for constants)."""
    return ctx.parents[i].requires_grad


class _Binary(Function):
    """Remembers the input shapes and dtypes so that backward can unbroadcast."""

    def _remember(self, a, b):
        self.sa, self.da, self.sb, self.db = a.shape, a.dtype, b.shape, b.dtype

    def _pair(self, ga, gb):
        """Unbroadcast both raw gradients; skip the ones no input needs."""
        return (unbroadcast(ga(), self.sa, self.da) if wants_grad(self, 0) else None,
                unbroadcast(gb(), self.sb, self.db) if wants_grad(self, 1) else None)


class Add(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        return a + b

    def backward(self, g):
        return self._pair(lambda: g, lambda: g)


class Sub(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        return a - b

    def backward(self, g):
        return self._pair(lambda: g, lambda: -g)


class Mul(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return self._pair(lambda: g * self.b, lambda: g * self.a)


class Div(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        self.b = b
        self.out = a / b
        return self.out

    def backward(self, g):
        # d(a/b)/da = 1/b ; d(a/b)/db = -a/b^2 = -out/b
        return self._pair(lambda: g / self.b, lambda: -g * self.out / self.b)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """x ** p for a constant exponent p."""

    def forward(self, x, p: float):
        self.x, self.p = x, p
        return x ** p

    def backward(self, g):
        return (g * (self.p * self.x ** (self.p - 1.0)),)


class Exp(Function):
    def forward(self, x):
        self.out = np.exp(x)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, g):
        return (g / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.out = np.sqrt(x)
        return self.out

    def backward(self, g):
        return (g * 0.5 / self.out,)


class Abs(Function):
    def forward(self, x):
        self.sign = np.sign(x)
        return np.abs(x)

    def backward(self, g):
        return (g * self.sign,)


class Clip(Function):
    """clip(x, lo, hi); the gradient passes where lo <= x <= hi (zero where the clamp saturates)."""

    def forward(self, x, lo=None, hi=None):
        inside = np.ones(x.shape, dtype=bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        self.inside = inside
        return np.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, g):
        return (g * self.inside,)


class Maximum(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        out = np.maximum(a, b)
        # share of the gradient that goes to `a`: 1 where a > b, 1/2 on ties, 0 elsewhere
        self.wa = 0.5 * ((a > b).astype(out.dtype) + (a >= b))
        return out

    def backward(self, g):
        ga = g * self.wa
        return self._pair(lambda: ga, lambda: g - ga)


class Minimum(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        out = np.minimum(a, b)
        self.wa = 0.5 * ((a < b).astype(out.dtype) + (a <= b))
        return out

    def backward(self, g):
        ga = g * self.wa
        return self._pair(lambda: ga, lambda: g - ga)


class Where(_Binary):
    """where(cond, a, b) for a fixed boolean mask `cond` (broadcast with a and b)."""

    def forward(self, a, b, cond=None):
        self._remember(a, b)
        self.cond = cond
        return np.where(cond, a, b)

    def backward(self, g):
        zero = np.zeros((), dtype=g.dtype)
        return self._pair(lambda: np.where(self.cond, g, zero), lambda: np.where(self.cond, zero, g))

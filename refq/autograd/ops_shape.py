"""Shape and indexing operations: reshape, transpose, getitem, concat, stack, pad, roll, flip.

These ops only move elements, so each backward is the inverse movement of the
upstream gradient: reshape back, the inverse permutation, a scatter into
zeros (scatter-*add* for integer-array indices, which may repeat an element),
split, slicing the padding off, rolling back, flipping again. SARDFQ's
jitter/flip augmentation (roll / flip, docs/sardfq.md S1) uses the last two.

References: Baydin et al., JMLR 2018 (reverse mode); NumPy indexing rules
(basic vs. advanced indexing), numpy.org/doc/stable/user/basics.indexing.html.
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function


class Reshape(Function):
    def forward(self, x, shape=None):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    def forward(self, x, axes=None):
        self.inverse = None if axes is None else tuple(np.argsort(axes))
        return np.transpose(x, axes)

    def backward(self, g):
        return (np.transpose(g, self.inverse),)


def is_advanced_int_index(index) -> bool:
    """True if `index` contains an integer array (advanced indexing that may repeat elements)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, np.ndarray) and p.dtype.kind in "iu" for p in parts)


class GetItem(Function):
    """x[index] for basic indices (ints, slices, None, Ellipsis) and integer/boolean arrays."""

    def forward(self, x, index=None):
        self.index, self.shape, self.dtype = index, x.shape, x.dtype
        return x[index]

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=self.dtype)
        if is_advanced_int_index(self.index):
            np.add.at(gx, self.index, g)  # repeated indices accumulate
        else:
            gx[self.index] = g
        return (gx,)


class Concat(Function):
    def forward(self, *xs, axis=0):
        self.axis = axis
        self.dtypes = [x.dtype for x in xs]
        self.splits = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    def backward(self, g):
        parts = np.split(g, self.splits, axis=self.axis)
        return tuple(p.astype(d, copy=False) for p, d in zip(parts, self.dtypes))


class Stack(Function):
    def forward(self, *xs, axis=0):
        out = np.stack(xs, axis=axis)
        self.axis = axis % out.ndim
        self.dtypes = [x.dtype for x in xs]
        return out

    def backward(self, g):
        lead = (slice(None),) * self.axis
        return tuple(g[lead + (i,)].astype(d, copy=False) for i, d in enumerate(self.dtypes))


class Pad(Function):
    """Constant padding; `pad_width` is a normalized tuple of (before, after) pairs, one per axis."""

    def forward(self, x, pad_width=None, value=0.0):
        self.crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))
        return np.pad(x, pad_width, mode="constant", constant_values=value)

    def backward(self, g):
        return (g[self.crop],)


class Roll(Function):
    def forward(self, x, shift=0, axis=None):
        self.shift = tuple(-s for s in shift) if isinstance(shift, tuple) else -shift
        self.axis = axis
        return np.roll(x, shift, axis=axis)

    def backward(self, g):
        return (np.roll(g, self.shift, axis=self.axis),)


class Flip(Function):
    def forward(self, x, axis=None):
        self.axis = axis
        return np.flip(x, axis=axis)

    def backward(self, g):
        return (np.flip(g, axis=self.axis),)

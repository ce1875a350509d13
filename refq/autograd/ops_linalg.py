"""Matrix products: batched matmul, the linear layer, and embedding lookup.

For C = A B (batched, NumPy broadcasting over leading dims):
  dL/dA = G B^T ,  dL/dB = A^T G   (then summed over broadcast batch dims).
Linear layer y = x W^T + b, with W [out, in]:
  dL/dx = G W ,  dL/dW = G^T x ,  dL/db = sum_rows G.
Embedding y = W[ids]: dL/dW is the scatter-add of the rows of G at `ids`.

References: Baydin et al., JMLR 2018 (reverse mode); Vaswani et al.,
"Attention is all you need", NeurIPS 2017 (the linear/embedding layers).
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function
from refq.autograd.ops_elementwise import unbroadcast, wants_grad


class MatMul(Function):
    """a @ b with NumPy semantics (1-D operands are promoted and the added axis removed)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        if a.ndim > 2 and b.ndim == 2:  # shared right operand: one large GEMM instead of a batch of small ones
            return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + b.shape[-1:])  # [*, K] @ [K, M]
        return np.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a if a.ndim > 1 else a[None, :]  # [K] -> [1, K]
        b2 = b if b.ndim > 1 else b[:, None]  # [K] -> [K, 1]
        g2 = g.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if wants_grad(self, 0) and b2.ndim == 2 and a2.ndim > 2:
            ga = (g2.reshape(-1, g2.shape[-1]) @ b2.T).astype(a.dtype, copy=False).reshape(a.shape)  # [*, M] @ [M, K]
        elif wants_grad(self, 0):
            ga = unbroadcast(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape, a.dtype).reshape(a.shape)
        if wants_grad(self, 1):
            if b2.ndim == 2 and a2.ndim > 2:
                # shared weight [K, M]: one GEMM over all batch rows instead of a batched product + sum
                gb = a2.reshape(-1, a2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])  # [K, *] @ [*, M] -> [K, M]
                gb = gb.astype(b.dtype, copy=False).reshape(b.shape)
            else:
                gb = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape, b.dtype).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x @ w.T (+ b) over the last axis of x; w is [out, in]."""

    def forward(self, x, w, b=None):
        self.x, self.w, self.bias_dtype = x, w, None if b is None else b.dtype
        y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(x.shape[:-1] + w.shape[:1])  # [*, I] @ [I, O] -> [..., O]
        if b is not None:
            y += b
        return y

    def backward(self, g):
        x, w = self.x, self.w
        g2 = g.reshape(-1, g.shape[-1])  # [..., O] -> [M, O]
        gx = gw = None
        if wants_grad(self, 0):
            gx = (g2 @ w).astype(x.dtype, copy=False).reshape(x.shape)  # [M, O] @ [O, I] -> [..., I]
        if wants_grad(self, 1):
            gw = (g2.T @ x.reshape(-1, x.shape[-1])).astype(w.dtype, copy=False)  # [O, M] @ [M, I] -> [O, I]
        if self.bias_dtype is None:
            return gx, gw
        gb = g2.sum(axis=0).astype(self.bias_dtype, copy=False) if wants_grad(self, 2) else None
        return gx, gw, gb


class Embedding(Function):
    """weight[ids]: rows of a [V, D] table gathered by an integer array of any shape."""

    def forward(self, weight, ids=None):
        self.ids, self.wshape = ids, weight.shape
        return weight[ids]  # [V, D] -> [*ids.shape, D]

    def backward(self, g):
        gw = np.zeros(self.wshape, dtype=g.dtype)
        np.add.at(gw, self.ids.ravel(), g.reshape(-1, self.wshape[1]))  # rows repeated in ids add up
        return (gw,)

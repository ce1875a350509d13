"""Gradient checking against float64 central finite differences.

`check_grad` reduces a (possibly non-scalar) output to the scalar <out, W> with a
seeded random projection W, so one backward pass (a VJP with W) checks every
output at once; each input's gradient is compared with the finite differences
  dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),   error O(eps^2).
"""
from __future__ import annotations

import numpy as np

from refq.autograd import Tensor, no_grad


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar function f at x (evaluated in float64)."""
    x = np.array(x, dtype=np.float64)  # a private copy, perturbed in place below
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = float(f(x))
        flat[i] = old - eps
        f_minus = float(f(x))
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def check_grad(fn, inputs, rng: np.random.Generator, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
               label: str = "") -> None:
    """Assert that backward of fn(*Tensors) matches finite differences for every input array."""
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    tensors = [Tensor(a.copy(), requires_grad=True) for a in inputs]
    out = fn(*tensors)
    w = rng.standard_normal(out.shape)  # projection: L = sum(out * w)
    out.backward(w)

    for i, t in enumerate(tensors):
        def projected(xi, i=i):
            with no_grad():
                args = [Tensor(xi if j == i else a) for j, a in enumerate(inputs)]
                return (fn(*args).data * w).sum()

        expected = numerical_grad(projected, inputs[i], eps)
        got = np.zeros_like(expected) if t.grad is None else t.grad
        assert got.shape == inputs[i].shape and got.dtype == np.float64, f"{label} input {i}: grad {got.shape} {got.dtype}"
        np.testing.assert_allclose(got, expected, atol=atol, rtol=rtol, err_msg=f"{label} input {i} shape {inputs[i].shape}")

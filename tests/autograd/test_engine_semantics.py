"""Graph semantics: fan-out, accumulation, no_grad, deep graphs, operator sugar and dtype rules."""
from __future__ import annotations

import numpy as np
import pytest

from refq.autograd import Tensor, functional as F, is_grad_enabled, no_grad


def test_node_used_twice_gets_both_contributions():
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    h = F.exp(x)  # used three times below
    y = F.sum(F.add(F.mul(h, h), h))  # d/dx (e^2x + e^x) = 2 e^2x + e^x
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data) + np.exp(x.data))


def test_backward_accumulates_into_leaf_grad_until_zero_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    F.sum(F.mul(x, x)).backward()
    F.sum(F.mul(x, x)).backward()
    np.testing.assert_allclose(x.grad, 2 * (2 * x.data))
    x.zero_grad()
    F.sum(F.mul(x, 3.0)).backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_no_grad_records_nothing():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    with no_grad():
        assert not is_grad_enabled()
        y = F.softmax(F.linear(x, np.ones((4, 3), np.float32)))
    assert is_grad_enabled()
    assert y._ctx is None and not y.requires_grad
    with pytest.raises(ValueError, match="does not require grad"):
        F.sum(y).backward()


def test_deep_chain_does_not_hit_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = F.add(F.mul(y, 1.0), 0.001)
    F.sum(y).backward()
    np.testing.assert_allclose(y.data, [6.0])
    np.testing.assert_allclose(x.grad, [1.0])


def test_non_scalar_backward_needs_grad():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        F.mul(x, 2.0).backward()


def test_operator_sugar_matches_functional():
    a = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    b = np.array([[0.5, -1.0], [2.0, 1.0]])
    y = ((2.0 - a) * b + b / (a + 1.0) - (-a) ** 2.0) @ a.T
    z = (y[0] + y[1:].sum(axis=0)).reshape(1, 2).mean()
    ref = ((2.0 - a.data) * b + b / (a.data + 1.0) - a.data ** 2) @ a.data.T
    np.testing.assert_allclose(z.data, (ref[0] + ref[1:].sum(0)).mean())
    z.backward()
    assert a.grad.shape == (2, 2)


def test_constants_take_the_tensor_dtype():
    x32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert F.mul(x32, np.float64(2.0)).dtype == np.float32
    assert F.add(np.arange(3.0), x32).dtype == np.float32  # float64 constant cast to float32
    assert F.sub(x32, 1).dtype == np.float32
    x64 = Tensor(np.ones(3), requires_grad=True)
    assert F.mul(x64, 2.0).dtype == np.float64
    assert F.sum(x64).dtype == np.float64  # a full reduction is a NumPy scalar: dtype kept


def test_functions_do_not_modify_inputs():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    x0, w0 = x.copy(), w.copy()
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = F.max_pool2d(F.relu(F.conv2d(xt, wt, padding=1)), 2)
    F.cross_entropy(F.reshape(y, (2, -1)), np.array([0, 3])).backward()
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)

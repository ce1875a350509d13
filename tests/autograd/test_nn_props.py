"""Properties and reference values of the activation, softmax, norm, reduction and loss ops."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refq.autograd import Tensor, functional as F

logits32 = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                      elements=st.floats(-1e3, 1e3, allow_nan=False, width=32))


@given(x=logits32, shift=st.floats(-100, 100, width=32))
def test_softmax_rows_sum_to_one_and_shift_invariance(x, shift):
    y = F.softmax(x, axis=-1).data
    assert y.dtype == np.float32 and np.all(np.isfinite(y)) and np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(F.softmax(x + np.float32(shift), axis=-1).data, y, atol=1e-5)


@given(x=logits32)
def test_log_softmax_is_finite_and_consistent(x):
    x = x.astype(np.float64)
    logp = F.log_softmax(x, axis=-1).data
    assert np.all(np.isfinite(logp)) and np.all(logp <= 1e-12)
    np.testing.assert_allclose(np.exp(logp), F.softmax(x, axis=-1).data, atol=1e-12)


def test_activation_reference_values():
    x = np.array([-1.0, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(F.gelu(x).data, [-0.15865525393, 0.0, 0.84134474607, 2.99595031198], atol=1e-10)
    np.testing.assert_allclose(F.silu(x).data, x / (1 + np.exp(-x)))
    np.testing.assert_allclose(F.sigmoid(np.array([-1000.0, 0.0, 1000.0])).data, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(F.relu(x).data, [0.0, 0.0, 1.0, 3.0])


@given(x=hnp.arrays(np.float64, (3, 6), elements=st.floats(-10, 10)))
def test_norms_normalize(x):
    x = x + np.arange(6)  # rows are never constant
    y = F.layer_norm(x, None, None, eps=0.0).data
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-9)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-9)
    r = F.rms_norm(x, 2.0 * np.ones(6), eps=0.0).data
    np.testing.assert_allclose(np.sqrt((r ** 2).mean(-1)), 2.0, rtol=1e-9)


@given(x=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=4), elements=st.floats(-5, 5)), data=st.data())
def test_reductions_match_numpy(x, data):
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    for op, ref in ((F.sum, np.sum), (F.mean, np.mean), (F.max, np.max), (F.var, np.var)):
        np.testing.assert_allclose(op(x, axis=axis).data, ref(x, axis=axis), atol=1e-12, err_msg=op.__name__)


def test_ties_share_the_gradient():
    x = Tensor(np.array([1.0, 3.0, 3.0, 2.0]), requires_grad=True)
    F.max(x).backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])
    y = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    F.sum(F.maximum(y, y)).backward()  # d max(y, y) / dy = 1
    np.testing.assert_array_equal(y.grad, [1.0, 1.0])


def test_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    F.sum(F.getitem(x, np.array([0, 0, 2, 0]))).backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0, 0.0])
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    F.sum(F.embedding(w, np.array([[1, 1], [2, 1]]))).backward()
    np.testing.assert_array_equal(w.grad, [[0, 0], [3, 3], [1, 1]])


def test_cross_entropy_hard_equals_soft_one_hot(rng):
    z = rng.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 2])
    hard = F.cross_entropy(z, labels).data
    soft = F.cross_entropy(z, np.eye(5)[labels]).data
    expected = -np.mean((z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(4), labels])
    np.testing.assert_allclose([hard, soft], [expected, expected])
    np.testing.assert_allclose(F.cross_entropy(np.zeros((3, 7)), np.array([1, 2, 3])).data, np.log(7))


def test_cross_entropy_leading_dims_flatten(rng):
    z, labels = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3))
    np.testing.assert_allclose(F.cross_entropy(z, labels).data, F.cross_entropy(z.reshape(6, 4), labels.ravel()).data)


def test_mse_value():
    np.testing.assert_allclose(F.mse(np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.0, 1.0])).data, 13.0 / 3)


def test_reshape_transpose_pad_roll_flip_forward_match_numpy(rng):
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(F.reshape(x, (4, -1)).data, x.reshape(4, -1))
    np.testing.assert_array_equal(F.transpose(x, (2, 0, 1)).data, x.transpose(2, 0, 1))
    np.testing.assert_array_equal(F.pad(x, 1, value=2.0).data, np.pad(x, 1, constant_values=2.0))
    np.testing.assert_array_equal(F.roll(x, (1, -2), (0, 2)).data, np.roll(x, (1, -2), (0, 2)))
    np.testing.assert_array_equal(F.flip(x, 1).data, x[:, ::-1])
    np.testing.assert_array_equal(F.concat([x, x], axis=1).data, np.concatenate([x, x], 1))
    np.testing.assert_array_equal(F.stack([x, x], axis=-1).data, np.stack([x, x], -1))


@pytest.mark.parametrize("call, match", [
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), "label 3"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([-1, 0])), "label -1"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0])), r"labels have shape \(1,\)"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.ones((2, 4))), r"soft targets have shape \(2, 4\)"),
    (lambda: F.embedding(np.zeros((3, 2)), np.array([5])), "id 5"),
    (lambda: F.embedding(np.zeros((3, 2)), np.array([0.5])), "dtype float64"),
    (lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 5))), r"w has shape \(4, 5\)"),
    (lambda: F.matmul(np.zeros((2, 3)), np.zeros((4, 5))), r"\(2, 3\) and \(4, 5\)"),
    (lambda: F.layer_norm(np.zeros((2, 3)), np.ones(4), None), r"weight has shape \(4,\)"),
    (lambda: F.reshape(np.zeros((2, 3)), (4, -1)), r"into \(4, -1\)"),
    (lambda: F.transpose(np.zeros((2, 3)), (0, 0)), r"axes=\(0, 0\)"),
    (lambda: F.pad(np.zeros(3), -1), "pad_width=-1"),
    (lambda: F.sum(np.zeros(3), axis=2), "axis 2"),
    (lambda: F.pow(np.ones(3), np.ones(3)), "exponent"),
    (lambda: F.where(np.array([1, 0]), 1.0, 2.0), "dtype int64"),
    (lambda: F.clip(np.ones(3), 2.0, 1.0), "lo=2.0"),
])
def test_bad_input_raises_value_error_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()

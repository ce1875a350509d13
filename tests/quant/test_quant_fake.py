"""Fake-quantization autograd ops (refq.quant.fake): STE masks, LSQ step-size gradient vs finite differences."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd.engine import Tensor, no_grad
from refq.quant.fake import fake_quant, log2_fake_quant, lsq_bounds, lsq_fake_quant, lsq_init_scale
from refq.quant.log2 import log2_fake_quantize
from refq.quant.params import QParams
from refq.quant.uniform import fake_quantize
from tests.quant.strategies import BITS, FITTERS, PROBABILITIES, arrays_with_layout, float_arrays


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS))
def test_forward_equals_pure_fake_quantize(data, bits, symmetric, fit):
    x, layout = data
    p = fit(x, bits, symmetric=symmetric, **layout)
    out = fake_quant(x, p)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.data, fake_quantize(x, p))


def _points_on_grid(rng, p, k):
    """float64 points x = scale (k + f - zero), f in +-[0.1, 0.4]: away from rounding boundaries."""
    f = rng.uniform(0.1, 0.4, size=k.shape) * rng.choice([-1.0, 1.0], size=k.shape)
    return float(p.scale) * (k + f - float(p.zero))


@given(bits=BITS, symmetric=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_ste_gradient_is_one_inside_and_zero_outside_matching_the_staircase(bits, symmetric, seed):
    rng = np.random.default_rng(seed)
    zero = 0 if symmetric else int(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1)))
    p = QParams(np.float32(rng.uniform(0.01, 2.0)), np.int32(zero), bits, symmetric=symmetric)
    k = np.arange(p.qmin - 4, p.qmax + 5, dtype=np.float64)  # codes before clipping
    x = _points_on_grid(rng, p, k)  # [K] float64
    t = Tensor(x, requires_grad=True)
    fake_quant(t, p).backward(np.ones_like(x))
    inside = (k >= p.qmin) & (k <= p.qmax)
    np.testing.assert_array_equal(t.grad, inside.astype(np.float64))
    assert t.grad.dtype == np.float64

    def fq(v):
        with no_grad():
            return fake_quant(v, p).data

    s = float(p.scale)
    eps = 1e-3 * s
    fd = (fq(x + eps) - fq(x - eps)) / (2 * eps)  # the staircase is flat away from rounding boundaries
    np.testing.assert_array_equal(fd[~inside], 0.0)  # saturated: the STE's 0 is the true derivative
    secant = (fq(x + s) - fq(x)) / s  # one step right: slope 1 while both points are on the grid
    both_inside = (k >= p.qmin) & (k <= p.qmax - 1)
    np.testing.assert_allclose(secant[both_inside], t.grad[both_inside], rtol=1e-9)


@given(a=float_arrays(elements=PROBABILITIES), bits=st.integers(2, 7))
def test_log2_fake_quant_forward_and_ste_mask(a, bits):
    t = Tensor(a, requires_grad=True)
    out = log2_fake_quant(t, bits)
    np.testing.assert_array_equal(out.data, log2_fake_quantize(a, bits))
    out.backward(np.ones_like(a))
    with np.errstate(divide="ignore"):
        saturated = np.round(-np.log2(a.astype(np.float64))) > (1 << bits) - 1
    np.testing.assert_array_equal(t.grad, (~saturated).astype(np.float32))


def test_log2_ste_is_zero_at_zero_and_one_for_representable_values():
    a = Tensor(np.array([0.0, 1e-30, 0.3, 1.0], np.float64), requires_grad=True)
    log2_fake_quant(a, 4).backward(np.ones(4))
    np.testing.assert_array_equal(a.grad, [0.0, 0.0, 1.0, 1.0])


def _lsq_case(rng, bits, symmetric, axis):
    """float64 x of shape [3, 8] with v = x / s at least 0.1 away from rounding and clipping boundaries."""
    q_n, q_p = lsq_bounds(bits, symmetric)
    shape = (3, 8)
    if axis is None:
        scale = np.array(rng.uniform(0.05, 2.0))  # []
        s = scale
    else:
        scale = rng.uniform(0.05, 2.0, size=shape[axis])  # [C]
        s = scale.reshape([-1 if i == axis else 1 for i in range(2)])
    k = rng.integers(-q_n - 3, q_p + 4, size=shape).astype(np.float64)
    f = rng.uniform(0.1, 0.4, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    v = k + f
    return v * s, scale, v


@given(bits=BITS, symmetric=st.booleans(), axis=st.sampled_from([None, 0, 1]), seed=st.integers(0, 2**32 - 1))
def test_lsq_scale_gradient_matches_finite_differences_plus_the_ste_term(bits, symmetric, axis, seed):
    """dL/ds = g * sum w * (d x_hat/ds|true - v 1[inside]): the true derivative is round(v) or the clip bound."""
    rng = np.random.default_rng(seed)
    x, scale, v = _lsq_case(rng, bits, symmetric, axis)
    q_n, q_p = lsq_bounds(bits, symmetric)
    w = rng.normal(size=x.shape)  # random projection of the output
    xt, st_ = Tensor(x, requires_grad=True), Tensor(scale, requires_grad=True)
    out = lsq_fake_quant(xt, st_, bits, symmetric, axis)
    out.backward(w)

    def loss(s):
        with no_grad():
            return float(np.sum(w * lsq_fake_quant(x, s, bits, symmetric, axis).data))

    fd = np.zeros(scale.shape)
    for idx in np.ndindex(scale.shape):
        eps = 1e-6 * scale[idx]
        up, down = scale.copy(), scale.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (loss(up) - loss(down)) / (2 * eps)
    inside = (v > -q_n) & (v < q_p)
    reduce = None if axis is None else 1 - axis
    ste_term = np.sum(w * v * inside, axis=reduce)
    g = 1.0 / np.sqrt(x.size / scale.size * q_p)
    cancellation = 1e-7 * g * np.sum(np.abs(w * v), axis=reduce)  # FD rounding when terms nearly cancel
    np.testing.assert_array_less(np.abs(st_.grad - g * (fd - ste_term)), cancellation + 1e-6 * np.abs(st_.grad))
    assert st_.grad.shape == scale.shape and st_.grad.dtype == np.float64
    np.testing.assert_array_equal(xt.grad, w * inside)


def test_lsq_forward_is_round_clip_times_scale():
    x = np.array([-3.0, -0.26, 0.1, 0.74, 5.0], np.float32)
    s = np.float32(0.5)
    out = lsq_fake_quant(x, np.array(s), 2, symmetric=True)  # Q_N = 2, Q_P = 1
    np.testing.assert_array_equal(out.data, [-1.0, -0.5, 0.0, 0.5, 0.5])
    out_u = lsq_fake_quant(x, np.array(s), 2, symmetric=False)  # Q_N = 0, Q_P = 3
    np.testing.assert_array_equal(out_u.data, [0.0, 0.0, 0.0, 0.5, 1.5])


def test_lsq_scale_learns_towards_lower_error(rng):
    x = rng.normal(size=(4, 64))
    scale = Tensor(np.full(4, 1.5), requires_grad=True)  # far too coarse for 4 bits
    err_before = np.mean((lsq_fake_quant(x, scale, 4, axis=0).data - x) ** 2)
    for _ in range(100):
        scale.zero_grad()
        out = lsq_fake_quant(x, scale, 4, axis=0)
        out.backward(2 * (out.data - x) / x.size)  # d mean((out - x)^2) / d out
        scale.data = scale.data - 10.0 * scale.grad  # plain SGD; g makes the step-size gradient small
    err_after = np.mean((lsq_fake_quant(x, scale, 4, axis=0).data - x) ** 2)
    assert err_after < 0.2 * err_before


def test_lsq_init_scale_is_positive_and_follows_the_paper():
    x = np.array([[1.0, -3.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(lsq_init_scale(x, 4), 2 * 1.0 / np.sqrt(7), rtol=1e-6)
    per_channel = lsq_init_scale(x, 4, axis=0)
    np.testing.assert_allclose(per_channel, [2 * 2.0 / np.sqrt(7), 1.0], rtol=1e-6)
    assert per_channel.dtype == np.float32


def test_inputs_are_not_modified(rng):
    x = rng.normal(size=(3, 4))
    scale = np.full(3, 0.2)
    x0, s0 = x.copy(), scale.copy()
    xt, stt = Tensor(x, requires_grad=True), Tensor(scale, requires_grad=True)
    lsq_fake_quant(xt, stt, 4, axis=0).backward(np.ones((3, 4)))
    fake_quant(xt, QParams(np.float32(0.1), np.int32(0), 4)).backward(np.ones((3, 4)))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(scale, s0)


def test_bad_inputs_raise_value_error_naming_the_value():
    x = np.ones((3, 4), np.float32)
    p = QParams(np.float32(1), np.int32(0), 4)
    cases = [
        (lambda: fake_quant(x, "p"), "str"),
        (lambda: fake_quant(np.ones(3, np.int16), p), "int16"),
        (lambda: fake_quant(np.array([np.nan], np.float32), p), "nan"),
        (lambda: lsq_fake_quant(x, np.array(-0.5), 4), "-0.5"),
        (lambda: lsq_fake_quant(x, np.ones(4), 4, axis=0), "(4,)"),
        (lambda: lsq_fake_quant(x, np.ones(2), 4), "(2,)"),
        (lambda: lsq_fake_quant(x, np.ones(3), 4, axis=2), "axis=2"),
        (lambda: lsq_fake_quant(x, np.array(1.0), 10), "bits=10"),
        (lambda: log2_fake_quant(np.array([2.0], np.float32), 4), "2.0"),
        (lambda: lsq_init_scale(x, 4, axis=-3), "axis=-3"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=re.escape(needle)):
            call()

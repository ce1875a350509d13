"""Pure uniform quantize/dequantize (refq.quant.uniform): round-trip bounds, code ranges, idempotence."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refq.quant.params import QParams, broadcast_params
from refq.quant.ranges import fit_minmax
from refq.quant.uniform import dequantize, fake_quantize, quantize
from tests.quant.strategies import BITS, FITTERS, arrays_with_layout


def _grid(params, shape):
    """Broadcast float64 scale/zero and the representable range [lo, hi] for an input of `shape`."""
    s, z = broadcast_params(params, shape, "test")
    s = np.broadcast_to(s, shape).astype(np.float64)
    z = np.broadcast_to(z, shape).astype(np.float64)
    return s, z, s * (params.qmin - z), s * (params.qmax - z)


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS))
def test_error_at_most_half_a_step_inside_range_and_saturates_outside(data, bits, symmetric, fit):
    x, layout = data
    p = fit(x, bits, symmetric=symmetric, **layout)
    s, _, lo, hi = _grid(p, x.shape)
    x64 = x.astype(np.float64)
    x_hat = fake_quantize(x, p).astype(np.float64)
    err = np.abs(x_hat - x64)
    inside = (x64 >= lo) & (x64 <= hi)
    bound = s * (0.5 + 1e-4) + 1e-6 * np.abs(x64)  # half a step, plus float32 rounding
    assert (err <= bound)[inside].all(), f"max excess {(err - bound)[inside].max()}"
    np.testing.assert_allclose(x_hat[x64 > hi + s], hi[x64 > hi + s], rtol=1e-6)
    np.testing.assert_allclose(x_hat[x64 < lo - s], lo[x64 < lo - s], rtol=1e-6)


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans())
def test_minmax_error_is_at_most_half_a_step_everywhere(data, bits, symmetric):
    x, layout = data
    p = fit_minmax(x, bits, symmetric=symmetric, **layout)
    s, _, _, _ = _grid(p, x.shape)
    err = np.abs(fake_quantize(x, p).astype(np.float64) - x)
    assert (err <= s * (0.5 + 1e-4) + 1e-6 * np.abs(x)).all()


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS))
def test_codes_are_int8_within_qmin_qmax(data, bits, symmetric, fit):
    x, layout = data
    p = fit(x, bits, symmetric=symmetric, **layout)
    q = quantize(x, p)
    assert q.dtype == np.int8 and q.shape == x.shape
    assert q.min() >= p.qmin and q.max() <= p.qmax


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS))
def test_quantize_dequantize_quantize_is_quantize(data, bits, symmetric, fit):
    x, layout = data
    p = fit(x, bits, symmetric=symmetric, **layout)
    q = quantize(x, p)
    np.testing.assert_array_equal(quantize(dequantize(q, p), p), q)


@given(bits=BITS, symmetric=st.booleans(), data=st.data())
def test_every_code_is_a_fixed_point(bits, symmetric, data):
    p0 = QParams(np.float32(1), np.int32(0), bits)
    q = data.draw(hnp.arrays(np.int8, (3, 5), elements=st.integers(p0.qmin, p0.qmax)))
    scale = data.draw(hnp.arrays(np.float32, (3, 1), elements=st.floats(2.0**-13, 1e3, width=32)))
    zero = np.zeros((3, 1), np.int32)
    if not symmetric:
        zero = data.draw(hnp.arrays(np.int32, (3, 1), elements=st.integers(p0.qmin, p0.qmax)))
    p = QParams(scale, zero, bits, axis=0, symmetric=symmetric, granularity="channel")
    np.testing.assert_array_equal(quantize(dequantize(q, p), p), q)


@pytest.mark.parametrize("layout", [
    dict(granularity="tensor"), dict(granularity="channel", axis=1), dict(granularity="token"),
    dict(granularity="group", axis=0, group_size=2),
])
@pytest.mark.parametrize("fit", FITTERS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_all_zero_input_gives_finite_scale_and_zero_reconstruction(layout, fit, symmetric):
    x = np.zeros((4, 3), np.float32)
    p = fit(x, 4, symmetric=symmetric, **layout)
    assert np.isfinite(p.scale).all() and (p.scale > 0).all()
    assert not fake_quantize(x, p).any()


def test_all_zero_channel_next_to_nonzero_channels(rng):
    w = rng.normal(size=(3, 8)).astype(np.float32)
    w[1] = 0.0
    p = fit_minmax(w, 4, symmetric=False, granularity="channel", axis=0)
    assert np.isfinite(p.scale).all() and (p.scale > 0).all()
    w_hat = fake_quantize(w, p)
    assert not w_hat[1].any()
    assert np.abs(w_hat - w).max() <= p.scale.max()


def test_subnormal_range_keeps_a_positive_normal_scale():
    x = np.array([1e-45, -3e-45, 0.0], np.float32)
    p = fit_minmax(x, 8)
    assert p.scale > 0 and np.isfinite(p.scale)
    assert np.abs(fake_quantize(x, p) - x).max() <= p.scale / 2


def test_symmetric_absmax_matches_the_per_channel_rtn_formula(rng):
    w = rng.normal(size=(5, 16)).astype(np.float32)
    p = fit_minmax(w, 4, granularity="channel", axis=0)
    s = np.abs(w).max(axis=1, keepdims=True) / 7  # docs/aser.md A2: s_i = max_j |W[i, j]| / (2^(b-1) - 1)
    np.testing.assert_allclose(p.scale, s, rtol=1e-6)
    np.testing.assert_allclose(fake_quantize(w, p), s * np.clip(np.round(w / s), -8, 7), rtol=1e-6)


def test_asymmetric_matches_the_unsigned_textbook_quantizer(rng):
    x = rng.uniform(-0.5, 3.0, size=(64,)).astype(np.float32)
    p = fit_minmax(x, 4, symmetric=False)
    delta = (x.max() - x.min()) / 15  # I&S-ViT's quantizer: Δ = (u - l) / (2^b - 1), z = round(-l / Δ)
    z = np.round(-x.min() / delta)
    u = np.clip(np.round(x / delta) + z, 0, 15)
    np.testing.assert_allclose(p.scale, delta, rtol=1e-6)
    assert p.zero == z - 8
    np.testing.assert_array_equal(quantize(x, p), (u - 8).astype(np.int8))
    np.testing.assert_allclose(fake_quantize(x, p), (u - z) * delta, rtol=1e-5, atol=1e-6)


@given(data=arrays_with_layout(), bits=BITS)
def test_inputs_are_not_modified(data, bits):
    x, layout = data
    x_before = x.copy()
    p = fit_minmax(x, bits, **layout)
    q = quantize(x, p)
    q_before = q.copy()
    dequantize(q, p)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(q, q_before)


def test_bad_inputs_raise_value_error_naming_the_value():
    p = QParams(np.float32(1), np.int32(0), 4)
    cases = [
        (lambda: quantize(np.arange(3), p), "int64"),
        (lambda: quantize(np.array([1.0, np.nan], np.float32), p), "nan"),
        (lambda: quantize(np.array([np.inf], np.float32), p), "inf"),
        (lambda: quantize([1.0], p), "list"),
        (lambda: quantize(np.ones(3, np.float32), "params"), "str"),
        (lambda: dequantize(np.array([9], np.int8), p), "[9, 9]"),
        (lambda: dequantize(np.array([1], np.int16), p), "int16"),
        (lambda: quantize(np.ones((2, 3), np.float32),
                          QParams(np.ones((3, 1), np.float32), np.zeros((3, 1), np.int32), 4, 0, True, "channel")),
         "(3, 1)"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=re.escape(needle)):
            call()

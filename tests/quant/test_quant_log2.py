"""log2 quantizers for post-softmax values (refq.quant.log2): monotone, powers of two, a = 0 convention."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refq.quant.log2 import (SHIFT_ETAS, Log2ShiftParams, fit_log2_shifted, log2_dequantize, log2_fake_quantize,
                             log2_quantize, log2_shifted_dequantize, log2_shifted_quantize)
from tests.quant.strategies import BITS, PROBABILITIES, float_arrays

PROBS = float_arrays(elements=PROBABILITIES)


@given(a=PROBS, bits=BITS)
def test_monotone(a, bits):
    a_sorted = np.sort(a, axis=None)
    a_hat = log2_fake_quantize(a_sorted, bits)
    assert (np.diff(a_hat) >= 0).all()


@given(a=PROBS, bits=st.integers(2, 7))
def test_outputs_are_powers_of_two_within_the_levels(a, bits):
    a_hat = log2_fake_quantize(a, bits)
    assert a_hat.dtype == np.float32
    mantissa, exponent = np.frexp(a_hat)
    assert (mantissa == 0.5).all()
    assert (exponent - 1 >= -((1 << bits) - 1)).all() and (exponent - 1 <= 0).all()


def test_eight_bit_levels_below_float32_underflow_to_zero():
    q = np.arange(256, dtype=np.uint8)
    a_hat = log2_dequantize(q, 8)
    assert (np.frexp(a_hat[:150])[0] == 0.5).all()
    assert not a_hat[150:].any()


@given(a=PROBS, bits=BITS)
def test_codes_are_uint8_in_range_and_idempotent(a, bits):
    q = log2_quantize(a, bits)
    assert q.dtype == np.uint8 and q.max() <= (1 << bits) - 1
    if bits <= 7:
        np.testing.assert_array_equal(log2_quantize(log2_dequantize(q, bits), bits), q)


@given(a=PROBS, bits=BITS)
def test_error_is_at_most_half_an_octave_inside_the_levels(a, bits):
    inside = a.astype(np.float64) >= 2.0 ** -((1 << bits) - 1)
    a_hat = log2_fake_quantize(a, bits).astype(np.float64)
    gap = np.abs(np.log2(a_hat[inside]) - np.log2(a[inside].astype(np.float64)))
    assert (gap <= 0.5 + 1e-12).all()


@pytest.mark.parametrize("bits", [2, 3, 4, 7])
def test_zero_maps_to_the_smallest_level_and_exact_powers_of_two_are_kept(bits):
    levels = (2.0 ** -np.arange((1 << bits))).astype(np.float32)
    a = np.concatenate([[0.0], levels]).astype(np.float32)
    a_hat = log2_fake_quantize(a, bits)
    assert a_hat[0] == 2.0 ** -((1 << bits) - 1)
    np.testing.assert_array_equal(a_hat[1:], levels)


def test_worked_example_four_bits():
    a = np.array([1.0, 0.7, 0.3, 0.05, 1e-6, 0.0], np.float32)
    np.testing.assert_array_equal(log2_quantize(a, 4), [0, 1, 2, 4, 15, 15])  # -log2: 0, .51, 1.74, 4.32, 19.9
    np.testing.assert_array_equal(log2_fake_quantize(a, 4), [1.0, 0.5, 0.25, 0.0625, 2.0**-15, 2.0**-15])


@given(a=PROBS, bits=BITS)
def test_shifted_quantizer_is_monotone_with_codes_in_range(a, bits):
    p = fit_log2_shifted(a, bits)
    k = log2_shifted_quantize(a, p)
    assert k.dtype == np.uint8 and k.max() <= (1 << bits) - 1
    a_sorted = np.sort(a, axis=None)
    assert (np.diff(log2_shifted_dequantize(log2_shifted_quantize(a_sorted, p), p)) >= 0).all()


@given(a=PROBS, bits=BITS)
def test_shifted_fit_picks_the_eta_with_smallest_mse(a, bits):
    p = fit_log2_shifted(a, bits)
    assert p.eta in SHIFT_ETAS

    def mse(params):
        return np.mean((log2_shifted_dequantize(log2_shifted_quantize(a, params), params) - a.astype(np.float64)) ** 2)

    for eta in SHIFT_ETAS:
        y = np.log2(a.astype(np.float64) + eta)
        assert mse(p) <= mse(Log2ShiftParams(eta, float(y.min()), float(y.max()), bits))


def test_shifted_quantizer_outputs_shifted_powers_of_two_close_to_a_softmax(rng):
    logits = rng.normal(size=(16, 16)) * 3
    a = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    a = a.astype(np.float32)
    p = fit_log2_shifted(a, 4)
    shifted = log2_shifted_dequantize(log2_shifted_quantize(a, p), p)
    exponents = np.log2(shifted.astype(np.float64) + p.eta)
    np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-5)
    assert np.mean((shifted - a) ** 2) < 1e-3


@given(a=hnp.arrays(np.float32, (7,), elements=PROBABILITIES), bits=BITS)
def test_inputs_are_not_modified(a, bits):
    before = a.copy()
    log2_fake_quantize(a, bits)
    fit_log2_shifted(a, bits)
    np.testing.assert_array_equal(a, before)


def test_bad_inputs_raise_value_error_naming_the_value():
    a = np.array([0.2, 0.8], np.float32)
    p = Log2ShiftParams(0.01, -6.6, 0.0, 4)
    cases = [
        (lambda: log2_quantize(np.array([0.5, 1.5], np.float32), 4), "1.5"),
        (lambda: log2_quantize(np.array([-0.25, 0.5], np.float32), 4), "-0.25"),
        (lambda: log2_quantize(np.array([np.nan], np.float32), 4), "nan"),
        (lambda: log2_quantize(np.array([1, 0]), 4), "int64"),
        (lambda: log2_quantize(a, 9), "bits=9"),
        (lambda: log2_dequantize(np.array([16], np.uint8), 4), "16"),
        (lambda: log2_dequantize(np.array([1], np.int8), 4), "int8"),
        (lambda: fit_log2_shifted(a, 4, etas=(0.0,)), "etas=(0.0,)"),
        (lambda: log2_shifted_quantize(a, "p"), "str"),
        (lambda: log2_shifted_dequantize(np.array([16], np.uint8), p), "16"),
        (lambda: Log2ShiftParams(-1.0, 0.0, 1.0, 4), "eta=-1.0"),
        (lambda: Log2ShiftParams(0.1, 1.0, 0.0, 4), "ymin=1.0"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=re.escape(needle)):
            call()

"""The one-pass float32 fake quantizers (refq.kernels.fake_quant) equal the plain NumPy definitions bit for bit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refq.autograd import Tensor
from refq.quant.fake import fake_quant, fake_quant_plain, log2_fake_quant, log2_fake_quant_plain
from refq.kernels.fake_quant import log2_fake_quant_f32, quantize_rows_f32, uniform_fake_quant_f32
from refq.quant.params import QParams, qmax, qmin
from refq.quant.uniform import quantize

shapes = st.tuples(st.integers(1, 4), st.integers(1, 33))


@settings(deadline=None, max_examples=80)
@given(arrays(np.float32, shapes, elements=st.floats(-1e4, 1e4, width=32)),
       st.floats(1 / 8192, 50.0, width=32), st.integers(2, 8), st.data())
def test_uniform_and_codes_equal_plain(x, scale, bits, data):
    zero = data.draw(st.integers(qmin(bits), qmax(bits)))
    params = QParams(np.array(scale, np.float32), np.array(zero, np.int32), bits, symmetric=zero == 0)
    want, want_mask = fake_quant_plain(x, params)
    got, mask, bad = uniform_fake_quant_f32(x, scale, zero, qmin(bits), qmax(bits))
    assert bad == 0 and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(fake_quant(Tensor(x), params).data, want)  # the autograd op takes this path
    codes, rows, bad = quantize_rows_f32(x, scale, zero, qmin(bits), qmax(bits))  # the integer path's codes
    want_codes = quantize(x, params)
    assert bad == 0 and codes.dtype == np.int8 and rows.dtype == np.int64
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(rows, want_codes.sum(axis=1, dtype=np.int64))
    assert quantize_rows_f32(np.array([[1.0, np.inf]], np.float32), scale, zero, qmin(bits), qmax(bits))[2] == 1


def _probabilities(bits_of_float: np.ndarray) -> np.ndarray:
    """float32 values in [0, 1] spread over every binade, subnormals and exact powers of two included."""
    return np.abs(bits_of_float.view(np.float32)) % np.float32(1.0000001)


@settings(deadline=None, max_examples=80)
@given(arrays(np.uint32, shapes), st.integers(2, 8))
def test_log2_equals_plain(raw, bits):
    a = np.nan_to_num(_probabilities(raw), nan=0.5, posinf=1.0)
    a = np.clip(a, 0, 1).astype(np.float32)
    want, want_mask = log2_fake_quant_plain(a, bits)
    got, mask, bad = log2_fake_quant_f32(a, bits)
    assert bad == 0
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mask, want_mask)


def test_log2_at_boundaries_and_near_half_powers():
    half_powers = np.float32(2.0) ** -(np.arange(0, 20) + np.float32(0.5))  # nearest float32 to 2^-(k + 1/2)
    a = np.concatenate([half_powers, np.nextafter(half_powers, 0), np.nextafter(half_powers, 1),
                        np.array([0.0, -0.0, 1.0, 0.5, 0.25, 1e-45, 1e-38, 0.7071067], np.float32)]).astype(np.float32)
    for bits in (2, 3, 4, 8):
        np.testing.assert_array_equal(log2_fake_quant_f32(a, bits)[0], log2_fake_quant_plain(a, bits)[0])
        np.testing.assert_array_equal(log2_fake_quant_f32(a, bits)[1], log2_fake_quant_plain(a, bits)[1])


def test_bad_inputs_raise_the_plain_errors_through_the_autograd_ops():
    params = QParams(np.array(0.1, np.float32), np.array(0, np.int32), 4)
    with pytest.raises(ValueError, match="non-finite"):
        fake_quant(Tensor(np.array([1.0, np.nan], np.float32)), params)
    assert uniform_fake_quant_f32(np.array([np.inf, 1.0], np.float32), 0.1, 0, -8, 7)[2] == 1
    with pytest.raises(ValueError, match="post-softmax"):
        log2_fake_quant(Tensor(np.array([0.5, 1.5], np.float32)), 4)
    assert log2_fake_quant_f32(np.array([np.nan, -0.1, 0.3], np.float32), 4)[2] == 2


def test_inputs_are_not_modified():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    keep = x.copy()
    uniform_fake_quant_f32(x.T, 0.25, 1, -8, 7)
    log2_fake_quant_f32(np.abs(x) / 2, 4)
    np.testing.assert_array_equal(x, keep)


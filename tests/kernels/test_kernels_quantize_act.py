"""Per-token activation quantization (refq.kernels.quantize_act): twin agreement, error bound, input checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refq.kernels import gemm_int8_dequant
from refq.kernels.quantize_act import SCALE_FLOOR, quantize_per_token, quantize_per_token_ref

ACTIVATIONS = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                         elements=st.floats(-1e4, 1e4, allow_nan=False, width=32))
BITS = st.integers(2, 8)


@given(x=ACTIVATIONS, bits=BITS)
def test_kernel_equals_its_numpy_twin(x, bits):
    q, s = quantize_per_token(x, bits)
    q_ref, s_ref = quantize_per_token_ref(x, bits)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (x.shape[0],)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)


@given(x=ACTIVATIONS, bits=BITS)
def test_codes_in_range_and_error_at_most_half_a_step(x, bits):
    qmax = 2 ** (bits - 1) - 1
    q, s = quantize_per_token(x, bits)
    assert np.abs(q.astype(np.int32)).max() <= qmax
    err = np.abs(x.astype(np.float64) - s.astype(np.float64)[:, None] * q)
    assert np.all(err <= s.astype(np.float64)[:, None] * (0.5 + 1e-5))
    absmax = np.abs(x).max(axis=1)
    big = absmax > SCALE_FLOOR  # rows above the scale floor use the full code range
    assert np.all(np.abs(q[big].astype(np.int32)).max(axis=1, initial=0) == qmax)


def test_zero_rows_get_the_floor_scale_and_zero_codes():
    q, s = quantize_per_token(np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(q, 0)
    np.testing.assert_array_equal(s, np.float32(1e-5) / np.float32(127))


def test_quantized_linear_approximates_the_float_one(rng):
    x = rng.standard_normal((16, 64)).astype(np.float32)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    q_x, s_x = quantize_per_token(x)
    q_w, s_w = quantize_per_token(w)  # per-output-channel symmetric weights: the same formula over rows of W
    y = gemm_int8_dequant(q_x, q_w, s_x, s_w)
    np.testing.assert_allclose(y, x @ w.T, atol=0.05 * np.abs(x @ w.T).max())


@pytest.mark.parametrize("x, bits, match", [
    (np.zeros((2, 3), np.float64), 8, "float64"),
    (np.zeros(3, np.float32), 8, r"\(3,\)"),
    (np.array([[1.0, np.nan]], np.float32), 8, "nan"),
    (np.zeros((2, 3), np.float32), 9, "bits=9"),
])
def test_bad_inputs_raise_value_error_naming_the_value(x, bits, match):
    for fn in (quantize_per_token, quantize_per_token_ref):
        with pytest.raises(ValueError, match=match):
            fn(x, bits)


EXTREMES = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                      elements=st.floats(allow_nan=False, allow_infinity=False, width=32))  # +-0, subnormals, +-3.4e38


@given(x=EXTREMES, bits=BITS)
def test_kernel_equals_its_twin_on_the_whole_float32_range(x, bits):
    q, s = quantize_per_token(x, bits)  # the absmax is an integer maximum over the bit patterns
    q_ref, s_ref = quantize_per_token_ref(x, bits)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)


@pytest.mark.parametrize("rows", [3, 1200])  # serial path, and the parallel one (>= 2^18 elements)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_values_anywhere_are_refused(rows, bad):
    x = np.ones((rows, 256), np.float32)
    x[-1, -1] = bad  # the very last element: the kernel must look at every row
    with pytest.raises(ValueError, match="1 non-finite values"):
        quantize_per_token(x)
    assert np.isnan(x[-1, -1]) if np.isnan(bad) else x[-1, -1] == bad  # the input is not modified

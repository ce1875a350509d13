"""The float32 GELU kernels (refq.kernels.gelu) against the exact float64 erf form."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import erf

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.kernels.gelu import gelu_f32, gelu_grad_f32


def exact(x):
    """(gelu, Phi, gelu') in float64."""
    x = np.asarray(x, np.float64)
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    return x * cdf, cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


finite = st.floats(-30.0, 30.0, width=32, allow_nan=False)


@settings(deadline=None, max_examples=60)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 40)), elements=finite),
       arrays(np.float32, 1, elements=st.floats(-4.0, 4.0, width=32)))
def test_matches_exact_to_float32_precision(x, g_scale):
    y, cdf, pdf = gelu_f32(x)
    ey, ecdf, eder = exact(x)
    assert y.dtype == cdf.dtype == pdf.dtype == np.float32 and y.shape == pdf.shape == x.shape
    np.testing.assert_allclose(cdf, ecdf, rtol=0, atol=3e-7)
    np.testing.assert_allclose(pdf, np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi), rtol=0, atol=1e-7)
    assert np.all(np.abs(y - ey) <= 3e-7 * (1.0 + np.abs(x))), np.abs(y - ey).max()
    g = np.full_like(x, g_scale[0])
    err = np.abs(gelu_grad_f32(g, x, cdf, pdf) - g * eder)
    assert np.all(err <= 1e-6 * (1.0 + np.abs(g) * (1.0 + np.abs(x)))), err.max()


def test_tail_and_special_values():
    x = np.array([-12.0, -6.0, -1.0, 0.0, 1.0, 6.0, np.inf, np.nan], np.float32)
    y, cdf, _ = gelu_f32(x)
    assert np.all(cdf[:3] > 0) and cdf[3] == 0.5 and cdf[5] == 1.0  # Phi positive in the left tail
    assert y[6] == np.inf and np.isnan(y[7]) and np.isnan(cdf[7])
    np.testing.assert_allclose(cdf[1], exact(-6.0)[1], rtol=0.05)  # relative accuracy far in the tail


def test_inputs_not_modified_and_strided_input():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)
    keep = x.copy()
    y, _, _ = gelu_f32(x.T)  # non-contiguous view
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_allclose(y, exact(x.T)[0], atol=1e-6)


def test_autograd_op_uses_it_for_float32_and_exact_erf_for_float64():
    x = np.linspace(-3, 3, 13)
    t32, t64 = Tensor(x.astype(np.float32), requires_grad=True), Tensor(x, requires_grad=True)
    F.sum(F.gelu(t32)).backward()
    F.sum(F.gelu(t64)).backward()
    np.testing.assert_array_equal(F.gelu(t32).data, gelu_f32(x.astype(np.float32))[0])
    np.testing.assert_allclose(F.gelu(t64).data, exact(x)[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(t32.grad, exact(x)[2], atol=1e-6)
    np.testing.assert_allclose(t64.grad, exact(x)[2], atol=1e-12)


def test_wrong_dtype_or_shapes_raise():
    with pytest.raises(ValueError, match="float64"):
        gelu_f32(np.zeros(3))
    z = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="one shape"):
        gelu_grad_f32(z, z, z, np.zeros(4, np.float32))


def test_inference_form_saves_nothing_and_gives_the_same_values():
    from refq.autograd import no_grad

    x = np.linspace(-5, 5, 101, dtype=np.float32).reshape(1, 101)
    y = gelu_f32(x)[0]
    np.testing.assert_array_equal(gelu_f32(x, save=False), y)
    with no_grad():
        np.testing.assert_array_equal(F.gelu(Tensor(x, requires_grad=True)).data, y)
    np.testing.assert_array_equal(F.gelu(Tensor(x)).data, y)  # no input requires grad

"""The quantized linear forward (refq.aser.qlinear): integer path on the Numba kernels == fake-quant simulation,
the equation of the simulation itself, masking, and input validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.aser.methods import quantize_linear
from refq.aser.qlinear import QuantizedLinear, fake_quant_tokens, forward_int, forward_sim
from refq.aser.settings import QuantSettings
from refq.aser.types import LayerStats
from tests.aser.strategies import correlated_inputs


@given(seed=st.integers(0, 2**32 - 1), d_out=st.integers(1, 20), d_in=st.integers(2, 33), n=st.integers(1, 40),
       wbits=st.sampled_from([4, 8]), abits=st.sampled_from([6, 8]), method=st.sampled_from(["rtn", "smoothquant",
       "lorc", "aser"]), mask=st.booleans(), lr_q=st.booleans(), bias=st.booleans())
def test_integer_path_equals_the_fake_quant_simulation(seed, d_out, d_in, n, wbits, abits, method, mask, lr_q, bias):
    rng = np.random.default_rng(seed)
    x_all = correlated_inputs(rng, 3 * d_in + n, d_in).astype(np.float32)  # one outlier channel for both
    x_cal, x = x_all[:3 * d_in], x_all[3 * d_in:]
    w = rng.standard_normal((d_out, d_in)).astype(np.float32)
    s = QuantSettings(wbits=wbits, abits=abits, rank=min(2, d_out) if method in ("lorc", "aser") else None,
                      outliers=1, mask_outlier_acts=mask, lr_input_quantized=lr_q)
    layer = quantize_linear(method, w, LayerStats.from_inputs(x_cal), s)
    b = rng.standard_normal(d_out).astype(np.float32) if bias else None
    y_sim, y_int = forward_sim(layer, x, b), forward_int(layer, x, b)
    assert y_sim.dtype == y_int.dtype == np.float32 and y_sim.shape == (n, d_out)
    np.testing.assert_allclose(y_int, y_sim, rtol=1e-5, atol=1e-5 * max(np.abs(y_sim).max(), 1e-30))


def test_simulation_is_the_written_equation(rng):
    x_cal = correlated_inputs(rng, 100, 16, outliers=2).astype(np.float32)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    layer = quantize_linear("aser", w, LayerStats.from_inputs(x_cal), QuantSettings(rank=3, outliers=2,
                                                                                       mask_outlier_acts=True))
    x = x_cal[:10]
    xs = x / layer.smooth
    xq = xs.copy()
    xq[:, layer.outliers] = 0.0
    qmax = 127.0
    s_t = np.maximum(np.abs(xq).max(1, keepdims=True), 1e-5) / qmax
    y = (np.round(xq / s_t) * s_t) @ layer.w_hat().T + (xs @ layer.lb.T) @ layer.la.T
    np.testing.assert_allclose(forward_sim(layer, x), y, rtol=1e-5, atol=1e-5 * np.abs(y).max())


def test_float_activations_and_int4_codes(rng):
    x = correlated_inputs(rng, 64, 10).astype(np.float32)
    layer = quantize_linear("rtn", rng.standard_normal((5, 10)), LayerStats.from_inputs(x),
                            QuantSettings(wbits=4, abits=None))
    assert layer.w_codes.min() >= -8 and layer.w_codes.max() <= 7
    np.testing.assert_allclose(forward_sim(layer, x), x @ layer.w_hat().T, rtol=1e-6)
    assert np.array_equal(fake_quant_tokens(x, None), x)
    with pytest.raises(ValueError, match="abits=None"):
        forward_int(layer, x)


def test_bad_layer_and_inputs_raise(rng):
    codes = np.zeros((3, 4), np.int8)
    scale = np.ones(3, np.float32)
    layer = QuantizedLinear("rtn", codes, scale, 4, 8)
    with pytest.raises(ValueError, match=r"expected a 2-D \[N, 4\]"):
        forward_sim(layer, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="bias has shape"):
        forward_sim(layer, np.zeros((2, 4), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="exceed wbits=4"):
        QuantizedLinear("rtn", np.full((3, 4), 9, np.int8), scale, 4, 8)
    with pytest.raises(ValueError, match="w_scale"):
        QuantizedLinear("rtn", codes, np.ones(2, np.float32), 4, 8)
    with pytest.raises(ValueError, match="la and lb"):
        QuantizedLinear("lorc", codes, scale, 4, 8, la=np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="lb is"):
        QuantizedLinear("lorc", codes, scale, 4, 8, la=np.zeros((3, 1), np.float32), lb=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="distinct channels"):
        QuantizedLinear("aser", codes, scale, 4, 8, outliers=np.array([1, 1]))
    with pytest.raises(ValueError, match="smooth must be finite and > 0"):
        QuantizedLinear("aser", codes, scale, 4, 8, smooth=np.zeros(4, np.float32))

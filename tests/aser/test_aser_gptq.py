"""GPTQ (refq.aser.gptq): the Cholesky / lazy-block form equals the naive column loop, and it beats RTN."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.aser.gptq import gptq_quantize, gptq_quantize_naive
from refq.aser.rtn import dequantize_weight, quantize_weight
from tests.aser.strategies import correlated_inputs, layers


@given(problem=layers(max_dim=10), bits=st.sampled_from([2, 3, 4, 8]), block=st.integers(1, 5),
       act_order=st.booleans())
def test_fast_gptq_equals_the_naive_column_loop(problem, bits, block, act_order):
    w, x = problem
    h = x.T @ x
    codes, scale = gptq_quantize(w, h, bits, act_order=act_order, block=block)
    codes_naive, scale_naive = gptq_quantize_naive(w, h, bits, act_order=act_order)
    np.testing.assert_array_equal(scale, scale_naive)
    np.testing.assert_array_equal(codes, codes_naive)
    assert codes.dtype == np.int8 and codes.min() >= -(1 << (bits - 1)) and codes.max() < (1 << (bits - 1))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_rtn_in_output_error(seed, bits):
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng, 256, 32, outliers=2)
    w = rng.standard_normal((16, 32))
    h = x.T @ x
    err = {}
    for name, (codes, scale) in {"rtn": quantize_weight(w, bits), "gptq": gptq_quantize(w, h, bits)}.items():
        err[name] = np.linalg.norm(x @ (w - dequantize_weight(codes, scale)).T)
    assert err["gptq"] < err["rtn"], err


def test_dead_inputs_get_zero_codes(rng):
    x = rng.standard_normal((50, 6))
    x[:, 4] = 0.0
    codes, _ = gptq_quantize(rng.standard_normal((3, 6)), x.T @ x, 4)
    assert not codes[:, 4].any()


def test_bad_gptq_inputs_raise(rng):
    w = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="H has shape"):
        gptq_quantize(w, np.eye(3), 4)
    with pytest.raises(ValueError, match="bits=9"):
        gptq_quantize(w, np.eye(4), 9)
    with pytest.raises(ValueError, match="block=0"):
        gptq_quantize(w, np.eye(4), 4, block=0)
    with pytest.raises(ValueError, match="W is"):
        gptq_quantize_naive(w[0], np.eye(4), 4)

"""The shared quantized linear layer (refq.quant.qlinear): fast path == plain definition bit for bit,
zero points expanded exactly, per-token and static activations, int4 and int8 weights, low rank."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.kernels import dispatch
from refq.quant import qlinear
from refq.quant.qlinear import PerToken, QLinear, Static

KERNELS = [k for k in dispatch.KERNELS if dispatch.available(k)]


def _layer(rng, n, k, wbits, act, zero_points, bias, rank=0, lr_q=False):
    lo, hi = -(1 << (wbits - 1)), (1 << (wbits - 1)) - 1
    codes = rng.integers(lo, hi + 1, (n, k)).astype(np.int8)
    scale = rng.uniform(1e-3, 1.0, n).astype(np.float32)
    zero = rng.integers(lo, hi + 1, n).astype(np.int32) if zero_points else None
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    la = rng.standard_normal((n, rank)).astype(np.float32) if rank else None
    lb = rng.standard_normal((rank, k)).astype(np.float32) if rank else None
    return QLinear(codes, scale, wbits, act, zero=zero, bias=b, la=la, lb=lb, lr_input_quantized=lr_q)


@settings(deadline=None, max_examples=60)
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 70), wbits=st.sampled_from([2, 4, 6, 8]),
       static=st.booleans(), zero_points=st.booleans(), bias=st.booleans(), rank=st.sampled_from([0, 3]),
       lr_q=st.booleans(), kernel=st.sampled_from(KERNELS), seed=st.integers(0, 2**32 - 1))
def test_fast_path_equals_the_plain_definition(m, n, k, wbits, static, zero_points, bias, rank, lr_q, kernel, seed):
    rng = np.random.default_rng(seed)
    act = Static(float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 20)), 8) if static else PerToken(8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(dispatch.ENV, kernel)
        layer = _layer(rng, n, k, wbits, act, zero_points, bias, rank, lr_q)
    assert layer.packed.kernel == kernel and layer.packed.bits == (4 if wbits <= 4 else 8)
    x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
    x_copy = x.copy()
    fast, plain = qlinear.forward(layer, x), qlinear.forward_reference(layer, x)
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(x, x_copy)
    sim = qlinear.forward_sim(layer, x)  # float32 matmul of the same values: equal up to its rounding
    np.testing.assert_allclose(fast, sim, rtol=1e-4, atol=1e-3 * (1 + np.abs(plain).max()))


def test_zero_point_expansion_is_the_centred_integer_sum(rng):
    layer = _layer(rng, 7, 33, 8, Static(0.05, -17, 8), True, False)
    x = rng.standard_normal((5, 33)).astype(np.float32)
    q, s, z = qlinear.quantize_input(layer, x)
    assert z == -17 and (s == np.float32(0.05)).all()
    centred = (q.astype(np.int64) - z) @ (layer.codes.astype(np.int64) - layer.zero[:, None]).T  # [M, N]
    want = (centred * np.float64(np.float32(0.05)) * layer.scale.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(qlinear.forward_codes(layer, q, s, z), want)


def test_per_token_codes_are_the_kernel_quantizer(rng):
    from refq.kernels import quantize_per_token

    layer = _layer(rng, 4, 16, 8, PerToken(6), False, True)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    q, s, z = qlinear.quantize_input(layer, x)
    q2, s2 = quantize_per_token(x, 6)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(s, s2)
    assert z == 0 and np.abs(q).max() <= 31


@pytest.mark.parametrize("kwargs, match", [
    (dict(codes=np.zeros((2, 3), np.int16)), "codes must be a 2-D int8"),
    (dict(codes=np.full((2, 3), 9, np.int8), wbits=4), "exceed wbits=4"),
    (dict(scale=np.zeros(2, np.float32)), "scale must be finite and > 0"),
    (dict(scale=np.ones(3, np.float32)), r"scale is float32 \(3,\)"),
    (dict(wbits=9), "wbits=9"),
    (dict(act="token"), "act is a str"),
    (dict(la=np.ones((2, 1), np.float32)), "la and lb come together"),
    (dict(zero=np.zeros(5, np.int32)), "zero must be 2"),
])
def test_bad_layers_are_value_errors_naming_the_field(kwargs, match):
    base = dict(codes=np.zeros((2, 3), np.int8), scale=np.ones(2, np.float32), wbits=8, act=PerToken(8))
    with pytest.raises(ValueError, match=match):
        QLinear(**{**base, **kwargs})


def test_static_activations_refuse_a_k_that_could_overflow_int32():
    ok = QLinear(np.zeros((1, qlinear.K_MAX_ZERO_POINTS), np.int8), np.ones(1, np.float32), 8, Static(1.0, 3))
    assert ok.d_in == 33025
    with pytest.raises(ValueError, match="K=33026"):
        QLinear(np.zeros((1, 33026), np.int8), np.ones(1, np.float32), 8, Static(1.0, 3))


def test_bad_inputs_name_the_value(rng):
    layer = _layer(rng, 3, 4, 8, PerToken(8), False, False)
    with pytest.raises(ValueError, match=r"x is float32 \(2, 5\), expected a 2-D \[M, 4\]"):
        qlinear.forward(layer, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        qlinear.forward(layer, np.array([[np.nan, 0, 0, 0]], np.float32))
    static = _layer(rng, 3, 4, 8, Static(0.1, 0), True, False)
    with pytest.raises(ValueError):
        qlinear.forward(static, np.array([[np.inf, 0, 0, 0]], np.float32))

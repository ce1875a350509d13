"""Uniform affine quantization: pure `quantize` (float -> int8 codes) and `dequantize` (codes -> float32).

    q     = clip(round(x / scale) + zero, qmin, qmax)        codes, int8, [qmin, qmax] = [-2^(b-1), 2^(b-1)-1]
    x_hat = scale * (q - zero)                               float32

The ranges (scale, zero) are fitted separately (refq.quant.ranges); these functions only apply them,
never modify their inputs, and share one formula for every granularity (refq.quant.params explains the
code convention and the scale layouts). `round` is NumPy's round-half-to-even. Inside the representable
range [scale (qmin - zero), scale (qmax - zero)] the error |x - x_hat| is at most scale / 2; outside it
x saturates at the nearest end.

References: Zhong et al., "I&S-ViT", arXiv:2311.10126 (uniform quantizer: x_int = round(x/Δ) + z, clamp, x_hat = (x_q - z)Δ);
docs/aser.md, A2 (symmetric absmax RTN, zero = 0); Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, eq. (1) (r = S (q - Z)).
"""
from __future__ import annotations

import numpy as np

from refq.quant.params import QParams, broadcast_params, qmax, qmin, validate_float_array


def compute_dtype(x: np.ndarray) -> np.dtype:
    """Float dtype the arithmetic runs in: float64 for float64 inputs, float32 otherwise."""
    return np.result_type(x.dtype, np.float32)


def quantize_array(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int) -> np.ndarray:
    """Codes clip(round(x / scale) + zero, qmin, qmax) as int8, for scale/zero already broadcastable to x."""
    ct = compute_dtype(x)
    with np.errstate(over="ignore"):  # |x| / scale may overflow to inf when a clipped range saturates
        r = np.round(x.astype(ct, copy=False) / scale.astype(ct))  # [...] float
    q = np.clip(r + zero.astype(ct), qmin(bits), qmax(bits))  # [...] float, integer-valued
    return q.astype(np.int8)


def dequantize_array(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, dtype=np.float32) -> np.ndarray:
    """scale * (q - zero) in `dtype`, for scale/zero already broadcastable to q."""
    centered = q.astype(np.int32) - zero.astype(np.int32)  # [...] int32, exact
    return centered.astype(dtype) * scale.astype(dtype)


def quantize(x: np.ndarray, params: QParams) -> np.ndarray:
    """Integer codes (int8, in [params.qmin, params.qmax]) of the float array `x`."""
    fn = "quantize"
    _check_params(params, fn)
    validate_float_array(x, "x", fn)
    scale, zero = broadcast_params(params, x.shape, fn)
    return quantize_array(x, scale, zero, params.bits)


def dequantize(q: np.ndarray, params: QParams) -> np.ndarray:
    """float32 reconstruction scale * (q - zero) of int8 codes `q`."""
    fn = "dequantize"
    _check_params(params, fn)
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        kind = q.dtype if isinstance(q, np.ndarray) else type(q).__name__
        raise ValueError(f"{fn}: q has dtype {kind}, expected an int8 numpy array")
    if q.size and (q.min() < params.qmin or q.max() > params.qmax):
        raise ValueError(f"{fn}: codes in [{q.min()}, {q.max()}] are outside [{params.qmin}, {params.qmax}] "
                         f"of bits={params.bits}")
    scale, zero = broadcast_params(params, q.shape, fn)
    return dequantize_array(q, scale, zero)


def fake_quantize(x: np.ndarray, params: QParams) -> np.ndarray:
    """dequantize(quantize(x)): the float32 value the integer pipeline would see."""
    return dequantize(quantize(x, params), params)


def _check_params(params, fn: str) -> None:
    if not isinstance(params, QParams):
        raise ValueError(f"{fn}: params is a {type(params).__name__}, expected QParams")

"""One-pass Numba forms of the quantizers on float32 activations (the hot path of SARDFQ's quantized ViT).

The plain NumPy forms in refq.quant.fake take about ten passes over an activation (validation, divide,
round, add, compare twice, clip, subtract, multiply, cast; log2 in float64 for attention). These
kernels make one pass, return the same values and STE masks bit for bit, and report inputs the plain
form would reject so that the caller can raise its error (tests/quant/test_fake_f32.py checks both).

Uniform, per-tensor (scale s, zero point z, codes [qmin, qmax]), all in float32 like the plain form:

    shifted = rint(x / s) + z,   mask = qmin <= shifted <= qmax,   x_hat = (clip(shifted) - z) s

and, for the integer linear layers, the int8 codes clip(shifted) themselves with their row sums.

Log2 (post-softmax probabilities a in [0, 1], b bits):  shift = round(-log2 a), computed exactly from
the float32 bit pattern: a = m 2^e with m in [1/2, 1) gives -log2 a = -e - log2 m with -log2 m in
(0, 1], which rounds to 1 exactly when m < 2^(-1/2), i.e. when the 23 fraction bits are below
(sqrt 2 - 1) 2^23. Subnormal a go through frexp. The plain form's float64 log2 agrees after rounding (a
float32 never comes within 1e-8 of a half-integer power of two). a = 0 has shift +inf. The output
2^-q is also written as a bit pattern, so the loop is integer arithmetic only.

    mask = shift <= 2^b - 1,   a_hat = 2^-min(shift, 2^b - 1)

References: docs/sardfq.md, S5 (uniform and log2 quantizers of the quantized ViT); Lin et al., "FQ-ViT", IJCAI
2022 (log2 quantization of attention maps); IEEE 754 (frexp is exact).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_SQRT_HALF = math.sqrt(0.5)  # float64 2^(-1/2)
# m = (1 + frac / 2^23) / 2 < 2^(-1/2)  <=>  frac < (sqrt 2 - 1) 2^23 = 3474675.2
_FRAC_BELOW_SQRT_HALF = 3474675
_ONE_BITS = 0x3F800000  # bit pattern of float32 1.0; a in [0, 1] <=> 0 <= bits <= this
_NEG_ZERO = -(1 << 31)  # bit pattern of -0.0 as an int32
_NAN_BITS = 0x7FC00000


@njit(cache=True)
def _round_clip(v, s, z, lo, hi):
    """(shifted, clipped) = (rint(v / s) + z, clip(shifted, lo, hi)) of one float32 value, in float32."""
    shifted = np.rint(v / s) + z
    return shifted, (lo if shifted < lo else (hi if shifted > hi else shifted))


@njit(cache=True)
def _uniform(x, s, z, lo, hi, out, mask):
    """Per-tensor uniform fake quantization of flat float32 x; returns how many values are not finite."""
    bad = 0
    for i in range(x.size):
        if not np.isfinite(x[i]):
            bad += 1
        shifted, q = _round_clip(x[i], s, z, lo, hi)
        mask[i] = lo <= shifted <= hi
        out[i] = (q - z) * s
    return bad


@njit(cache=True)
def _codes(x, s, z, lo, hi, codes, row_sums):
    """int8 codes clip(rint(x / s) + z) of float32 x [M, K] and their row sums; returns the non-finite count."""
    bad = 0
    for m in range(x.shape[0]):
        total = 0
        for k in range(x.shape[1]):
            v = x[m, k]
            if not np.isfinite(v):
                bad += 1
                v = np.float32(0.0)
            q = np.int8(_round_clip(v, s, z, lo, hi)[1])
            codes[m, k] = q
            total += q
        row_sums[m] = total
    return bad


@njit(cache=True)
def _log2(a, top, out, mask):
    """Log2 fake quantization of flat float32 probabilities; returns how many are not finite or not in [0, 1]."""
    bits_in, bits_out = a.view(np.int32), out.view(np.int32)
    bad = 0
    for i in range(a.size):
        b = bits_in[i]
        if b == _NEG_ZERO:
            b = 0
        if b < 0 or b > _ONE_BITS:  # negative, > 1, inf or NaN
            bad += 1
            mask[i] = False
            bits_out[i] = _NAN_BITS
            continue
        expo, frac = b >> 23, b & 0x7FFFFF  # a = 1.frac 2^(expo - 127) = m 2^e, m = 1.frac / 2, e = expo - 126
        if expo > 0:
            shift = 126 - expo + (1 if frac <= _FRAC_BELOW_SQRT_HALF else 0)
        elif frac > 0:  # subnormal: frexp normalises it
            m, e = math.frexp(np.float64(a[i]))
            shift = -e + (1 if m < _SQRT_HALF else 0)
        else:  # a = 0: shift = +inf
            shift = top + 1
        mask[i] = shift <= top
        q = min(shift, top)
        if q <= 126:  # 2^-q as float32 bits: normal, subnormal, or 0 (2^-150 rounds to even, 0)
            bits_out[i] = (127 - q) << 23
        elif q <= 149:
            bits_out[i] = 1 << (149 - q)
        else:
            bits_out[i] = 0
    return bad


def uniform_fake_quant_f32(x: np.ndarray, scale: float, zero: float, lo: int, hi: int):
    """(x_hat float32, mask bool, number of non-finite inputs) of per-tensor uniform fake quantization."""
    assert x.dtype == np.float32
    flat = np.ascontiguousarray(x).reshape(-1)
    out, mask = np.empty_like(flat), np.empty(flat.shape, np.bool_)
    bad = _uniform(flat, np.float32(scale), np.float32(zero), np.float32(lo), np.float32(hi), out, mask)
    return out.reshape(x.shape), mask.reshape(x.shape), int(bad)


def quantize_rows_f32(x: np.ndarray, scale: float, zero: float, lo: int, hi: int):
    """(int8 codes [M, K], int64 row sums [M], number of non-finite inputs) of per-tensor uniform quantization
    of float32 x [M, K]: the codes of refq.quant.uniform.quantize, with the row sums the integer GEMM's
    zero-point correction needs, in one pass."""
    assert x.dtype == np.float32 and x.ndim == 2
    x = np.ascontiguousarray(x)
    codes, row_sums = np.empty(x.shape, np.int8), np.empty(x.shape[0], np.int64)
    bad = _codes(x, np.float32(scale), np.float32(zero), np.float32(lo), np.float32(hi), codes, row_sums)
    return codes, row_sums, int(bad)


def log2_fake_quant_f32(a: np.ndarray, bits: int):
    """(a_hat float32, mask bool, number of invalid inputs) of log2 fake quantization with `bits` bits."""
    assert a.dtype == np.float32
    flat = np.ascontiguousarray(a).reshape(-1)
    out, mask = np.empty_like(flat), np.empty(flat.shape, np.bool_)
    bad = _log2(flat, (1 << bits) - 1, out, mask)
    return out.reshape(a.shape), mask.reshape(a.shape), int(bad)

"""One-pass Numba forms of the two fake quantizers on float32 activations (the hot path of SARDFQ).

The plain NumPy forms in refq.quant.fake take about ten passes over an activation (validation, divide,
round, add, compare twice, clip, subtract, multiply, cast; log2 in float64 for attention). These
kernels make one pass, return the same values and STE masks bit for bit, and report inputs the plain
form would reject so that the caller can raise its error (tests/quant/test_fake_f32.py checks both).

Uniform, per-tensor (scale s, zero point z, codes [qmin, qmax]), all in float32 like the plain form:

    shifted = rint(x / s) + z,   mask = qmin <= shifted <= qmax,   x_hat = (clip(shifted) - z) s

Log2 (post-softmax probabilities a in [0, 1], b bits):  shift = round(-log2 a), computed exactly from
the binary exponent: a = m 2^e with m in [1/2, 1) gives -log2 a = -e - log2 m with -log2 m in (0, 1],
which rounds to 1 exactly when m < 2^(-1/2). No float32 m lies between 2^(-1/2) and its float64
rounding, so the comparison is exact, and so is the plain form's float64 log2 after rounding (a
float32 never comes within 1e-8 of a half-integer power of two). a = 0 has shift +inf.

    mask = shift <= 2^b - 1,   a_hat = 2^-min(shift, 2^b - 1)

References: sardfq.md §7 (uniform and log2 quantizers of the quantized ViT); Lin et al., "FQ-ViT", IJCAI
2022, Sec. 3.3 (log2 quantization of attention); IEEE 754 (frexp/ldexp are exact).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_SQRT_HALF = math.sqrt(0.5)  # float64 2^(-1/2)


@njit(cache=True)
def _uniform(x, s, z, lo, hi, out, mask):
    """Per-tensor uniform fake quantization of flat float32 x; returns how many values are not finite."""
    bad = 0
    for i in range(x.size):
        v = x[i]
        if not np.isfinite(v):
            bad += 1
        shifted = np.rint(v / s) + z
        mask[i] = lo <= shifted <= hi
        q = lo if shifted < lo else (hi if shifted > hi else shifted)
        out[i] = (q - z) * s
    return bad


@njit(cache=True)
def _log2(a, top, out, mask):
    """Log2 fake quantization of flat float32 probabilities; returns how many are not finite or not in [0, 1]."""
    bad = 0
    for i in range(a.size):
        v = np.float64(a[i])
        if not (0.0 <= v <= 1.0):  # also NaN
            bad += 1
            mask[i] = False
            out[i] = np.float32(np.nan)
            continue
        if v == 0.0:
            mask[i] = False
            shift = top
        else:
            m, e = math.frexp(v)  # v = m 2^e, 0.5 <= m < 1
            shift = -e + (1 if m < _SQRT_HALF else 0)
            mask[i] = shift <= top
            shift = min(shift, top)
        out[i] = np.float32(math.ldexp(1.0, -shift))
    return bad


def uniform_fake_quant_f32(x: np.ndarray, scale: float, zero: float, lo: int, hi: int):
    """(x_hat float32, mask bool, number of non-finite inputs) of per-tensor uniform fake quantization."""
    assert x.dtype == np.float32
    flat = np.ascontiguousarray(x).reshape(-1)
    out, mask = np.empty_like(flat), np.empty(flat.shape, np.bool_)
    bad = _uniform(flat, np.float32(scale), np.float32(zero), np.float32(lo), np.float32(hi), out, mask)
    return out.reshape(x.shape), mask.reshape(x.shape), int(bad)


def log2_fake_quant_f32(a: np.ndarray, bits: int):
    """(a_hat float32, mask bool, number of invalid inputs) of log2 fake quantization with `bits` bits."""
    assert a.dtype == np.float32
    flat = np.ascontiguousarray(a).reshape(-1)
    out, mask = np.empty_like(flat), np.empty(flat.shape, np.bool_)
    bad = _log2(flat, (1 << bits) - 1, out, mask)
    return out.reshape(a.shape), mask.reshape(a.shape), int(bad)

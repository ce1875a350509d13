"""Numba epilogue of the zero-point integer linear layer (refq.quant.qlinear): the int32 GEMM result to float32.

    out[m, n] = float32(float64(raw[m, n] - rowsum(q_x)[m] z_w[n] + col[n]) s_x[m] s_w[n] (+ bias[n]))

with col[n] = K z_x z_w[n] - z_x rowsum(q_w)[n] computed by the caller, `refq.quant.qlinear.zero_point_dequant`,
the layer's fast path; tests/quant/test_qlinear.py checks that path against the plain float64 definition.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _zero_point_dequant_parallel(raw, row_x, zw, col, sx, sw, bias, has_bias, out):
    """_zero_point_dequant over all rows, split over the Numba threads (the GEMM's thread pool)."""
    for m in prange(raw.shape[0]):
        _zero_point_dequant(raw, row_x, zw, col, sx, sw, bias, has_bias, out, m, m + 1)


@njit(cache=True)
def _zero_point_dequant(raw, row_x, zw, col, sx, sw, bias, has_bias, out, m0, m1):
    """out[m, n] = float32(float64(raw - row_x[m] zw[n] + col[n]) sx[m] sw[n] (+ bias[n])) for rows m0..m1.

    The bracket is computed in int32: int32 arithmetic wraps modulo 2^32, so the bracket is exact whenever
    its true value fits in int32 (K <= K_MAX_ZERO_POINTS), and int32 -> float64 conversion vectorises where
    int64 would not.
    """
    for m in range(m0, m1):
        r = row_x[m]
        s = np.float64(sx[m])
        for n in range(raw.shape[1]):
            acc = np.int32(np.int32(raw[m, n] - np.int32(r * zw[n])) + col[n])
            y = np.float64(acc) * s * np.float64(sw[n])
            if has_bias:
                y = y + np.float64(bias[n])
            out[m, n] = np.float32(y)

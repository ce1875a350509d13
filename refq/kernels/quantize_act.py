"""Fused per-token dynamic symmetric quantization of float32 activations, the A side of the int GEMMs.

For each row (token) t of X [T, D], in float32 arithmetic:

    s_t     = max(max_j |X[t, j]|, 1e-5) / qmax                 qmax = 2^(b-1) - 1 (127 for b = 8)
    Q[t, j] = clip(round(X[t, j] / s_t), -qmax, qmax)            int8 codes, round half to even

so that X ~ s_t Q[t, :]; `gemm_int8_dequant(Q, W_q, s, w_scale)` then computes the quantized linear layer.
The Numba kernel makes one pass per row for the absmax (an integer maximum over the float bit patterns,
which vectorises and detects inf/NaN on the way) and one for the codes, rows split over threads
(`refq.kernels.threads`; one thread below PARALLEL_MIN_ELEMENTS, where starting the threads costs
more than the work); the NumPy twin `quantize_per_token_ref` does the same float32 operations, so the
two agree exactly.

References: docs/aser.md, A2 (per-token dynamic symmetric absmax quantizer q_a_tok, b in {8, 6}, scale floor
1e-5); Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models", ICML 2023, Sec. 2 (per-token activation quantization).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from refq.kernels.threads import run_chunks

SCALE_FLOOR = np.float32(1e-5)


def _check(x, bits, fn: str, check_finite: bool = True) -> tuple[np.ndarray, int]:
    """Validate float32 X [T, D] (finite unless check_finite=False) and bits in 2..8; return (C-contiguous X, qmax)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: x has dtype {kind}, expected a float32 numpy array")
    if x.ndim != 2:
        raise ValueError(f"{fn}: x has shape {x.shape}, expected a 2-D [T, D] array")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"{fn}: bits={bits!r}, expected an int in 2..8")
    if check_finite:
        finite = np.isfinite(x)
        if not finite.all():
            raise ValueError(f"{fn}: x has {int((~finite).sum())} non-finite values (first: {x[~finite][0]})")
    return np.ascontiguousarray(x), (1 << (int(bits) - 1)) - 1


def quantize_per_token_ref(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin: (codes int8 [T, D], scales float32 [T]) with X ~ scales[:, None] * codes."""
    x, qmax = _check(x, bits, "quantize_per_token_ref")
    absmax = np.abs(x).max(axis=1, initial=np.float32(0))  # [T, D] -> [T]
    scale = np.maximum(absmax, SCALE_FLOOR) / np.float32(qmax)  # [T] float32
    q = np.clip(np.rint(x / scale[:, None]), -qmax, qmax)  # [T, D] float32, integer-valued
    return q.astype(np.int8), scale.astype(np.float32)


SIGN_MASK = np.uint32(0x7FFFFFFF)
NON_FINITE = np.uint32(0x7F800000)  # |x| bit patterns at or above this are inf or NaN


@njit(cache=True)
def _absmax_bits(bits):
    """max_j |x_j| as a float32 bit pattern: for non-negative floats the bit order is the value order.

    Integer maxima vectorise where float ones (which must respect NaN) do not, and the result also
    tells whether the row holds an inf or a NaN (a pattern >= NON_FINITE), so no separate pass is needed.
    """
    m = np.uint32(0)
    for j in range(bits.shape[0]):
        m = max(m, bits[j] & SIGN_MASK)
    return m


@njit(cache=True)
def _bits_to_float(m):
    """The float32 whose bit pattern is the uint32 m (a scalar view, no array)."""
    return np.uint32(m).view(np.float32)


@njit(cache=True)
def _quantize_row(x, bits, t, fq, q, scale, absbits):
    """Row t: absmax, scale and rounding (the float32 operations of the twin); skipped if not finite."""
    m = _absmax_bits(bits[t])
    absbits[t] = m
    if m >= NON_FINITE:
        return
    s = max(_bits_to_float(m), SCALE_FLOOR) / fq
    scale[t] = s
    xr, qr = x[t], q[t]
    for j in range(xr.shape[0]):
        r = np.rint(xr[j] / s)
        r = r if r < fq else fq
        r = r if r > -fq else -fq
        qr[j] = np.int8(r)


@njit(cache=True, nogil=True)
def _quantize_rows(x, bits, qmax, q, scale, absbits, t0, t1):
    """Rows t0..t1 of the per-token quantization."""
    fq = np.float32(qmax)
    for t in range(t0, t1):
        _quantize_row(x, bits, t, fq, q, scale, absbits)


PARALLEL_MIN_ELEMENTS = 1 << 18  # below this, waking the thread pool costs more than the work


def quantize_per_token(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-token symmetric codes: float32 X [T, D] -> (int8 codes [T, D], float32 scales [T])."""
    x, qmax = _check(x, bits, "quantize_per_token", check_finite=False)  # the kernel finds inf/NaN itself
    q = np.empty(x.shape, np.int8)  # [T, D]
    scale = np.empty(x.shape[0], np.float32)  # [T]
    absbits = np.empty(x.shape[0], np.uint32)  # [T] bit patterns of the row absmax
    run_chunks(_quantize_rows, x.shape[0], x, x.view(np.uint32), qmax, q, scale, absbits,
               threads=None if x.size >= PARALLEL_MIN_ELEMENTS else 1)
    if (absbits >= NON_FINITE).any():
        _check(x, bits, "quantize_per_token")  # raises the ValueError that names the values
    return q, scale
